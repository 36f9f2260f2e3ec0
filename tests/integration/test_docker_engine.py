"""What is particular to DockerEngine, against a real daemon and registry.

Behaviour every engine shares (build, tag, push, run, remove, cancel,
threads) is tested once for docker, podman and buildah in test_engines.py.
"""

from __future__ import annotations

import pytest

from builder.engines.base import BuildRequest, EngineError, PushError

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


