"""An image's packages read from its files are the ones the container scan finds.

On every engine, on a Debian image and on one built from it whose last layer
purges packages (a new dpkg status over the old one, whiteouts of the removed
files): :meth:`Engine.image_files` shows the image's files on this host, and
:func:`builder.build.imagefiles.scan_packages` over them gives what
``manifest.PACKAGE_SCAN`` prints when it runs in a container of the image.

The Debian image is the e2e tests' ``debian:bookworm-slim`` (made by
``.ci/bootstrap-base``) on the Docker daemon; podman and buildah copy it from
there into containers-storage when they lack it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from builder.build.imagefiles import scan_packages
from builder.build.labels import PACKAGE_SCAN, parse_packages, scan_finished
from builder.engines.base import BuildRequest, Engine, drain
from tests.integration.conftest import unavailable
from tests.integration.test_engines import engine, images  # noqa: F401

DEBIAN = "debian:bookworm-slim"
PURGED = ("e2fsprogs", "tzdata")


@pytest.fixture(scope="module")
def debian(engine) -> Iterator[str]:  # noqa: F811
    """The Debian image, in the engine's own store."""
    info = engine.inspect(DEBIAN)
    copied = False
    if info is None and engine.name != "docker":
        found = subprocess.run(["docker", "image", "inspect", DEBIAN], capture_output=True,
                               timeout=60, check=False)
        if found.returncode == 0:
            subprocess.run([engine.name, "pull", "-q", f"docker-daemon:{DEBIAN}"],
                           capture_output=True, timeout=600, check=True)
            copied = True
            info = engine.inspect(DEBIAN)
    if info is None:
        unavailable(f"no {DEBIAN} image for {engine.name} (make it with .ci/bootstrap-base)")
    yield info.id
    if copied:
        engine.remove(DEBIAN)


def in_container(engine: Engine, image_id: str) -> dict:  # noqa: F811
    output = engine.run(image_id, [PACKAGE_SCAN], entrypoint=["/bin/sh", "-c"],
                        network="none")
    assert scan_finished(output), output
    return parse_packages(output)


def from_files(engine: Engine, image_id: str) -> dict:  # noqa: F811
    with engine.image_files(image_id) as files:
        assert files is not None, f"{engine.name} shows no files of {image_id}"
        return scan_packages(files)


def test_debian_packages_from_files_are_the_container_scan(engine, debian):  # noqa: F811
    found = from_files(engine, debian)
    assert len(found["deb"]) > 50 and set(PURGED) <= set(found["deb"])
    assert found == in_container(engine, debian)


def test_a_layer_that_purges_packages_hides_them(engine, debian, images, tmp_path):  # noqa: F811
    context = tmp_path / "purged"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM {debian}\n"
        f"RUN dpkg --purge --force-all {' '.join(PURGED)} >/dev/null 2>&1"
        f" && echo {images.namespace} > /marker\n")
    built = drain(engine.build(BuildRequest(image="purged", context_dir=context, tags=())))
    images.track(built)

    found = from_files(engine, built)
    assert not set(PURGED) & set(found["deb"])
    assert found == in_container(engine, built)
    with engine.image_files(built) as files:
        assert files.read("/marker", 100) == f"{images.namespace}\n".encode()
        assert not files.exists("/usr/share/zoneinfo/UTC")       # removed with tzdata


def test_an_image_that_is_not_there_shows_no_files(engine):  # noqa: F811
    with engine.image_files("sha256:" + "0" * 64) as files:
        assert files is None
