"""A git source: one commit of a repository, fetched into a cache, as a tar."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from builder.build.sources.archive import Entry, write_archive
from builder.build.sources.spec import SourceSpec, source_error
from builder.build.sources.url import split_credentials
from builder.errors import scrub_url

if TYPE_CHECKING:
    import git

_SHA_PREFIX = re.compile(r"[0-9a-f]{4,40}")
_FULL_SHA = re.compile(r"[0-9a-f]{40}")


# --------------------------------------------------------------------------- git

# A credential helper that answers from the environment, so that secrets never
# appear on a command line (visible to other users), in GitPython's debug log or
# in the cache's config. The first, empty helper resets any configured helpers.
_CREDENTIAL_HELPER = (
    "!f() { test \"$1\" = get || exit 0; "
    "printf 'username=%s\\npassword=%s\\n' \"$KILN_GIT_USERNAME\" \"$KILN_GIT_PASSWORD\"; }; f"
)


@dataclass(frozen=True)
class _Remote:
    url: str  # what git is given: no password, ever
    env: dict[str, str]
    config: tuple[str, ...]


def _remote(spec: SourceSpec, timeout: float) -> _Remote:
    location = spec.location
    if location.startswith("-"):
        raise source_error(spec, "a git location cannot start with '-'")
    env = {"GIT_TERMINAL_PROMPT": "0"}
    config = ["http.lowSpeedLimit=1", f"http.lowSpeedTime={max(1, round(timeout))}"]
    scheme = urllib.parse.urlsplit(location).scheme.lower() if "://" in location else ""
    clean, user, password = split_credentials(location) if scheme else (location, None, None)
    if user is not None and scheme in ("http", "https"):
        env.update(KILN_GIT_USERNAME=user, KILN_GIT_PASSWORD=password or "")
        config += ["credential.helper=", f"credential.helper={_CREDENTIAL_HELPER}"]
        location = clean
    elif password is not None:  # ssh and friends: keep the user, drop the password
        parts = urllib.parse.urlsplit(clean)
        location = urllib.parse.urlunsplit(
            parts._replace(netloc=f"{urllib.parse.quote(user or '')}@{parts.netloc}"))
    return _Remote(url=location, env=env, config=tuple(config))


def prepare_git(spec: SourceSpec, out: Path, cache_dir: Path,
                 timeout: float) -> tuple[str, str]:
    remote = _remote(spec, timeout)
    key = hashlib.sha256(scrub_url(spec.location).encode("utf-8")).hexdigest()[:24]
    cache_root = cache_dir / "git"
    cache_root.mkdir(exist_ok=True)
    with _locked(cache_root / f"{key}.lock"):
        repo = _cache_repo(spec, cache_root / f"{key}.git")
        with repo:
            commit = _resolve(spec, repo, remote)
            entries = _git_entries(spec, repo, commit)
            write_archive(spec, entries, out)
    return commit, commit


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise users of one cache (threads and processes: flock is per open file)."""
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _cache_repo(spec: SourceSpec, path: Path) -> git.Repo:
    import git  # imported when a git source is used: it is slow to load
    if path.exists():
        try:
            return git.Repo(path)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            shutil.rmtree(path)  # a half-made cache from an interrupted run
    try:
        return git.Repo.init(path, bare=True)
    except git.GitCommandError as exc:
        raise source_error(spec, f"cannot create git cache {path}: {_git_reason(exc)}") from None


def _git_reason(exc: git.GitCommandError) -> str:
    stderr = exc.stderr if isinstance(exc.stderr, str) else ""
    stderr = stderr.strip().removeprefix("stderr: ").strip()
    if len(stderr) >= 2 and stderr[0] == stderr[-1] == "'":  # GitPython's quoting
        stderr = stderr[1:-1]
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("fatal:", "error:"))]
    return scrub_url("; ".join(errors or lines) or f"git exited with status {exc.status}")


def _git(repo: git.Repo, remote: _Remote, *args: str) -> None:
    import git  # imported when a git source is used: it is slow to load
    command = [git.Git.GIT_PYTHON_GIT_EXECUTABLE or "git"]
    for item in remote.config:
        command += ["-c", item]
    repo.git.execute(command + list(args), env=remote.env)


def _fetch(spec: SourceSpec, repo: git.Repo, remote: _Remote, *refspecs: str,
           quiet_missing: bool = False) -> bool:
    import git  # imported when a git source is used: it is slow to load
    try:
        _git(repo, remote, "fetch", "--quiet", "--force", "--prune", "--no-tags", "--",
             remote.url, *refspecs)
    except git.GitCommandError as exc:
        reason = _git_reason(exc)
        if quiet_missing and ("couldn't find remote ref" in reason
                              or "not our ref" in reason or "no such remote ref" in reason):
            return False
        raise source_error(spec, f"cannot fetch: {reason}") from None
    return True


def _rev(repo: git.Repo, name: str) -> str | None:
    import git  # imported when a git source is used: it is slow to load
    try:
        return repo.git.rev_parse("--verify", "--quiet", "--end-of-options",
                                  f"{name}^{{commit}}")
    except git.GitCommandError:
        return None


def _resolve(spec: SourceSpec, repo: git.Repo, remote: _Remote) -> str:
    """Fetch what is needed and return the full commit SHA the reference names."""
    ref = spec.reference
    if ref is not None and _FULL_SHA.fullmatch(ref.lower()):
        found = _rev(repo, ref.lower())
        if found:
            return found  # commits never change: no need to ask the remote
    base = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]
    if ref is None:
        _fetch(spec, repo, remote, "+HEAD:refs/kiln/HEAD", *base)
        found = _rev(repo, "refs/kiln/HEAD")
        if found:
            return found
        raise source_error(spec, "the repository has no default branch")
    _fetch(spec, repo, remote, *base)
    if ref.startswith("refs/"):
        candidates = [ref]
    else:
        candidates = [f"refs/tags/{ref}", f"refs/heads/{ref}"]
    for candidate in candidates:
        found = _rev(repo, candidate)
        if found:
            return found
    if _SHA_PREFIX.fullmatch(ref.lower()):
        found = _rev(repo, ref.lower())
        if found:
            return found
    if ref.startswith("refs/") and not ref.startswith(("refs/heads/", "refs/tags/")):
        local = f"refs/kiln/fetched/{ref.removeprefix('refs/')}"
        if _fetch(spec, repo, remote, f"+{ref}:{local}", quiet_missing=True):
            found = _rev(repo, local)
            if found:
                return found
    elif _FULL_SHA.fullmatch(ref.lower()):  # not on a branch or tag: ask for it by name
        local = f"refs/kiln/commits/{ref.lower()}"
        if _fetch(spec, repo, remote, f"+{ref.lower()}:{local}", quiet_missing=True):
            found = _rev(repo, local)
            if found:
                return found
    raise source_error(spec, f"reference {ref!r} not found (no such branch, tag or commit)")


def _git_entries(spec: SourceSpec, repo: git.Repo, commit: str) -> dict[str, Entry]:
    """The commit's tree (not any working tree), as entries that read blobs lazily."""
    import git  # imported when a git source is used: it is slow to load
    command = [git.Git.GIT_PYTHON_GIT_EXECUTABLE or "git", "ls-tree", "-r", "-t", "-z", "-l",
               "--full-tree", commit]
    listing = repo.git.execute(command, stdout_as_string=False)
    entries: dict[str, Entry] = {}
    for record in listing.split(b"\0"):
        if not record:
            continue
        meta, _, raw_path = record.partition(b"\t")
        mode, kind, sha, size = meta.decode("ascii").split()
        path = raw_path.decode("utf-8", "surrogateescape")
        if kind == "tree" or kind == "commit":  # a submodule is an empty directory
            entries[path] = Entry("dir", origin=path)
        elif mode == "120000":
            target = repo.odb.stream(bytes.fromhex(sha)).read()
            entries[path] = Entry("symlink", target=target.decode("utf-8", "surrogateescape"),
                                   origin=path)
        else:
            entries[path] = _git_blob_entry(repo, sha, int(size), mode == "100755", path)
    return entries


def _git_blob_entry(repo: git.Repo, sha: str, size: int, executable: bool,
                    path: str) -> Entry:
    def open_blob() -> IO[bytes]:
        return io.BytesIO(repo.odb.stream(bytes.fromhex(sha)).read())

    return Entry("file", executable=executable, size=size, open=open_blob, origin=path)
