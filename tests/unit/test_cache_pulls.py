"""Which cached images a run pulls, and that their pulls do not wait for each other
(ImageBuilder with a fake engine; the real engine and registry are in
tests/integration/test_gate_cache.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from builder.build.cache import CacheEntry
from builder.build.labels import FINGERPRINT, PACKAGES_SCAN, SCANNED
from builder.build.prepare import PreparedImage
from builder.build.scheduler import Status
from builder.build.worker import BuildJob, ImageBuilder
from builder.engines.base import EngineError, ImageInfo
from builder.settings import RunOptions

CACHE = "cache.example:5000/ns"
CHAIN = {"base": (), "lib": ("base",), "app": ("lib",)}   # base -> lib -> app


def fingerprint(name: str) -> str:
    return "sha256:" + name[0] * 64


def image(name: str) -> PreparedImage:
    return PreparedImage(name=name, ref=f"ns/{name}:latest", context=Path("/nonexistent"),
                         fingerprint=fingerprint(name), parents=CHAIN[name], base=None,
                         labels={}, manifest={"parents": []})


def entry(name: str) -> CacheEntry:
    return CacheEntry(ref=f"{CACHE}/{name}:kiln-x", pull_ref=f"{CACHE}/{name}@sha256:{name}",
                      digest=f"sha256:{name}", image_id=f"id-{name}")


class FakeEngine:
    """Pulls (each may be held until released), inspects and tags, recording them."""

    name = "fake"

    def __init__(self, held: set[str] = frozenset()):
        self.gates = {name: threading.Event() for name in CHAIN}
        for name in CHAIN:
            if name not in held:
                self.gates[name].set()
        self.pulled: dict[str, threading.Event] = {name: threading.Event() for name in CHAIN}
        self.tags: dict[str, str] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _name(ref: str) -> str:
        return ref.rsplit("/", 1)[1].split("@")[0]

    def pull(self, ref: str):
        name = self._name(ref)
        yield f"pulling {ref}"
        assert self.gates[name].wait(30), f"the test never released {name}"
        self.pulled[name].set()
        yield f"pulled {ref}"

    def inspect(self, ref: str) -> ImageInfo | None:
        name = self._name(ref)
        if not self.pulled[name].is_set():
            return None
        return ImageInfo(id=f"id-{name}", tags=(), labels={
            FINGERPRINT: fingerprint(name), PACKAGES_SCAN: SCANNED})

    def tag(self, ref: str, new_ref: str) -> None:
        with self._lock:
            self.tags[new_ref] = ref


def builder_for(engine: FakeEngine, tmp_path: Path, cached, wanted) -> ImageBuilder:
    job = BuildJob(images={name: image(name) for name in CHAIN}, options=RunOptions(),
                   work_dir=tmp_path, logs_dir=tmp_path / "logs",
                   cached={name: entry(name) for name in cached}, wanted=frozenset(wanted))
    return ImageBuilder(engine, job)


@pytest.mark.parametrize("cached, wanted, pulled", [
    # app is built here: its parent lib is pulled, not base (lib's pull brings its layers)
    ({"base", "lib"}, {"app"}, {"lib"}),
    # everything cached: what was asked for, not the parents in between
    ({"base", "lib", "app"}, {"app"}, {"app"}),
    ({"base", "lib", "app"}, {"base", "app"}, {"base", "app"}),
    # nothing asked for and nothing built: nothing pulled
    ({"base", "lib", "app"}, set(), set()),
])
def test_only_what_the_run_needs_is_pulled(cached, wanted, pulled, tmp_path):
    engine = FakeEngine()
    builder = builder_for(engine, tmp_path, cached, wanted)
    try:
        assert builder.fetch_needed() == pulled
        for name in sorted(pulled):
            assert engine.pulled[name].wait(30)
    finally:
        builder.close()


def test_a_cached_image_is_pulled_without_waiting_for_its_parents(tmp_path):
    engine = FakeEngine(held={"base", "lib"})
    builder = builder_for(engine, tmp_path, cached=CHAIN, wanted=CHAIN)
    cancel = threading.Event()
    try:
        builder.fetch_needed()
        # app's pull ends while its parent's and grandparent's are still held
        assert engine.pulled["app"].wait(30)
        assert not engine.pulled["lib"].is_set() and not engine.pulled["base"].is_set()
        engine.gates["base"].set()
        engine.gates["lib"].set()
        results = {name: builder.build(name, cancel) for name in CHAIN}
    finally:
        builder.close()
    assert {name: result.status for name, result in results.items()} == \
        dict.fromkeys(CHAIN, Status.CACHED)
    # each is tagged as what the run promised, as the image it pulled
    assert engine.tags == {f"ns/{name}:latest": f"id-{name}" for name in CHAIN}


def test_a_failed_pull_of_an_image_asked_for_builds_it(tmp_path):
    class Failing(FakeEngine):
        def pull(self, ref):
            raise EngineError(f"pulling {ref} failed: manifest unknown")
            yield

        def build(self, request, cancel):
            raise EngineError(f"the fake engine was asked to build {request.image}")
            yield

    builder = builder_for(Failing(), tmp_path, cached={"base"}, wanted={"base"})
    try:
        builder.fetch_needed()
        result = builder.build("base", threading.Event())
    finally:
        builder.close()
    assert not result.ok and "asked to build base" in result.reason
    log = builder.log_path("base").read_text()
    assert "manifest unknown" in log and "building" in log
