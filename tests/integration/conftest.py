"""Fixtures for tests against a real container engine and a real registry.

What is missing (no daemon, no ``docker-registry`` binary) skips the tests,
except under CI (``CI`` set to a non-empty value), where it fails them: a CI
run must never pass by testing nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from builder.engines.base import BuildRequest, EngineError, EngineOptions
from builder.engines.docker import DockerEngine
from builder.errors import BuildError
from tests.conftest import FIXTURES, free_port

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

    def put_manifest(self, repository: str, reference: str, data: bytes,
                     media_type: str) -> str:
        """Upload manifest bytes as they are (e.g. an index made by a test); their digest."""
        request = urllib.request.Request(f"{self.url}/v2/{repository}/manifests/{reference}",
                                         data=data, method="PUT",
                                         headers={"Content-Type": media_type})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.headers["Docker-Content-Digest"]


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
{extra}"""


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
    config.write_text(REGISTRY_CONFIG.format(storage=storage, host=host, extra=""))
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


# ---- kiln-build on the real engine -------------------------------------------

BUILDSET = FIXTURES / "buildset"
IMAGES = sorted(p.name for p in BUILDSET.iterdir() if (p / "Dockerfile.j2").exists())


class Behaviour:
    """What the test HTTP server does; reachable from build containers (host network)."""

    def __init__(self, barrier_timeout: float = 60):
        self.flaky_failures = 1
        self.barrier = threading.Barrier(2, timeout=barrier_timeout)
        self.started = threading.Event()
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.lock = threading.Lock()

    def answer(self, path: str) -> tuple[int, bytes]:
        with self.lock:
            self.requests.append(path)
        if path == "/flaky":
            with self.lock:
                if self.flaky_failures > 0:
                    self.flaky_failures -= 1
                    return 500, b"not yet"
            return 200, b"flaky ok\n"
        if path.startswith("/barrier/"):
            try:
                self.barrier.wait()
            except threading.BrokenBarrierError:
                return 500, b"the other build never arrived"
            return 200, b"met\n"
        if path.startswith("/started/"):
            self.started.set()
            return 200, b"ok\n"
        if path.startswith("/files/") and path[7:] in self.files:
            return 200, self.files[path[7:]]
        return 404, b"no such thing"


@pytest.fixture
def server():
    behaviour = Behaviour()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            status, body = behaviour.answer(self.path)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    behaviour.port = httpd.server_address[1]
    yield behaviour
    behaviour.barrier.abort()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def build(kiln, docker_engine, busybox_base, cleanup_images, server, tmp_path):
    """Run kiln-build on a build set, in a namespace of its own; returns (result, summary).

    ``run(*args, config=TEXT, templates=DIR)``: extra arguments, an optional
    config file's text, and another template set (default: the build set).
    Images tagged ``<namespace>/<image>:<tag>`` are removed after the test
    for the tags named in ``run.tags`` (default: latest).
    """
    namespace = cleanup_images.namespace
    tags = ["latest"]

    def run(*args, config: str | None = None, templates: Path = BUILDSET):
        for tag in tags:
            for name in IMAGES:
                cleanup_images.track(f"{namespace}/{name}:{tag}")
        summary_file = tmp_path / f"summary-{len(list(tmp_path.glob('summary-*')))}.json"
        extra = []
        if config is not None:
            conf = tmp_path / f"kiln-{summary_file.stem}.conf"
            conf.write_text(config)
            extra = ["--config-file", conf]
        result = kiln("--templates-dir", templates, "--namespace", namespace,
                      "--template-var", f"busybox={busybox_base}",
                      "--template-var", f"port={server.port}",
                      "--network-mode", "host", "--work-dir", tmp_path / "work",
                      "--summary-json-file", summary_file, *extra, *args)
        summary = json.loads(summary_file.read_text()) if summary_file.exists() else None
        return result, summary

    run.namespace = namespace
    run.tags = tags
    return run
