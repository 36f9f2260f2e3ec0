"""What a worker does for one image: write its context, build it on the
engine with its log file, push it. Returns a WorkResult; never touches run
state (the scheduler owns that).
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from builder.config import CA_BUNDLE_NAME, RunOptions
from builder.context import write_context
from builder.engine.base import BuildRequest, Engine
from builder.exceptions import KilnError
from builder.naming import ImageNaming
from builder.render import RenderedImage
from builder.scheduler import WorkResult
from builder.sources import SourceSpec, prepare_source, scrub_url

LOG = logging.getLogger(__name__)
TAIL_LINES = 20


@dataclass(frozen=True)
class BuildJob:
    """Everything the workers need, fixed before the run starts."""

    rendered: Mapping[str, RenderedImage]
    naming: ImageNaming
    options: RunOptions
    work_dir: Path
    logs_dir: Path
    source_cache: Path
    sources: Mapping[str, SourceSpec] = field(default_factory=dict)
    labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


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
        job = self._job
        ref = job.naming.ref(name)
        with open(self.log_path(name), "a", encoding="utf-8") as log:
            tail: deque[str] = deque(maxlen=TAIL_LINES)
            try:
                context = self._prepare_context(name, log)
                request = BuildRequest(
                    image=name, context_dir=context, tags=(ref,),
                    labels=dict(job.labels.get(name, {})),
                    build_args=dict(job.options.build_args),
                    network_mode=job.options.network_mode,
                    pull=job.options.pull, no_cache=job.options.no_cache)
                _write(log, f"building {ref} from {context}")
                self._stream(self._engine.build(request, cancel), log, tail, name, cancel)
                info = self._engine.inspect(ref)
                if info is None:
                    raise KilnError(f"the engine reported success but has no {ref}")
            except KilnError as exc:
                _write(log, f"FAILED: {exc}")
                return WorkResult(False, scrub_url(exc.message))
            _write(log, f"built {ref} as {info.id}")
            return WorkResult(True, image_id=info.id)

    def push(self, name: str, cancel: threading.Event) -> WorkResult:
        ref = self._job.naming.ref(name)
        with open(self.log_path(name), "a", encoding="utf-8") as log:
            _write(log, f"pushing {ref}")
            try:
                self._stream(self._engine.push(ref), log, deque(maxlen=TAIL_LINES),
                             name, cancel)
            except KilnError as exc:
                _write(log, f"PUSH FAILED: {exc}")
                return WorkResult(False, scrub_url(exc.message))
            _write(log, f"pushed {ref}")
            return WorkResult(True)

    def _prepare_context(self, name: str, log: TextIO) -> Path:
        job = self._job
        context = write_context(job.rendered[name], job.work_dir)
        spec = job.sources.get(name)
        if spec is not None and spec.enabled:
            prepared = prepare_source(spec, context, job.source_cache)
            _write(log, f"source {prepared.name}: {prepared.type} {prepared.location}"
                        + (f" at {prepared.commit}" if prepared.commit else "")
                        + f" (sha256 {prepared.sha256})")
        if job.options.ca_bundle is not None:
            shutil.copyfile(job.options.ca_bundle, context / CA_BUNDLE_NAME)
        return context

    def _stream(self, lines: Iterable[str], log: TextIO, tail: deque, name: str,
                cancel: threading.Event) -> None:
        verbose = LOG.isEnabledFor(logging.DEBUG)
        for line in lines:
            log.write(line + "\n")
            tail.append(line)
            if verbose:
                LOG.debug("%s: %s", name, line)
            if cancel.is_set():
                close = getattr(lines, "close", None)
                if close is not None:
                    close()  # the engine stops a build whose stream is closed
                raise Cancelled(f"image {name!r}: interrupted")
        log.flush()


def _write(log: TextIO, text: str) -> None:
    log.write(f"kiln: {text}\n")
    log.flush()
