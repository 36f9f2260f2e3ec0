"""Image sources: a local tree, a git commit or a download, as a reproducible tar.

A source section (Kolla's format) names an image and says where its code comes
from::

    [keystone-base]
    type = git
    location = https://user:token@git.example.org/openstack/keystone
    reference = stable/2024.1

:func:`parse_source` turns such a section into a :class:`SourceSpec`;
:func:`prepare_source` writes ``<dest_dir>/<image>-archive``, a plain tar whose
members all sit under ``<image>/``, and returns a :class:`PreparedSource`.

The archive is reproducible: members sorted by path, owner 0/0 without names,
one fixed mtime, modes normalised to 0o755 (directories, executables) or 0o644
(other files; symlinks keep 0o777), GNU format. The same content always gives
the same bytes, whatever the checkout's mtimes or umask.

Every archive is self-contained: no member path, symlink or hardlink may lead
outside it, and no device or fifo is accepted; a tar to unpack that breaks
these rules is rejected, naming the member. Credentials in a location never
reach a message, an exception, a log line, a returned field, a command line or
the git cache: every string shown goes through :func:`scrub_url`.
"""

from __future__ import annotations

import base64
import bz2
import contextlib
import fcntl
import gzip
import hashlib
import io
import lzma
import os
import posixpath
import re
import shutil
import ssl
import stat
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import IO, TYPE_CHECKING

from builder.errors import SourceError, scrub_url

if TYPE_CHECKING:
    import git

FIXED_MTIME = 946684800  # 2000-01-01T00:00:00Z, as in builder.context
SOURCE_TYPES = ("local", "git", "url")
URL_SCHEMES = ("http", "https", "file")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
OPTIONS = ("type", "location", "reference", "sha256", "enabled")

_TRUE = ("true", "yes", "1")
_FALSE = ("false", "no", "0")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_SHA_PREFIX = re.compile(r"[0-9a-f]{4,40}")
_FULL_SHA = re.compile(r"[0-9a-f]{40}")
_CHUNK = 1 << 20
_MAX_SYMLINK_HOPS = 40


@dataclass(frozen=True)
class SourceSpec:
    """Where one image's source comes from (one config section)."""

    name: str
    type: str
    location: str
    reference: str | None = None
    sha256: str | None = None
    enabled: bool = True


@dataclass(frozen=True)
class PreparedSource:
    """The archive written for one image's source, and what it was made from."""

    name: str
    archive: Path
    type: str
    location: str
    reference: str | None
    commit: str | None
    sha256: str
    content_digest: str


# --------------------------------------------------------------------------- parsing


def parse_source(name: str, values: Mapping[str, str]) -> SourceSpec:
    """Validate one raw source section; unknown options are errors (typos would be silent)."""

    def fail(option: str, problem: str) -> SourceError:
        return SourceError(f"[{name}] {option}: {problem}", image=name)

    raw = {key.strip().lower(): value for key, value in values.items() if value is not None}
    for key in sorted(raw):
        if key not in OPTIONS:
            raise fail(key, f"unknown option; expected one of {', '.join(OPTIONS)}")
    _check_name(name)
    kind = raw.get("type", "").strip().lower()
    if not kind:
        raise fail("type", f"missing; expected one of {', '.join(SOURCE_TYPES)}")
    if kind not in SOURCE_TYPES:
        raise fail("type", f"unknown source type {kind!r}; expected one of "
                           f"{', '.join(SOURCE_TYPES)}")
    location = raw.get("location", "").strip()
    if not location:
        raise fail("location", "missing")
    if kind == "url":
        scheme = urllib.parse.urlsplit(location).scheme.lower()
        if scheme not in URL_SCHEMES:
            raise fail("location", f"{scrub_url(location)} is not an http, https or file URL")
    reference = raw.get("reference", "").strip() or None
    if reference is not None and kind != "git":
        raise fail("reference", f"only git sources have a reference (type is {kind})")
    digest = raw.get("sha256", "").strip().lower() or None
    if digest is not None:
        if kind != "url":
            raise fail("sha256", f"only url sources have a sha256 (type is {kind})")
        if not _HEX64.fullmatch(digest):
            raise fail("sha256", "expected 64 hexadecimal characters")
    enabled_text = raw.get("enabled", "true").strip().lower()
    if enabled_text in _TRUE:
        enabled = True
    elif enabled_text in _FALSE:
        enabled = False
    else:
        raise fail("enabled", f"{enabled_text!r} is not a boolean (true/false/yes/no/1/0)")
    return SourceSpec(name=name, type=kind, location=location, reference=reference,
                      sha256=digest, enabled=enabled)


def _check_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\0" in name or name != name.strip():
        raise SourceError(f"{name!r} is not a usable image name for a source", image=name)


# --------------------------------------------------------------------------- entry point


def prepare_source(spec: SourceSpec, dest_dir: Path, cache_dir: Path,
                   timeout: float = 60.0) -> PreparedSource:
    """Write ``dest_dir/<name>-archive`` from ``spec``; nothing is left there on failure."""
    _check_name(spec.name)
    if spec.type not in SOURCE_TYPES:
        raise SourceError(f"image {spec.name}: unknown source type {spec.type!r}; expected one "
                          f"of {', '.join(SOURCE_TYPES)}", image=spec.name,
                          location=spec.location)
    dest_dir = Path(dest_dir)
    cache_dir = Path(cache_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    archive = dest_dir / f"{spec.name}-archive"
    if archive.is_dir() and not archive.is_symlink():
        raise _error(spec, f"{archive} is a directory; remove it")
    archive.unlink(missing_ok=True)  # a stale archive must not outlive a failed prepare
    preparer = {"local": _prepare_local, "git": _prepare_git, "url": _prepare_url}[spec.type]
    try:
        commit, content_digest = preparer(spec, archive, cache_dir, timeout)
    except BaseException:
        archive.unlink(missing_ok=True)
        raise
    return PreparedSource(name=spec.name, archive=archive, type=spec.type,
                          location=scrub_url(spec.location), reference=spec.reference,
                          commit=commit, sha256=_file_sha256(archive),
                          content_digest=content_digest)


def _error(spec: SourceSpec, detail: str, hint: str | None = None) -> SourceError:
    location = scrub_url(spec.location)
    return SourceError(f"image {spec.name}, {spec.type} source {location}: {detail}",
                       image=spec.name, location=location, hint=hint)


# --------------------------------------------------------------------------- archive writer


@dataclass(frozen=True)
class _Entry:
    """One member to write, by path relative to the archive's ``<name>/``."""

    kind: str  # "dir" | "file" | "symlink"
    executable: bool = False
    target: str = ""  # symlink target
    size: int | None = None  # None: take it from the opened file (fstat)
    open: Callable[[], IO[bytes]] | None = None
    origin: str = ""  # how to name it in errors, e.g. the tar member's own name

    @property
    def mode(self) -> int:
        if self.kind == "symlink":
            return 0o777
        return 0o755 if self.kind == "dir" or self.executable else 0o644


def _write_archive(spec: SourceSpec, entries: Mapping[str, _Entry], out: Path) -> str:
    """Write the reproducible tar; returns a digest over paths, kinds, modes and contents."""
    entries = dict(entries)
    _check_tree(spec, entries)
    for path in list(entries):
        parent = posixpath.dirname(path)
        while parent and parent not in entries:
            entries[parent] = _Entry("dir")
            parent = posixpath.dirname(parent)
    order = sorted(entries, key=lambda p: p.split("/"))
    tree = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh, tarfile.open(
                fileobj=fh, mode="w", format=tarfile.GNU_FORMAT, encoding="utf-8",
                errors="surrogateescape") as tar:
            tar.addfile(_tarinfo(f"{spec.name}/", tarfile.DIRTYPE, 0o755))
            for path in order:
                entry = entries[path]
                line = f"{entry.kind} {entry.mode:o} {path}"
                if entry.kind == "dir":
                    tar.addfile(_tarinfo(f"{spec.name}/{path}/", tarfile.DIRTYPE, entry.mode))
                elif entry.kind == "symlink":
                    info = _tarinfo(f"{spec.name}/{path}", tarfile.SYMTYPE, entry.mode)
                    info.linkname = entry.target
                    tar.addfile(info)
                    line += f" -> {entry.target}"
                else:
                    line += " " + _add_file(spec, tar, f"{spec.name}/{path}", entry)
                tree.update(line.encode("utf-8", "surrogateescape") + b"\0")
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tree.hexdigest()


def _tarinfo(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class _HashingReader:
    def __init__(self, raw: IO[bytes]):
        self.raw = raw
        self.hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.hash.update(data)
        return data


def _add_file(spec: SourceSpec, tar: tarfile.TarFile, name: str, entry: _Entry) -> str:
    assert entry.open is not None
    try:
        with contextlib.closing(entry.open()) as raw:
            size = entry.size
            if size is None:
                size = os.fstat(raw.fileno()).st_size
            info = _tarinfo(name, tarfile.REGTYPE, entry.mode)
            info.size = size
            reader = _HashingReader(raw)
            tar.addfile(info, reader)
    except OSError as exc:  # unreadable, or shrank while being read
        raise _error(spec, f"cannot read {entry.origin or name}: "
                           f"{exc.strerror or exc}") from None
    return reader.hash.hexdigest()


def _check_tree(spec: SourceSpec, entries: Mapping[str, _Entry]) -> None:
    """No member under a symlink or a file; every symlink resolves inside the tree."""
    links = {path: e.target for path, e in entries.items() if e.kind == "symlink"}
    for path, entry in entries.items():
        parent = posixpath.dirname(path)
        while parent:
            above = entries.get(parent)
            if above is not None and above.kind != "dir":
                raise _error(spec, f"unsafe member {entry.origin or path!r}: it lies under "
                                   f"{above.kind} {entries[parent].origin or parent!r}")
            parent = posixpath.dirname(parent)
    for path, target in links.items():
        if _symlink_escapes(links, path, target):
            raise _error(spec, f"unsafe member {entries[path].origin or path!r}: symlink to "
                               f"{target!r} points outside the tree")


def _symlink_escapes(links: Mapping[str, str], path: str, target: str) -> bool:
    """Resolve ``target`` from the link's directory, following the tree's own symlinks."""
    if target.startswith("/"):
        return True
    current = [part for part in posixpath.dirname(path).split("/") if part]
    pending = deque(target.split("/"))
    hops = 0
    while pending:
        part = pending.popleft()
        if part in ("", "."):
            continue
        if part == "..":
            if not current:
                return True
            current.pop()
            continue
        current.append(part)
        followed = links.get("/".join(current))
        if followed is not None:
            hops += 1
            if hops > _MAX_SYMLINK_HOPS or followed.startswith("/"):
                return True  # a loop, or absolute
            current.pop()
            pending.extendleft(reversed(followed.split("/")))
    return False


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- local


def _prepare_local(spec: SourceSpec, out: Path, cache_dir: Path,
                   timeout: float) -> tuple[None, str]:
    root = Path(os.path.expanduser(spec.location))
    try:
        st = root.stat()
    except OSError as exc:
        raise _error(spec, f"cannot read it: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        return None, _write_archive(spec, _local_entries(spec, root), out)
    if not stat.S_ISREG(st.st_mode):
        raise _error(spec, "not a directory or a regular file")
    if root.name.lower().endswith(TAR_SUFFIXES):
        with _open_tar(spec, root, cache_dir) as tar:
            return None, _write_archive(spec, _tar_entries(spec, tar), out)
    entry = _Entry("file", executable=bool(st.st_mode & 0o111),
                   open=lambda: open(root, "rb"), origin=str(root))
    return None, _write_archive(spec, {root.name: entry}, out)


def _local_entries(spec: SourceSpec, root: Path) -> dict[str, _Entry]:
    """Walk a directory as it is on disk (uncommitted changes too), leaving out ``.git``."""
    roots = {os.path.abspath(root), os.path.realpath(root)}
    entries: dict[str, _Entry] = {}
    stack = [(str(root), "")]
    while stack:
        directory, rel = stack.pop()
        try:
            children = list(os.scandir(directory))
        except OSError as exc:
            raise _error(spec, f"cannot read {directory}: {exc.strerror or exc}") from None
        for child in children:
            if child.name == ".git":
                continue
            path = f"{rel}/{child.name}" if rel else child.name
            try:
                st = child.stat(follow_symlinks=False)
            except OSError as exc:
                raise _error(spec, f"cannot read {child.path}: {exc.strerror or exc}") from None
            if stat.S_ISLNK(st.st_mode):
                target = _local_link_target(spec, roots, child.path, path)
                entries[path] = _Entry("symlink", target=target, origin=path)
            elif stat.S_ISDIR(st.st_mode):
                entries[path] = _Entry("dir", origin=path)
                stack.append((child.path, path))
            elif stat.S_ISREG(st.st_mode):
                entries[path] = _Entry("file", executable=bool(st.st_mode & 0o111),
                                       open=_opener(child.path), origin=path)
            else:
                raise _error(spec, f"{path!r} is a device, fifo or socket; only files, "
                                   f"directories and symlinks can be archived")
    return entries


def _opener(path: str) -> Callable[[], IO[bytes]]:
    return lambda: open(path, "rb")


def _local_link_target(spec: SourceSpec, roots: set[str], link: str, path: str) -> str:
    """A symlink's target; an absolute one into the tree becomes relative, else an error."""
    target = os.readlink(link)
    if not os.path.isabs(target):
        return target
    for root in roots:
        if target == root or target.startswith(root.rstrip("/") + "/"):
            inside = os.path.relpath(target, root)
            return posixpath.relpath(inside, posixpath.dirname(path) or ".")
    raise _error(spec, f"unsafe member {path!r}: symlink to {target!r} points outside the tree")


# --------------------------------------------------------------------------- tar archives


@contextlib.contextmanager
def _open_tar(spec: SourceSpec, path: Path, cache_dir: Path) -> Iterator[tarfile.TarFile]:
    """Open a (possibly compressed) tar for random access, decompressing it to a temp file."""
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix="tar-") as scratch:
        with open(path, "rb") as fh:
            magic = fh.read(6)
        opener = None
        if magic.startswith(b"\x1f\x8b"):
            opener = gzip.open
        elif magic.startswith(b"BZh"):
            opener = bz2.open
        elif magic.startswith(b"\xfd7zXZ\x00"):
            opener = lzma.open
        plain = path
        try:
            if opener is not None:
                plain = Path(scratch) / "plain.tar"
                with opener(path, "rb") as src, open(plain, "wb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
            tar = tarfile.open(plain, mode="r:", encoding="utf-8", errors="surrogateescape")
        except (OSError, EOFError, lzma.LZMAError, tarfile.TarError) as exc:
            raise _error(spec, f"{path.name} is not a readable tar archive: {exc}") from None
        with tar:
            yield tar


def _member_path(spec: SourceSpec, raw: str) -> str:
    """A member's path relative to the archive, or an error if it could leave it."""
    if raw.startswith("/") or re.match(r"[A-Za-z]:[\\/]", raw):
        raise _error(spec, f"unsafe member {raw!r}: absolute path")
    path = posixpath.normpath(raw.replace("\\", "/")) if raw else "."
    if path == ".." or path.startswith("../"):
        raise _error(spec, f"unsafe member {raw!r}: path escapes the archive")
    return "" if path == "." else path


def _tar_entries(spec: SourceSpec, tar: tarfile.TarFile) -> dict[str, _Entry]:
    """Check every member, then describe them as entries (hardlinks become copies)."""
    entries: dict[str, _Entry] = {}
    files: dict[str, tarfile.TarInfo] = {}
    try:
        members = tar.getmembers()
    except tarfile.TarError as exc:
        raise _error(spec, f"corrupt tar archive: {exc}") from None
    for member in members:
        path = _member_path(spec, member.name)
        if member.ischr() or member.isblk() or member.isfifo():
            raise _error(spec, f"unsafe member {member.name!r}: device or fifo")
        if not path:
            if member.isdir():
                continue
            raise _error(spec, f"unsafe member {member.name!r}: not a directory")
        if member.isdir():
            entries[path] = _Entry("dir", origin=member.name)
        elif member.issym():
            target = member.linkname
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
            if not target or target.startswith("/") or resolved == ".." or \
                    resolved.startswith("../"):
                raise _error(spec, f"unsafe member {member.name!r}: symlink to {target!r} "
                                   f"points outside the archive")
            entries[path] = _Entry("symlink", target=target, origin=member.name)
        elif member.islnk():
            if member.linkname.startswith("/"):
                raise _error(spec, f"unsafe member {member.name!r}: hardlink to "
                                   f"{member.linkname!r} points outside the archive")
            target_path = posixpath.normpath(member.linkname)
            if target_path == ".." or target_path.startswith("../"):
                raise _error(spec, f"unsafe member {member.name!r}: hardlink to "
                                   f"{member.linkname!r} points outside the archive")
            source = files.get(target_path)
            if source is None:
                raise _error(spec, f"unsafe member {member.name!r}: hardlink to "
                                   f"{member.linkname!r}, which is not an earlier file")
            entries[path] = _tar_file_entry(tar, source, member.name)
            files[path] = source
        elif member.isreg():
            entries[path] = _tar_file_entry(tar, member, member.name)
            files[path] = member
        else:
            raise _error(spec, f"unsafe member {member.name!r}: unsupported member type "
                               f"{member.type!r}")
    return entries


def _tar_file_entry(tar: tarfile.TarFile, member: tarfile.TarInfo, origin: str) -> _Entry:
    def open_member() -> IO[bytes]:
        data = tar.extractfile(member)
        assert data is not None
        return data

    return _Entry("file", executable=bool(member.mode & 0o111), size=member.size,
                  open=open_member, origin=origin)


# --------------------------------------------------------------------------- url


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follow redirects; credentials go along only to the same scheme, host and port."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        auth = req.unredirected_hdrs.get("Authorization")
        if new is not None and auth and _origin(req.full_url) == _origin(new.full_url):
            new.add_unredirected_header("Authorization", auth)
        return new


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower(), parts.hostname, parts.port


def _split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``https://u:p@host/x`` -> (``https://host/x``, ``u``, ``p``), percent-decoded."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, None, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, has_password, password = userinfo.partition(":")
    clean = urllib.parse.urlunsplit(parts._replace(netloc=hostport))
    return (clean, urllib.parse.unquote(user),
            urllib.parse.unquote(password) if has_password else None)


def _prepare_url(spec: SourceSpec, out: Path, cache_dir: Path,
                 timeout: float) -> tuple[None, str]:
    downloads = cache_dir / "downloads"
    downloads.mkdir(exist_ok=True)
    cached = downloads / spec.sha256 if spec.sha256 else None
    if cached is not None and cached.is_file() and _file_sha256(cached) == spec.sha256:
        _archive_download(spec, cached, out, cache_dir)
        return None, spec.sha256
    fd, tmp_name = tempfile.mkstemp(dir=downloads, prefix=".download-")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            digest = _download(spec, fh, timeout)
        if spec.sha256 and digest != spec.sha256:
            raise SourceError(f"sha256 mismatch for image {spec.name}: expected {spec.sha256}, "
                              f"got {digest} (from {scrub_url(spec.location)})",
                              image=spec.name, location=spec.location)
        if cached is not None:
            os.replace(tmp, cached)
        _archive_download(spec, cached or tmp, out, cache_dir)
        return None, digest
    finally:
        tmp.unlink(missing_ok=True)


def _archive_download(spec: SourceSpec, path: Path, out: Path, cache_dir: Path) -> None:
    """Repack a downloaded tar, or archive the file as ``<name>/<basename>``."""
    if tarfile.is_tarfile(path):
        with _open_tar(spec, path, cache_dir) as tar:
            _write_archive(spec, _tar_entries(spec, tar), out)
    else:
        entry = _Entry("file", open=lambda: open(path, "rb"))
        _write_archive(spec, {_url_basename(spec.location): entry}, out)


def _url_basename(url: str) -> str:
    name = posixpath.basename(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    return "download" if name in ("", ".", "..") or "\0" in name else name


def _download(spec: SourceSpec, fh: IO[bytes], timeout: float) -> str:
    """Stream the URL into ``fh``; returns the sha256 of what was received."""
    url, user, password = _split_credentials(spec.location)
    request = urllib.request.Request(url, headers={"User-Agent": "kiln"})
    if user is not None:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode("ascii")
        request.add_unredirected_header("Authorization", f"Basic {token}")
    handlers: list[urllib.request.BaseHandler] = [_RedirectHandler()]
    ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE")
    if ca_bundle and not os.environ.get("SSL_CERT_FILE"):
        context = ssl.create_default_context(cafile=ca_bundle)
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    digest = hashlib.sha256()
    received = 0
    try:
        with opener.open(request, timeout=timeout) as response:
            expected = response.headers.get("Content-Length")
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                digest.update(chunk)
                fh.write(chunk)
                received += len(chunk)
            if expected and expected.isdigit() and int(expected) != received \
                    and not response.headers.get("Content-Encoding"):
                raise _error(spec, f"download truncated: got {received} of {expected} bytes")
    except urllib.error.HTTPError as exc:
        raise _error(spec, f"download failed: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise _error(spec, f"download failed: {exc.reason}") from None
    except (TimeoutError, HTTPException, OSError, ValueError) as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
        raise _error(spec, f"download failed: {reason}") from None
    return digest.hexdigest()


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
        raise _error(spec, "a git location cannot start with '-'")
    env = {"GIT_TERMINAL_PROMPT": "0"}
    config = ["http.lowSpeedLimit=1", f"http.lowSpeedTime={max(1, round(timeout))}"]
    scheme = urllib.parse.urlsplit(location).scheme.lower() if "://" in location else ""
    clean, user, password = _split_credentials(location) if scheme else (location, None, None)
    if user is not None and scheme in ("http", "https"):
        env.update(KILN_GIT_USERNAME=user, KILN_GIT_PASSWORD=password or "")
        config += ["credential.helper=", f"credential.helper={_CREDENTIAL_HELPER}"]
        location = clean
    elif password is not None:  # ssh and friends: keep the user, drop the password
        parts = urllib.parse.urlsplit(clean)
        location = urllib.parse.urlunsplit(
            parts._replace(netloc=f"{urllib.parse.quote(user or '')}@{parts.netloc}"))
    return _Remote(url=location, env=env, config=tuple(config))


def _prepare_git(spec: SourceSpec, out: Path, cache_dir: Path,
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
            _write_archive(spec, entries, out)
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
        raise _error(spec, f"cannot create git cache {path}: {_git_reason(exc)}") from None


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
        raise _error(spec, f"cannot fetch: {reason}") from None
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
        raise _error(spec, "the repository has no default branch")
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
    raise _error(spec, f"reference {ref!r} not found (no such branch, tag or commit)")


def _git_entries(spec: SourceSpec, repo: git.Repo, commit: str) -> dict[str, _Entry]:
    """The commit's tree (not any working tree), as entries that read blobs lazily."""
    import git  # imported when a git source is used: it is slow to load
    command = [git.Git.GIT_PYTHON_GIT_EXECUTABLE or "git", "ls-tree", "-r", "-t", "-z", "-l",
               "--full-tree", commit]
    listing = repo.git.execute(command, stdout_as_string=False)
    entries: dict[str, _Entry] = {}
    for record in listing.split(b"\0"):
        if not record:
            continue
        meta, _, raw_path = record.partition(b"\t")
        mode, kind, sha, size = meta.decode("ascii").split()
        path = raw_path.decode("utf-8", "surrogateescape")
        if kind == "tree" or kind == "commit":  # a submodule is an empty directory
            entries[path] = _Entry("dir", origin=path)
        elif mode == "120000":
            target = repo.odb.stream(bytes.fromhex(sha)).read()
            entries[path] = _Entry("symlink", target=target.decode("utf-8", "surrogateescape"),
                                   origin=path)
        else:
            entries[path] = _git_blob_entry(repo, sha, int(size), mode == "100755", path)
    return entries


def _git_blob_entry(repo: git.Repo, sha: str, size: int, executable: bool,
                    path: str) -> _Entry:
    def open_blob() -> IO[bytes]:
        return io.BytesIO(repo.odb.stream(bytes.fromhex(sha)).read())

    return _Entry("file", executable=executable, size=size, open=open_blob, origin=path)
