"""The scheduler with fake build and push functions (no engine).

Most tests run on a fake clock and an inline executor, so they need no real
sleeps; the ones about threads (pushes beside builds, interrupts) use the real
thread pools and wait on events, never on time.
"""

from __future__ import annotations

import logging
import signal
import threading
from concurrent.futures import Future

import networkx as nx
import pytest

from builder.build.durations import load_durations, save_durations
from builder.build.scheduler import Scheduler, SchedulerOptions, Status, WorkResult, priorities


def dag(*edges, nodes=()):
    graph = nx.DiGraph()
    graph.add_nodes_from(nodes)
    graph.add_edges_from(edges)
    return graph


class FakeClock:
    def __init__(self, now=100.0):
        self.now = now

    def __call__(self):
        return self.now


class InlineExecutor:
    """Runs each submitted call at once in the scheduler's thread (one worker)."""

    def __init__(self, threads, prefix):
        self.threads = threads

    def submit(self, fn, *args):
        future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 (a fake executor hands every error back)
            future.set_exception(exc)
        return future

    def shutdown(self, wait=True, cancel_futures=False):
        pass


def fake_scheduler(graph, build, clock=None, names=None, **kwargs):
    """A Scheduler on ``clock`` (a new FakeClock by default) and the inline executor."""
    return Scheduler(graph, graph.nodes if names is None else names, build,
                     clock=clock or FakeClock(), executor=InlineExecutor, **kwargs)


class Recorder:
    """A fake build: takes ``delay`` seconds of the fake clock, records start/end,
    fails the names it is told to."""

    def __init__(self, fail=(), fail_times=None, delay=0.01, clock=None):
        self.fail = set(fail)
        self.fail_times = dict(fail_times or {})
        self.delay = delay
        self.clock = clock or FakeClock()
        self.events = []

    def __call__(self, name, cancel):
        self.events.append(("start", name, self.clock()))
        self.clock.now += self.delay
        self.events.append(("end", name, self.clock()))
        if self.fail_times.get(name, 0) > 0:
            self.fail_times[name] -= 1
            return WorkResult(False, "flaky")
        if name in self.fail:
            return WorkResult(False, "RUN exited 1")
        return WorkResult(True, image_id=f"sha256:{name}")

    def started(self):
        return [name for kind, name, _ in self.events if kind == "start"]

    def time_of(self, kind, name):
        return next(t for k, n, t in self.events if k == kind and n == name)


def test_children_start_after_all_parents_built():
    graph = dag(("base", "a"), ("base", "b"), ("a", "multi"), ("b", "multi"))
    build = Recorder()
    outcomes = fake_scheduler(graph, build, build.clock,
                              options=SchedulerOptions(threads=4)).run()
    assert {o.status for o in outcomes.values()} == {Status.BUILT}
    assert build.time_of("start", "multi") >= max(build.time_of("end", "a"),
                                                  build.time_of("end", "b"))
    assert outcomes["multi"].image_id == "sha256:multi"


def test_failure_marks_descendants_and_siblings_go_on():
    graph = dag(("base", "bad"), ("bad", "child"), ("child", "grandchild"), ("base", "good"))
    build = Recorder(fail={"bad"})
    outcomes = fake_scheduler(graph, build).run()
    assert outcomes["bad"].status is Status.FAILED
    assert outcomes["bad"].reason == "RUN exited 1"
    assert outcomes["child"].status is Status.PARENT_FAILED
    assert outcomes["grandchild"].status is Status.PARENT_FAILED
    assert outcomes["good"].status is Status.BUILT
    assert "child" not in build.started()


def test_retry_that_succeeds():
    graph = dag(nodes=["flaky"])
    build = Recorder(fail_times={"flaky": 2})
    outcome = fake_scheduler(graph, build, options=SchedulerOptions(retries=2)).run()["flaky"]
    assert outcome.status is Status.BUILT
    assert outcome.attempts == 3


def test_retries_exhausted():
    graph = dag(nodes=["flaky"])
    outcome = fake_scheduler(graph, Recorder(fail_times={"flaky": 5}),
                             options=SchedulerOptions(retries=1)).run()["flaky"]
    assert (outcome.status, outcome.attempts) == (Status.FAILED, 2)


def test_longest_chain_goes_first():
    graph = dag(("long1", "long2"), ("long2", "long3"), nodes=["short"])
    build = Recorder()
    fake_scheduler(graph, build, options=SchedulerOptions(threads=1)).run()
    assert build.started()[0] == "long1"


def test_estimates_change_priority():
    graph = dag(("a1", "a2"), nodes=["slow"])
    assert priorities(graph, graph.nodes, {"slow": 10})["slow"] == 10
    build = Recorder()
    fake_scheduler(graph, build, options=SchedulerOptions(threads=1,
                                                           estimates={"slow": 10})).run()
    assert build.started()[0] == "slow"


def test_only_scheduled_names_are_built_and_waited_for():
    graph = dag(("base", "app"))
    build = Recorder()
    outcomes = fake_scheduler(graph, build, names=["app"]).run()
    assert list(outcomes) == ["app"] and build.started() == ["app"]


def test_push_after_build_and_children_do_not_wait_for_push():
    graph = dag(("base", "child"))
    push_release = threading.Event()
    pushed = []

    def push(name, cancel):
        if name == "base":
            assert push_release.wait(5)
        pushed.append(name)
        return WorkResult(True)

    def build(name, cancel):
        if name == "child":
            push_release.set()  # base's push is still blocked while child builds
        return WorkResult(True, image_id=name)

    outcomes = Scheduler(graph, graph.nodes, build, push=push,
                         options=SchedulerOptions(push_threads=2)).run()
    assert {o.status for o in outcomes.values()} == {Status.PUSHED}
    assert sorted(pushed) == ["base", "child"]


def test_push_failure_with_retries():
    graph = dag(nodes=["a", "b"])
    attempts = {"a": 0, "b": 0}

    def push(name, cancel):
        attempts[name] += 1
        return WorkResult(name == "a" and attempts[name] > 1, "registry said 500")

    outcomes = fake_scheduler(graph, lambda n, c: WorkResult(True), push=push,
                              options=SchedulerOptions(retries=1)).run()
    assert outcomes["a"].status is Status.PUSHED
    assert outcomes["b"].status is Status.PUSH_FAILED
    assert outcomes["b"].reason == "registry said 500"
    assert attempts == {"a": 2, "b": 2}


def test_worker_exception_is_a_failure_not_a_crash():
    graph = dag(("a", "b"))

    def build(name, cancel):
        raise RuntimeError("engine exploded")

    outcomes = fake_scheduler(graph, build).run()
    assert outcomes["a"].status is Status.FAILED
    assert "engine exploded" in outcomes["a"].reason
    assert outcomes["b"].status is Status.PARENT_FAILED


def test_interrupt_stops_new_work_and_cancels_running():
    graph = dag(("a", "after"), nodes=["slow"])
    cancelled = threading.Event()
    slow_started = threading.Event()

    def build(name, cancel):
        if name == "a":
            assert slow_started.wait(5)
            raise KeyboardInterrupt  # as Ctrl-C reaches the scheduler's thread
        if name == "slow":
            slow_started.set()
            if cancel.wait(5):
                cancelled.set()
            return WorkResult(False, "stopped")
        return WorkResult(True)

    scheduler = Scheduler(graph, graph.nodes, build, options=SchedulerOptions(threads=2))
    with pytest.raises(KeyboardInterrupt):
        scheduler.run()
    assert cancelled.is_set()
    outcomes = scheduler.outcomes()
    assert outcomes["after"].status is Status.CANCELLED
    assert outcomes["slow"].status in (Status.CANCELLED, Status.FAILED)


def test_events_report_progress_in_order():
    graph = dag(("a", "b"))
    events = []
    fake_scheduler(graph, lambda n, c: WorkResult(True),
                   on_event=lambda name, status, detail: events.append((name, status))).run()
    assert events == [("a", Status.BUILDING), ("a", Status.BUILT),
                      ("b", Status.BUILDING), ("b", Status.BUILT)]


def test_build_status_survives_push():
    graph = dag(nodes=["new", "old"])

    def build(name, cancel):
        return WorkResult(True, status=Status.UNCHANGED if name == "old" else None)

    outcomes = fake_scheduler(graph, build, push=lambda n, c: WorkResult(True)).run()
    assert outcomes["new"].build_status is Status.BUILT
    assert outcomes["old"].build_status is Status.UNCHANGED
    assert {o.status for o in outcomes.values()} == {Status.PUSHED}


def test_durations_history_round_trip(tmp_path):
    path = tmp_path / "d.json"
    assert load_durations(path) == {}
    save_durations(path, {"kiln/a": 12.3456})
    save_durations(path, {"kiln/b": 1.0})
    assert load_durations(path) == {"kiln/a": 12.346, "kiln/b": 1.0}
    path.write_text("not json")
    assert load_durations(path) == {}


# -- interrupts (a real SIGINT to this process, as Ctrl-C sends) -------------------

@pytest.fixture
def sigint():
    """Ctrl-C: SIGINT to the main thread (as a terminal's reaches it), where
    Python raises KeyboardInterrupt."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    main = threading.main_thread().ident
    yield lambda: signal.pthread_kill(main, signal.SIGINT)
    signal.signal(signal.SIGINT, previous)


@pytest.mark.timeout(30)
def test_interrupt_cancels_running_and_queued_with_true_durations(sigint):
    # base built; slow runs 3 s, then Ctrl-C; its child never starts
    graph = dag(("base", "slow"), ("slow", "child"), ("base", "quick"))
    clock = FakeClock()
    events = []

    def build(name, cancel):
        if name == "base":
            clock.now += 2
            return WorkResult(True, image_id="sha256:base")
        if name == "quick":
            return WorkResult(True)
        clock.now += 3
        sigint()
        assert cancel.wait(10)
        clock.now += 0.5  # stopping takes a while
        return WorkResult(False, "image 'slow': interrupted")

    scheduler = Scheduler(graph, graph.nodes, build, options=SchedulerOptions(threads=1),
                          clock=clock, on_event=lambda *e: events.append(e))
    with pytest.raises(KeyboardInterrupt):
        scheduler.run()
    outcomes = scheduler.outcomes()
    assert outcomes["base"].status is Status.BUILT and outcomes["base"].duration == 2
    slow = outcomes["slow"]
    assert (slow.status, slow.reason, slow.duration) == (
        Status.CANCELLED, "interrupted while building", 3.5)
    child = outcomes["child"]
    assert (child.status, child.reason, child.duration, child.attempts) == (
        Status.CANCELLED, "not started: interrupted", 0.0, 0)
    # quick (ready, behind slow with one thread) never started either
    assert outcomes["quick"].reason == "not started: interrupted"
    assert ("slow", Status.CANCELLED, "interrupted while building") in events
    assert ("child", Status.CANCELLED, "not started: interrupted") in events


@pytest.mark.timeout(30)
def test_second_interrupt_stops_waiting_and_keeps_true_reasons(sigint):
    graph = dag(("slow", "child"))
    clock = FakeClock()
    release = threading.Event()

    def build(name, cancel):
        clock.now += 3
        sigint()
        assert cancel.wait(10)
        clock.now += 1
        sigint()  # impatient: Ctrl-C again while the build is still stopping
        release.wait(10)
        return WorkResult(False, "stopped late")

    scheduler = Scheduler(graph, graph.nodes, build, clock=clock)
    try:
        with pytest.raises(KeyboardInterrupt):
            scheduler.run()
        outcomes = scheduler.outcomes()
    finally:
        release.set()
    assert (outcomes["slow"].status, outcomes["slow"].reason, outcomes["slow"].duration) == (
        Status.CANCELLED, "interrupted while building", 4.0)
    assert (outcomes["child"].status, outcomes["child"].reason) == (
        Status.CANCELLED, "not started: interrupted")


@pytest.mark.timeout(30)
def test_interrupt_while_pushing(sigint):
    # one push thread: a's push runs, b's waits for it; then Ctrl-C
    graph = dag(nodes=["a", "b"])
    clock = FakeClock()
    pushing = []
    both_pushing = threading.Event()

    def on_event(name, status, detail):
        if status is Status.PUSHING:
            pushing.append(name)
            if len(pushing) == 2:
                both_pushing.set()

    def push(name, cancel):
        assert both_pushing.wait(10)
        clock.now += 2
        sigint()
        assert cancel.wait(10)
        return WorkResult(False, "interrupted")

    scheduler = Scheduler(graph, graph.nodes, lambda n, c: WorkResult(True), push=push,
                          clock=clock, on_event=on_event,
                          options=SchedulerOptions(threads=2, push_threads=1))
    with pytest.raises(KeyboardInterrupt):
        scheduler.run()
    outcomes = scheduler.outcomes()
    first, second = (outcomes[name] for name in pushing)
    assert (first.status, first.reason, first.push_duration) == (
        Status.CANCELLED, "interrupted while pushing", 2)
    assert (second.status, second.reason, second.push_duration) == (
        Status.CANCELLED, "built, not pushed: interrupted", 0)
    assert first.build_status is second.build_status is Status.BUILT


@pytest.mark.timeout(30)
def test_build_that_ends_well_despite_the_interrupt_counts_as_built(sigint):
    graph = dag(("a", "a-child"))
    clock = FakeClock()

    def build(name, cancel):
        clock.now += 5
        sigint()
        assert cancel.wait(10)
        clock.now += 1
        return WorkResult(True, image_id="sha256:a")  # too late to stop

    scheduler = Scheduler(graph, graph.nodes, build, clock=clock)
    with pytest.raises(KeyboardInterrupt):
        scheduler.run()
    outcomes = scheduler.outcomes()
    assert (outcomes["a"].status, outcomes["a"].image_id, outcomes["a"].duration) == (
        Status.BUILT, "sha256:a", 6)
    assert outcomes["a-child"].reason == "not started: interrupted"


# -- a fake clock and an inline executor: deterministic, no real sleeps -------------------

class TimedBuild:
    """A fake build that takes ``durations[name]`` seconds of the fake clock."""

    def __init__(self, clock, durations, fail=()):
        self.clock, self.durations, self.fail = clock, durations, set(fail)
        self.order = []

    def __call__(self, name, cancel):
        self.order.append(name)
        self.clock.now += self.durations.get(name, 1.0)
        if name in self.fail:
            return WorkResult(False, "RUN exited 1")
        return WorkResult(True, image_id=f"sha256:{name}")


def test_fake_clock_durations_are_charged_exactly():
    graph = dag(("base", "a"), ("base", "b"))
    clock = FakeClock(0.0)
    build = TimedBuild(clock, {"base": 5.0, "a": 3.0, "b": 2.0})
    outcomes = fake_scheduler(graph, build, clock, options=SchedulerOptions(threads=1)).run()
    assert {name: o.duration for name, o in outcomes.items()} == {"base": 5.0, "a": 3.0,
                                                                  "b": 2.0}
    assert build.order[0] == "base"
    assert clock.now == 10.0


def test_fake_clock_longest_chain_first():
    # "deep" heads the longer chain (deep -> leaf), so it goes before "shallow"
    graph = dag(("base", "shallow"), ("base", "deep"), ("deep", "leaf"))
    clock = FakeClock()
    build = TimedBuild(clock, {})
    fake_scheduler(graph, build, clock, options=SchedulerOptions(threads=1)).run()
    assert build.order[:2] == ["base", "deep"]


def test_fake_clock_failure_and_retries():
    graph = dag(("base", "bad"), ("bad", "child"), ("base", "good"))
    clock = FakeClock()
    build = TimedBuild(clock, {"bad": 4.0}, fail={"bad"})
    outcomes = fake_scheduler(graph, build, clock,
                              options=SchedulerOptions(threads=1, retries=1)).run()
    assert outcomes["bad"].status is Status.FAILED
    assert outcomes["bad"].attempts == 2
    assert outcomes["bad"].duration == 8.0
    assert outcomes["child"].status is Status.PARENT_FAILED
    assert outcomes["good"].status is Status.BUILT
    assert "child" not in build.order


def test_an_unexpected_worker_error_is_a_reason_and_its_traceback_is_logged(caplog):
    def broken(name, cancel):
        raise ZeroDivisionError("division by zero")

    graph = dag(nodes=["x"])
    logger = logging.getLogger("builder.build.scheduler")
    logger.addHandler(caplog.handler)     # "builder" may not propagate (the CLI's setup)
    caplog.set_level(logging.DEBUG, logger="builder.build.scheduler")
    try:
        outcome = fake_scheduler(graph, broken, FakeClock()).run()["x"]
    finally:
        logger.removeHandler(caplog.handler)
    assert outcome.status is Status.FAILED
    assert outcome.reason == "ZeroDivisionError: division by zero"
    records = [r for r in caplog.records if r.name == "builder.build.scheduler"]
    assert records and records[0].exc_info is not None
    assert records[0].levelno == logging.DEBUG
