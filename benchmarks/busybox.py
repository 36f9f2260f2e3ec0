"""A tiny base image for the engine benchmarks: scratch plus the static busybox."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

DOCKER = shutil.which("docker", path="/usr/bin") or "docker"
BASE = "kiln-bench-base/busybox:latest"


def make_base(tmp: Path) -> str:
    """Build BASE with the Docker CLI from /usr/bin/busybox; return its reference."""
    context = tmp / "busybox"
    context.mkdir()
    shutil.copy("/usr/bin/busybox", context / "busybox")
    (context / "Dockerfile").write_text(
        'FROM scratch\nCOPY busybox /bin/busybox\n'
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n')
    subprocess.run([DOCKER, "build", "-q", "-t", BASE, str(context)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return BASE
