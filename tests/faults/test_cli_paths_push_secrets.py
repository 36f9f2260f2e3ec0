"""Secret build args stay out of labels, but a builder records the values of
the args a Dockerfile declares in the image history, which --push publishes:
kiln says so, one line per image and arg."""

from __future__ import annotations

import socket
import uuid

import pytest

from builder.engines.base import EngineError, EngineOptions
from builder.engines.docker import DockerEngine
from tests.integration.conftest import unavailable

pytestmark = pytest.mark.timeout(300)

DOCKERFILE = """\
FROM scratch
ARG DB_PASSWORD
ARG HTTP_PROXY
ARG HTTPS_PROXY
ARG RELEASE
COPY motd /etc/motd
"""


@pytest.fixture
def docker():
    engine = DockerEngine(EngineOptions())
    try:
        engine.ping()
    except EngineError as exc:
        unavailable(str(exc))
    return engine


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def warnings_of(result) -> list[str]:
    return [line for line in result.err.splitlines() if ": warning: " in line]


def test_secret_args_declared_by_a_pushed_image_are_warned_about(kiln, tree, tmp_path,
                                                                 docker):
    root = tree({"secretive/Dockerfile.j2": DOCKERFILE, "secretive/motd": "hello\n"})
    registry = f"127.0.0.1:{closed_port()}"  # nothing listens: the push fails fast
    namespace = f"kiln-faults-{uuid.uuid4().hex[:12]}"
    ref = f"{registry}/{namespace}/secretive:latest"
    common = ["--templates-dir", root, "--registry", registry, "--namespace", namespace,
              "--build-args", "DB_PASSWORD=hunter2",
              "--build-args", "HTTP_PROXY=http://user:pw@proxy.example:3128",
              "--build-args", "HTTPS_PROXY=http://proxy.example:3128",  # no credentials
              "--build-args", "RELEASE=1",
              "--build-args", "API_TOKEN=undeclared"]  # never reaches the history
    try:
        pushed = kiln(*common, "--work-dir", tmp_path / "w1", "--push")
        assert pushed.code == 1, pushed.err  # built; the push could not connect
        warnings = warnings_of(pushed)
        assert len(warnings) == 2, pushed.err
        assert ("image secretive: build arg DB_PASSWORD matches --secret-build-args and its "
                "Dockerfile declares it: its value stays out of labels, but the engine "
                "records it in the image history (docker history --no-trunc) that --push "
                "publishes") in warnings[0]
        assert "image secretive: build arg HTTP_PROXY holds a proxy URL with credentials" \
            in warnings[1]
        assert "hunter2" not in pushed.err and "user:pw" not in pushed.err

        local = kiln(*common, "--work-dir", tmp_path / "w2")
        assert local.code == 0, local.err
        assert warnings_of(local) == []
    finally:
        try:
            docker.remove(ref, force=True)
        except EngineError:
            pass
