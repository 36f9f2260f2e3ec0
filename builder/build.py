"""What a worker does for one image: reuse an image with the same
fingerprint, or build it on the engine (logging to its own file), scan its
packages and stamp its labels; push it. Returns a WorkResult; never touches
run state (the scheduler owns that).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from builder.engine.base import BuildRequest, Engine, ImageInfo
from builder.errors import KilnError, scrub_url
from builder.manifest import (
    FINGERPRINT,
    MANIFEST,
    PACKAGE_SCAN,
    PACKAGES,
    canonical,
    parse_packages,
)
from builder.prepare import PreparedImage
from builder.scheduler import Status, WorkResult
from builder.settings import RunOptions

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildJob:
    """Everything the workers need, fixed before the run starts."""

    images: Mapping[str, PreparedImage]
    options: RunOptions
    work_dir: Path
    logs_dir: Path
    # fingerprint -> local images stamped with it, listed once before the run
    existing: Mapping[str, tuple[ImageInfo, ...]] = field(default_factory=dict)


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
        if info is None or info.labels.get(FINGERPRINT) != fp:
            index = {}
            for found in engine.images_with_label(FINGERPRINT):
                if found.labels.get(FINGERPRINT):
                    index.setdefault(found.labels[FINGERPRINT], []).append(found)
            break
        index.setdefault(fp, []).append(info)
    return {fp: tuple(infos) for fp, infos in index.items()}


class Cancelled(KilnError):
    """The run was interrupted while this image was building."""


class ImageBuilder:
    def __init__(self, engine: Engine, job: BuildJob):
        self._engine = engine
        self._job = job
        job.logs_dir.mkdir(parents=True, exist_ok=True)

    def log_path(self, name: str) -> Path:
        return self._job.logs_dir / f"{name}.log"

    def build(self, name: str, cancel: threading.Event) -> WorkResult:
        image = self._job.images[name]
        with open(self.log_path(name), "a", encoding="utf-8") as log:
            try:
                if not self._job.options.rebuild:
                    existing = self._complete_image(image)
                    if existing is not None:
                        if image.ref not in existing.tags:
                            self._engine.tag(existing.id, image.ref)
                        _write(log, f"unchanged: {existing.id} has fingerprint "
                                    f"{image.fingerprint}; tagged {image.ref}")
                        return WorkResult(True, image_id=existing.id, status=Status.UNCHANGED)
                image_id = self._build(image, log, cancel)
            except KilnError as exc:
                _write(log, f"FAILED: {exc}")
                return WorkResult(False, scrub_url(exc.message))
            _write(log, f"built {image.ref} as {image_id}")
            return WorkResult(True, image_id=image_id)

    def push(self, name: str, cancel: threading.Event) -> WorkResult:
        ref = self._job.images[name].ref
        with open(self.log_path(name), "a", encoding="utf-8") as log:
            _write(log, f"pushing {ref}")
            try:
                self._stream(self._engine.push(ref), log, name, cancel)
            except KilnError as exc:
                _write(log, f"PUSH FAILED: {exc}")
                return WorkResult(False, scrub_url(exc.message))
            _write(log, f"pushed {ref}")
            return WorkResult(True)

    def _complete_image(self, image: PreparedImage) -> ImageInfo | None:
        """A local image kiln built and stamped with this fingerprint, if any.

        Labels are inherited, so an image built on top of a complete one (a
        multi-stage build's intermediate stage, say) carries its fingerprint
        too; only images tagged in the image's own repository count.
        """
        repository = image.ref.rpartition(":")[0]
        found = [info for info in self._job.existing.get(image.fingerprint, ())
                 if any(tag.rpartition(":")[0] == repository for tag in info.tags)]
        found.sort(key=lambda info: (image.ref not in info.tags, info.id))
        return found[0] if found else None

    def _build(self, image: PreparedImage, log: TextIO, cancel: threading.Event) -> str:
        options = self._job.options
        labels = self._labels(image)
        request = BuildRequest(
            image=image.name, context_dir=image.context, tags=(image.ref,), labels=labels,
            build_args=dict(options.build_args), network_mode=options.network_mode,
            pull=options.pull, no_cache=options.no_cache)
        _write(log, f"building {image.ref} from {image.context}")
        self._stream(self._engine.build(request, cancel), log, image.name, cancel)
        packages = self._scan_packages(image, log)
        # Stamp: the fingerprint and package list go on last, so an image that
        # carries kiln.fingerprint is always complete.
        stamp = self._job.work_dir / ".stamp" / image.name
        stamp.mkdir(parents=True, exist_ok=True)
        (stamp / "Dockerfile").write_text(f"FROM {image.ref}\n")
        self._stream(self._engine.build(BuildRequest(
            image=image.name, context_dir=stamp, tags=(image.ref,),
            labels={FINGERPRINT: image.fingerprint, PACKAGES: canonical(packages)}),
            cancel), log, image.name, cancel)
        info = self._engine.inspect(image.ref)
        if info is None:
            raise KilnError(f"the engine reported success but has no {image.ref}")
        return info.id

    def _labels(self, image: PreparedImage) -> dict[str, str]:
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
        # Blank what the parent's labels would pass down until the stamp sets them.
        labels[FINGERPRINT] = ""
        labels[PACKAGES] = ""
        return labels

    def _scan_packages(self, image: PreparedImage, log: TextIO) -> dict:
        try:
            output = self._engine.run(image.ref, [PACKAGE_SCAN], entrypoint=["/bin/sh", "-c"])
        except KilnError as exc:
            _write(log, f"package scan found no shell or failed ({exc}); "
                        f"kiln.packages is empty")
            return {}
        packages = parse_packages(output)
        _write(log, "packages: " + ", ".join(f"{len(v)} {k}" for k, v in packages.items()))
        return packages

    def _stream(self, lines: Iterable[str], log: TextIO, name: str,
                cancel: threading.Event) -> None:
        verbose = LOG.isEnabledFor(logging.DEBUG)
        for line in lines:
            log.write(line + "\n")
            if verbose:
                LOG.debug("%s: %s", name, line)
            if cancel.is_set():
                close = getattr(lines, "close", None)
                if close is not None:
                    close()
                raise Cancelled(f"image {name!r}: interrupted")
        log.flush()


def _write(log: TextIO, text: str) -> None:
    log.write(f"kiln: {text}\n")
    log.flush()
