"""Where a sync reads images from: the local engine, or another registry."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from builder.build.labels import FINGERPRINT
from builder.engines.base import Engine, ImageInfo
from builder.errors import KilnError, SyncError
from builder.publish.revisions import (
    SetNaming,
    list_repositories,
)
from builder.reference import split_reference
from builder.registry.client import RegistryClient
from builder.registry.copy import copy_image

_PUSHED_DIGEST = re.compile(r"digest: (sha256:[0-9a-f]{64})")

LOG = logging.getLogger(__name__)


# -- sources -------------------------------------------------------------------------------

@dataclass(frozen=True)
class SourceImage:
    """One image at the source, pinned to what was looked at."""

    name: str
    ref: str                        # for messages
    pin: str                        # the local image id, or the source manifest digest
    image_id: str | None = None     # config digest, when known (the engine's image id)
    digest: str | None = None       # manifest digest, when known (a registry source)
    fingerprint: str | None = None  # None until read


class Source(Protocol):
    """Where sync reads images: the local engine or a registry."""

    description: str

    def images(self, naming: SetNaming) -> dict[str, str]:
        """``name -> reference`` of the set's images tagged ``naming.tag``."""

    def resolve(self, name: str) -> SourceImage | None:
        """The image under that name (None: it has no tag T), pinned."""

    def fingerprint(self, image: SourceImage) -> str | None:
        """Its kiln.fingerprint (None if it has none)."""

    def publish(self, image: SourceImage, dest: RegistryClient, repository: str,
                tag: str, cancel: threading.Event | None = None) -> str:
        """Put the image in the destination under ``tag``, complete; its manifest digest.

        Once ``cancel`` is set it may stop early (raising :class:`Cancelled`)
        provided ``tag`` is left unwritten."""


class EngineSource:
    """Local images tagged ``[host/]<namespace>/<prefix><name>:<T>`` with a kiln.fingerprint.

    The engine pushes the layers (so it must trust and be logged in to the
    destination); the local tag it needs for that is removed afterwards.
    """

    def __init__(self, engine: Engine, names: Sequence[str] = ()):
        self.engine = engine
        self.names = frozenset(names)       # only these, if given
        self.description = f"the local {engine.name} engine"
        self._found: dict[str, dict[str, ImageInfo]] = {}

    def images(self, naming: SetNaming) -> dict[str, str]:
        plain: dict[str, dict[str, ImageInfo]] = {}
        hosted: dict[str, dict[str, ImageInfo]] = {}
        for info in self.engine.images_with_label(FINGERPRINT):
            for ref in info.tags:
                host, path, tag = split_reference(ref)
                name = naming.member(path) if tag == naming.tag else None
                if name and (not self.names or name in self.names):
                    (hosted if host else plain).setdefault(name, {})[ref] = info
        # "ns/name:T" wins over "host/ns/name:T" (kiln-build --registry names).
        self._found = {**hosted, **plain}
        return {name: sorted(refs)[0] for name, refs in self._found.items()}

    def resolve(self, name: str) -> SourceImage | None:
        refs = self._found.get(name)
        if not refs:
            return None
        ids = {info.id for info in refs.values()}
        if len(ids) > 1:
            raise SyncError(f"{name}: the local references {', '.join(sorted(refs))} name "
                            f"different images; remove or retag all but one")
        ref, info = sorted(refs.items())[0]
        return SourceImage(name=name, ref=ref, pin=info.id, image_id=info.id,
                           fingerprint=info.labels.get(FINGERPRINT) or None)

    def fingerprint(self, image: SourceImage) -> str | None:
        return image.fingerprint

    def publish(self, image: SourceImage, dest: RegistryClient, repository: str,
                tag: str, cancel: threading.Event | None = None) -> str:
        # The engine's push is not stopped: it ends with the revision complete or failed.
        target = f"{dest.host}/{repository}:{tag}"
        digest = None
        self.engine.tag(image.pin, target)
        try:
            for line in self.engine.push(target):
                found = _PUSHED_DIGEST.search(line)
                digest = found.group(1) if found else digest
        finally:
            try:
                self.engine.remove(target)  # an untag: the image keeps its own tag
            except KilnError as exc:
                LOG.warning("could not remove the local tag %s: %s", target, exc)
        if digest is None:
            digest = dest.manifest_digest(repository, tag)
        if digest is None:
            raise SyncError(f"{image.name}: the engine pushed {target} but the registry "
                            f"does not have it")
        return digest


class RegistrySource:
    """Repositories ``<namespace>/<prefix><name>`` of a registry with a tag T.

    Their names come from the registry's catalog, or from ``names`` (for
    registries without a catalog, such as Docker Hub).
    """

    def __init__(self, client: RegistryClient, names: Sequence[str] = ()):
        self.client = client
        self.names = tuple(names)
        self.description = f"registry {client.host}"
        self._naming: SetNaming | None = None
        self._fingerprints: dict[str, str | None] = {}      # manifest digest -> label

    def images(self, naming: SetNaming) -> dict[str, str]:
        self._naming = naming
        if self.names:
            names = list(self.names)
        else:
            names = [n for r in list_repositories(self.client) if (n := naming.member(r))]
        return {name: self.client.reference(naming.repository(name), naming.tag)
                for name in names}

    def resolve(self, name: str) -> SourceImage | None:
        assert self._naming is not None, "images() first"
        repository = self._naming.repository(name)
        digest = self.client.manifest_digest(repository, self._naming.tag)
        if digest is None:
            return None
        return SourceImage(name=name, ref=self.client.reference(repository, self._naming.tag),
                           pin=digest, digest=digest)

    def fingerprint(self, image: SourceImage) -> str | None:
        if image.fingerprint is not None:
            return image.fingerprint
        if image.pin not in self._fingerprints:
            assert self._naming is not None
            info = self.client.manifest(self._naming.repository(image.name), image.pin)
            if info is None:
                raise SyncError(f"{image.ref} disappeared from the source while syncing")
            self._fingerprints[image.pin] = info.labels.get(FINGERPRINT) or None
        return self._fingerprints[image.pin]

    def publish(self, image: SourceImage, dest: RegistryClient, repository: str,
                tag: str, cancel: threading.Event | None = None) -> str:
        assert self._naming is not None
        return copy_image(self.client, self._naming.repository(image.name), image.pin,
                          dest, repository, tag, cancel)
