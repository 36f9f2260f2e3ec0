"""The files kolla-build adds to build contexts that are not templates.

kolla-build 23.0.0 writes, besides the rendered Dockerfiles and the template
tree's files:

- ``<image>/patches/`` in every image's context (empty unless
  ``--patches-path`` has a ``<image>/`` directory): the ``series`` file of
  ``<patches-path>/<image>/`` and every patch it lists (lines starting with
  ``#`` left out, listed files that do not exist skipped silently);
- ``base/sources.list`` from ``--apt-sources-list`` and
  ``base/apt_preferences`` from ``--apt-preferences``, replacing the
  template tree's files of those names.

(Plugins and additions, which kolla-build packs only when it builds, are
made with the other sources: :mod:`builder.build.sources.kolla_archives`.)
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from pathlib import Path

from builder.errors import ConfigError
from builder.templating.api import ContextAdditions
from builder.templating.kolla.settings import KollaSettings

PATCHES = "patches"
SERIES = "series"
BASE = "base"


def context_additions(settings: KollaSettings) -> Callable[[str], ContextAdditions]:
    """image name -> the files and directories kolla-build adds to its context."""
    patches_root = (Path(os.path.expanduser(settings.patches_path))
                    if settings.patches_path else None)
    if patches_root is not None and not patches_root.is_dir():
        patches_root = None  # kolla-build ignores a --patches-path that is not a directory
    apt_files = {name: Path(os.path.expanduser(path)) for name, path in (
        ("sources.list", settings.apt_sources_list),
        ("apt_preferences", settings.apt_preferences)) if path}

    def additions(image: str) -> ContextAdditions:
        files = patch_files(patches_root / image) if patches_root is not None else {}
        if image == BASE:
            files.update(apt_files)
        return ContextAdditions(files=files, dirs=(PATCHES,))

    return additions


def patch_files(folder: Path) -> dict[str, Path]:
    """``patches/series`` and the patches it lists, as kolla-build copies them."""
    series = folder / SERIES
    if not folder.is_dir() or not series.is_file():
        return {}
    files = {f"{PATCHES}/{SERIES}": series}
    with open(series, encoding="utf-8", errors="surrogateescape") as fh:
        lines = fh.readlines()
    for number, line in enumerate(lines, 1):
        if line.startswith("#"):
            continue
        name = line.strip()
        if not name:
            continue
        relpath = posixpath.normpath(name)
        if name.startswith("/") or relpath == ".." or relpath.startswith("../"):
            raise ConfigError(f"patch {name!r} is outside {folder}", path=str(series),
                              line=number)
        if (folder / relpath).is_file():
            files[f"{PATCHES}/{relpath}"] = folder / relpath
    return files
