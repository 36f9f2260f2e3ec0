"""DockerEngine against a real Docker daemon and a real registry."""

from __future__ import annotations

import json
import threading
import time

import pytest

from builder.engine import load_engine
from builder.engine.base import BuildRequest, EngineError, EngineOptions, PushError
from builder.engine.docker import DockerEngine, split_reference
from builder.exceptions import BuildError
from tests.integration.conftest import free_port

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


def build(engine, context, dockerfile: str, tags, **request) -> list[str]:
    context.mkdir(parents=True, exist_ok=True)
    (context / "Dockerfile").write_text(dockerfile)
    lines = list(engine.build(BuildRequest(image="test-image", context_dir=context,
                                           tags=tuple(tags), **request)))
    return lines


@pytest.fixture
def unique_image(docker_engine, busybox_base, cleanup_images, tmp_path):
    """An image of its own (a unique label and layer), tagged in the test's namespace."""
    ref = cleanup_images.ref("unique", "1")
    build(docker_engine, tmp_path / "unique",
          f"FROM {busybox_base}\nLABEL kiln.test.unique={cleanup_images.namespace}\n"
          f"RUN echo {cleanup_images.namespace} > /unique\n", [ref])
    return ref


def test_load_engine_by_name():
    assert isinstance(load_engine("docker"), DockerEngine)


@pytest.mark.parametrize("ref, expected", [
    ("base", ("base", None, None)),
    ("kiln/base:1.0", ("kiln/base", "1.0", None)),
    ("127.0.0.1:5000/kiln/base", ("127.0.0.1:5000/kiln/base", None, None)),
    ("127.0.0.1:5000/kiln/base:1.0", ("127.0.0.1:5000/kiln/base", "1.0", None)),
    ("reg:5000/base@sha256:abc", ("reg:5000/base", None, "sha256:abc")),
    ("reg:5000/base:1@sha256:abc", ("reg:5000/base", "1", "sha256:abc")),
])
def test_split_reference(ref, expected):
    assert split_reference(ref) == expected


def test_build_applies_labels_build_args_and_every_tag(docker_engine, busybox_base,
                                                       cleanup_images, tmp_path):
    first = cleanup_images.ref("app", "1.0")
    second = cleanup_images.ref("app", "latest")
    third = cleanup_images.ref("app", "1.0", host="127.0.0.1:5000")
    labels = {"org.opencontainers.image.title": "app", "kiln.test": cleanup_images.namespace}
    lines = build(
        docker_engine, tmp_path / "app",
        f"FROM {busybox_base}\nARG GREETING\nRUN echo \"$GREETING\" > /greeting\n",
        [first, second, third], labels=labels,
        build_args={"GREETING": f"hello {cleanup_images.namespace}"})

    assert any(line.startswith("Step 3/") and "RUN echo" in line for line in lines)
    assert all("\n" not in line and not line.endswith(" ") for line in lines)
    info = docker_engine.inspect(first)
    assert info is not None and info.id.startswith("sha256:")
    assert set(info.tags) == {first, second, third}
    assert {k: info.labels[k] for k in labels} == labels
    assert info.created
    assert docker_engine.inspect(third).id == info.id
    out = docker_engine.run(first, ["cat", "/greeting"], timeout=30)
    assert out == f"hello {cleanup_images.namespace}\n"


def test_failing_run_raises_build_error_and_tags_nothing(docker_engine, busybox_base,
                                                        cleanup_images, tmp_path):
    tags = [cleanup_images.ref("broken", "1"), cleanup_images.ref("broken", "2")]
    with pytest.raises(BuildError) as caught:
        build(docker_engine, tmp_path / "broken",
              f"FROM {busybox_base}\n"
              "RUN echo marker-on-stdout; echo marker-on-stderr >&2; exit 7\n", tags)

    error = caught.value
    assert error.image == "test-image"
    assert "'test-image' failed to build" in error.message
    assert "returned a non-zero code: 7" in error.message
    assert "marker-on-stdout" in error.tail
    assert "marker-on-stderr" in error.tail          # colour codes stripped
    assert len(error.tail) <= 20
    assert all(docker_engine.inspect(tag) is None for tag in tags)


def test_bad_dockerfile_raises_build_error(docker_engine, busybox_base, cleanup_images,
                                          tmp_path):
    tag = cleanup_images.ref("unparsable")
    with pytest.raises(BuildError, match="unknown instruction"):
        build(docker_engine, tmp_path / "bad", f"FROM {busybox_base}\nFROB nicate\n", [tag])
    assert docker_engine.inspect(tag) is None


def test_build_with_unreachable_engine_raises_engine_error(tmp_path):
    engine = DockerEngine(EngineOptions(base_url="unix:///nonexistent.sock"))
    with pytest.raises(EngineError, match="cannot reach the Docker engine"):
        build(engine, tmp_path / "x", "FROM scratch\n", ["kiln-test-none/x:1"])


def test_inspect_missing_reference_is_none(docker_engine, cleanup_images):
    assert docker_engine.inspect(cleanup_images.ref("does-not-exist", "1")) is None
    assert docker_engine.inspect("sha256:" + "0" * 64) is None


def test_tag_with_registry_host_and_port(docker_engine, busybox_base, cleanup_images):
    target = cleanup_images.ref("base", "1.0", host="127.0.0.1:5000")
    docker_engine.tag(busybox_base, target)
    info = docker_engine.inspect(target)
    assert info is not None
    assert target in info.tags
    assert info.id == docker_engine.inspect(busybox_base).id

    untagged = cleanup_images.ref("base", "latest", host="127.0.0.1:5000")
    docker_engine.tag(busybox_base, untagged.removesuffix(":latest"))
    assert untagged in docker_engine.inspect(busybox_base).tags


def test_tag_refuses_digest_target_and_missing_source(docker_engine, busybox_base,
                                                      cleanup_images):
    with pytest.raises(EngineError, match="digest reference"):
        docker_engine.tag(busybox_base, f"{cleanup_images.namespace}/x@sha256:{'a' * 64}")
    missing = cleanup_images.ref("missing")
    with pytest.raises(EngineError, match=f"no local image {missing}"):
        docker_engine.tag(missing, cleanup_images.ref("other"))


def test_push_to_registry(docker_engine, unique_image, cleanup_images, registry):
    target = cleanup_images.ref("pushed", "1.0", host=registry.host)
    docker_engine.tag(unique_image, target)

    lines = list(docker_engine.push(target))

    assert lines[0] == f"The push refers to repository [{target.removesuffix(':1.0')}]"
    assert any(": Pushed" in line for line in lines)
    pushing = [line for line in lines if ": Pushing" in line]
    layers = {line.split(":")[0] for line in pushing}
    assert len(pushing) == len(layers)                 # one "Pushing" line per layer
    assert any(line.startswith("1.0: digest: sha256:") for line in lines)

    name = f"{cleanup_images.namespace}/pushed"
    status, _, body = registry.get(f"/v2/{name}/tags/list")
    assert status == 200
    assert json.loads(body) == {"name": name, "tags": ["1.0"]}

    status, headers, body = registry.get(f"/v2/{name}/manifests/1.0", accept=MANIFEST_V2)
    assert status == 200
    assert headers["Content-Type"] == MANIFEST_V2
    manifest = json.loads(body)
    info = docker_engine.inspect(target)
    assert manifest["config"]["digest"] == info.id       # the registry holds this image
    digest = headers["Docker-Content-Digest"]
    assert f"{registry.host}/{name}@{digest}" in info.repo_digests

    config_status, _, config = registry.get(f"/v2/{name}/blobs/{info.id}")
    assert config_status == 200
    labels = json.loads(config)["config"]["Labels"]
    assert labels["kiln.test.unique"] == cleanup_images.namespace


def test_push_to_registry_that_is_not_listening(docker_engine, busybox_base, cleanup_images):
    target = cleanup_images.ref("nowhere", "1", host=f"127.0.0.1:{free_port()}")
    docker_engine.tag(busybox_base, target)
    with pytest.raises(PushError) as caught:
        list(docker_engine.push(target))
    assert str(caught.value).startswith(f"pushing {target} failed: ")
    assert "connection refused" in str(caught.value)


def test_push_without_local_image(docker_engine, cleanup_images, registry):
    target = cleanup_images.ref("absent", "1", host=registry.host)
    with pytest.raises(PushError, match=f"pushing {target} failed: .*does not exist"):
        list(docker_engine.push(target))


def test_run_returns_stdout(docker_engine, busybox_base):
    out = docker_engine.run(busybox_base, ["sh", "-c", "echo out; echo err >&2"], timeout=30)
    assert out == "out\n"


def test_run_nonzero_exit_raises_with_stderr(docker_engine, busybox_base):
    with pytest.raises(EngineError) as caught:
        docker_engine.run(busybox_base, ["sh", "-c", "echo out; echo first >&2; "
                                                     "echo last-words >&2; exit 3"])
    message = str(caught.value)
    assert busybox_base in message
    assert "exit 3" in message
    assert "exited with code 3" in message
    assert "last-words" in message
    assert "out" not in message.split("exited with code 3")[1]


def test_run_missing_command_and_missing_image(docker_engine, busybox_base, cleanup_images):
    with pytest.raises(EngineError, match="no-such-binary"):
        docker_engine.run(busybox_base, ["no-such-binary"])
    missing = cleanup_images.ref("missing")
    with pytest.raises(EngineError, match=f"no local image {missing}"):
        docker_engine.run(missing, ["true"])


def test_run_timeout_kills_and_removes_the_container(docker_engine, unique_image):
    started = time.monotonic()
    with pytest.raises(EngineError, match="did not finish within 1 s"):
        docker_engine.run(unique_image, ["sleep", "30"], timeout=1)
    assert time.monotonic() - started < 15
    # A container left behind would make this plain removal a conflict.
    docker_engine.remove(unique_image)
    assert docker_engine.inspect(unique_image) is None


def test_remove_is_idempotent(docker_engine, unique_image):
    docker_engine.run(unique_image, ["true"])
    docker_engine.remove(unique_image)
    assert docker_engine.inspect(unique_image) is None
    docker_engine.remove(unique_image)
    docker_engine.remove(unique_image, force=True)


def test_remove_refuses_an_image_in_use_without_force(docker_engine, busybox_base,
                                                      cleanup_images, tmp_path):
    ref = cleanup_images.ref("parent")
    build(docker_engine, tmp_path / "parent",
          f"FROM {busybox_base}\nLABEL kiln.test.parent={cleanup_images.namespace}\n", [ref])
    image_id = docker_engine.inspect(ref).id
    child = cleanup_images.ref("child")
    build(docker_engine, tmp_path / "child", f"FROM {ref}\nRUN touch /child\n", [child])
    docker_engine.remove(ref)                            # untags only: the child needs it
    with pytest.raises(EngineError, match=f"removing {image_id} failed: .*conflict"):
        docker_engine.remove(image_id)


def test_ping_bogus_endpoint():
    engine = DockerEngine(EngineOptions(base_url="unix:///nonexistent.sock"))
    with pytest.raises(EngineError) as caught:
        engine.ping()
    assert str(caught.value) == ("cannot reach the Docker engine at unix:///nonexistent.sock: "
                                 "no such file or directory (is dockerd running?)")


def test_one_client_shared_by_threads(docker_engine, busybox_base):
    engine = DockerEngine(EngineOptions())
    errors = []
    results = []

    def work():
        try:
            engine.ping()
            results.append(engine.inspect(busybox_base).id)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == [docker_engine.inspect(busybox_base).id] * 8
