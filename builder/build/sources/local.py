"""A local source: a directory tree (or a tar file) on this machine."""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Callable
from pathlib import Path
from typing import IO

from builder.build.sources.archive import TAR_SUFFIXES, Entry, open_tar, tar_entries, write_archive
from builder.build.sources.spec import SourceSpec, source_error

# --------------------------------------------------------------------------- local


def prepare_local(spec: SourceSpec, out: Path, cache_dir: Path,
                   timeout: float) -> tuple[None, str]:
    root = Path(os.path.expanduser(spec.location))
    try:
        st = root.stat()
    except OSError as exc:
        raise source_error(spec, f"cannot read it: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        return None, write_archive(spec, _local_entries(spec, root), out)
    if not stat.S_ISREG(st.st_mode):
        raise source_error(spec, "not a directory or a regular file")
    if root.name.lower().endswith(TAR_SUFFIXES):
        with open_tar(spec, root, cache_dir) as tar:
            return None, write_archive(spec, tar_entries(spec, tar), out)
    entry = Entry("file", executable=bool(st.st_mode & 0o111),
                   open=lambda: open(root, "rb"), origin=str(root))
    return None, write_archive(spec, {root.name: entry}, out)


def _local_entries(spec: SourceSpec, root: Path) -> dict[str, Entry]:
    """Walk a directory as it is on disk (uncommitted changes too), leaving out ``.git``."""
    roots = {os.path.abspath(root), os.path.realpath(root)}
    entries: dict[str, Entry] = {}
    stack = [(str(root), "")]
    while stack:
        directory, rel = stack.pop()
        try:
            children = list(os.scandir(directory))
        except OSError as exc:
            raise source_error(spec, f"cannot read {directory}: {exc.strerror or exc}") from None
        for child in children:
            if child.name == ".git":
                continue
            path = f"{rel}/{child.name}" if rel else child.name
            try:
                st = child.stat(follow_symlinks=False)
            except OSError as exc:
                raise source_error(spec, f"cannot read {child.path}: "
                                         f"{exc.strerror or exc}") from None
            if stat.S_ISLNK(st.st_mode):
                target = _local_link_target(spec, roots, child.path, path)
                entries[path] = Entry("symlink", target=target, origin=path)
            elif stat.S_ISDIR(st.st_mode):
                entries[path] = Entry("dir", origin=path)
                stack.append((child.path, path))
            elif stat.S_ISREG(st.st_mode):
                entries[path] = Entry("file", executable=bool(st.st_mode & 0o111),
                                       open=_opener(child.path), origin=path)
            else:
                raise source_error(spec, f"{path!r} is a device, fifo or socket; only files, "
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
    raise source_error(spec, f"unsafe member {path!r}: symlink to {target!r} points "
                             f"outside the tree")
