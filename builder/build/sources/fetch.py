"""Preparing an image's source: a local tree, a git commit or a download, as a reproducible tar.

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

import logging
from collections.abc import Sequence
from pathlib import Path

from builder.build.sources.archive import file_sha256
from builder.build.sources.git import prepare_git
from builder.build.sources.local import prepare_local
from builder.build.sources.sibling import prepare_sibling, sibling_checkout
from builder.build.sources.spec import (
    SOURCE_TYPES,
    PreparedSource,
    SourceSpec,
    check_name,
    source_error,
)
from builder.build.sources.url import prepare_url
from builder.errors import SourceError, scrub_url

LOG = logging.getLogger(__name__)

# --------------------------------------------------------------------------- entry point


def prepare_source(spec: SourceSpec, dest_dir: Path, cache_dir: Path,
                   timeout: float = 60.0,
                   source_roots: Sequence[Path] = ()) -> PreparedSource:
    """Write ``dest_dir/<name>-archive`` from ``spec``; nothing is left there on failure.

    A git source found in one of ``source_roots`` (sibling checkouts) is taken
    from its working tree there (see :mod:`builder.build.sources.sibling`).
    """
    check_name(spec.name)
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
        raise source_error(spec, f"{archive} is a directory; remove it")
    archive.unlink(missing_ok=True)  # a stale archive must not outlive a failed prepare
    checkout = sibling_checkout(spec, source_roots)
    dirty = None
    try:
        if checkout is not None:
            LOG.info("image %s: source %s taken from the sibling checkout %s", spec.name,
                     scrub_url(spec.location), checkout)
            commit, content_digest, dirty = prepare_sibling(spec, checkout, archive,
                                                            cache_dir, timeout)
        else:
            preparer = {"local": prepare_local, "git": prepare_git,
                        "url": prepare_url}[spec.type]
            commit, content_digest = preparer(spec, archive, cache_dir, timeout)
    except BaseException:
        archive.unlink(missing_ok=True)
        raise
    return PreparedSource(name=spec.name, archive=archive, type=spec.type,
                          location=scrub_url(spec.location), reference=spec.reference,
                          commit=commit, sha256=file_sha256(archive),
                          content_digest=content_digest, dirty=dirty,
                          speculative=checkout is not None)
