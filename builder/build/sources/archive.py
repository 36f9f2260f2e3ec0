"""The reproducible, self-contained tar every source becomes; reading tars to unpack."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import lzma
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from builder.build.sources.spec import SourceSpec, source_error

FIXED_MTIME = 946684800  # 2000-01-01T00:00:00Z: every archive member and context file
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
CHUNK = 1 << 20
_MAX_SYMLINK_HOPS = 40


# --------------------------------------------------------------------------- archive writer


@dataclass(frozen=True)
class Entry:
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


def write_archive(spec: SourceSpec, entries: Mapping[str, Entry], out: Path) -> str:
    """Write the reproducible tar; returns a digest over paths, kinds, modes and contents."""
    entries = dict(entries)
    _check_tree(spec, entries)
    for path in list(entries):
        parent = posixpath.dirname(path)
        while parent and parent not in entries:
            entries[parent] = Entry("dir")
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


def _add_file(spec: SourceSpec, tar: tarfile.TarFile, name: str, entry: Entry) -> str:
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
        raise source_error(spec, f"cannot read {entry.origin or name}: "
                           f"{exc.strerror or exc}") from None
    return reader.hash.hexdigest()


def _check_tree(spec: SourceSpec, entries: Mapping[str, Entry]) -> None:
    """No member under a symlink or a file; every symlink resolves inside the tree."""
    links = {path: e.target for path, e in entries.items() if e.kind == "symlink"}
    for path, entry in entries.items():
        parent = posixpath.dirname(path)
        while parent:
            above = entries.get(parent)
            if above is not None and above.kind != "dir":
                raise source_error(spec, f"unsafe member {entry.origin or path!r}: it lies under "
                                   f"{above.kind} {entries[parent].origin or parent!r}")
            parent = posixpath.dirname(parent)
    for path, target in links.items():
        if _symlink_escapes(links, path, target):
            raise source_error(spec, f"unsafe member {entries[path].origin or path!r}: symlink to "
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


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- tar archives


@contextlib.contextmanager
def open_tar(spec: SourceSpec, path: Path, cache_dir: Path) -> Iterator[tarfile.TarFile]:
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
                    shutil.copyfileobj(src, dst, CHUNK)
            tar = tarfile.open(plain, mode="r:", encoding="utf-8", errors="surrogateescape")
        except (OSError, EOFError, lzma.LZMAError, tarfile.TarError) as exc:
            raise source_error(spec, f"{path.name} is not a readable tar archive: {exc}") from None
        with tar:
            yield tar


def _member_path(spec: SourceSpec, raw: str) -> str:
    """A member's path relative to the archive, or an error if it could leave it."""
    if raw.startswith("/") or re.match(r"[A-Za-z]:[\\/]", raw):
        raise source_error(spec, f"unsafe member {raw!r}: absolute path")
    path = posixpath.normpath(raw.replace("\\", "/")) if raw else "."
    if path == ".." or path.startswith("../"):
        raise source_error(spec, f"unsafe member {raw!r}: path escapes the archive")
    return "" if path == "." else path


def tar_entries(spec: SourceSpec, tar: tarfile.TarFile) -> dict[str, Entry]:
    """Check every member, then describe them as entries (hardlinks become copies)."""
    entries: dict[str, Entry] = {}
    files: dict[str, tarfile.TarInfo] = {}
    try:
        members = tar.getmembers()
    except tarfile.TarError as exc:
        raise source_error(spec, f"corrupt tar archive: {exc}") from None
    for member in members:
        path = _member_path(spec, member.name)
        if member.ischr() or member.isblk() or member.isfifo():
            raise source_error(spec, f"unsafe member {member.name!r}: device or fifo")
        if not path:
            if member.isdir():
                continue
            raise source_error(spec, f"unsafe member {member.name!r}: not a directory")
        if member.isdir():
            entries[path] = Entry("dir", origin=member.name)
        elif member.issym():
            target = member.linkname
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
            if not target or target.startswith("/") or resolved == ".." or \
                    resolved.startswith("../"):
                raise source_error(spec, f"unsafe member {member.name!r}: symlink to {target!r} "
                                   f"points outside the archive")
            entries[path] = Entry("symlink", target=target, origin=member.name)
        elif member.islnk():
            if member.linkname.startswith("/"):
                raise source_error(spec, f"unsafe member {member.name!r}: hardlink to "
                                   f"{member.linkname!r} points outside the archive")
            target_path = posixpath.normpath(member.linkname)
            if target_path == ".." or target_path.startswith("../"):
                raise source_error(spec, f"unsafe member {member.name!r}: hardlink to "
                                   f"{member.linkname!r} points outside the archive")
            source = files.get(target_path)
            if source is None:
                raise source_error(spec, f"unsafe member {member.name!r}: hardlink to "
                                   f"{member.linkname!r}, which is not an earlier file")
            entries[path] = _tar_file_entry(tar, source, member.name)
            files[path] = source
        elif member.isreg():
            entries[path] = _tar_file_entry(tar, member, member.name)
            files[path] = member
        else:
            raise source_error(spec, f"unsafe member {member.name!r}: unsupported member type "
                               f"{member.type!r}")
    return entries


def _tar_file_entry(tar: tarfile.TarFile, member: tarfile.TarInfo, origin: str) -> Entry:
    def open_member() -> IO[bytes]:
        data = tar.extractfile(member)
        assert data is not None
        return data

    return Entry("file", executable=bool(member.mode & 0o111), size=member.size,
                  open=open_member, origin=origin)
