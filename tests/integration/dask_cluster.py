"""A second Docker daemon and a Dask cluster on 127.0.0.1, as plain helpers
(the tests' fixtures in dask_fixtures.py and benchmarks/distributed.py use them).

:class:`SecondDocker`: a dockerd of its own (data root, exec root, pidfile and
unix socket under a short temporary directory), on a bridge device made for
it (never ``--bridge=none``: that was seen to delete the host daemon's
docker0), without touching iptables; stopped, its mounts and bridge removed,
by :meth:`SecondDocker.stop`.

:class:`DaskCluster`: ``dask scheduler`` and ``dask worker`` processes of this
virtualenv, each worker on the engine its environment names.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent
HOST_BRIDGE = "docker0"


class Unavailable(RuntimeError):
    """Something a helper needs is missing or did not start."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=120,
                          **kwargs)


def host_network_problem(image: str) -> str | None:
    """None if the host daemon's docker0 exists and a container on its default
    network runs; else what is wrong."""
    if run("ip", "link", "show", HOST_BRIDGE, check=False).returncode != 0:
        return f"{HOST_BRIDGE} is gone: the host Docker daemon must be restarted"
    ran = run("docker", "run", "--rm", image, "true", check=False)
    if ran.returncode != 0:
        return f"the host daemon's default network fails: {ran.stderr.strip()}"
    return None


def _free_subnet() -> ipaddress.IPv4Network:
    used = run("ip", "-4", "-o", "addr", "show").stdout
    for third in range(200, 250):
        if f" 172.29.{third}." not in used:
            return ipaddress.IPv4Network(f"172.29.{third}.0/24")
    raise Unavailable("no free 172.29.x.0/24 subnet for the second daemon's bridge")


@dataclass
class SecondDocker:
    root: Path
    bridge: str
    process: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        """unix://.../docker.sock: the DOCKER_HOST of a worker on this daemon."""
        return f"unix://{self.root}/docker.sock"

    @classmethod
    def start(cls, images: tuple[str, ...] = ()) -> SecondDocker:
        """Start it, and copy ``images`` of the host daemon into it."""
        dockerd = shutil.which("dockerd")
        if dockerd is None or os.geteuid() != 0 or shutil.which("ip") is None:
            raise Unavailable("a second Docker daemon needs dockerd, ip and root")
        daemon = cls(Path(tempfile.mkdtemp(prefix="kd-", dir="/tmp")),  # a short socket path
                     f"kilnbr{uuid.uuid4().hex[:4]}")
        try:
            daemon._start(dockerd, images)
        except BaseException:
            daemon.stop()
            raise
        return daemon

    def _start(self, dockerd: str, images: tuple[str, ...]) -> None:
        subnet = _free_subnet()
        run("ip", "link", "add", self.bridge, "type", "bridge")
        run("ip", "addr", "add", f"{subnet[1]}/{subnet.prefixlen}", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        with open(self.root / "dockerd.log", "wb") as log:
            self.process = subprocess.Popen(
                [dockerd, "--data-root", str(self.root / "data"),
                 "--exec-root", str(self.root / "exec"), "--pidfile", str(self.root / "pid"),
                 "-H", self.host, f"--bridge={self.bridge}", "--iptables=false",
                 "--ip6tables=false", "--ip-masq=false", "--userland-proxy=false"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        deadline = time.monotonic() + 60
        while self.docker("version", check=False).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise Unavailable("the second dockerd did not start: " + (
                    self.root / "dockerd.log").read_text(errors="replace")[-2000:])
            time.sleep(0.3)
        for image in images:
            saved = subprocess.run(["docker", "save", image], check=True,
                                   capture_output=True, timeout=120).stdout
            subprocess.run(["docker", "-H", self.host, "load"], input=saved, check=True,
                           capture_output=True, timeout=120)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        run("ip", "link", "delete", self.bridge, check=False)
        with open("/proc/self/mounts") as mounts:   # e.g. its netns, left mounted
            points = [line.split()[1] for line in mounts
                      if line.split()[1].startswith(f"{self.root}/")]
        for point in sorted(points, key=len, reverse=True):
            run("umount", "-l", point, check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run("docker", "-H", self.host, *args, check=check)

    def inspect(self, ref: str, template: str) -> str | None:
        done = self.docker("image", "inspect", "--format", template, ref, check=False)
        return done.stdout.strip() if done.returncode == 0 else None

    def running_containers(self) -> list[str]:
        return self.docker("ps", "-q").stdout.split()


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
        """A worker on the host daemon, or the one ``docker_host`` names, with
        ``builds`` kiln-build resources (None: not a build worker)."""
        env = {"DOCKER_HOST": docker_host} if docker_host else {}
        resources = ["--resources", f"kiln-build={builds}"] if builds else []
        self._spawn(name, [str(BIN / "dask"), "worker", self.address, "--name", name,
                           "--nthreads", str(max(2, builds or 0)), "--no-dashboard",
                           "--no-nanny", *resources], env)
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
        raise Unavailable(f"timed out waiting for {what}; logs:\n{self.logs()}")

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
