"""Installed packages read from an image's files, without starting a container.

An engine that can show an image's root filesystem on this host (Docker's
overlay2 layer directories, podman's and buildah's ``image mount``) hands
:func:`scan_packages` an :class:`ImageFiles`; reading the package databases
then costs no container. The result has the shape of
:func:`builder.build.labels.parse_packages` (``{"deb": {name: version}, ...}``).

What is read:
- deb: ``/var/lib/dpkg/status`` (packages whose status is ``installed``), with
  python-debian's deb822 parser: the version is the ``Version`` field, as
  ``dpkg-query -W`` prints it;
- apk: ``/lib/apk/db/installed`` (``P:``/``V:`` records);
- pypi: the ``*.dist-info`` and ``*.egg-info`` metadata of every
  ``site-packages``/``dist-packages`` directory of the Python prefixes on the
  image's ``PATH`` (a venv's ``bin`` on ``PATH`` gives the venv), plus Debian's
  ``/usr/lib/python3/dist-packages``: what the ``python3`` interpreters on
  ``PATH`` would find;
- rpm: not read from files (the rpm database needs rpm to read it):
  :func:`scan_packages` raises :class:`NeedsContainer` when an rpm database is
  present, and the caller runs the scan in a container instead.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterable, Iterator, Sequence
from email.parser import HeaderParser
from pathlib import Path

MAX_LINKS = 40                  # symbolic links followed in one path, like the kernel
MAX_DATABASE = 256 << 20        # bytes read of one package database at most
MAX_METADATA = 1 << 20          # bytes read of one Python distribution's metadata
RPM_DATABASES = ("/var/lib/rpm/rpmdb.sqlite", "/var/lib/rpm/Packages",
                 "/usr/lib/sysimage/rpm/rpmdb.sqlite", "/usr/lib/sysimage/rpm/Packages")
DEBIAN_DIST_PACKAGES = "/usr/lib/python3/dist-packages"
# Docker's default PATH, which a container gets when its image sets none.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class NeedsContainer(Exception):
    """The image's packages cannot all be read from its files (an rpm database)."""


class ImageFiles:
    """A read-only view of an image's root filesystem made of layer directories.

    ``layers`` are host directories, the top layer first, merged as overlayfs
    merges them: a name in a higher layer hides the same name below; a
    character device 0/0 is a whiteout (the name is deleted); a directory with
    the ``trusted.overlay.opaque`` attribute hides everything below it. A
    single directory (a mounted image) is a one-layer view. Symbolic links
    resolve inside the image, never on the host. ``path_env`` is the image's
    ``PATH`` (what a container of it would get).
    """

    def __init__(self, layers: Sequence[Path | str], path_env: str = DEFAULT_PATH):
        self.path_env = path_env
        self._layers = [Path(layer) for layer in layers]
        if not self._layers:
            raise ValueError("an image view needs at least one layer")

    # -- public -----------------------------------------------------------------
    def read(self, path: str, limit: int) -> bytes | None:
        """The content of the regular file at ``path`` (at most ``limit`` bytes), or None."""
        found = self._find(path)
        if found is None or not stat.S_ISREG(found[2].st_mode):
            return None
        with open(found[1], "rb") as stream:
            return stream.read(limit)

    def listdir(self, path: str) -> list[str]:
        """The names in the directory at ``path`` (empty if it is missing or no directory)."""
        relative = self._canonical(path)
        found = None if relative is None else self._lookup(relative)
        if found is None or not stat.S_ISDIR(found[2].st_mode):
            return []
        parts = relative.split("/") if relative else []
        names: set[str] = set()
        hidden: set[str] = set()
        for layer in self._layers[found[0]:]:
            directory = layer.joinpath(*parts)
            try:
                info = os.lstat(directory)
            except (FileNotFoundError, NotADirectoryError):
                if self._hides_below(layer, [*parts, ""]):
                    break
                continue
            if not stat.S_ISDIR(info.st_mode):
                break                                 # a whiteout or a file: nothing below
            for entry in os.scandir(directory):
                if entry.name in hidden or entry.name in names:
                    continue
                (hidden if _is_whiteout(entry.path) else names).add(entry.name)
            if _is_opaque(directory):
                break
        return sorted(names)

    def exists(self, path: str) -> bool:
        return self._find(path) is not None

    # -- lookup -----------------------------------------------------------------
    def _find(self, path: str) -> tuple[int, Path, os.stat_result] | None:
        relative = self._canonical(path)
        return None if relative is None else self._lookup(relative)

    def _lookup(self, relative: str) -> tuple[int, Path, os.stat_result] | None:
        """(layer index, host path, lstat) of the topmost ``relative``, no link followed."""
        parts = relative.split("/") if relative else []
        for index, layer in enumerate(self._layers):
            host = layer.joinpath(*parts)
            try:
                info = os.lstat(host)
            except (FileNotFoundError, NotADirectoryError):
                if self._hides_below(layer, parts):
                    return None
                continue
            if stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:
                return None                           # a whiteout
            return index, host, info
        return None

    @staticmethod
    def _hides_below(layer: Path, parts: list[str]) -> bool:
        """Whether an ancestor of ``parts`` in ``layer`` hides the lower layers' copy:
        a whiteout, a non-directory or an opaque directory."""
        for depth in range(1, len(parts)):
            ancestor = layer.joinpath(*parts[:depth])
            try:
                info = os.lstat(ancestor)
            except (FileNotFoundError, NotADirectoryError):
                return False
            if not stat.S_ISDIR(info.st_mode) or _is_opaque(ancestor):
                return True
        return False

    def _canonical(self, path: str) -> str | None:
        """``path`` relative to the root, its links resolved in the image; None if missing."""
        pending = [part for part in path.split("/") if part not in ("", ".")]
        resolved: list[str] = []
        links = 0
        while pending:
            part = pending.pop(0)
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            found = self._lookup("/".join([*resolved, part]))
            if found is None:
                return None
            if stat.S_ISLNK(found[2].st_mode):
                links += 1
                if links > MAX_LINKS:
                    return None
                target = os.readlink(found[1])
                if target.startswith("/"):
                    resolved = []
                pending = [p for p in target.split("/") if p not in ("", ".")] + pending
                continue
            resolved.append(part)
        return "/".join(resolved)


def _is_whiteout(host: str) -> bool:
    try:
        info = os.lstat(host)
    except OSError:
        return False
    return stat.S_ISCHR(info.st_mode) and info.st_rdev == 0


def _is_opaque(directory: Path) -> bool:
    try:
        return os.getxattr(directory, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


# -- the scan ---------------------------------------------------------------------
def scan_packages(files: ImageFiles, path_env: str | None = None
                  ) -> dict[str, dict[str, str]]:
    """Installed packages, as the container scan reports them; NeedsContainer for rpm.

    ``path_env``: the ``PATH`` to find the Python prefixes on (default: the image's).
    """
    path_env = files.path_env if path_env is None else path_env
    if any(files.exists(database) for database in RPM_DATABASES):
        raise NeedsContainer("the image has an rpm database")
    packages: dict[str, dict[str, str]] = {}
    status = files.read("/var/lib/dpkg/status", MAX_DATABASE)
    if status is not None:
        packages["deb"] = dict(_dpkg_installed(status))
    apk = files.read("/lib/apk/db/installed", MAX_DATABASE)
    if apk is not None:
        packages["apk"] = dict(_apk_installed(apk))
    python = dict(_python_distributions(files, path_env))
    if python:
        packages["pypi"] = python
    return {kind: dict(sorted(items.items()))
            for kind, items in sorted(packages.items()) if items}


def _dpkg_installed(status: bytes) -> Iterator[tuple[str, str]]:
    from debian.deb822 import Deb822

    for paragraph in Deb822.iter_paragraphs(status.decode("utf-8", "replace").splitlines(),
                                            use_apt_pkg=False):
        state = paragraph.get("Status", "").split()
        if paragraph.get("Package") and paragraph.get("Version") \
                and state[-1:] == ["installed"]:
            yield paragraph["Package"], paragraph["Version"]


def _apk_installed(database: bytes) -> Iterator[tuple[str, str]]:
    for record in database.decode("utf-8", "replace").split("\n\n"):
        fields = dict(line.split(":", 1) for line in record.splitlines() if line[1:2] == ":")
        if fields.get("P") and fields.get("V"):
            yield fields["P"], fields["V"]


def _python_distributions(files: ImageFiles, path_env: str) -> Iterator[tuple[str, str]]:
    for directory in _site_directories(files, path_env):
        for entry in files.listdir(directory):
            if entry.endswith(".dist-info"):
                metadata = files.read(f"{directory}/{entry}/METADATA", MAX_METADATA)
            elif entry.endswith(".egg-info"):
                metadata = (files.read(f"{directory}/{entry}/PKG-INFO", MAX_METADATA)
                            or files.read(f"{directory}/{entry}", MAX_METADATA))
            else:
                continue
            if metadata:
                headers = HeaderParser().parsestr(metadata.decode("utf-8", "replace"),
                                                  headersonly=True)
                name, version = headers.get("Name"), headers.get("Version")
                if name and version:
                    yield name.strip().lower(), version.strip()


def _site_directories(files: ImageFiles, path_env: str) -> list[str]:
    """Site directories of the Python prefixes on PATH that have a python3."""
    prefixes = _unique(posixpath.dirname(posixpath.normpath(entry))
                       for entry in path_env.split(":") if entry.startswith("/")
                       and any(name.startswith("python3") for name in files.listdir(entry)))
    directories = []
    for prefix in prefixes:
        lib = posixpath.join(prefix, "lib")
        for version in files.listdir(lib):
            if version.startswith("python3"):
                for kind in ("site-packages", "dist-packages"):
                    directories.append(posixpath.join(lib, version, kind))
        if prefix == "/usr":
            directories.append(DEBIAN_DIST_PACKAGES)
    return _unique(directories)


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def path_of(env: Iterable[str] | None) -> str:
    """The ``PATH`` of an image's ``Env`` list (``["PATH=...", ...]``), or Docker's default."""
    for entry in env or ():
        if entry.startswith("PATH="):
            return entry[len("PATH="):]
    return DEFAULT_PATH


def readable_layers(directories: Iterable[str]) -> list[Path] | None:
    """The layer directories as paths if this process can read every one, else None."""
    layers = [Path(directory) for directory in directories if directory]
    if not layers:
        return None
    for layer in layers:
        if not (layer.is_dir() and os.access(layer, os.R_OK | os.X_OK)):
            return None
    return layers
