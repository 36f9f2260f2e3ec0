"""Running image builds over the DAG in parallel.

The scheduler alone owns the run state. Workers (threads running the build
and push callables) only return results; the scheduler's loop, in the calling
thread, waits for the first future to finish, records its result and starts
whatever became ready. An image starts as soon as all its scheduled parents
have built (not level by level); among ready images, the one heading the
longest remaining chain goes first.
"""

from __future__ import annotations

import enum
import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import networkx as nx

from builder.errors import KilnError

LOG = logging.getLogger(__name__)


class Status(enum.Enum):
    QUEUED = "queued"
    BUILDING = "building"
    BUILT = "built"
    UNCHANGED = "unchanged"
    CACHED = "cached"          # found in --cache-registry by its fingerprint: not built
    PUSHING = "pushing"
    PUSHED = "pushed"
    FAILED = "failed"
    PARENT_FAILED = "parent_failed"
    PUSH_FAILED = "push_failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def ok(self) -> bool:
        return self in (Status.BUILT, Status.UNCHANGED, Status.CACHED, Status.PUSHED,
                        Status.SKIPPED)

    @property
    def done(self) -> bool:
        return self not in (Status.QUEUED, Status.BUILDING, Status.PUSHING)


@dataclass(frozen=True)
class WorkResult:
    """What a build or push callable returns (it may also raise)."""

    ok: bool
    reason: str = ""
    image_id: str | None = None
    status: Status | None = None   # e.g. UNCHANGED; default BUILT / PUSHED


@dataclass(frozen=True)
class Outcome:
    """The final record of one image, for the summary."""

    name: str
    status: Status
    reason: str = ""
    image_id: str | None = None
    duration: float = 0.0          # seconds spent building (all attempts)
    push_duration: float = 0.0
    attempts: int = 0
    build_status: Status | None = None   # BUILT, UNCHANGED or CACHED, also once pushed
    worker: str | None = None      # the Dask worker that built it (--executor dask)


@dataclass
class _State:
    status: Status = Status.QUEUED
    reason: str = ""
    image_id: str | None = None
    build_time: float = 0.0
    push_time: float = 0.0
    attempts: int = 0
    push_attempts: int = 0
    started: float = 0.0
    build_status: Status | None = None
    working: str | None = None     # "build" or "push" while a worker has it


# Seconds between looks at signals while waiting: Ctrl-C may be taken by a
# worker thread, and the main thread sees it only once it wakes up.
_POLL = 0.5

BuildFn = Callable[[str, threading.Event], WorkResult]
PushFn = Callable[[str, threading.Event], WorkResult]
EventFn = Callable[[str, Status, str], None]


@dataclass(frozen=True)
class SchedulerOptions:
    threads: int = 8
    retries: int = 0
    push_threads: int = 1
    estimates: Mapping[str, float] = field(default_factory=dict)  # seconds per image


def priorities(graph: nx.DiGraph, names: Iterable[str],
               estimates: Mapping[str, float]) -> dict[str, float]:
    """Length of the longest chain each image heads (its own estimate included)."""
    names = set(names)
    rank: dict[str, float] = {}
    for node in reversed(list(nx.topological_sort(graph.subgraph(names)))):
        below = [rank[child] for child in graph.successors(node) if child in names]
        rank[node] = estimates.get(node, 1.0) + max(below, default=0.0)
    return rank


class Scheduler:
    def __init__(self, graph: nx.DiGraph, names: Iterable[str], build: BuildFn,
                 push: PushFn | None = None, options: SchedulerOptions = SchedulerOptions(),
                 on_event: EventFn | None = None, clock: Callable[[], float] = time.monotonic,
                 failed: Mapping[str, str] | None = None,
                 executor: Callable[[int, str], Executor] = ThreadPoolExecutor):
        """``failed``: images that failed before the run (e.g. their sources).

        ``clock`` and ``executor`` (``executor(threads, name prefix)``) are
        replaced by fakes in tests, so that they need no real sleeps.
        """
        self._names = set(names)
        self._graph = graph
        self._build = build
        self._push = push
        self._options = options
        self._on_event = on_event or (lambda name, status, detail: None)
        self._clock = clock
        self._executor = executor
        self._state = {name: _State() for name in self._names}
        self._rank = priorities(graph, self._names, options.estimates)
        self._waiting = {name: sum(1 for p in graph.predecessors(name) if p in self._names)
                         for name in self._names}
        self._ready: list[tuple[float, str]] = []
        self._failed_before = dict(failed or {})
        self.cancel = threading.Event()
        # what workers are doing, for waiting on them after an interrupt
        self._calls = threading.Condition()
        self._in_call: set[str] = set()     # in the work function now
        self._entered: set[str] = set()     # entered it since last submitted
        self._ended: dict[str, float] = {}       # when its last call ended
        self._results: dict[str, WorkResult] = {}  # and what it returned

    # -- public ------------------------------------------------------------

    def run(self) -> dict[str, Outcome]:
        """Build (and push) everything; returns one Outcome per image.

        On KeyboardInterrupt no new work starts, every image not done is
        CANCELLED at once (so a second interrupt still leaves true reasons),
        running work is asked to stop through ``cancel`` and waited for, and
        the interrupt is re-raised; ``outcomes()`` gives the partial result.
        A second interrupt stops the waiting.
        """
        builds = self._executor(max(1, self._options.threads), "kiln-build")
        pushes = self._executor(max(1, self._options.push_threads), "kiln-push")
        running: dict[Future, tuple[str, str]] = {}
        try:
            for name, reason in sorted(self._failed_before.items()):
                if name in self._names:
                    self._fail(name, Status.FAILED, reason)
            for name in sorted(self._names):
                if self._waiting[name] == 0 and self._state[name].status is Status.QUEUED:
                    self._make_ready(name)
            while True:
                self._start_ready(builds, running)
                if not running:
                    break
                done, _ = wait(running, timeout=_POLL, return_when=FIRST_COMPLETED)
                for future in done:
                    name, kind = running.pop(future)
                    self._finish(name, kind, future, pushes, running)
        except KeyboardInterrupt:
            self._interrupt(running)
            try:
                self._wait_for_workers()
            except KeyboardInterrupt:  # a second one: stop waiting
                self._settle()
            raise
        finally:
            # after an interrupt the workers were waited for (or given up on)
            builds.shutdown(wait=not self.cancel.is_set(), cancel_futures=True)
            pushes.shutdown(wait=not self.cancel.is_set(), cancel_futures=True)
        return self.outcomes()

    def outcomes(self) -> dict[str, Outcome]:
        return {name: Outcome(name, s.status, s.reason, s.image_id, s.build_time,
                              s.push_time, s.attempts, s.build_status)
                for name, s in sorted(self._state.items())}

    # -- interrupts ------------------------------------------------------------

    def _interrupt(self, running: dict[Future, tuple[str, str]]) -> None:
        """Stop: cancel what has not started, mark every unfinished image."""
        with self._calls:  # from here on no worker starts any work
            self.cancel.set()
            entered = set(self._entered)
        for future in running:
            future.cancel()  # e.g. a push still waiting for a push thread
        for name, state in self._state.items():
            if state.working is not None and name not in entered:
                state.working = None  # submitted, never started
        for name, state in sorted(self._state.items()):
            if state.status.done:
                continue
            if state.status is Status.BUILDING and state.working:
                reason = "interrupted while building"
            elif state.status is Status.BUILDING and state.attempts > 1:
                reason = "not retried: interrupted"
            elif state.status is Status.BUILDING:
                reason = "not started: interrupted"
            elif state.status is Status.PUSHING and state.working:
                reason = "interrupted while pushing"
            elif state.status is Status.PUSHING:
                reason = "built, not pushed: interrupted"
            elif state.attempts:
                reason = "not retried: interrupted"
            else:
                reason = "not started: interrupted"
            state.status, state.reason = Status.CANCELLED, reason
            self._on_event(name, Status.CANCELLED, reason)
        self._ready.clear()

    def _wait_for_workers(self) -> None:
        """Wait for the workers to stop; record how long each ran, and the
        images whose work ended well before it could be stopped.

        Workers report their end and result themselves (``_call``), so this
        does not depend on the futures: the interrupt may have come between
        a submit and its bookkeeping.
        """
        with self._calls:
            while self._in_call:
                self._calls.wait(_POLL)
            results = dict(self._results)
        working = {name: state.working for name, state in self._state.items()}
        self._settle()
        for name, kind in sorted(working.items()):
            state, result = self._state[name], results.get(name)
            if kind is None or result is None or not result.ok:
                continue
            if kind == "build":  # the image exists
                state.image_id = result.image_id
                state.build_status = result.status or Status.BUILT
                if self._push is None:
                    state.status, state.reason = state.build_status, ""
                else:
                    state.reason = "built, not pushed: interrupted"
            else:
                state.status, state.reason = Status.PUSHED, ""
            self._on_event(name, state.status, state.reason)

    def _settle(self) -> None:
        """Charge the images workers had: until their worker ended, or now."""
        now = self._clock()
        with self._calls:
            in_call, ended = set(self._in_call), dict(self._ended)
        for name, state in self._state.items():
            if state.working is not None:
                self._charge(state, now if name in in_call else ended.get(name, now))
                state.working = None

    @staticmethod
    def _charge(state: _State, now: float) -> None:
        """Count the time since ``state.started`` as building or pushing time."""
        elapsed = max(0.0, now - state.started)
        if state.working == "build":
            state.build_time += elapsed
        elif state.working == "push":
            state.push_time += elapsed
        state.started = now

    # -- internals (scheduler thread only) -----------------------------------

    def _make_ready(self, name: str) -> None:
        heapq.heappush(self._ready, (-self._rank[name], name))

    def _start_ready(self, builds: ThreadPoolExecutor, running: dict) -> None:
        building = sum(1 for _, kind in running.values() if kind == "build")
        while self._ready and building < self._options.threads and not self.cancel.is_set():
            _, name = heapq.heappop(self._ready)
            state = self._state[name]
            state.status = Status.BUILDING
            state.attempts += 1
            state.started = self._clock()
            state.working = "build"
            self._submitted(name)
            self._on_event(name, Status.BUILDING,
                           f"attempt {state.attempts}" if state.attempts > 1 else "")
            running[builds.submit(self._call, self._build, name)] = (name, "build")
            building += 1

    def _submitted(self, name: str) -> None:
        with self._calls:
            self._entered.discard(name)

    def _call(self, function, name: str) -> WorkResult:
        """Run in a worker thread: the work, and a note of when it ends."""
        with self._calls:
            if self.cancel.is_set():  # submitted, but the run was interrupted
                return WorkResult(False, "interrupted")
            self._in_call.add(name)
            self._entered.add(name)
            self._ended.pop(name, None)
            self._results.pop(name, None)
        result = WorkResult(False, "interrupted")
        try:
            result = function(name, self.cancel)
        except Exception as exc:  # a worker never takes the run down
            if not isinstance(exc, KilnError):  # a bug: its traceback shows under --debug
                LOG.debug("unexpected error in the work on %s", name, exc_info=True)
            result = WorkResult(False, f"{type(exc).__name__}: {exc}")
        finally:
            with self._calls:
                self._in_call.discard(name)
                self._ended[name] = self._clock()
                self._results[name] = result
                self._calls.notify_all()
        return result

    def _finish(self, name: str, kind: str, future: Future,
                pushes: ThreadPoolExecutor, running: dict) -> None:
        state = self._state[name]
        result = future.result()
        self._charge(state, self._clock())
        state.working = None
        if kind == "build":
            self._finish_build(name, state, result, pushes, running)
        else:
            self._finish_push(name, state, result, pushes, running)

    def _finish_build(self, name, state, result, pushes, running) -> None:
        if not result.ok:
            if state.attempts <= self._options.retries and not self.cancel.is_set():
                state.status = Status.QUEUED
                self._on_event(name, Status.QUEUED, f"retrying: {result.reason}")
                self._make_ready(name)
                return
            self._fail(name, Status.FAILED, result.reason)
            return
        state.image_id = result.image_id
        state.status = state.build_status = result.status or Status.BUILT
        state.reason = result.reason        # e.g. "refreshed: less" (--refresh)
        self._on_event(name, state.status, result.reason)
        for child in sorted(self._graph.successors(name)):
            if child in self._names:
                self._waiting[child] -= 1
                if self._waiting[child] == 0 and self._state[child].status == Status.QUEUED:
                    self._make_ready(child)
        if self._push is not None:
            self._start_push(name, state, pushes, running)

    def _start_push(self, name, state, pushes, running) -> None:
        state.status = Status.PUSHING
        state.push_attempts += 1
        state.started = self._clock()
        state.working = "push"
        self._submitted(name)
        self._on_event(name, Status.PUSHING, "")
        running[pushes.submit(self._call, self._push, name)] = (name, "push")

    def _finish_push(self, name, state, result, pushes, running) -> None:
        if result.ok:
            state.status = Status.PUSHED
            self._on_event(name, Status.PUSHED, "")
        elif state.push_attempts <= self._options.retries and not self.cancel.is_set():
            self._on_event(name, Status.PUSHING, f"retrying: {result.reason}")
            self._start_push(name, state, pushes, running)
        else:
            state.status = Status.PUSH_FAILED
            state.reason = result.reason
            self._on_event(name, Status.PUSH_FAILED, result.reason)

    def _fail(self, name: str, status: Status, reason: str) -> None:
        state = self._state[name]
        state.status, state.reason = status, reason
        self._on_event(name, status, reason)
        for descendant in sorted(nx.descendants(self._graph, name) & self._names):
            other = self._state[descendant]
            if other.status == Status.QUEUED:
                other.status = Status.PARENT_FAILED
                other.reason = f"parent {name!r} failed"
                self._on_event(descendant, Status.PARENT_FAILED, other.reason)
