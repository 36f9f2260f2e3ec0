"""Running one run's builds as Dask tasks (``--executor dask``).

Each image is a task, submitted as soon as its in-set parents are built
(or found in the cache registry) with their cache entries as arguments; Dask
runs it on any worker with a free ``kiln-build`` resource. kiln's
critical-path ranks are the tasks' priorities; ``--retries`` are task
retries; a worker that dies has its tasks rerun elsewhere by Dask, and one
whose engine stops answering is left out: its images are submitted again,
to the other workers. Images found in the cache registry are not tasks at
all (status ``cached``).

The DAG's edges are kept here rather than given to Dask as task
dependencies: Dask runs a task where its dependencies' results are, so every
child would follow its parent to the same worker (one worker per family);
submitted when ready, a task goes to the least busy worker.

Like the thread :class:`~builder.build.scheduler.Scheduler`, this object alone
owns the run state, in the calling thread: tasks only return results (see
:mod:`builder.build.remote`). Their starts (a Dask event the task sends) and
ends (a future's callback) arrive on one queue, which the loop reads; it
writes each image's log on the client and reports every change to
``on_event``.
"""

from __future__ import annotations

import logging
import queue
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import networkx as nx

from builder.build.cache import CacheEntry
from builder.build.cluster import Cluster, import_distributed
from builder.build.prepare import PreparedImage
from builder.build.remote import (
    RESOURCE,
    TOPIC,
    BuildFailed,
    EngineUnavailable,
    RemoteBuild,
    RemotePush,
    RemoteResult,
    build_image,
    pack_context,
    push_image,
)
from builder.build.scheduler import EventFn, Outcome, SchedulerOptions, Status, priorities
from builder.naming import ImageNaming
from builder.settings import RunOptions

LOG = logging.getLogger(__name__)
_POLL = 0.5     # seconds between looks at signals while waiting (Ctrl-C)


@dataclass(frozen=True)
class Tasks:
    """Makes the tasks of a run's images (each context packed when asked)."""

    images: Mapping[str, PreparedImage]
    options: RunOptions
    naming: ImageNaming

    @property
    def push(self) -> bool:
        return self.options.push

    def build(self, name: str, run: str) -> RemoteBuild:
        image = self.images[name]
        return RemoteBuild(run=run, image=image, context=pack_context(image.context),
                           parents={parent: self.images[parent] for parent in image.parents
                                    if parent in self.images},
                           options=self.options, naming=self.naming)

    def push_cached(self, name: str, run: str, entry: CacheEntry) -> RemotePush:
        return RemotePush(run=run, image=self.images[name], entry=entry,
                          options=self.options, naming=self.naming)


@dataclass
class _State:
    status: Status = Status.QUEUED
    reason: str = ""
    image_id: str | None = None
    duration: float = 0.0
    attempts: int = 0
    worker: str | None = None
    build_status: Status | None = None   # BUILT or CACHED, also once pushed


class DaskScheduler:
    def __init__(self, cluster: Cluster, graph: nx.DiGraph, names: Iterable[str],
                 tasks: Tasks, *,
                 options: SchedulerOptions,
                 cached: Mapping[str, CacheEntry] | None = None,
                 write_log: Callable[[str, str], None] = lambda name, text: None,
                 on_event: EventFn | None = None,
                 failed: Mapping[str, str] | None = None):
        """``tasks``: makes each image's task.

        ``cached``: the images found in the cache registry (not built);
        ``failed``: those that failed before the run (e.g. their sources).
        """
        self._cluster = cluster
        self._client = cluster.client
        self._graph = graph
        self._names = set(names)
        self._tasks = tasks
        self._options = options
        self._cached = {name: entry for name, entry in (cached or {}).items()
                        if name in self._names}
        self._write_log = write_log
        self._on_event = on_event or (lambda name, status, detail: None)
        self._failed_before = dict(failed or {})
        self._state = {name: _State() for name in self._names}
        self._rank = priorities(graph, self._names, options.estimates)
        self._futures: dict[str, object] = {}
        self._submits: dict[str, int] = {}      # how often each image was submitted
        self._usable = dict(cluster.workers)    # address -> name of the workers to use
        self._not_used = dict(cluster.not_used)  # worker -> why it is left out
        self._entries: dict[str, CacheEntry] = dict(self._cached)  # where parents are
        self._events: queue.Queue = queue.Queue()
        self.run_id = f"kiln-{uuid.uuid4().hex}"
        self.results: dict[str, RemoteResult] = {}   # what each task returned
        self.client_seconds = 0.0    # time spent submitting and handling tasks,
        self.fetch_seconds = 0.0     # of which fetching their results from the workers

    # -- public ------------------------------------------------------------

    def run(self) -> dict[str, Outcome]:
        """Build everything; one Outcome per image.

        On KeyboardInterrupt every task not done is cancelled (running builds
        are told to stop through the run's Dask event), every image not done
        is CANCELLED, and the interrupt is re-raised.
        """
        client = self._client
        client.subscribe_topic(TOPIC, lambda event: self._events.put(("started", event)))
        try:
            start = time.perf_counter()
            self._start()
            self.client_seconds += time.perf_counter() - start
            while any(not state.status.done for state in self._state.values()):
                try:
                    item = self._events.get(timeout=_POLL)
                except queue.Empty:
                    continue
                start = time.perf_counter()
                self._handle(item)
                self.client_seconds += time.perf_counter() - start
        except KeyboardInterrupt:
            self._interrupt()
            raise
        finally:
            try:
                client.unsubscribe_topic(TOPIC)
            except Exception:  # the scheduler is gone: nothing to unsubscribe from
                LOG.debug("cannot unsubscribe from %s", TOPIC, exc_info=True)
        return self.outcomes()

    @property
    def workers_not_used(self) -> dict[str, str]:
        """The workers left out (before or during the run): worker -> why."""
        return dict(self._not_used)

    def outcomes(self) -> dict[str, Outcome]:
        return {name: Outcome(name, s.status, s.reason, s.image_id, s.duration,
                              attempts=s.attempts,
                              build_status=s.build_status,
                              worker=s.worker)
                for name, s in sorted(self._state.items())}

    # -- submitting ------------------------------------------------------------

    def _start(self) -> None:
        for name, reason in sorted(self._failed_before.items()):
            if name in self._names:
                self._fail(name, reason)
        for name, entry in sorted(self._cached.items()):
            state = self._state[name]
            if state.status is Status.QUEUED:
                state.status = state.build_status = Status.CACHED
                state.image_id = entry.image_id
                self._on_event(name, Status.CACHED, "")
                if self._tasks.push:    # pulled from the cache and pushed by a worker
                    state.status = Status.PUSHING
                    self._submit(name)
        self._submit_ready(sorted(self._names))

    def _submit_ready(self, names: Iterable[str]) -> None:
        """Submit the queued images among ``names`` whose in-set parents are all built."""
        for name in names:
            parents = [parent for parent in self._graph.predecessors(name)
                       if parent in self._names]
            if self._state[name].status is not Status.QUEUED or name in self._futures \
                    or not all(parent in self._entries for parent in parents):
                continue
            self._submit(name)

    def _submit(self, name: str) -> None:
        """Its build task, or its push task if it was found in the cache."""
        if self._state[name].build_status is Status.CACHED:
            call = (push_image, self._tasks.push_cached(name, self.run_id, self._entries[name]))
        else:
            call = (build_image, self._tasks.build(name, self.run_id),
                    {parent: self._entries[parent] for parent in self._graph.predecessors(name)
                     if parent in self._names})
        # only workers known to work, once one was left out (new ones are not checked)
        restrict = list(self._usable) if self._not_used else None
        count = self._submits[name] = self._submits.get(name, 0) + 1
        future = self._client.submit(
            *call, key=f"kiln-{call[0].__name__}-{self.run_id[5:13]}-{name}-{count}", pure=False,
            priority=round(self._rank[name] * 1000), retries=self._options.retries,
            resources={RESOURCE: 1}, workers=restrict)
        future.add_done_callback(lambda f, name=name: self._events.put(("done", name, f)))
        self._futures[name] = future

    # -- results (the calling thread only) ------------------------------------

    def _handle(self, item) -> None:
        if item[0] == "done":
            self._finish(item[1], item[2])
            return
        _, message = item[1]          # a topic event: (time, message)
        if not isinstance(message, dict) or message.get("run") != self.run_id:
            return                    # another run's
        name, worker = message.get("name"), message.get("builder")
        state = self._state.get(name)
        if state is None or state.status.done:
            return
        status = Status.PUSHING if message.get("kind") == "push" else Status.BUILDING
        state.status, state.worker = status, worker
        if status is Status.BUILDING:
            state.attempts += 1
        detail = f"on {worker}" + (f", attempt {state.attempts}" if state.attempts > 1 else "")
        self._on_event(name, status, detail)

    def _finish(self, name: str, future) -> None:
        state = self._state[name]
        if state.status.done:
            return          # e.g. cancelled as a parent failed
        pushing = state.build_status is Status.CACHED
        state.attempts = max(state.attempts, 0 if pushing else 1)
        if future.status == "finished":
            start = time.perf_counter()
            result: RemoteResult = future.result()
            self.fetch_seconds += time.perf_counter() - start
            self.results[name] = result
            self._write_log(name, result.log)
            self._finished(name, state, result)
            return
        if future.status == "error":
            exc = future.exception()
            if isinstance(exc, EngineUnavailable):
                self._elsewhere(name, exc)
            elif pushing:
                state.status, state.reason = Status.PUSH_FAILED, f"{type(exc).__name__}: {exc}"
                self._on_event(name, state.status, state.reason)
            elif isinstance(exc, BuildFailed):
                self._write_log(name, exc.log)
                state.worker = exc.worker
                self._fail(name, exc.reason)
            else:
                self._write_log(name, f"kiln: FAILED: {type(exc).__name__}: {exc}\n")
                self._fail(name, f"{type(exc).__name__}: {exc}")
        else:
            self._fail(name, f"the task was {future.status} by the Dask scheduler")

    def _finished(self, name: str, state: _State, result: RemoteResult) -> None:
        state.build_status = Status(result.status)
        state.status, state.reason = state.build_status, result.reason
        state.image_id, state.worker = result.image_id, result.worker
        state.duration = result.duration
        on = f"on {result.worker}"
        if result.pushed is not None:
            if state.build_status is not Status.CACHED:   # cached: reported at the start
                self._on_event(name, state.status, on + (f": {state.reason}"
                                                         if state.reason else ""))
            state.status = Status.PUSHED if result.pushed else Status.PUSH_FAILED
            state.reason = result.push_reason
        self._on_event(name, state.status, on + (f": {state.reason}" if state.reason else ""))
        if name not in self._entries:
            self._entries[name] = result.entry
            self._submit_ready(sorted(self._graph.successors(name)))

    def _elsewhere(self, name: str, exc: EngineUnavailable) -> None:
        """The worker's engine does not answer: leave the worker out, and
        submit the image again to the others (if any are left)."""
        state = self._state[name]
        self._usable.pop(exc.address, None)
        if exc.worker not in self._not_used:
            self._not_used[exc.worker] = f"its engine stopped answering: {exc.reason}"
            LOG.warning("Dask worker %s is left out: its engine stopped answering (%s)",
                        exc.worker, exc.reason)
        if not self._usable:
            self._fail(name, f"no worker left whose engine answers (the last: {exc})")
            return
        state.status = Status.PUSHING if state.build_status is Status.CACHED else Status.QUEUED
        self._on_event(name, state.status, f"retrying elsewhere: {exc}")
        self._submit(name)

    def _fail(self, name: str, reason: str) -> None:
        """FAILED; its descendants (never submitted) PARENT_FAILED."""
        state = self._state[name]
        state.status, state.reason = Status.FAILED, reason
        self._on_event(name, Status.FAILED, reason)
        for descendant in sorted(nx.descendants(self._graph, name) & self._names):
            other = self._state[descendant]
            if not other.status.done:
                other.status = Status.PARENT_FAILED
                other.reason = f"parent {name!r} failed"
                self._on_event(descendant, Status.PARENT_FAILED, other.reason)

    # -- interrupts ------------------------------------------------------------

    def _interrupt(self) -> None:
        """Cancel every task not done; tell running builds to stop."""
        distributed = import_distributed()
        pending = [future for name, future in self._futures.items()
                   if not self._state[name].status.done]
        try:
            self._client.cancel(pending)
            distributed.Event(self.run_id, client=self._client).set()
        except Exception:  # the scheduler is gone: nothing runs there any more
            LOG.debug("cannot cancel the run's tasks", exc_info=True)
        for name, state in sorted(self._state.items()):
            if state.status.done:
                continue
            if state.status is Status.PUSHING:
                reason = "not pushed: interrupted"
            elif state.status is Status.BUILDING:
                reason = "interrupted while building"
                self._write_log(name, f"kiln: interrupted while building on {state.worker} "
                                      f"(its output was not fetched)\n")
            elif state.attempts:
                reason = "not retried: interrupted"
            else:
                reason = "not started: interrupted"
            state.status, state.reason = Status.CANCELLED, reason
            self._on_event(name, Status.CANCELLED, reason)
