"""What a Dask worker runs for one image (``--executor dask``).

The task gets the image's build context as a tar from the client, makes sure
its in-set parents are on the worker's engine (pulled from the cache registry
by digest when the engine does not hold them, and tagged as the references
the Dockerfile uses), then lets the single-host :class:`ImageBuilder` build,
scan and stamp it and push it to the cache under its fingerprint tag. The
cache push comes after the stamp, so a worker that dies mid-build leaves no
fingerprint tag naming an unfinished image.

The engine is the worker's own: the engine's name travels with the task, its
socket (``DOCKER_HOST``, ...) comes from the worker's environment. A failed
build raises :class:`BuildFailed`, so Dask retries the task (on any worker);
the client gets the log either way. With ``--push`` the task then pushes the
image to ``--registry``; an image found in the cache is pushed by a task of
its own (:func:`push_image`). Nothing here touches run state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from builder.build.cache import CacheEntry, RegistryCache
from builder.build.prepare import PreparedImage
from builder.build.scheduler import Status
from builder.build.worker import BuildJob, ImageBuilder
from builder.engines import load_engine
from builder.engines.base import Engine
from builder.errors import KilnError, RegistryError
from builder.naming import ImageNaming
from builder.settings import RunOptions

LOG = logging.getLogger(__name__)
TOPIC = "kiln-build"        # a task's start: {run, name, builder, kind: build or push}
RESOURCE = "kiln-build"     # a worker's concurrent builds: dask worker --resources kiln-build=N
CANCEL_POLL = 2.0           # seconds between looks at the run's cancel event

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


@dataclass(frozen=True)
class RemoteBuild:
    """One image's task, as the client sends it."""

    run: str                               # the run's id (also its cancel event's name)
    image: PreparedImage                   # .context is the client's path: unused here
    context: bytes                         # the build context, as a tar
    parents: Mapping[str, PreparedImage]   # its in-set parents (refs, fingerprints)
    options: RunOptions
    naming: ImageNaming


@dataclass(frozen=True)
class RemoteResult:
    """What the task returns for an image it built."""

    name: str
    image_id: str
    entry: CacheEntry        # where its children (on any worker) find it
    status: str              # a Status value
    reason: str              # e.g. "refreshed: less"
    log: str
    worker: str
    duration: float          # seconds in the task
    hand_off: float          # of which pulling parents from and pushing to the cache
    started: float           # time.time() on the worker
    ended: float
    pushed: bool | None = None   # --push: whether it reached --registry
    push_reason: str = ""        # why not


@dataclass(frozen=True)
class RemotePush:
    """--push of an image found in the cache (not built): its task."""

    run: str
    image: PreparedImage
    entry: CacheEntry
    options: RunOptions
    naming: ImageNaming


class BuildFailed(Exception):
    """An image failed on a worker (raised, so that Dask retries it)."""

    def __init__(self, name: str, reason: str, log: str, worker: str):
        super().__init__(name, reason, log, worker)
        self.name, self.reason, self.log, self.worker = name, reason, log, worker

    def __str__(self) -> str:
        return f"image {self.name!r} failed on worker {self.worker}: {self.reason}"


class EngineUnavailable(Exception):
    """The worker's engine does not answer: the client leaves the worker out
    and submits the image to the others."""

    def __init__(self, address: str, worker: str, reason: str):
        super().__init__(address, worker, reason)
        self.address, self.worker, self.reason = address, worker, reason

    def __str__(self) -> str:
        return f"the engine of worker {self.worker} does not answer: {self.reason}"


def pack_context(context: Path) -> bytes:
    """The build context directory as an uncompressed tar."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(context, arcname=".")
    return buffer.getvalue()


def worker_engine(name: str) -> Engine:
    """The worker process's engine (one per engine name), from its environment."""
    with _engines_lock:
        if name not in _engines:
            _engines[name] = load_engine(name)
        return _engines[name]


def ping_engine(name: str) -> str:
    """Run on every worker before a run: '' if its engine answers, else why not."""
    try:
        worker_engine(name).ping()
    except KilnError as exc:
        return exc.message
    return ""


@dataclass
class _OnWorker:
    """What a task has on its worker: its name, its engine, a cancel flag (Ctrl-C)."""

    worker: str
    engine: Engine
    cancel: threading.Event
    started: float


@contextlib.contextmanager
def _on_worker(run: str, name: str, kind: str, engine_name: str) -> Iterator[_OnWorker]:
    """Announce the task's start, watch the run's cancel event, check the engine answers."""
    from distributed import get_client, get_worker

    worker = get_worker()
    worker_name = str(worker.name)
    started = time.time()
    worker.log_event(TOPIC, {"run": run, "name": name, "builder": worker_name, "kind": kind})
    cancel, finished = threading.Event(), threading.Event()
    threading.Thread(target=_watch, args=(get_client(), run, cancel, finished),
                     name=f"kiln-cancel-{name}", daemon=True).start()
    try:
        engine = worker_engine(engine_name)
        try:
            engine.ping()
        except KilnError as exc:
            raise EngineUnavailable(worker.address, worker_name, exc.message) from exc
        yield _OnWorker(worker_name, engine, cancel, started)
    finally:
        finished.set()


def build_image(request: RemoteBuild, parents: Mapping[str, CacheEntry]) -> RemoteResult:
    """Build ``request.image`` on this worker's engine (and push it with --push);
    ``parents``: their cache entries."""
    name = request.image.name
    with _on_worker(request.run, name, "build", request.options.engine) as here, \
            tempfile.TemporaryDirectory(prefix=f"kiln-{name}-") as tmp:
        cache = RegistryCache(request.options.cache, request.naming)
        try:
            image = dataclasses.replace(request.image, context=Path(tmp, "context"))
            _unpack(request.context, image.context)
            images = {**request.parents, name: image}
            job = BuildJob(
                images=images, options=request.options, work_dir=Path(tmp),
                logs_dir=Path(tmp, "logs"), cache=cache, cache_required=True,
                push_registry=request.naming.registry,
                cached={parent: entry for parent, entry in parents.items()
                        if not _holds(here.engine, images[parent], entry)})
            builder = ImageBuilder(here.engine, job)
            result = builder.build(name, here.cancel)
            if not result.ok:
                raise BuildFailed(name, result.reason, _log(builder, name), here.worker)
            entry = _cache_entry(cache, image, _log(builder, name), here.worker)
            pushed, push_reason = _push(builder, name, here.cancel, request.options)
        finally:
            cache.close()
        ended = time.time()
        return RemoteResult(
            name=name, image_id=result.image_id, entry=entry,
            status=(result.status or Status.BUILT).value, reason=result.reason,
            log=_log(builder, name), worker=here.worker, duration=ended - here.started,
            hand_off=builder.hand_off(name), started=here.started, ended=ended,
            pushed=pushed, push_reason=push_reason)


def push_image(request: RemotePush) -> RemoteResult:
    """--push of an image found in the cache: pull it by digest, push it to --registry."""
    name = request.image.name
    with _on_worker(request.run, name, "push", request.options.engine) as here, \
            tempfile.TemporaryDirectory(prefix=f"kiln-{name}-") as tmp:
        job = BuildJob(images={name: request.image}, options=request.options,
                       work_dir=Path(tmp), logs_dir=Path(tmp, "logs"),
                       cached={name: request.entry}, push_registry=request.naming.registry)
        builder = ImageBuilder(here.engine, job)
        pushed, push_reason = _push(builder, name, here.cancel, request.options)
        ended = time.time()
        return RemoteResult(
            name=name, image_id=request.entry.image_id, entry=request.entry,
            status=Status.CACHED.value, reason="", log=_log(builder, name), worker=here.worker,
            duration=0.0, hand_off=builder.hand_off(name), started=here.started, ended=ended,
            pushed=pushed, push_reason=push_reason)


def _push(builder: ImageBuilder, name: str, cancel: threading.Event,
          options: RunOptions) -> tuple[bool | None, str]:
    """--push, with --retries: (pushed, why not); (None, "") without --push."""
    if not options.push:
        return None, ""
    result = None
    for _ in range(options.retries + 1):
        result = builder.push(name, cancel)
        if result.ok or cancel.is_set():
            break
    return result.ok, result.reason


def _log(builder: ImageBuilder, name: str) -> str:
    path = builder.log_path(name)
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def _unpack(data: bytes, target: Path) -> None:
    target.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(target, filter="tar")


def _holds(engine: Engine, image: PreparedImage, entry: CacheEntry) -> bool:
    """Whether the engine has the parent's cached image at the reference the Dockerfile uses."""
    info = engine.inspect(image.ref)
    return info is not None and entry.image_id is not None and info.id == entry.image_id


def _cache_entry(cache: RegistryCache, image: PreparedImage, log: str,
                 worker: str) -> CacheEntry:
    """The entry just pushed, with its digest: what the image's children pull."""
    try:
        entry = cache.lookup(image)
    except RegistryError as exc:
        raise BuildFailed(image.name, f"pushed to the cache registry, but looking "
                          f"{cache.ref(image)} up failed: {exc.message}", log, worker) from exc
    if entry is None:
        raise BuildFailed(image.name, f"pushed to the cache registry, but "
                          f"{cache.ref(image)} is not there", log, worker)
    return entry


def _watch(client, run: str, cancel: threading.Event, finished: threading.Event) -> None:
    """Set ``cancel`` when the client sets the run's Dask event (Ctrl-C).

    ``client``: the worker's, from the task's thread (a Dask Event made in
    another thread needs it given).
    """
    from distributed import Event

    try:
        event = Event(run, client=client)
        while not finished.is_set():
            if event.wait(timeout=CANCEL_POLL):
                cancel.set()
                return
    except Exception:  # the scheduler went away: nothing to listen to
        LOG.debug("cannot watch the run's cancel event %s", run, exc_info=True)
