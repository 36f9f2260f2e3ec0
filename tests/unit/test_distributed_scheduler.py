"""The Dask scheduler's bookkeeping with a fake Dask client (no cluster, no engine).

The real cluster, engines and registry are in
tests/integration/test_distributed.py; here the client's tasks "run" at once,
in the order they were submitted, so each case is exact.
"""

from __future__ import annotations

import dataclasses
import sys

import networkx as nx
import pytest

from builder.build.cache import CacheEntry
from builder.build.cluster import Cluster, import_distributed
from builder.build.distributed import DaskScheduler
from builder.build.remote import RESOURCE, BuildFailed, EngineUnavailable, RemoteResult
from builder.build.scheduler import SchedulerOptions, Status, priorities
from builder.errors import ConfigError


def entry(name):
    return CacheEntry(ref=f"cache/{name}:kiln-x", pull_ref=f"cache/{name}@sha256:{name}",
                      digest=f"sha256:{name}", image_id=f"id-{name}")


class FakeFuture:
    def __init__(self, name):
        self.name, self.status, self._callbacks = name, "pending", []
        self._result = self._exception = None

    def add_done_callback(self, callback):
        """Called at once if the future is done already, as Dask does."""
        self._callbacks.append(callback)
        if self.status != "pending":
            callback(self)

    def result(self):
        return self._result

    def exception(self):
        return self._exception

    def end(self, status, result=None, exception=None):
        self.status, self._result, self._exception = status, result, exception
        for callback in self._callbacks:
            callback(self)


class FakeClient:
    """Runs each task as it is submitted: ``outcome(name)`` is what it returns or raises."""

    def __init__(self, outcome, worker="w1"):
        self.outcome, self.worker = outcome, worker
        self.submitted: list[tuple[str, dict, dict]] = []   # (name, parents, keywords)
        self.cancelled: list[str] = []
        self.handler = None

    def subscribe_topic(self, topic, handler):
        self.handler = handler

    def unsubscribe_topic(self, topic):
        self.handler = None

    def submit(self, function, request, *parents, **keywords):
        name, run = request
        keywords["function"] = function.__name__
        self.submitted.append((name, dict(*parents), keywords))
        future = FakeFuture(name)
        self.handler((0.0, {"run": run, "name": name, "builder": self.worker}))
        try:
            value = self.outcome(name)
        except Exception as exc:
            future.end("error", exception=exc)
        else:
            if value is not None:
                future.end("finished", result=value)
        return future

    def cancel(self, futures):
        self.cancelled.extend(future.name for future in futures)


def built(name):
    return RemoteResult(name=name, image_id=f"id-{name}", entry=entry(name), status="built",
                        reason="", log=f"log of {name}\n", worker="w1", duration=2.0,
                        hand_off=0.5, started=0.0, ended=2.0)


class FakeTasks:
    """Each task's request is (name, run id)."""

    def __init__(self, push=False):
        self.push = push

    def build(self, name, run):
        return name, run

    def push_cached(self, name, run, entry):
        return name, run


def scheduler(graph, client, workers=None, push=False, **keywords):
    cluster = Cluster(client, "tcp://sched:8786", workers or {"tcp://w1": "w1"}, {})
    logs = {}
    sched = DaskScheduler(cluster, graph, graph.nodes, FakeTasks(push),
                          options=keywords.pop("options", SchedulerOptions()),
                          write_log=lambda name, text: logs.__setitem__(name, text),
                          **keywords)
    return sched, logs


FAMILY = nx.DiGraph([("base", "a"), ("base", "b"), ("a", "a1"), ("a1", "a2"), ("b", "b1")])


def test_each_image_is_submitted_once_its_parents_are_built():
    client = FakeClient(built)
    sched, logs = scheduler(FAMILY, client, options=SchedulerOptions(retries=2))
    outcomes = sched.run()
    assert {name: o.status for name, o in outcomes.items()} == dict.fromkeys(FAMILY, Status.BUILT)
    assert {o.worker for o in outcomes.values()} == {"w1"}
    order = [name for name, _, _ in client.submitted]
    assert order.index("base") == 0 and order.index("a") < order.index("a1") < order.index("a2")
    parents = {name: sorted(given) for name, given, _ in client.submitted}
    assert parents == {"base": [], "a": ["base"], "b": ["base"], "a1": ["a"], "a2": ["a1"],
                       "b1": ["b"]}
    assert all(given[p] == entry(p) for _, given, _ in client.submitted for p in given)
    rank = priorities(FAMILY, FAMILY.nodes, {})
    for name, _, keywords in client.submitted:
        assert keywords["priority"] == round(rank[name] * 1000)
        assert keywords["retries"] == 2 and keywords["resources"] == {RESOURCE: 1}
        assert keywords["workers"] is None and keywords["pure"] is False
    assert logs == {name: f"log of {name}\n" for name in FAMILY}


def test_a_failure_fails_only_its_descendants():
    def outcome(name):
        if name == "a":
            raise BuildFailed("a", "exit 3", "log of a\n", "w2")
        return built(name)

    client = FakeClient(outcome)
    sched, logs = scheduler(FAMILY, client)
    outcomes = sched.run()
    assert outcomes["a"].status is Status.FAILED and outcomes["a"].reason == "exit 3"
    assert outcomes["a"].worker == "w2" and logs["a"] == "log of a\n"
    for name in ("a1", "a2"):
        assert outcomes[name].status is Status.PARENT_FAILED
        assert outcomes[name].reason == "parent 'a' failed"
    for name in ("base", "b", "b1"):
        assert outcomes[name].status is Status.BUILT
    assert "a1" not in [name for name, _, _ in client.submitted]


def test_cached_images_are_not_tasks_and_hand_their_entries_on():
    client = FakeClient(built)
    cached = {"base": entry("base"), "a": entry("a")}
    sched, _ = scheduler(FAMILY, client, cached=cached)
    outcomes = sched.run()
    assert outcomes["base"].status is Status.CACHED and outcomes["a"].status is Status.CACHED
    submitted = {name: given for name, given, _ in client.submitted}
    assert sorted(submitted) == ["a1", "a2", "b", "b1"]
    assert submitted["a1"] == {"a": entry("a")}


def test_failed_before_the_run_is_never_submitted():
    client = FakeClient(built)
    sched, _ = scheduler(FAMILY, client, failed={"b": "source failed"})
    outcomes = sched.run()
    assert outcomes["b"].status is Status.FAILED
    assert outcomes["b1"].status is Status.PARENT_FAILED
    assert sorted(name for name, _, _ in client.submitted) == ["a", "a1", "a2", "base"]


def test_interrupt_cancels_what_is_not_done():
    running = {"a", "b"}       # these never end: still building when Ctrl-C comes

    def outcome(name):
        return None if name in running else built(name)

    def on_event(name, status, detail):
        if status is Status.BUILDING and name == "b":
            raise KeyboardInterrupt

    client = FakeClient(outcome)
    sched, logs = scheduler(FAMILY, client, on_event=on_event)
    with pytest.raises(KeyboardInterrupt):
        sched.run()
    outcomes = sched.outcomes()
    assert outcomes["base"].status is Status.BUILT
    assert sorted(client.cancelled) == ["a", "b"]
    assert outcomes["a"].reason == "interrupted while building"
    assert outcomes["a"].worker == "w1"
    assert logs["a"] == "kiln: interrupted while building on w1 (its output was not fetched)\n"
    for name in ("a1", "a2", "b1"):
        assert outcomes[name].status is Status.CANCELLED
        assert outcomes[name].reason == "not started: interrupted"


def test_a_worker_whose_engine_stops_answering_is_left_out():
    attempts = []

    def outcome(name):
        attempts.append(name)
        if name == "a" and attempts.count("a") == 1:
            raise EngineUnavailable("tcp://w2", "w2", "connection refused")
        return built(name)

    client = FakeClient(outcome)
    events = []
    sched, _ = scheduler(FAMILY, client, workers={"tcp://w1": "w1", "tcp://w2": "w2"},
                         on_event=lambda name, status, detail: events.append(
                             (name, status, detail)))
    outcomes = sched.run()
    assert {o.status for o in outcomes.values()} == {Status.BUILT}
    submits = [(name, keywords) for name, _, keywords in client.submitted]
    assert [name for name, _ in submits].count("a") == 2
    first, again = [i for i, (name, _) in enumerate(submits) if name == "a"]
    assert submits[first][1]["workers"] is None
    # from then on, only the workers whose engine answered
    assert all(keywords["workers"] == ["tcp://w1"] for _, keywords in submits[again:])
    assert len({keywords["key"] for _, keywords in submits}) == len(submits)
    assert sched.workers_not_used == {"w2": "its engine stopped answering: connection refused"}
    assert ("a", Status.QUEUED, "retrying elsewhere: the engine of worker w2 does not "
                                "answer: connection refused") in events


def test_push_built_and_cached_images_on_the_workers():
    def outcome(name):
        result = built(name)
        if name in ("base", "a"):   # cached: pushed by a task of its own
            result = dataclasses.replace(result, status="cached", duration=0.0)
        return dataclasses.replace(result, pushed=name != "b1",
                                   push_reason="" if name != "b1" else "denied")

    client = FakeClient(outcome)
    sched, _ = scheduler(FAMILY, client, push=True,
                         cached={"base": entry("base"), "a": entry("a")})
    outcomes = sched.run()
    functions = {name: keywords["function"] for name, _, keywords in client.submitted}
    assert functions == {"base": "push_image", "a": "push_image", "b": "build_image",
                         "a1": "build_image", "a2": "build_image", "b1": "build_image"}
    assert [(o.status, o.build_status) for o in (outcomes["base"], outcomes["a"])] == \
        [(Status.PUSHED, Status.CACHED)] * 2
    assert (outcomes["b"].status, outcomes["b"].build_status) == (Status.PUSHED, Status.BUILT)
    assert (outcomes["b1"].status, outcomes["b1"].reason) == (Status.PUSH_FAILED, "denied")
    assert outcomes["a2"].status is Status.PUSHED     # after a1, after the cached a


def test_without_distributed_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ConfigError, match=r"pip install 'kiln\[distributed\]'"):
        import_distributed()
