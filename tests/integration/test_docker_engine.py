"""What is particular to DockerEngine, against a real daemon and registry.

Behaviour every engine shares (build, tag, push, run, remove, cancel,
threads) is tested once for docker, podman and buildah in test_engines.py.
"""

from __future__ import annotations

import pytest

from builder.engines import load_engine
from builder.engines.base import BuildRequest, EngineError, EngineOptions, PushError
from builder.engines.docker import DockerEngine, split_reference

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


def test_build_with_unreachable_engine_raises_engine_error(tmp_path):
    engine = DockerEngine(EngineOptions(base_url="unix:///nonexistent.sock"))
    with pytest.raises(EngineError, match="cannot reach the Docker engine"):
        build(engine, tmp_path / "x", "FROM scratch\n", ["kiln-test-none/x:1"])


def test_push_output_is_compact_and_records_the_repo_digest(docker_engine, unique_image,
                                                            cleanup_images, registry):
    target = cleanup_images.ref("pushed", "1.0", host=registry.host)
    docker_engine.tag(unique_image, target)

    lines = list(docker_engine.push(target))

    assert lines[0] == f"The push refers to repository [{target.removesuffix(':1.0')}]"
    assert any(": Pushed" in line for line in lines)
    pushing = [line for line in lines if ": Pushing" in line]
    layers = {line.split(":")[0] for line in pushing}
    assert len(pushing) == len(layers)                 # one "Pushing" line per layer
    name = f"{cleanup_images.namespace}/pushed"
    status, headers, _ = registry.get(f"/v2/{name}/manifests/1.0", accept=MANIFEST_V2)
    assert status == 200
    digest = headers["Docker-Content-Digest"]
    assert f"{registry.host}/{name}@{digest}" in docker_engine.inspect(target).repo_digests


def test_push_without_local_image(docker_engine, cleanup_images, registry):
    target = cleanup_images.ref("absent", "1", host=registry.host)
    with pytest.raises(PushError, match=f"pushing {target} failed: .*does not exist"):
        list(docker_engine.push(target))


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
