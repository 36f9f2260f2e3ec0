"""Kolla's plugins and additions: ``plugins-archive`` and ``additions-archive``.

A source section named ``<image>-plugin-<name>`` (or ``<image>-additions-<name>``),
e.g. ``[neutron-server-plugin-networking-sfc]``, is a plugin (an addition) of
that image. kolla-build 23.0.0 makes both archives in the context of every
image it builds (Kolla's templates ``ADD plugins-archive /``), empty when
there is nothing to pack, and so does kiln with ``--template-api kolla``.

Layout, as kolla-build's: a plain tar (PAX) whose first member is the
directory ``plugins/`` (``additions/``); under it each source's tree, under
the name kolla-build gives it: the directory's own name for a ``local``
directory; the tar's own members for a ``local`` tar file or a ``url``
download; ``<section>-archive-<reference with / as ->`` for ``git``. Members
sorted (parents first), owner ``root`` 0/0, mtime 0.

What differs from kolla-build, on purpose: each source is prepared as every
kiln source is (:func:`builder.build.sources.fetch.prepare_source`), so modes
are normalised (0755 directories and executables, 0644 other files), a git
tree comes without its ``.git`` directory (a clone's ``.git`` differs from
one clone to the next, which would change the image at every run), hardlinks
are copies, and no unpacked ``plugins/`` directory or per-plugin
``<section>-archive`` is left in the context (no template reads them).

An image's own source (``<image>-archive``) gets the same layout, without the
``plugins/`` level (:func:`kolla_layout`): Kolla's templates ``ADD`` it and
link ``<image>-source/*``, so its top directory is the one kolla-build gives.
A tar file or a download is repacked rather than copied as it is: the same
members, but owned by root, mtime 0 and modes normalised.
"""

from __future__ import annotations

import contextlib
import os
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from builder.build.sources.archive import FIXED_MTIME, TAR_SUFFIXES, file_sha256
from builder.build.sources.fetch import prepare_source
from builder.build.sources.sections import KollaExtras
from builder.build.sources.spec import PreparedSource, SourceSpec, source_error


def write_kolla_archives(extras: KollaExtras, context: Path, cache_dir: Path,
                         timeout: float = 60.0,
                         source_roots: Sequence[Path] = ()) -> tuple[PreparedSource, ...]:
    """Write ``plugins-archive`` and ``additions-archive`` into ``context``;
    return the sources packed (each naming the archive it went into)."""
    prepared: list[PreparedSource] = []
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix="kolla-archives-") as scratch:
        for kind, specs in (("plugins", extras.plugins), ("additions", extras.additions)):
            out = context / f"{kind}-archive"
            with contextlib.ExitStack() as stack:
                members: dict[str, tuple[tarfile.TarFile, tarfile.TarInfo]] = {}
                for spec in specs:
                    if not spec.enabled:
                        continue
                    source = prepare_source(spec, Path(scratch), cache_dir, timeout,
                                            source_roots)
                    tar = stack.enter_context(tarfile.open(source.archive, "r:"))
                    _merge(spec, tar, _top_name(spec), members)
                    prepared.append(replace(source, archive=out))
                _write(kind, members, out)
    return tuple(prepared)


def kolla_layout(spec: SourceSpec, source: PreparedSource) -> PreparedSource:
    """Rewrite an image's own source archive (kiln's, under ``<image>/``) in
    kolla-build's layout."""
    if _plain_file(spec):
        return source  # not a tree: kiln's layout (kolla-build ADDs the file as it is)
    with tarfile.open(source.archive, "r:") as tar:
        members: dict[str, tuple[tarfile.TarFile, tarfile.TarInfo]] = {}
        _merge(spec, tar, _top_name(spec), members)
        _write(None, members, source.archive)
    return replace(source, sha256=file_sha256(source.archive))


def _top_name(spec: SourceSpec) -> str | None:
    """The directory kolla-build unpacks a source's tree into (None: the tar's own names)."""
    if spec.type == "git":
        return f"{spec.name}-archive-{(spec.reference or 'HEAD').replace('/', '-')}"
    location = Path(os.path.normpath(os.path.expanduser(spec.location)))
    if spec.type == "local" and location.is_dir():
        return location.name
    if _plain_file(spec):
        raise source_error(spec, "a plugin or addition must be a directory or a tar "
                                 "archive (kolla-build refuses it too)")
    return None


def _plain_file(spec: SourceSpec) -> bool:
    """A local source that is neither a directory nor a tar archive."""
    if spec.type != "local":
        return False
    location = Path(os.path.expanduser(spec.location))
    return location.is_file() and not (location.name.lower().endswith(TAR_SUFFIXES)
                                        or tarfile.is_tarfile(location))


def _merge(spec: SourceSpec, tar: tarfile.TarFile, top: str | None,
           members: dict[str, tuple[tarfile.TarFile, tarfile.TarInfo]]) -> None:
    """Add a kiln source archive's members (all under ``<section>/``), renamed."""
    for member in tar.getmembers():
        inner = member.name.rstrip("/").partition("/")[2]
        if not inner and top is None:
            continue
        path = f"{top}/{inner}" if top and inner else (top or inner)
        earlier = members.get(path)
        if earlier is not None and earlier[1].isdir() != member.isdir():
            raise source_error(spec, f"{path!r} is a directory in one plugin or addition "
                                     f"of the image and a file in another")
        members[path] = (tar, member)


def _write(kind: str | None, members: Mapping[str, tuple[tarfile.TarFile, tarfile.TarInfo]],
           out: Path) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    try:
        with os.fdopen(fd, "wb") as fh, tarfile.open(fileobj=fh, mode="w",
                                                     format=tarfile.PAX_FORMAT) as tar:
            if kind is not None:
                tar.addfile(_info(kind, tarfile.DIRTYPE, 0o755))
            for path in sorted(members, key=lambda p: p.split("/")):
                source, member = members[path]
                name = f"{kind}/{path}" if kind is not None else path
                info = _info(name, member.type, member.mode | 0o200)
                if member.issym():
                    info.linkname = member.linkname
                    tar.addfile(info)
                elif member.isreg():
                    info.size = member.size
                    tar.addfile(info, source.extractfile(member))
                else:
                    tar.addfile(info)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, out)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    os.utime(out, (FIXED_MTIME, FIXED_MTIME))


def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    """A member as kolla-build's archives write it (its ``normalize_tarinfo``)."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 0
    return info
