"""A second Docker daemon and a Dask cluster on 127.0.0.1, for --executor dask.

``second_docker``: a dockerd of its own (data root, exec root, pidfile and
unix socket under a short temporary directory), on a bridge device made for
it (never ``--bridge=none``: that was seen to delete the host daemon's
docker0), without touching iptables. It gets the test busybox base image and
is stopped, and its bridge deleted, at the end; the host daemon's docker0 and
default network are checked to work afterwards.

``DaskCluster``: ``dask scheduler`` and ``dask worker`` processes of this
virtualenv, each worker on the engine its environment names.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.integration.conftest import BUSYBOX_REF, unavailable

BIN = Path(sys.executable).parent
HOST_BRIDGE = "docker0"


def _run(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=120,
                          **kwargs)


def host_network_works() -> None:
    """The host daemon's docker0 exists and a container on its default network runs."""
    assert _run("ip", "link", "show", HOST_BRIDGE, check=False).returncode == 0, \
        f"{HOST_BRIDGE} is gone: the host Docker daemon must be restarted"
    ran = _run("docker", "run", "--rm", BUSYBOX_REF, "true", check=False)
    assert ran.returncode == 0, f"the host daemon's default network fails: {ran.stderr}"


def _free_subnet() -> ipaddress.IPv4Network:
    used = _run("ip", "-4", "-o", "addr", "show").stdout
    for third in range(200, 250):
        net = ipaddress.IPv4Network(f"172.29.{third}.0/24")
        if f" 172.29.{third}." not in used:
            return net
    pytest.fail("no free 172.29.x.0/24 subnet for the second daemon's bridge")


@dataclass
class SecondDocker:
    host: str               # unix://.../docker.sock: DOCKER_HOST for a worker
    root: Path
    process: subprocess.Popen
    bridge: str

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return _run("docker", "-H", self.host, *args, check=check)

    def inspect(self, ref: str, template: str) -> str | None:
        done = self.docker("image", "inspect", "--format", template, ref, check=False)
        return done.stdout.strip() if done.returncode == 0 else None

    def running_containers(self) -> list[str]:
        return self.docker("ps", "-q").stdout.split()


@pytest.fixture(scope="module")
def second_docker(docker_engine, busybox_base) -> Iterator[SecondDocker]:
    dockerd = shutil.which("dockerd")
    if dockerd is None or os.geteuid() != 0 or shutil.which("ip") is None:
        unavailable("a second Docker daemon needs dockerd, ip and root")
    host_network_works()
    root = Path(tempfile.mkdtemp(prefix="kd-", dir="/tmp"))   # a unix socket path is short
    bridge = f"kilnbr{uuid.uuid4().hex[:4]}"
    subnet = _free_subnet()
    _run("ip", "link", "add", bridge, "type", "bridge")
    process = None
    try:
        _run("ip", "addr", "add", f"{subnet[1]}/{subnet.prefixlen}", "dev", bridge)
        _run("ip", "link", "set", bridge, "up")
        with open(root / "dockerd.log", "wb") as log:
            process = subprocess.Popen(
                [dockerd, "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
                 "--pidfile", str(root / "docker.pid"), "-H", f"unix://{root}/docker.sock",
                 f"--bridge={bridge}", "--iptables=false", "--ip6tables=false",
                 "--ip-masq=false", "--userland-proxy=false"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        daemon = SecondDocker(f"unix://{root}/docker.sock", root, process, bridge)
        deadline = time.monotonic() + 60
        while daemon.docker("version", check=False).returncode != 0:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the second dockerd did not start: "
                            + (root / "dockerd.log").read_text(errors="replace")[-2000:],
                            pytrace=False)
            time.sleep(0.3)
        saved = subprocess.run(["docker", "save", busybox_base], check=True,
                               capture_output=True, timeout=120).stdout
        subprocess.run(["docker", "-H", daemon.host, "load"], input=saved, check=True,
                       capture_output=True, timeout=120)
        host_network_works()
        yield daemon
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        _run("ip", "link", "delete", bridge, check=False)
        _unmount_under(root)
        shutil.rmtree(root, ignore_errors=True)
    host_network_works()


def _unmount_under(root: Path) -> None:
    """What a stopped dockerd leaves mounted under its roots (e.g. its netns), deepest first."""
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(f"{root}/")]
    for point in sorted(points, key=len, reverse=True):
        _run("umount", "-l", point, check=False)


@dataclass
class DaskCluster:
    """A scheduler on 127.0.0.1 and the workers added to it; all stopped at the end."""

    root: Path
    address: str = ""
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self) -> DaskCluster:
        port = free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        self._spawn("scheduler", [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1",
                                  "--port", str(port), "--no-dashboard"], {})
        return self

    def add_worker(self, name: str, docker_host: str | None = None,
                   builds: int | None = 1) -> None:
        """A worker on the host daemon, or the one ``docker_host`` names."""
        env = {"DOCKER_HOST": docker_host} if docker_host else {}
        resources = ["--resources", f"kiln-build={builds}"] if builds else []
        self._spawn(name, [str(BIN / "dask"), "worker", self.address, "--name", name,
                           "--nthreads", "2", "--no-dashboard", "--no-nanny",
                           *resources], env)
        self.wait_for(lambda names: name in names, f"worker {name} to join")

    def workers(self) -> set[str]:
        from distributed import Client

        with Client(self.address, timeout=10) as client:
            return {str(info["name"])
                    for info in client.scheduler_info(n_workers=-1)["workers"].values()}

    def wait_for(self, condition, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if condition(self.workers()):
                    return
            except OSError:
                pass
            time.sleep(0.3)
        pytest.fail(f"timed out waiting for {what}; logs:\n{self.logs()}", pytrace=False)

    def kill(self, name: str) -> None:
        self.processes[name].send_signal(signal.SIGKILL)
        self.processes[name].wait()

    def logs(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
                         for path in sorted(self.root.glob("*.log")))

    def stop(self) -> None:
        """The workers first (they close quickly while the scheduler is there), then it."""
        workers = [p for name, p in self.processes.items() if name != "scheduler"]
        for group in (workers, [self.processes["scheduler"]]):
            for process in group:
                if process.poll() is None:
                    process.terminate()
            for process in group:
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        environment = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
        environment.update(env)
        with open(self.root / f"{name}.log", "wb") as log:
            self.processes[name] = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=environment, cwd=self.root)


@pytest.fixture
def dask_cluster(tmp_path) -> Iterator[DaskCluster]:
    if not (BIN / "dask").exists():
        unavailable(f"no dask command in {BIN} (pip install 'kiln[distributed]')")
    root = tmp_path / "dask"
    root.mkdir()
    cluster = DaskCluster(root).start()
    try:
        yield cluster
    finally:
        cluster.stop()
