"""Fixtures for tests against a real container engine and a real registry.

What is missing (no daemon, no ``docker-registry`` binary) skips the tests,
except under CI (``CI`` set to a non-empty value), where it fails them: a CI
run must never pass by testing nothing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from builder.engine.base import BuildRequest, EngineError, EngineOptions
from builder.engine.docker import DockerEngine
from builder.exceptions import BuildError

BUSYBOX_REF = "kiln-test/busybox:latest"
BUSYBOX_DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
"""


def unavailable(reason: str):
    """Skip the calling test, or fail it under CI."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def require_docker(options: EngineOptions | None = None) -> DockerEngine:
    """A DockerEngine that answered a ping; skips (fails under CI) otherwise."""
    engine = DockerEngine(options or EngineOptions())
    try:
        engine.ping()
    except EngineError as exc:
        unavailable(str(exc))
    return engine


@pytest.fixture(scope="session")
def docker_engine() -> DockerEngine:
    return require_docker()


@pytest.fixture(scope="session")
def busybox_base(docker_engine, tmp_path_factory) -> str:
    """``kiln-test/busybox:latest``: scratch plus a static busybox, built once per session."""
    busybox = shutil.which("busybox")
    if busybox is None:
        unavailable("no busybox binary on PATH (install busybox-static)")
    context = tmp_path_factory.mktemp("busybox-base")
    shutil.copy(busybox, context / "busybox")
    (context / "Dockerfile").write_text(BUSYBOX_DOCKERFILE)
    request = BuildRequest(image="busybox-base", context_dir=context, tags=(BUSYBOX_REF,))
    try:
        for _ in docker_engine.build(request):
            pass
    except BuildError as exc:
        pytest.fail(f"cannot build the test base image ({busybox} must be statically "
                    f"linked): {exc}\n" + "\n".join(exc.tail), pytrace=False)
    return BUSYBOX_REF


@dataclass
class Registry:
    """A running ``docker-registry`` without auth, on plain HTTP."""

    host: str                       # "127.0.0.1:PORT", the reference prefix
    url: str                        # "http://127.0.0.1:PORT"
    storage: Path

    def get(self, path: str, accept: str | None = None) -> tuple[int, dict[str, str], bytes]:
        """GET ``url + path``: (status, headers, body); HTTP errors are returned, not raised."""
        request = urllib.request.Request(self.url + path)
        if accept:
            request.add_header("Accept", accept)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


REGISTRY_CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: {host}
"""


@pytest.fixture(scope="session")
def registry(tmp_path_factory) -> Iterator[Registry]:
    """Debian's ``docker-registry serve`` on 127.0.0.1 and a free port, for this session."""
    binary = shutil.which("docker-registry")
    if binary is None:
        unavailable("no docker-registry binary on PATH (install docker-registry)")
    workdir = tmp_path_factory.mktemp("registry")
    storage = workdir / "storage"
    storage.mkdir()
    host = f"127.0.0.1:{free_port()}"
    config = workdir / "config.yml"
    config.write_text(REGISTRY_CONFIG.format(storage=storage, host=host))
    log_path = workdir / "registry.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([binary, "serve", str(config)], stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    reg = Registry(host=host, url=f"http://{host}", storage=storage)
    try:
        _wait_for_registry(reg, process, log_path)
        yield reg
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_registry(reg: Registry, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"docker-registry exited with code {process.returncode}: "
                        f"{log_path.read_text(errors='replace')[-2000:]}", pytrace=False)
        try:
            status, _, _ = reg.get("/v2/")
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"docker-registry did not answer on {reg.url}/v2/ within 15 s: "
                f"{log_path.read_text(errors='replace')[-2000:]}", pytrace=False)


@dataclass
class TestImages:
    """A unique namespace for one test's images; everything tracked is removed afterwards."""

    engine: DockerEngine
    namespace: str = field(default_factory=lambda: f"kiln-test-{uuid.uuid4().hex[:10]}")
    refs: list[str] = field(default_factory=list)

    __test__ = False  # not a test class despite its name

    def ref(self, name: str, tag: str = "latest", host: str | None = None) -> str:
        """``[host/]<namespace>/<name>:<tag>``, tracked for removal."""
        prefix = f"{host}/" if host else ""
        return self.track(f"{prefix}{self.namespace}/{name}:{tag}")

    def track(self, ref: str) -> str:
        self.refs.append(ref)
        return ref

    def remove_all(self) -> None:
        for ref in reversed(self.refs):
            try:
                self.engine.remove(ref, force=True)
            except EngineError:
                pass


@pytest.fixture
def cleanup_images(docker_engine) -> Iterator[TestImages]:
    """``cleanup_images.ref("name", "tag")`` gives a unique, removed-after reference."""
    images = TestImages(docker_engine)
    yield images
    images.remove_all()
