"""Sources from sibling checkouts (``--source-root``, Zuul's ``src/`` layout).

A ``git`` source whose location is ``scheme://HOST/PATH[.git]`` is taken from
``ROOT/HOST/PATH`` when that directory exists, as its working tree is now
(the commit Zuul prepared plus any uncommitted change, ``.git`` left out),
exactly as a ``local`` source would be. The prepared source keeps the git
location, records the checkout's commit and whether it is dirty, and is
marked speculative; its fingerprint counts the tree's content only.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from builder.build.sources.local import prepare_local
from builder.build.sources.spec import SourceSpec


def sibling_checkout(spec: SourceSpec, roots: Sequence[Path]) -> Path | None:
    """``ROOT/HOST/PATH`` for a git source at ``scheme://HOST/PATH[.git]``, if one exists."""
    if spec.type != "git" or not roots:
        return None
    parts = urllib.parse.urlsplit(spec.location)
    if not parts.scheme or not parts.hostname:
        return None
    path = parts.path.strip("/").removesuffix(".git").strip("/")
    components = path.split("/")
    if not path or any(c in ("", ".", "..") for c in components):
        return None
    for root in roots:
        candidate = Path(root, parts.hostname, *components)
        if candidate.is_dir():
            return candidate
    return None


def prepare_sibling(spec: SourceSpec, checkout: Path, out: Path, cache_dir: Path,
                    timeout: float) -> tuple[str | None, str, bool | None]:
    """Archive the checkout's working tree: (commit, content digest, dirty)."""
    local = dataclasses.replace(spec, type="local", location=str(checkout), reference=None)
    _, content = prepare_local(local, out, cache_dir, timeout)
    commit, dirty = _git_state(checkout)
    return commit, content, dirty


def _git_state(checkout: Path) -> tuple[str | None, bool | None]:
    import git  # GitPython is slow to load: only when a sibling checkout is used

    try:
        repo = git.Repo(checkout)
        with repo:
            return repo.head.commit.hexsha, repo.is_dirty(untracked_files=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError, git.GitCommandError,
            ValueError):
        return None, None
