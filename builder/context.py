"""Build contexts on disk: ``<work-dir>/<image>/Dockerfile`` and the image's files.

Every file and directory written gets the same fixed mtime and a normalised
mode, so the same inputs always give byte-identical contexts (and an engine's
layer cache keeps hitting).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from builder.exceptions import ConfigError
from builder.render import RenderedImage

FIXED_MTIME = 946684800  # 2000-01-01T00:00:00Z
MARKER = ".kiln-work-dir"


def prepare_work_dir(path: Path | None) -> Path:
    """Create (or reuse) the work dir; never clobber a directory kiln did not make."""
    if path is None:
        path = Path(tempfile.mkdtemp(prefix="kiln-"))
    path = path.resolve()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--work-dir {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not (path / MARKER).exists():
        raise ConfigError(
            f"--work-dir {path} is not empty and was not made by kiln; "
            f"choose an empty or new directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        (path / MARKER).touch()
    except OSError as exc:
        raise ConfigError(f"--work-dir {path}: cannot create it: "
                          f"{exc.strerror or exc}") from exc
    return path


def write_context(image: RenderedImage, work_dir: Path) -> Path:
    """Write one image's build context, replacing what an earlier run left."""
    target = work_dir / image.name
    if os.path.lexists(target):
        shutil.rmtree(target)
    os.mkdir(target, 0o755)
    directories = {"": target}
    _write(os.path.join(target, "Dockerfile"), image.dockerfile.encode("utf-8"), 0o644)
    for relpath, source in image.context_files.items():
        parent = _directory(directories, target, os.path.dirname(relpath))
        with open(source, "rb") as stream:
            mode = 0o755 if os.fstat(stream.fileno()).st_mode & 0o111 else 0o644
            data = stream.read()
        _write(os.path.join(parent, os.path.basename(relpath)), data, mode)
    # deepest first: writing into a directory changes its mtime
    for path in sorted(directories.values(), key=lambda p: str(p).count(os.sep),
                       reverse=True):
        os.chmod(path, 0o755)
        os.utime(path, (FIXED_MTIME, FIXED_MTIME))
    return target


def _directory(known: dict[str, Path | str], root: Path, relpath: str) -> Path | str:
    """Make (once) the directory ``relpath`` under ``root`` and its parents."""
    if relpath not in known:
        _directory(known, root, os.path.dirname(relpath))
        path = os.path.join(root, relpath)
        os.mkdir(path, 0o755)
        known[relpath] = path
    return known[relpath]


def _write(path: str, data: bytes, mode: int) -> None:
    """A new file with exactly ``mode`` (whatever the umask) and the fixed mtime."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, mode)
        os.utime(fd, (FIXED_MTIME, FIXED_MTIME))
    finally:
        os.close(fd)
