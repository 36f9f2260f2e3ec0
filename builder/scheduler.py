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
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import networkx as nx


class Status(enum.Enum):
    QUEUED = "queued"
    BUILDING = "building"
    BUILT = "built"
    UNCHANGED = "unchanged"
    PUSHING = "pushing"
    PUSHED = "pushed"
    FAILED = "failed"
    PARENT_FAILED = "parent_failed"
    PUSH_FAILED = "push_failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def ok(self) -> bool:
        return self in (Status.BUILT, Status.UNCHANGED, Status.PUSHED, Status.SKIPPED)

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
    build_status: Status | None = None   # BUILT or UNCHANGED, also once pushed


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
                 failed: Mapping[str, str] | None = None):
        """``failed``: images that failed before the run (e.g. their sources)."""
        self._names = set(names)
        self._graph = graph
        self._build = build
        self._push = push
        self._options = options
        self._on_event = on_event or (lambda name, status, detail: None)
        self._clock = clock
        self._state = {name: _State() for name in self._names}
        self._rank = priorities(graph, self._names, options.estimates)
        self._waiting = {name: sum(1 for p in graph.predecessors(name) if p in self._names)
                         for name in self._names}
        self._ready: list[tuple[float, str]] = []
        self._failed_before = dict(failed or {})
        self.cancel = threading.Event()

    # -- public ------------------------------------------------------------

    def run(self) -> dict[str, Outcome]:
        """Build (and push) everything; returns one Outcome per image.

        On KeyboardInterrupt no new work starts, running work is asked to stop
        through ``cancel``, and the interrupt is re-raised once the workers
        have returned; ``outcomes()`` still gives the partial result.
        """
        for name, reason in sorted(self._failed_before.items()):
            if name in self._names:
                self._fail(name, Status.FAILED, reason)
        for name in sorted(self._names):
            if self._waiting[name] == 0 and self._state[name].status is Status.QUEUED:
                self._make_ready(name)
        builds = ThreadPoolExecutor(max(1, self._options.threads), "kiln-build")
        pushes = ThreadPoolExecutor(max(1, self._options.push_threads), "kiln-push")
        running: dict[Future, tuple[str, str]] = {}
        try:
            while True:
                self._start_ready(builds, running)
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    name, kind = running.pop(future)
                    self._finish(name, kind, future, pushes, running)
        except KeyboardInterrupt:
            self.cancel.set()
            for future in running:
                future.cancel()
            wait(running)
            for state in self._state.values():
                if not state.status.done:
                    state.status = Status.CANCELLED
                    state.reason = "interrupted"
            raise
        finally:
            builds.shutdown(wait=True, cancel_futures=True)
            pushes.shutdown(wait=True, cancel_futures=True)
        return self.outcomes()

    def outcomes(self) -> dict[str, Outcome]:
        return {name: Outcome(name, s.status, s.reason, s.image_id, s.build_time,
                              s.push_time, s.attempts, s.build_status)
                for name, s in sorted(self._state.items())}

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
            self._on_event(name, Status.BUILDING,
                           f"attempt {state.attempts}" if state.attempts > 1 else "")
            running[builds.submit(self._call, self._build, name)] = (name, "build")
            building += 1

    def _call(self, function, name: str) -> WorkResult:
        try:
            return function(name, self.cancel)
        except Exception as exc:  # a worker never takes the run down
            return WorkResult(False, f"{type(exc).__name__}: {exc}")

    def _finish(self, name: str, kind: str, future: Future,
                pushes: ThreadPoolExecutor, running: dict) -> None:
        state = self._state[name]
        result = future.result()
        elapsed = self._clock() - state.started
        if kind == "build":
            state.build_time += elapsed
            self._finish_build(name, state, result, pushes, running)
        else:
            state.push_time += elapsed
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
        self._on_event(name, state.status, "")
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
