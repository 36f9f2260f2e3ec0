"""Shared helpers of the scan and atomic-build fault tests.

No tests here: helpers shared by ``test_atomic_build.py`` and
``test_scan.py``. The image ``probe`` is built on the engine's busybox base;
its fake ``dpkg-query`` (which kiln's package scan runs) prints one package
per network interface the scan container sees, one for the image's version,
and can first sleep, so that a test can catch kiln between the build and the
stamp. Its dpkg status file lists one package, ``probe`` at the image's
version, which is what a scan reading the image's files finds.

kiln reads an image's packages from its files when the engine can show
them, and runs the scan in a container only for an rpm database (or an
engine that cannot): the images carry an (empty) rpm database unless
``rpm_db="0"``, so that the container scan is what these tests exercise.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from builder.engines.base import Engine, ImageInfo

# The label that says how kiln.packages was found, and its values (spelled
# out, not imported, so that these tests run against a kiln without them).
PACKAGES_SCAN = "kiln.packages.scan"
SCANNED = "scanned"
NO_SHELL = "no-shell"

DOCKERFILE = """\
FROM {{ busybox }}
LABEL kiln.test.namespace={{ ns }}
COPY dpkg-query /usr/bin/dpkg-query
{{ "COPY rpmdb /var/lib/rpm/Packages" if rpm_db != "0" else "" }}
RUN echo {{ version }} > /version && echo {{ scan_sleep }} > /etc/probe-scan-sleep \
 && mkdir -p /var/lib/dpkg \
 && printf 'Package: probe\\nStatus: install ok installed\\nVersion: %s\\n' {{ version }} \
    > /var/lib/dpkg/status
{{ "RUN echo build-sleeping && sleep " ~ build_sleep if build_sleep != "0" else "" }}
{{ BROKEN_SHELL if broken_shell != "0" else "" }}
""".replace("BROKEN_SHELL", repr(
    'RUN ["/bin/busybox", "sh", "-c", '
    '"rm /bin/sh && cp /bin/busybox /bin/sh && chmod 644 /bin/sh"]'))

DPKG_QUERY = """\
#!/bin/sh
pause=$(cat /etc/probe-scan-sleep)
[ "$pause" = 0 ] || sleep "$pause"
for interface in $(ls /sys/class/net); do echo "deb net-$interface 1"; done
echo "deb probe $(cat /version)"
"""

SHELL_LESS = """\
FROM scratch
LABEL kiln.test.namespace={{ ns }}
COPY busybox /busybox
{{ "COPY rpmdb /var/lib/rpm/Packages" if rpm_db != "0" else "" }}
"""


def template_set(root: Path, shell_less_busybox: Path | None = None) -> Path:
    """The set (``probe``; with a busybox binary also ``bare``: scratch, no /bin/sh)."""
    probe = root / "probe"
    probe.mkdir(parents=True)
    (probe / "Dockerfile.j2").write_text(DOCKERFILE)
    (probe / "dpkg-query").write_text(DPKG_QUERY)
    (probe / "dpkg-query").chmod(0o755)
    (probe / "rpmdb").write_bytes(b"")
    if shell_less_busybox is not None:
        bare = root / "bare"
        bare.mkdir()
        (bare / "Dockerfile.j2").write_text(SHELL_LESS)
        (bare / "busybox").write_bytes(shell_less_busybox.read_bytes())
        (bare / "busybox").chmod(0o755)
        (bare / "rpmdb").write_bytes(b"")
    return root


@dataclass
class Run:
    code: int
    out: str
    err: str
    summary: dict | None

    def entries(self, key: str) -> dict[str, dict]:
        assert self.summary is not None, self.err
        return {entry["name"]: entry for entry in self.summary[key]}


class Probe:
    """kiln-build of the probe set on one engine, in one namespace."""

    def __init__(self, engine: Engine, base: str, namespace: str, tmp_path: Path,
                 templates: Path):
        self.engine = engine
        self.base = base
        self.namespace = namespace
        self.tmp_path = tmp_path
        self.templates = templates
        self.runs = 0

    def ref(self, name: str = "probe") -> str:
        return f"{self.namespace}/{name}:latest"

    def argv(self, *patterns: str, version: str = "1", scan_sleep: str = "0",
             build_sleep: str = "0", broken_shell: str = "0",
             rpm_db: str = "1") -> tuple[list[str], Path]:
        self.runs += 1
        summary = self.tmp_path / f"summary-{self.runs}.json"
        variables = {"busybox": self.base, "ns": self.namespace, "version": version,
                     "scan_sleep": scan_sleep, "build_sleep": build_sleep,
                     "broken_shell": broken_shell, "rpm_db": rpm_db}
        argv = [sys.executable, "-m", "builder.cli.build", "--engine", self.engine.name,
                "--templates-dir", str(self.templates), "--namespace", self.namespace,
                "--network-mode", "host", "--work-dir", str(self.tmp_path / "work"),
                "--summary-json-file", str(summary)]
        for key, value in variables.items():
            argv += ["--template-var", f"{key}={value}"]
        return [*argv, *(patterns or ("^probe$",))], summary

    def run(self, *patterns: str, **variables) -> Run:
        argv, summary = self.argv(*patterns, **variables)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600,
                              check=False)
        return Run(done.returncode, done.stdout, done.stderr, _load(summary))

    def start(self, *patterns: str, **variables) -> tuple[subprocess.Popen, Path]:
        argv, summary = self.argv(*patterns, **variables)
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True), summary

    def log(self, name: str = "probe") -> str:
        path = self.tmp_path / "work" / "logs" / f"{name}.log"
        return path.read_text() if path.exists() else ""

    def images(self) -> list[ImageInfo]:
        """Every listed image this test built (untagged ones included)."""
        return [info for info in self.engine.images_with_label("kiln.test.namespace")
                if info.labels["kiln.test.namespace"] == self.namespace]


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None
