"""A registry as a cache of images by fingerprint (``--cache-registry``).

An image with fingerprint ``sha256:<hex>`` is cached as

    <cache host>[/<cache path>]/<namespace>/<prefix><name>:kiln-<hex>

(the whole hex digest: 69 characters, well under the 128 a tag may have).
Before a run, every image the engine does not hold already is looked up
there with one manifest request (a miss costs exactly that one request; a hit
one more, for the image config and its labels). An entry is trusted only if
its config's ``kiln.fingerprint`` label is the fingerprint asked for (and the
image is complete: its packages were scanned); anything else is ignored with
a warning naming the reference, and the image is built.

A hit is not built (status ``cached``) and is pulled only when the run needs
it locally; an image built is pushed under its fingerprint tag, a failure to
do so being a warning. A cache registry that cannot be used (connection
refused, TLS failure, 401) is one warning, and the run builds without it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from builder.build.labels import FINGERPRINT, is_complete
from builder.build.prepare import PreparedImage
from builder.errors import RegistryError
from builder.naming import ImageNaming
from builder.registry.client import RegistryClient
from builder.registry.http import RegistryOptions
from builder.settings import CacheSettings

LOG = logging.getLogger(__name__)
TAG_PREFIX = "kiln-"
TIMEOUT = 15.0          # seconds: a cache must answer quickly, or it is no use
RETRIES = 1


def cache_tag(fingerprint: str) -> str:
    """``kiln-<hex>`` for ``sha256:<hex>``."""
    return TAG_PREFIX + fingerprint.partition(":")[2]


@dataclass(frozen=True)
class CacheEntry:
    """A trusted image of the cache for one image's fingerprint."""

    ref: str            # host/path/repository:kiln-<hex>
    pull_ref: str       # host/path/repository@<manifest digest>
    digest: str         # its manifest digest
    image_id: str | None  # its config digest (the image id an engine gives it)


class RegistryCache:
    """One run's view of the cache registry. Safe to share between threads."""

    def __init__(self, settings: CacheSettings, naming: ImageNaming,
                 client: RegistryClient | None = None):
        self.settings = settings
        self.host = settings.host
        self._naming = naming
        self._client = client or RegistryClient(settings.host, RegistryOptions(
            insecure=settings.insecure, ca_cert=settings.ca_cert, timeout=TIMEOUT,
            retries=RETRIES))
        self._lock = threading.Lock()
        self._disabled: str | None = None   # why the cache is not used
        self.lookups = 0                    # manifest lookups made

    @property
    def requests_made(self) -> int:
        return self._client.requests_made

    @property
    def usable(self) -> bool:
        with self._lock:
            return self._disabled is None

    def repository(self, name: str) -> str:
        own = self._naming.repository(name, with_registry=False)
        return f"{self.settings.path}/{own}" if self.settings.path else own

    def ref(self, image: PreparedImage) -> str:
        return f"{self.host}/{self.repository(image.name)}:{cache_tag(image.fingerprint)}"

    def disable(self, reason: str) -> None:
        """Stop using the cache for this run, with one warning."""
        with self._lock:
            if self._disabled is not None:
                return
            self._disabled = reason
        LOG.warning("cache registry %s cannot be used (%s); building without it",
                    self.settings.registry, reason)

    def check(self) -> bool:
        """One request: whether the registry answers (a write-only cache is checked so)."""
        try:
            self._client.ping()
        except RegistryError as exc:
            self.disable(exc.message)
            return False
        return True

    def lookup_all(self, images: Iterable[PreparedImage],
                   threads: int = 8) -> dict[str, CacheEntry]:
        """name -> trusted entry, for the images the cache has; {} if it cannot be used.

        The first lookup runs alone: if the registry cannot be used, that is
        found out once, and the run goes on without it.
        """
        images = list(images)
        if not images or not self.usable:
            return {}
        found: dict[str, CacheEntry] = {}
        first, rest = images[0], images[1:]
        try:
            entry = self._lookup(first)
        except RegistryError as exc:
            if not self.check():     # unreachable, TLS, credentials: the whole cache
                return {}
            self._ignore(first, exc)
            entry = None
        if entry is not None:
            found[first.name] = entry
        with ThreadPoolExecutor(max(1, threads), "kiln-cache") as pool:
            for image, entry in zip(rest, pool.map(self._lookup_quietly, rest), strict=True):
                if entry is not None:
                    found[image.name] = entry
        return found

    def _lookup_quietly(self, image: PreparedImage) -> CacheEntry | None:
        try:
            return self._lookup(image)
        except RegistryError as exc:
            self._ignore(image, exc)
            return None

    def _ignore(self, image: PreparedImage, exc: RegistryError) -> None:
        LOG.warning("cache entry %s ignored (%s); building image %s", self.ref(image),
                    exc.message, image.name)

    def lookup(self, image: PreparedImage) -> CacheEntry | None:
        """One image's trusted entry, or None; RegistryError if the registry fails."""
        return self._lookup(image)

    def _lookup(self, image: PreparedImage) -> CacheEntry | None:
        repository, tag = self.repository(image.name), cache_tag(image.fingerprint)
        with self._lock:
            self.lookups += 1
        info = self._client.manifest(repository, tag)
        if info is None:
            return None
        ref = f"{self.host}/{repository}:{tag}"
        if not is_complete(info.labels, image.fingerprint):
            stamped = info.labels.get(FINGERPRINT)
            why = (f"its kiln.fingerprint is {stamped}, not {image.fingerprint}" if stamped
                   and stamped != image.fingerprint else
                   "it has no kiln.fingerprint label" if not stamped else
                   "its packages were never scanned: kiln did not complete it")
            LOG.warning("cache entry %s ignored: %s; building image %s", ref, why,
                        image.name)
            return None
        return CacheEntry(ref=ref, pull_ref=f"{self.host}/{repository}@{info.digest}",
                          digest=info.digest, image_id=info.config_digest)

    def close(self) -> None:
        self._client.close()


def lookup_missing(cache: RegistryCache | None, images: Mapping[str, PreparedImage],
                   has_local: Callable[[PreparedImage], bool],
                   threads: int = 8) -> dict[str, CacheEntry]:
    """The cache's entries for the images the engine does not hold (local reuse first)."""
    if cache is None or not cache.settings.reads:
        return {}
    missing = [image for image in images.values() if not has_local(image)]
    return cache.lookup_all(missing, threads)
