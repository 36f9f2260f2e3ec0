"""Every engine backend (podman, buildah, docker) against the real engine and a real registry.

Each engine builds its own busybox base from scratch in its own image store
(podman and buildah share containers-storage; Docker has its own), so nothing
is pulled. A missing engine skips its tests, or fails them under CI.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.engines import load_engine
from builder.engines.base import (
    BuildRequest,
    Engine,
    EngineError,
    EngineOptions,
    MissingExecutable,
    PushError,
    drain,
)
from builder.errors import BuildError, ConfigError
from tests.integration.conftest import BUSYBOX_DOCKERFILE, TestImages, free_port, unavailable

ENGINES = ["podman", "buildah", "docker"]
CLI_ENGINES = ["podman", "buildah"]     # the engines driven through a command-line tool
BASE_REF = "kiln-test/engines-busybox:latest"
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


def require_engine(name: str, options: EngineOptions | None = None) -> Engine:
    """The engine ``name``, having answered a ping; skips (fails under CI) otherwise."""
    try:
        engine = load_engine(name, options)
        engine.ping()
    except (EngineError, ConfigError) as exc:
        unavailable(f"the {name} engine cannot be used: {exc}")
    return engine


@pytest.fixture(scope="session", params=ENGINES)
def engine(request) -> Engine:
    return require_engine(request.param)


@pytest.fixture(scope="session")
def base(engine, tmp_path_factory) -> Iterator[str]:
    """Scratch plus the static busybox, built once per engine in that engine's store."""
    busybox = shutil.which("busybox")
    if busybox is None:
        unavailable("no busybox binary on PATH (install busybox-static)")
    context = tmp_path_factory.mktemp(f"base-{engine.name}")
    shutil.copy(busybox, context / "busybox")
    try:
        build(engine, context, BUSYBOX_DOCKERFILE, [BASE_REF])
    except BuildError as exc:
        pytest.fail(f"cannot build the {engine.name} base image ({busybox} must be "
                    f"statically linked): {exc}\n" + "\n".join(exc.tail), pytrace=False)
    yield BASE_REF
    engine.remove(BASE_REF, force=True)


@pytest.fixture
def images(engine) -> Iterator[TestImages]:
    """``images.ref("name", "tag")``: a unique reference, removed after the test."""
    tracked = TestImages(engine)
    yield tracked
    tracked.remove_all()


@pytest.fixture
def unique_image(engine, base, images, tmp_path) -> str:
    """An image of its own (a unique label and layer), tagged in the test's namespace."""
    ref = images.ref("unique", "1")
    build(engine, tmp_path / "unique",
          f"FROM {base}\nLABEL kiln.test.unique={images.namespace}\n"
          f"RUN echo {images.namespace} > /unique\n", [ref])
    return ref


def build(engine: Engine, context: Path, dockerfile: str, tags, cancel=None,
          **request) -> list[str]:
    context.mkdir(parents=True, exist_ok=True)
    (context / "Dockerfile").write_text(dockerfile)
    return list(engine.build(BuildRequest(image="test-image", context_dir=context,
                                          tags=tuple(tags), **request), cancel))


def processes(*argv: str) -> list[int]:
    """Processes on this machine (containers' included) whose command line is ``argv``."""
    wanted = "\0".join(argv).encode() + b"\0"
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    if cmdline.read() == wanted:
                        found.append(int(entry))
            except OSError:
                pass
    return found


def appears(*argv: str, within: float = 10) -> bool:
    deadline = time.monotonic() + within
    while not processes(*argv):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def gone(*argv: str, within: float = 10) -> bool:
    deadline = time.monotonic() + within
    while processes(*argv):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def working_containers(engine: Engine) -> set[str]:
    """podman's and buildah's containers, build containers included (containers-storage)."""
    if engine.name not in CLI_ENGINES:
        return set()
    listed = subprocess.run(["buildah", "containers", "--all", "--quiet", "--notruncate"],
                            capture_output=True, text=True, check=True, timeout=60)
    return set(listed.stdout.split())


# -- engines ------------------------------------------------------------------

def test_ping(engine):
    engine.ping()


def test_podman_service_that_is_not_there():
    require_engine("podman")
    engine = load_engine("podman", EngineOptions(base_url="unix:///nonexistent.sock"))
    with pytest.raises(EngineError) as caught:
        engine.ping()
    assert str(caught.value) == ("cannot reach podman at unix:///nonexistent.sock: no such "
                                 "file or directory (is the podman service running? "
                                 "start it with podman system service)")


def test_build_applies_labels_build_args_and_every_tag(engine, base, images, tmp_path):
    first = images.ref("app", "1.0")
    second = images.ref("app", "latest")
    third = images.ref("app", "1.0", host="127.0.0.1:5000")
    labels = {"org.opencontainers.image.title": "app", "kiln.test": images.namespace}
    lines = build(engine, tmp_path / "app",
                  f"FROM {base}\nARG GREETING\nRUN echo \"$GREETING\" > /greeting\n",
                  [first, second, third], labels=labels,
                  build_args={"GREETING": f"hello {images.namespace}"})

    assert any("RUN echo" in line for line in lines)
    assert all("\n" not in line and not line.endswith(" ") for line in lines)
    info = engine.inspect(first)
    assert info is not None and info.id.startswith("sha256:")
    assert set(info.tags) == {first, second, third}
    assert {key: info.labels[key] for key in labels} == labels
    assert info.created
    assert engine.inspect(third).id == info.id
    assert engine.run(first, ["cat", "/greeting"], timeout=60) == f"hello {images.namespace}\n"


def layers(engine: Engine, ref: str) -> list[str]:
    """The image's filesystem layers (diff ids), from the engine's own tool."""
    if engine.name == "docker":
        argv = ["docker", "image", "inspect", "--format", "{{json .RootFS.Layers}}", ref]
        return json.loads(subprocess.run(argv, capture_output=True, text=True, check=True,
                                         timeout=60).stdout)
    argv = ["buildah", "inspect", "--type", "image", ref]
    data = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True,
                                     timeout=60).stdout)
    return data["OCIv1"]["rootfs"]["diff_ids"]


def test_build_without_tags_returns_the_id_and_names_nothing(engine, base, images, tmp_path):
    context = tmp_path / "untagged"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {base}\nRUN echo {images.namespace} > /x\n")
    image_id = drain(engine.build(BuildRequest(image="test-image", context_dir=context,
                                               tags=(), labels={"kiln.test": "u"})))
    assert image_id and image_id.startswith("sha256:")
    info = engine.inspect(image_id)
    images.track(image_id)
    assert info.id == image_id and info.tags == () and info.labels["kiln.test"] == "u"
    assert engine.run(image_id, ["cat", "/x"]) == f"{images.namespace}\n"


def test_stamp_adds_labels_without_a_layer_and_tags_last(engine, base, images, tmp_path):
    ref = images.ref("stamped", "1")
    previous = images.ref("previous", "1")
    build(engine, tmp_path / "previous", f"FROM {base}\nRUN echo old > /v\n", [ref, previous])
    old_id = engine.inspect(ref).id
    context = tmp_path / "new"
    context.mkdir()
    (context / "Dockerfile").write_text(f'FROM {base}\nRUN echo new > /v\n'
                                        f'ENTRYPOINT ["/bin/cat"]\nCMD ["/v"]\n')
    built = drain(engine.build(BuildRequest(image="test-image", context_dir=context, tags=(),
                                            labels={"kiln.test": "unstamped",
                                                    "kiln.fingerprint": ""})))
    images.track(built)
    assert engine.inspect(ref).id == old_id              # the build named nothing

    # a stamp that fails moves nothing
    with pytest.raises(EngineError):
        engine.stamp("sha256:" + "0" * 64, {"kiln.fingerprint": "x"}, ref, name="test-image")
    assert engine.inspect(ref).id == old_id

    labels = {"kiln.fingerprint": "sha256:" + "f" * 64, "kiln.packages": '{"a":{"b":"1"}}'}
    new_id = engine.stamp(built, labels, ref, name="test-image")

    info = engine.inspect(ref)
    assert info.id == new_id != built
    assert {key: info.labels[key] for key in labels} == labels
    assert info.labels["kiln.test"] == "unstamped"
    assert layers(engine, new_id) == layers(engine, built)     # no filesystem layer added
    assert engine.run(ref, []) == "new\n"                      # entrypoint and command kept
    assert engine.inspect(previous).id == old_id                # only ref moved
    assert engine.inspect(built).labels["kiln.fingerprint"] == ""


def history(engine: Engine, ref: str) -> list[str]:
    """The image's history (what made each step), from the engine's own tool."""
    if engine.name == "docker":
        argv = ["docker", "image", "history", "--no-trunc", "--format", "{{json .CreatedBy}}",
                ref]
        lines = subprocess.run(argv, capture_output=True, text=True, check=True,
                               timeout=60).stdout.splitlines()
        return [json.loads(line) for line in reversed(lines)]
    argv = ["buildah", "inspect", "--type", "image", ref]
    data = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True,
                                     timeout=60).stdout)
    return [step.get("created_by", "") for step in data["OCIv1"].get("history") or ()]


AWKWARD_LABELS = {
    "kiln.test.quotes": 'say "hi" and \\"escaped\\" \\',
    "kiln.test.dollars": "$HOME ${HOME} $$ \\$HOME $",
    "kiln.test.spaces": "  lead, tab\tand trail  ",
    "kiln.test.hash": "#not a comment # either",
    "kiln.test.unicode": "Grüße, 東京",
    "kiln.test.empty": "",
    "kiln.test.equals": "a=b=c",
    # JSON with every escape, long enough to cross several physical lines
    "kiln.test.json": json.dumps({f"pkg-{i}": f'1.{i}-"q"\\$x\n#{i}' for i in range(4000)},
                                 separators=(",", ":")),
}


def test_stamp_round_trips_awkward_label_values_in_one_step(engine, base, images, tmp_path):
    ref = images.ref("awkward", "1")
    context = tmp_path / "awkward"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {base}\nRUN echo {images.namespace} > /x\n")
    built = drain(engine.build(BuildRequest(image="test-image", context_dir=context, tags=())))
    images.track(built)
    assert len(AWKWARD_LABELS["kiln.test.json"]) > 100_000

    new_id = engine.stamp(built, AWKWARD_LABELS, ref, name="test-image")

    labels = engine.inspect(ref).labels
    assert engine.inspect(ref).id == new_id
    assert {key: labels.get(key) for key in AWKWARD_LABELS} == AWKWARD_LABELS
    steps = history(engine, new_id)
    assert steps[:-1] == history(engine, built)              # one step added...
    assert steps[-1].count("kiln.test.") == len(AWKWARD_LABELS)  # ...holding every label
    assert layers(engine, new_id) == layers(engine, built)


def test_stamp_keeps_a_label_with_a_line_break(engine, base, images, tmp_path):
    ref = images.ref("multiline", "1")
    context = tmp_path / "multiline"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {base}\nRUN echo {images.namespace} > /x\n")
    built = drain(engine.build(BuildRequest(image="test-image", context_dir=context, tags=())))
    images.track(built)
    wanted = {"kiln.test.lines": "first line\nsecond \"line\"\r\n", "kiln.test.plain": "x"}

    engine.stamp(built, wanted, ref, name="test-image")

    labels = engine.inspect(ref).labels
    assert {key: labels.get(key) for key in wanted} == wanted


def test_build_uses_the_layer_cache(engine, base, images, tmp_path):
    ref = images.ref("cached")
    dockerfile = f"FROM {base}\nRUN echo {images.namespace} > /cached\n"
    build(engine, tmp_path / "cached", dockerfile, [ref])
    first = engine.inspect(ref).id
    lines = build(engine, tmp_path / "cached", dockerfile, [ref])
    assert any("Using cache" in line for line in lines)
    assert engine.inspect(ref).id == first


def test_failing_run_raises_build_error_and_tags_nothing(engine, base, images, tmp_path):
    tags = [images.ref("broken", "1"), images.ref("broken", "2")]
    before = working_containers(engine)
    with pytest.raises(BuildError) as caught:
        build(engine, tmp_path / "broken",
              f"FROM {base}\n"
              "RUN echo marker-on-stdout; echo marker-on-stderr >&2; exit 7\n", tags)

    error = caught.value
    assert error.image == "test-image"
    assert error.message.startswith("image 'test-image' failed to build: ")
    assert any(f"{words} 7" in error.message
               for words in ("returned a non-zero code:", "exit status"))
    assert "marker-on-stdout" in error.tail
    assert "marker-on-stderr" in error.tail
    assert len(error.tail) <= 20
    assert all(engine.inspect(tag) is None for tag in tags)
    assert working_containers(engine) <= before          # the build container went too


def test_bad_dockerfile_and_missing_context(engine, base, images, tmp_path):
    tag = images.ref("unparsable")
    with pytest.raises(BuildError, match="(?i)unknown instruction"):
        build(engine, tmp_path / "bad", f"FROM {base}\nFROB nicate\n", [tag])
    assert engine.inspect(tag) is None
    with pytest.raises(BuildError, match="cannot read the build context"):
        list(engine.build(BuildRequest(image="x", context_dir=tmp_path / "nowhere",
                                       tags=(tag,))))


def _start_silent_build(engine, base, images, tmp_path, cancel=None):
    """A build whose RUN step prints one line, then sleeps; returns (sleep argv, lines, tag)."""
    seconds = str(random.randint(3000, 9000))   # picks out this step's process
    tag = images.ref("sleepy")
    context = tmp_path / "sleepy"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM {base}\nRUN echo started-{images.namespace} && sleep {seconds}\n")
    lines = engine.build(BuildRequest(image="test-image", context_dir=context, tags=(tag,)),
                         cancel)
    return ("sleep", seconds), lines, tag


def test_cancel_stops_a_silent_run_step(engine, base, images, tmp_path):
    before = working_containers(engine)
    cancel = threading.Event()
    started = threading.Event()
    outcome: dict[str, object] = {}
    sleep, lines, tag = _start_silent_build(engine, base, images, tmp_path, cancel)

    def consume():
        try:
            for line in lines:
                if line == f"started-{images.namespace}":
                    started.set()
        except BaseException as exc:    # noqa: B036 (the test looks at it)
            outcome["raised"] = exc
        else:
            outcome["finished"] = True

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    assert started.wait(60), "the RUN step never started"
    assert appears(*sleep)
    cancel.set()
    thread.join(timeout=20)

    assert not thread.is_alive(), "the build went on after cancel was set"
    raised = outcome.get("raised")
    assert isinstance(raised, BuildError), outcome
    assert raised.message == "image 'test-image' failed to build: interrupted"
    assert gone(*sleep), "the RUN step's process outlived the build"
    assert engine.inspect(tag) is None
    assert working_containers(engine) <= before


def test_closing_the_stream_stops_the_build(engine, base, images, tmp_path):
    sleep, lines, tag = _start_silent_build(engine, base, images, tmp_path)
    for line in lines:
        if line == f"started-{images.namespace}":
            break
    assert appears(*sleep)
    closer = threading.Thread(target=lines.close, daemon=True)
    closer.start()
    closer.join(timeout=20)
    assert not closer.is_alive()
    assert gone(*sleep)
    assert engine.inspect(tag) is None


def test_parallel_builds(engine, base, images, tmp_path):
    refs = [images.ref(f"parallel-{index}") for index in range(3)]
    errors = []

    def work(index, ref):
        try:
            build(engine, tmp_path / f"parallel-{index}",
                  f"FROM {base}\nRUN echo {images.namespace}-{index} > /which\n", [ref])
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=item) for item in enumerate(refs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    outputs = [engine.run(ref, ["cat", "/which"]) for ref in refs]
    assert outputs == [f"{images.namespace}-{index}\n" for index in range(3)]


def test_inspect_missing_reference_is_none(engine, images):
    assert engine.inspect(images.ref("does-not-exist", "1")) is None
    assert engine.inspect("sha256:" + "0" * 64) is None


def test_images_with_label(engine, unique_image, images):
    found = [info for info in engine.images_with_label("kiln.test.unique")
             if info.labels["kiln.test.unique"] == images.namespace]
    assert [info.tags for info in found] == [(unique_image,)]
    info = engine.inspect(unique_image)
    assert found[0].id == info.id and found[0].labels == info.labels
    assert found[0].created
    assert engine.images_with_label(f"kiln.test.none-{images.namespace}") == []


def test_tag_with_registry_host_and_refusals(engine, base, images):
    target = images.ref("base", "1.0", host="127.0.0.1:5000")
    engine.tag(base, target)
    info = engine.inspect(target)
    assert target in info.tags and info.id == engine.inspect(base).id
    with pytest.raises(EngineError, match="digest reference"):
        engine.tag(base, f"{images.namespace}/x@sha256:{'a' * 64}")
    missing = images.ref("missing")
    with pytest.raises(EngineError, match=f"no local image {missing}"):
        engine.tag(missing, images.ref("other"))


def test_push_to_registry(engine, unique_image, images, registry):
    target = images.ref("pushed", "1.0", host=registry.host)
    engine.tag(unique_image, target)

    lines = list(engine.push(target))

    name = f"{images.namespace}/pushed"
    status, _, body = registry.get(f"/v2/{name}/tags/list")
    assert status == 200
    assert json.loads(body) == {"name": name, "tags": ["1.0"]}
    status, headers, body = registry.get(f"/v2/{name}/manifests/1.0", accept=MANIFEST_V2)
    assert status == 200
    assert headers["Content-Type"] == MANIFEST_V2
    digest = headers["Docker-Content-Digest"]
    assert any(line.startswith(f"1.0: digest: {digest}") for line in lines)
    info = engine.inspect(target)
    assert json.loads(body)["config"]["digest"] == info.id   # the registry holds this image
    config_status, _, config = registry.get(f"/v2/{name}/blobs/{info.id}")
    assert config_status == 200
    assert json.loads(config)["config"]["Labels"]["kiln.test.unique"] == images.namespace


def test_push_failures(engine, base, images, registry):
    nowhere = images.ref("nowhere", "1", host=f"127.0.0.1:{free_port()}")
    engine.tag(base, nowhere)
    with pytest.raises(PushError) as caught:
        list(engine.push(nowhere))
    assert str(caught.value).startswith(f"pushing {nowhere} failed: ")
    assert "connection refused" in str(caught.value)

    absent = images.ref("absent", "1", host=registry.host)
    with pytest.raises(PushError, match=f"pushing {absent} failed: "):
        list(engine.push(absent))


def test_run_returns_stdout_and_reports_failures(engine, base, images):
    assert engine.run(base, ["sh", "-c", "echo out; echo err >&2"], timeout=60) == "out\n"
    with pytest.raises(EngineError) as caught:
        engine.run(base, ["sh", "-c", "echo out; echo first >&2; echo last-words >&2; exit 3"])
    message = str(caught.value)
    assert base in message and "exited with code 3" in message and "last-words" in message
    assert "out" not in message.split("exited with code 3")[1]
    with pytest.raises(MissingExecutable, match="the image has no no-such-binary"):
        engine.run(base, ["no-such-binary"])
    missing = images.ref("missing")
    with pytest.raises(EngineError, match=f"no local image {missing}"):
        engine.run(missing, ["true"])


def test_run_without_a_network(engine, base):
    assert engine.run(base, ["ls", "/sys/class/net"], network="none") == "lo\n"
    assert "lo" in engine.run(base, ["ls", "/sys/class/net"], network="host").split()


def test_run_in_an_image_without_the_program(engine, images, tmp_path):
    busybox = shutil.which("busybox")
    if busybox is None:
        unavailable("no busybox binary on PATH (install busybox-static)")
    context = tmp_path / "bare"
    context.mkdir()
    shutil.copy(busybox, context / "busybox")
    ref = images.ref("bare")
    build(engine, context, "FROM scratch\nCOPY busybox /busybox\n", [ref])
    with pytest.raises(MissingExecutable) as caught:
        engine.run(ref, ["true"], entrypoint=["/bin/sh", "-c"], network="none")
    assert str(caught.value) == f"running 'true' in {ref} failed: the image has no /bin/sh"
    assert engine.run(ref, ["echo", "static"], entrypoint=["/busybox"]) == "static\n"
    # A command that runs and fails is not a missing program.
    with pytest.raises(EngineError) as failed:
        engine.run(ref, ["sh", "-c", "exit 127"], entrypoint=["/busybox"])
    assert not isinstance(failed.value, MissingExecutable)


def test_run_keeps_or_replaces_the_entrypoint(engine, base, images, tmp_path):
    ref = images.ref("entrypoint")
    build(engine, tmp_path / "entrypoint",
          f'FROM {base}\nENTRYPOINT ["/bin/echo", "prefix"]\n', [ref])
    assert engine.run(ref, ["word"]) == "prefix word\n"
    assert engine.run(ref, ["echo via-sh"], entrypoint=["/bin/sh", "-c"]) == "via-sh\n"
    assert engine.run(ref, ["/bin/echo", "plain"], entrypoint=[]) == "plain\n"


def test_run_timeout_kills_and_removes_the_container(engine, unique_image):
    before = working_containers(engine)
    seconds = str(random.randint(3000, 9000))
    started = time.monotonic()
    with pytest.raises(EngineError, match="did not finish within 2 s"):
        engine.run(unique_image, ["sleep", seconds], timeout=2)
    assert time.monotonic() - started < 20
    assert gone("sleep", seconds)
    assert working_containers(engine) <= before
    engine.remove(unique_image)          # a container left behind would make this a conflict
    assert engine.inspect(unique_image) is None


def test_remove_is_idempotent(engine, unique_image):
    engine.run(unique_image, ["true"])
    engine.remove(unique_image)
    assert engine.inspect(unique_image) is None
    engine.remove(unique_image)
    engine.remove(unique_image, force=True)


def test_removing_an_id_with_several_tags_needs_force(engine, unique_image, images):
    image_id = engine.inspect(unique_image).id
    engine.tag(unique_image, images.ref("unique", "2"))
    with pytest.raises(EngineError, match=f"removing {image_id} failed: "):
        engine.remove(image_id)
    engine.remove(image_id, force=True)
    assert engine.inspect(unique_image) is None


def test_calls_from_several_threads(engine, base):
    expected = engine.inspect(base).id
    results, errors = [], []

    def work():
        try:
            results.append(engine.inspect(base).id)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and results == [expected] * 6


def test_kiln_build_on_every_engine(engine, base, images, kiln, tmp_path):
    """kiln-build end to end on the engine: a multi-parent family, then all unchanged."""
    from tests.integration.conftest import BUILDSET, IMAGES

    for name in IMAGES:
        images.track(f"{images.namespace}/{name}:latest")
    args = ["--engine", engine.name, "--templates-dir", BUILDSET,
            "--namespace", images.namespace, "--template-var", f"busybox={base}",
            "--template-var", "port=1", "--work-dir", tmp_path / "work", "--format", "json",
            "^multi$"]
    first = kiln(*args)
    assert first.code == 0, first.out + first.err
    summary = json.loads(first.out)
    assert sorted(e["name"] for e in summary["built"]) == ["base", "leaf", "mid", "multi",
                                                           "other"]
    multi = f"{images.namespace}/multi:latest"
    assert engine.run(multi, ["cat", "/leaf.txt", "/staged.txt"]) == "base built\nmid\nstaged\n"
    assert engine.inspect(multi).labels["kiln.fingerprint"].startswith("sha256:")
    second = json.loads(kiln(*args).out)
    assert sorted(e["name"] for e in second["unchanged"]) == ["base", "leaf", "mid", "multi",
                                                              "other"]
    assert second["built"] == []
