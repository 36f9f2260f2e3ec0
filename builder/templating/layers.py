"""Layered template sets.

A layer is a directory tree. Every directory holding a ``Dockerfile.j2`` (or
the active namespace's ``Dockerfile.<namespace>.j2``) is an image named after
that directory; other directories only group images. The first layer is the
bottom one (the built-in ``templates/`` or ``--templates-dir``), each
``--docker-dir`` a layer above. For each relative path the topmost layer's
file wins, and an upper layer's template may extend the same template of the
layer below.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from builder.errors import TemplateError

TEMPLATE = "Dockerfile.j2"


def variant_template(namespace: str) -> str | None:
    """The file name of a namespace's variant, e.g. Dockerfile.opendev.j2."""
    leaf = namespace.rsplit("/", 1)[-1] if namespace else ""
    return f"Dockerfile.{leaf}.j2" if leaf else None


def is_template_file(filename: str) -> bool:
    return filename.startswith("Dockerfile") and filename.endswith(".j2")


@dataclass(frozen=True)
class Layer:
    index: int
    root: Path
    label: str

    def describe(self) -> str:
        return f"{self.label} layer {self.root}"


@dataclass(frozen=True)
class ImageDef:
    """One image of the set: its name, directory and the templates it renders.

    ``chain`` lists template names bottom first: the generic Dockerfile.j2 of
    every layer that has it, then the namespace variant of every layer that
    has it. The last one is rendered; each may extend the one before it with
    ``{% extends parent_template %}``.
    """

    name: str
    directory: str
    chain: tuple[str, ...]


@dataclass(frozen=True)
class TemplateSet:
    layers: tuple[Layer, ...]
    images: Mapping[str, ImageDef]
    # relative path (posix) -> indexes of the layers holding it, bottom first
    files: Mapping[str, tuple[int, ...]]
    # image name -> relative paths of the files in its directory (not in nested images)
    owned: Mapping[str, tuple[str, ...]]

    def path(self, layer: int, relpath: str) -> Path:
        return self.layers[layer].root / relpath

    def topmost(self, relpath: str) -> int | None:
        layers = self.files.get(relpath)
        return layers[-1] if layers else None

    def context_files(self, image: ImageDef, templates: bool = False) -> dict[str, Path]:
        """Files of an image's build context (nested images excluded; its own
        templates too unless ``templates``).

        Keys are paths relative to the image directory; the topmost layer's
        file wins.
        """
        start = len(image.directory) + 1
        result = {}
        for relpath in self.owned.get(image.name, ()):
            inner = relpath[start:]
            if not templates and "/" not in inner and is_template_file(inner):
                continue
            result[inner] = self.path(self.files[relpath][-1], relpath)
        return result

    def shared_files(self) -> dict[str, Path]:
        """The set's files outside every image directory (e.g. ``macros.j2``),
        by relative path; the topmost layer's file wins."""
        owned = {relpath for paths in self.owned.values() for relpath in paths}
        return {relpath: self.path(layers[-1], relpath)
                for relpath, layers in sorted(self.files.items()) if relpath not in owned}


def load_template_set(bottom: Path, upper: Sequence[Path] = (),
                      namespace: str = "") -> TemplateSet:
    roots = [(bottom, "base")] + [(p, f"docker-dir {i}")
                                  for i, p in enumerate(upper, 1)]
    layers = tuple(Layer(i, Path(root), label)
                   for i, (root, label) in enumerate(roots))
    variant = variant_template(namespace)
    files: dict[str, list[int]] = {}
    found: dict[str, str] = {}  # image name -> directory
    for layer in layers:
        if not layer.root.is_dir():
            what = ("is not a directory" if os.path.lexists(layer.root)
                    else "does not exist")
            raise TemplateError(f"template directory {layer.root} ({layer.label} "
                                f"layer) {what}")
        layer_images: dict[str, str] = {}
        for directory, filenames in _walk(layer.root):
            for filename in filenames:
                relpath = f"{directory}/{filename}" if directory else filename
                files.setdefault(relpath, []).append(layer.index)
            if directory and (TEMPLATE in filenames or variant in filenames):
                _add_image(layer, directory, layer_images, found)
    images = {}
    for name, directory in sorted(found.items()):
        chain = [f"@{i}/{directory}/{TEMPLATE}"
                 for i in files.get(f"{directory}/{TEMPLATE}", ())]
        if variant:
            chain += [f"@{i}/{directory}/{variant}"
                      for i in files.get(f"{directory}/{variant}", ())]
        images[name] = ImageDef(name, directory, tuple(chain))
    return TemplateSet(layers, images,
                       {k: tuple(v) for k, v in files.items()},
                       _owners(files, images))


def _owners(files: Iterable[str], images: Mapping[str, ImageDef]
            ) -> dict[str, tuple[str, ...]]:
    """Group file paths by the innermost image directory holding them."""
    by_directory = {image.directory: name for name, image in images.items()}
    owned: dict[str, list[str]] = {}
    for relpath in sorted(files):
        directory = relpath.rpartition("/")[0]
        while directory and directory not in by_directory:
            directory = directory.rpartition("/")[0]
        if directory:
            owned.setdefault(by_directory[directory], []).append(relpath)
    return {name: tuple(paths) for name, paths in owned.items()}


def _add_image(layer: Layer, directory: str, layer_images: dict[str, str],
               found: dict[str, str]) -> None:
    name = directory.rsplit("/", 1)[-1]
    if name in layer_images:
        raise TemplateError(
            f"two images named {name!r} in the {layer.describe()}: "
            f"{layer.root / layer_images[name]} and {layer.root / directory}")
    layer_images[name] = directory
    known = found.setdefault(name, directory)
    if known != directory:
        raise TemplateError(
            f"image {name!r} is at {known}/ in a lower layer but at "
            f"{directory}/ in the {layer.describe()}; a layer overrides an "
            f"image at the same relative path")


def _walk(root: Path) -> Iterator[tuple[str, list[str]]]:
    """Yield (relative posix dir, file names) for every directory, sorted.

    Top-down like ``os.walk(root, followlinks=True)`` (hidden directories and
    ``__pycache__``, which pip writes next to an installed set's ``.py`` files,
    skipped; unreadable ones ignored), with one ``scandir`` per directory and
    relative paths built as it goes rather than computed back from each one.

    A symbolic link to a directory is followed only if it stays inside the
    layer and does not lead back to a directory it was reached from (else a
    link to ``/`` would walk the whole file system and a loop would never
    end); such a link is listed as a file instead, and refused with a message
    naming it if an image's build context holds it.
    """
    real_root = os.path.realpath(root)
    # (relative dir, its path, real paths of the directories on the way, itself last)
    pending = [("", os.fspath(root), (real_root,))]
    while pending:
        relative, directory, way = pending.pop()
        try:
            with os.scandir(directory) as scan:
                entries = list(scan)
        except OSError:
            continue
        filenames, dirnames = [], []
        for entry in entries:
            try:
                is_dir = entry.is_dir()  # follows symbolic links
            except OSError:
                is_dir = False
            if not is_dir:
                filenames.append(entry.name)
            elif not entry.name.startswith(".") and entry.name != "__pycache__":
                if entry.is_symlink():
                    real = os.path.realpath(entry.path)
                    if not _inside(real, real_root) or _inside(way[-1], real) \
                            or real in way:
                        filenames.append(entry.name)  # not followed: see above
                        continue
                else:
                    real = os.path.join(way[-1], entry.name)
                dirnames.append((entry.name, real))
        filenames.sort()
        yield relative, filenames
        dirnames.sort(reverse=True)  # popped last first: visited in order
        pending.extend((f"{relative}/{name}" if relative else name,
                        os.path.join(directory, name), (*way, real))
                       for name, real in dirnames)


def _inside(path: str, directory: str) -> bool:
    """Whether ``path`` is ``directory`` or below it (both real, absolute)."""
    return path == directory or path.startswith(directory.rstrip("/") + "/")


_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISDIR, "a directory"))


def file_kind(mode: int) -> str:
    """What a file is, in words, from its ``st_mode``."""
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return "a regular file" if stat.S_ISREG(mode) else "a special file"


class NotRegularFile(OSError):
    """Raised by :func:`read_regular` for a FIFO, device, socket or directory."""

    def __init__(self, path: str | os.PathLike, kind: str):
        super().__init__(f"{os.fspath(path)} is {kind}, not a regular file")
        self.path = os.fspath(path)
        self.kind = kind


def read_regular(path: str | os.PathLike, follow: bool = True) -> tuple[bytes, int]:
    """A regular file's bytes and ``st_mode``, never blocking nor reading without end.

    The file is opened without blocking (a FIFO would wait for a writer) and,
    unless ``follow``, without following a final symbolic link; then checked
    to be a regular file, and read up to the size it had when opened (a
    device or a growing file cannot make it read for ever).
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(path, file_kind(info.st_mode))
        size = info.st_size
        chunks, total = [], 0
        while total < size:
            chunk = os.read(fd, size - total)
            if not chunk:
                break  # it shrank: what is left is the file
            chunks.append(chunk)
            total += len(chunk)
    finally:
        os.close(fd)
    return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), info.st_mode
