"""What a worker does for one image: reuse an image with the same
fingerprint, or build it on the engine (logging to its own file), scan its
packages and stamp its labels; push it. Returns a WorkResult; never touches
run state (the scheduler owns that).

A build is atomic at the image's reference: the build itself tags nothing
and runs the image's own steps only (no build labels: the classic builder
would make each one a step of its own); the package scan reads the untagged
image's package databases from its files where the engine can show them
(else it runs in a container of it); and the stamp, one ``LABEL``
instruction with every label (manifest, OCI, fingerprint, packages), gives
the reference to the complete image as its last step. An interruption or a
failure before then leaves the reference naming what it named before, and
removes the unfinished image.

The untagged image of the build inherits its parent's labels (its
fingerprint too) until it is stamped; nothing counts an image without a tag
in its own repository as complete (see :meth:`ImageBuilder._complete_image`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from builder.build.cache import CacheEntry, RegistryCache
from builder.build.imagefiles import NeedsContainer, scan_packages
from builder.build.labels import (
    FINGERPRINT,
    MANIFEST,
    NO_SHELL,
    PACKAGE_SCAN,
    PACKAGES,
    PACKAGES_SCAN,
    SCANNED,
    canonical,
    is_complete,
    parse_packages,
    scan_finished,
)
from builder.build.prepare import PreparedImage
from builder.build.pulls import CachePulls
from builder.build.scheduler import Status, WorkResult
from builder.engines.base import (
    BuildRequest,
    Engine,
    EngineError,
    ImageInfo,
    MissingExecutable,
)
from builder.errors import BuildCancelled, KilnError, ScanError, scrub_url
from builder.settings import RunOptions

LOG = logging.getLogger(__name__)
SCAN_TIMEOUT = 300      # seconds the package scan may take
SCAN_SHELL = "/bin/sh"


@dataclass(frozen=True)
class BuildJob:
    """Everything the workers need, fixed before the run starts."""

    images: Mapping[str, PreparedImage]
    options: RunOptions
    work_dir: Path
    logs_dir: Path
    # fingerprint -> local images stamped with it, listed once before the run
    existing: Mapping[str, tuple[ImageInfo, ...]] = field(default_factory=dict)
    # --cache-registry: the cache, its trusted entries (name -> entry), and the
    # images wanted locally even when cached (selected by name, or to push)
    cache: RegistryCache | None = None
    cached: Mapping[str, CacheEntry] = field(default_factory=dict)
    wanted: frozenset[str] = frozenset()
    push_registry: str = ""      # --registry when --push is given
    # a failed push to the cache fails the image (--executor dask: the cache
    # is how its children, on other hosts, get it)
    cache_required: bool = False


def reusable_images(engine: Engine, images: Mapping[str, PreparedImage],
                    threads: int = 8) -> dict[str, tuple[ImageInfo, ...]]:
    """fingerprint -> local images stamped with it, for the images to build.

    The common case, every target reference already naming an image with its
    fingerprint, costs one inspect per image (in parallel); only otherwise is
    every fingerprinted image of the engine listed (to reuse an image under a
    new tag), once for the run.
    """
    with ThreadPoolExecutor(max(1, threads), "kiln-inspect") as pool:
        current = dict(zip(images, pool.map(lambda image: engine.inspect(image.ref),
                                            images.values()), strict=True))
    index: dict[str, list[ImageInfo]] = {}
    for name, info in current.items():
        fp = images[name].fingerprint
        if info is None or not is_complete(info.labels, fp):
            index = {}
            for found in engine.images_with_label(FINGERPRINT):
                if is_complete(found.labels):
                    index.setdefault(found.labels[FINGERPRINT], []).append(found)
            break
        index.setdefault(fp, []).append(info)
    return {fp: tuple(infos) for fp, infos in index.items()}


class ImageBuilder:
    def __init__(self, engine: Engine, job: BuildJob):
        self._engine = engine
        self._job = job
        job.logs_dir.mkdir(parents=True, exist_ok=True)
        # looks up the parents' ids while the image builds (they are built already)
        self._lookups = ThreadPoolExecutor(2, "kiln-labels")
        # cached images pulled into the engine (ahead by fetch_needed, or when needed)
        self._pulls = CachePulls(engine, self.log_path, self._stream)
        self._hand_off: dict[str, float] = {}   # seconds of cache pushes and parent pulls

    @property
    def job(self) -> BuildJob:
        return self._job

    def use_job(self, job: BuildJob) -> None:
        """Replace the job before the run starts (e.g. with the cache's entries)."""
        self._job = job

    def fetch_needed(self) -> frozenset[str]:
        """Start pulling, all at once, the cached images this run needs locally.

        Those are the cached images wanted by name (or to push) and the
        cached parents of the images built here; not a parent only because
        its cached child is pulled (the child's pull brings the layers it
        needs). A pull does not wait for the image's parents: the image's
        build step waits for its own pull only, and tags it.
        """
        job = self._job
        built_here = [image for name, image in job.images.items() if name not in job.cached
                      and (image.refreshing or self._complete_image(image) is None)]
        needed = ({name for name in job.wanted if name in job.cached}
                  | {parent for image in built_here for parent in image.parents
                     if parent in job.cached})
        for name in sorted(needed):
            self._pulls.start(job.images[name], job.cached[name])
        return frozenset(needed)

    def close(self) -> None:
        """Stop the pulls of cached images nothing waits for any more (the run is over)."""
        self._pulls.close()

    def log_path(self, name: str) -> Path:
        return self._job.logs_dir / f"{name}.log"

    def hand_off(self, name: str) -> float:
        """Seconds the build of ``name`` spent pulling parents from the cache and
        pushing itself there."""
        return self._hand_off.get(name, 0.0)

    def build(self, name: str, cancel: threading.Event) -> WorkResult:
        image = self._job.images[name]
        with open(self.log_path(name), "a", encoding="utf-8") as log:
            try:
                if image.refreshing:
                    _write(log, f"refreshing ({image.refresh.reason}): not reused, built "
                                f"without the layer cache")
                elif not self._job.options.rebuild:
                    existing = self._complete_image(image)
                    if existing is not None:
                        if image.ref not in existing.tags:
                            self._engine.tag(existing.id, image.ref)
                        _write(log, f"unchanged: {existing.id} has fingerprint "
                                    f"{image.fingerprint}; tagged {image.ref}")
                        return WorkResult(True, image_id=existing.id, status=Status.UNCHANGED)
                    cached = self._from_cache(image, log, cancel)
                    if cached is not None:
                        return cached
                self._parents_local(image, log, cancel)
                image_id = self._build(image, log, cancel)
                self._to_cache(image, log, cancel)
            except KilnError as exc:
                _write(log, f"FAILED: {exc}")
                return WorkResult(False, scrub_url(exc.message))
            _write(log, f"built {image.ref} as {image_id}")
            if image.refreshing:
                return WorkResult(True, f"refreshed: {image.refresh.reason}",
                                  image_id=image_id)
            return WorkResult(True, image_id=image_id)

    def push(self, name: str, cancel: threading.Event) -> WorkResult:
        ref = self._job.images[name].ref
        with open(self.log_path(name), "a", encoding="utf-8") as log:
            _write(log, f"pushing {ref}")
            try:
                self._pull_cached(name, log, cancel)
                self._stream(self._engine.push(ref), log, name, cancel)
            except KilnError as exc:
                _write(log, f"PUSH FAILED: {exc}")
                return WorkResult(False, scrub_url(exc.message))
            _write(log, f"pushed {ref}")
            return WorkResult(True)

    def has_local(self, image: PreparedImage) -> bool:
        """Whether the engine holds a complete image with this fingerprint (to reuse)."""
        return self._complete_image(image) is not None

    # -- the registry cache (--cache-registry) -------------------------------------

    def _from_cache(self, image: PreparedImage, log: TextIO,
                    cancel: threading.Event) -> WorkResult | None:
        """CACHED if the cache has the image (pulled only if wanted here); else None."""
        entry = self._job.cached.get(image.name)
        if entry is None:
            return None
        _write(log, f"cached: {entry.ref} has fingerprint {image.fingerprint}")
        if image.name in self._job.wanted:
            try:
                self._pull_cached(image.name, log, cancel)
            except BuildCancelled:
                raise
            except KilnError as exc:  # the entry is trusted, but unusable: build it
                _write(log, f"cannot use {entry.ref}: {exc}; building")
                LOG.warning("image %s: cache entry %s could not be pulled (%s); building it",
                            image.name, entry.ref, exc.message)
                self._pulls.built_here(image.name)   # its children need not pull it
                return None
        return WorkResult(True, image_id=entry.image_id, status=Status.CACHED)

    def _parents_local(self, image: PreparedImage, log: TextIO,
                       cancel: threading.Event) -> None:
        """Pull the in-set parents that were cached but not pulled: the build needs them."""
        start = time.monotonic()
        try:
            for parent in image.parents:
                self._pull_cached(parent, log, cancel)
        finally:
            self._hand_off[image.name] = self.hand_off(image.name) + time.monotonic() - start

    def _pull_cached(self, name: str, log: TextIO, cancel: threading.Event) -> None:
        """Have a cached image in the engine, tagged as its target reference (once)."""
        entry = self._job.cached.get(name)
        if entry is not None:
            self._pulls.have(self._job.images[name], entry, log, cancel)

    def _to_cache(self, image: PreparedImage, log: TextIO, cancel: threading.Event) -> None:
        """Push a built image to the cache under its fingerprint tag.

        A failure is a warning, unless --push goes to the cache's registry too.
        """
        cache = self._job.cache
        if cache is None or not cache.settings.writes or not cache.usable:
            return
        ref = cache.ref(image)
        _write(log, f"pushing to the cache as {ref}")
        start = time.monotonic()
        try:
            self._engine.tag(image.ref, ref)
            try:
                self._stream(self._engine.push(ref), log, image.name, cancel)
            finally:
                try:
                    self._engine.remove(ref)    # only the tag: the image keeps image.ref
                except EngineError:
                    pass
        except BuildCancelled:
            raise
        except KilnError as exc:
            _write(log, f"CACHE PUSH FAILED: {exc}")
            if self._job.cache_required or (
                    self._job.options.push and self._job.push_registry == cache.host):
                raise KilnError(f"image {image.name!r}: pushing it to the cache registry "
                                f"failed: {exc.message}") from exc
            LOG.warning("image %s: pushing %s to the cache registry failed: %s",
                        image.name, ref, scrub_url(exc.message))
            return
        finally:
            self._hand_off[image.name] = self.hand_off(image.name) + time.monotonic() - start
        _write(log, f"pushed {ref}")

    def _complete_image(self, image: PreparedImage) -> ImageInfo | None:
        """A local image kiln built and stamped with this fingerprint, if any.

        Labels are inherited, so an image built on top of a complete one (a
        multi-stage build's intermediate stage, say) carries its fingerprint
        too; only images tagged in the image's own repository count.
        """
        repository = image.ref.rpartition(":")[0]
        found = [info for info in self._job.existing.get(image.fingerprint, ())
                 if is_complete(info.labels, image.fingerprint)
                 and any(tag.rpartition(":")[0] == repository for tag in info.tags)]
        found.sort(key=lambda info: (image.ref not in info.tags, info.id))
        return found[0] if found else None

    def _build(self, image: PreparedImage, log: TextIO, cancel: threading.Event) -> str:
        """Build untagged, scan, then stamp: the stamp alone moves ``image.ref``."""
        options = self._job.options
        request = BuildRequest(
            image=image.name, context_dir=image.context, tags=(),
            build_args=dict(options.build_args), network_mode=options.network_mode,
            # --pull: only images built on no image of the set (their bases are external)
            pull=options.pull and not image.parents,
            no_cache=options.no_cache or image.refreshing)
        labels = self._lookups.submit(self._labels, image)
        _write(log, f"building {image.ref} from {image.context}")
        built = self._stream(self._engine.build(request, cancel), log, image.name, cancel)
        if not built:
            raise KilnError(f"image {image.name!r}: the engine did not report the id "
                            f"of the built image")
        _write(log, f"built {built} (not tagged until its packages are stamped)")
        try:
            self._check(cancel, image.name)
            packages, scan = self._scan_packages(image, built, log)
            self._check(cancel, image.name)
            manifest = labels.result()
            _write(log, f"manifest: {manifest[MANIFEST]}")
            # The fingerprint and package list go on last, with the reference,
            # so an image that carries kiln.fingerprint is always complete.
            image_id = self._engine.stamp(
                built, {**manifest, FINGERPRINT: image.fingerprint,
                        PACKAGES: canonical(packages), PACKAGES_SCAN: scan},
                image.ref, name=image.name)
        except BaseException:
            self._discard(built, image, log)
            raise
        _write(log, f"stamped {image_id} with fingerprint {image.fingerprint}; "
                    f"tagged {image.ref}")
        return image_id

    def _discard(self, image_id: str, image: PreparedImage, log: TextIO) -> None:
        """Remove an unfinished, untagged image (best effort: never a complete one).

        It carries its parent's labels, the parent's fingerprint too, but never
        its own image's: only the stamp sets that.
        """
        try:
            info = self._engine.inspect(image_id)
            if info is not None and not info.tags \
                    and info.labels.get(FINGERPRINT) != image.fingerprint:
                self._engine.remove(image_id)
                _write(log, f"removed the unfinished image {image_id}")
        except EngineError as exc:
            _write(log, f"could not remove the unfinished image {image_id}: {exc}")

    @staticmethod
    def _check(cancel: threading.Event, name: str) -> None:
        if cancel.is_set():
            raise BuildCancelled(f"image {name!r}: interrupted")

    def _labels(self, image: PreparedImage) -> dict[str, str]:
        """The manifest and OCI labels, with the ids of the parents (built already)."""
        manifest = dict(image.manifest)
        parents = []
        for parent in manifest["parents"]:
            info = self._engine.inspect(parent["ref"])
            parents.append({**parent, "id": info.id if info else None})
        manifest["parents"] = parents
        labels = dict(image.labels)
        for parent in parents:
            if parent["ref"] == image.base and parent["id"]:
                labels["org.opencontainers.image.base.digest"] = parent["id"]
        labels[MANIFEST] = canonical(manifest)
        return labels

    def _scan_packages(self, image: PreparedImage, image_id: str,
                       log: TextIO) -> tuple[dict, str]:
        """(packages, how they were found) for the built image; ScanError if the scan fails.

        Read from the image's files when the engine can show them (no
        container started); otherwise, or when the image has an rpm database
        (which takes rpm to read), PACKAGE_SCAN runs with /bin/sh in a
        container without a network (it needs none, whatever --network-mode
        says). An image without /bin/sh to scan in has its packages recorded
        as {} with NO_SHELL. Which way was taken is written to the log only.
        """
        try:
            with self._engine.image_files(image_id) as files:
                packages = None if files is None else scan_packages(files)
        except NeedsContainer as exc:
            _write(log, f"packages: {exc}, which only rpm can read")
            packages = None
        except OSError as exc:
            _write(log, f"packages: cannot read the image's files ({exc})")
            packages = None
        if packages is not None:
            _write(log, f"packages of {image_id}, read from its files: " + _counts(packages))
            return packages, SCANNED
        return self._scan_in_container(image, image_id, log)

    def _scan_in_container(self, image: PreparedImage, image_id: str,
                           log: TextIO) -> tuple[dict, str]:
        _write(log, f"scanning the packages of {image_id} in a container (no network)")
        try:
            output = self._engine.run(image_id, [PACKAGE_SCAN], timeout=SCAN_TIMEOUT,
                                      entrypoint=[SCAN_SHELL, "-c"], network="none")
        except MissingExecutable:
            _write(log, f"packages: the image has no {SCAN_SHELL} to scan them with; "
                        f"{PACKAGES} is {{}} and {PACKAGES_SCAN} is {NO_SHELL}")
            return {}, NO_SHELL
        except EngineError as exc:
            _write(log, f"package scan failed: {exc}")
            # The engine's message names the whole scan script: keep what follows it.
            reason = exc.message.partition(f" in {image_id} ")[2] or exc.message
            raise ScanError(f"image {image.name!r}: the package scan failed: {reason}") \
                from exc
        if not scan_finished(output):
            tail = " / ".join(output.strip().splitlines()[-3:]) or "no output"
            _write(log, f"package scan output:\n{output}")
            raise ScanError(f"image {image.name!r}: the package scan did not run to its "
                            f"end (its output ends: {tail})")
        packages = parse_packages(output)
        _write(log, "packages: " + _counts(packages))
        return packages, SCANNED

    def _stream(self, lines: Iterable[str], log: TextIO, name: str,
                cancel: threading.Event):
        """Log an engine's output lines; return the generator's value (a build's image id)."""
        verbose = LOG.isEnabledFor(logging.DEBUG)
        iterator = iter(lines)
        while True:
            try:
                line = next(iterator)
            except StopIteration as stop:
                log.flush()
                return stop.value
            log.write(line + "\n")
            if verbose:
                LOG.debug("%s: %s", name, line)
            if cancel.is_set():
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()
                raise BuildCancelled(f"image {name!r}: interrupted")


def _counts(packages: Mapping[str, Mapping[str, str]]) -> str:
    return ", ".join(f"{len(v)} {k}" for k, v in packages.items()) or "none found"


def _write(log: TextIO, text: str) -> None:
    log.write(f"kiln: {text}\n")
    log.flush()
