"""Cached images pulled into the engine during one run (``--cache-registry``).

A cached image's pull by digest starts as soon as the run knows it needs the
image locally (all of them at once, :data:`PULL_THREADS` at a time), or when
it is first needed. Whoever needs the image (its own build step, a child's
build, its push) waits for that one pull only, never for its parents', and
the image is tagged as its target reference once, after its fingerprint was
checked. Only the worker (:mod:`builder.build.worker`) uses this; it owns its
pull threads and nothing else of the run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import TextIO

from builder.build.cache import CacheEntry
from builder.build.labels import is_complete
from builder.build.prepare import PreparedImage
from builder.engines.base import Engine
from builder.errors import BuildCancelled, KilnError

PULL_THREADS = 8        # cached images pulled at once (the engine shares their layers)
WAIT_POLL = 0.5         # seconds between looks at the run's cancel event while waiting

# (engine output lines, log, image name, cancel) -> the generator's value
StreamFn = Callable[[Iterable[str], TextIO, str, threading.Event], object]


class CachePulls:
    """The pulls of one run's cached images. Safe to share between threads."""

    def __init__(self, engine: Engine, log_path: Callable[[str], Path], stream: StreamFn):
        self._engine = engine
        self._log_path = log_path
        self._stream = stream
        self._lock = threading.Lock()
        self._pulls: dict[str, Future] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._cancel = threading.Event()
        self._local: set[str] = set()       # tagged as their reference (or built here)

    def start(self, image: PreparedImage, entry: CacheEntry) -> Future:
        """The pull of a cached image by digest (its image id, or KilnError), started once."""
        with self._lock:
            future = self._pulls.get(image.name)
            if future is None:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(PULL_THREADS, "kiln-pull")
                future = self._pool.submit(self._pull, image, entry)
                self._pulls[image.name] = future
            return future

    def have(self, image: PreparedImage, entry: CacheEntry, log: TextIO,
             cancel: threading.Event) -> None:
        """Wait for the image's own pull (started now if it was not) and tag it, once."""
        with self._lock:
            if image.name in self._local:
                return
        future = self.start(image, entry)
        while True:
            try:
                image_id = future.result(timeout=WAIT_POLL)
                break
            except FutureTimeout:
                if cancel.is_set():
                    self._cancel.set()
                    raise BuildCancelled(f"image {image.name!r}: interrupted") from None
        with self._lock:
            if image.name in self._local:
                return
            self._engine.tag(image_id, image.ref)
            self._local.add(image.name)
        _write(log, f"pulled {entry.pull_ref} as {image_id}; tagged {image.ref}")

    def built_here(self, name: str) -> None:
        """The image was built in this run instead: nothing needs to pull it any more."""
        with self._lock:
            self._local.add(name)

    def close(self) -> None:
        """Stop the pulls nothing waits for any more (the run is over)."""
        self._cancel.set()
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _pull(self, image: PreparedImage, entry: CacheEntry) -> str:
        """Pull a cached image by its digest and check its fingerprint; its id."""
        with open(self._log_path(image.name), "a", encoding="utf-8") as log:
            _write(log, f"pulling {entry.pull_ref} (cache entry {entry.ref})")
            try:
                self._stream(self._engine.pull(entry.pull_ref), log, image.name, self._cancel)
            except BuildCancelled:
                raise
            except KilnError as exc:
                raise KilnError(f"image {image.name!r}: pulling it from the cache registry "
                                f"failed: {exc.message}") from exc
            info = self._engine.inspect(entry.pull_ref)
            if info is None or not is_complete(info.labels, image.fingerprint):
                raise KilnError(f"image {image.name!r}: the image pulled from {entry.ref} does "
                                f"not carry fingerprint {image.fingerprint}")
            return info.id


def _write(log: TextIO, text: str) -> None:
    log.write(f"kiln: {text}\n")
    log.flush()
