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
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).touch()
    return path


def write_context(image: RenderedImage, work_dir: Path) -> Path:
    """Write one image's build context, replacing what an earlier run left."""
    target = work_dir / image.name
    if target.exists():
        shutil.rmtree(target)
    target.mkdir()
    _write(target / "Dockerfile", image.dockerfile.encode("utf-8"), 0o644)
    for relpath, source in image.context_files.items():
        destination = target / relpath
        destination.parent.mkdir(parents=True, exist_ok=True)
        mode = 0o755 if os.stat(source).st_mode & 0o111 else 0o644
        shutil.copyfile(source, destination)
        os.chmod(destination, mode)
    _fix_times(target)
    return target


def _write(path: Path, data: bytes, mode: int) -> None:
    path.write_bytes(data)
    os.chmod(path, mode)


def _fix_times(root: Path) -> None:
    for current, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            os.utime(os.path.join(current, name), (FIXED_MTIME, FIXED_MTIME))
        for name in dirnames:
            os.chmod(os.path.join(current, name), 0o755)
            os.utime(os.path.join(current, name), (FIXED_MTIME, FIXED_MTIME))
    os.utime(root, (FIXED_MTIME, FIXED_MTIME))
