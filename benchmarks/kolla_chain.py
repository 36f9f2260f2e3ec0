#!/usr/bin/env python3
"""Kolla's real keystone chain, cold: kiln against kolla-build 23.0.0, same run.

``base -> openstack-base -> keystone-base -> keystone`` (Debian trixie), from
the kolla-real kit (``$KILN_KOLLA_REAL``, ``../shared/kolla-real`` or
``/work/shared/kolla-real``; see its README), one config and one override for
both tools:

- kolla-build (its venv, see tests/kolla/kolla_env.py) ``--config-file
  W/kolla-build.conf --nobuildkit --nopull --nocache '^keystone$'``;
- kiln-build ``--template-api kolla --templates-dir <kolla's docker/>
  --config-file W/kolla-build.conf --nopull --nocache --rebuild '^keystone$'``
  (under the Kolla API kiln takes kolla-build's defaults, network mode ``host``
  among them; with kiln's own, the engine's bridge, every RUN step pays a
  network set-up).

Each builds into its own namespace, with the layer cache off, so neither
reuses the other's layers; both download the same packages from the same
mirror and PyPI. The chain is serial (each image needs its parent), so
scheduling cannot help: any gap is kiln's own overhead. Prints both wall
times, the ratio (target: kiln <= 1.05 x kolla-build) and each image's time
by each tool (kolla-build's "took", kiln's summary), plus kiln's time around
the engine's builds (start-up, contexts, scans, stamps). About 13 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from procenv import tool_env  # noqa: E402  (benchmarks/procenv.py)

from tests.kolla.kolla_env import KollaUnavailable, install_kolla  # noqa: E402

DOCKER = "/usr/bin/docker"
CHAIN = ("base", "openstack-base", "keystone-base", "keystone")
SELECT = "^keystone$"
TARGET = 1.05


def find_kit() -> Path:
    for candidate in (os.environ.get("KILN_KOLLA_REAL"), ROOT.parent / "shared" / "kolla-real",
                      "/work/shared/kolla-real"):
        if candidate and (Path(candidate) / "prepare.sh").is_file():
            return Path(candidate)
    sys.exit("the kolla-real kit was not found (set KILN_KOLLA_REAL)")


def timed(command: list[str], env: dict[str, str], log: Path) -> float:
    start = time.perf_counter()
    with open(log, "wb") as out:
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                check=False)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        sys.exit(f"{command[0]} failed ({result.returncode}):\n{tail}")
    return elapsed


def kolla_took(logs: Path) -> dict[str, float]:
    """Each image's build time as kolla-build logs it ("Built at ... (took H:MM:SS.f)")."""
    took = {}
    for name in CHAIN:
        text = (logs / f"{name}.log").read_text(errors="replace")
        match = re.search(r"\(took (\d+):(\d+):([\d.]+)\)", text)
        if match:
            h, m, s = match.groups()
            took[name] = int(h) * 3600 + int(m) * 60 + float(s)
    return took


def kiln_took(summary: Path) -> dict[str, float]:
    data = json.loads(summary.read_text())
    return {entry["name"]: entry.get("duration") or 0.0 for entry in data.get("built", [])}


def remove(namespace: str, tag: str) -> None:
    refs = [f"{namespace}/{name}:{tag}" for name in CHAIN]
    subprocess.run([DOCKER, "rmi", "-f", *refs], capture_output=True, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the images built")
    parser.add_argument("--kiln-first", action="store_true",
                        help="run kiln before kolla-build (default: after)")
    args = parser.parse_args()
    kit = find_kit()
    try:
        kolla = install_kolla()
    except KollaUnavailable as exc:
        sys.exit(str(exc))
    tmp = Path(tempfile.mkdtemp(prefix="kiln-kolla-chain-"))
    env = tool_env(tmp)
    work = tmp / "kit"
    subprocess.run(["sh", str(kit / "prepare.sh"), str(work)], check=True,
                   capture_output=True)
    config = str(work / "kolla-build.conf")
    tag = f"bench{os.getpid()}"
    (tmp / "kolla-logs").mkdir()
    runs = {
        "kolla-build": [str(kolla.kolla_build), "--config-file", config, "--nobuildkit",
                        "--nopull", "--nocache", "--work-dir", str(tmp / "kolla"),
                        "--logs-dir", str(tmp / "kolla-logs"), "--namespace",
                        "kiln-bench-kolla", "--tag", tag, SELECT],
        "kiln": [str(ROOT / ".venv" / "bin" / "kiln-build"), "--template-api", "kolla",
                 "--templates-dir", str(kolla.docker_dir), "--config-file", config,
                 "--nopull", "--nocache", "--rebuild",
                 "--work-dir", str(tmp / "kiln"),
                 "--namespace", "kiln-bench-kiln", "--tag", tag,
                 "--summary-json-file", str(tmp / "kiln-summary.json"), SELECT],
    }
    order = ["kiln", "kolla-build"] if args.kiln_first else ["kolla-build", "kiln"]
    wall = {}
    try:
        for tool in order:
            print(f"{tool}: building the chain cold ...", flush=True)
            wall[tool] = timed(runs[tool], env, tmp / f"{tool}.out")
            print(f"{tool}: {wall[tool]:.1f} s", flush=True)
    finally:
        if not args.keep:
            remove("kiln-bench-kolla", tag)
            remove("kiln-bench-kiln", tag)
    kolla_images = kolla_took(tmp / "kolla-logs")
    kiln_images = kiln_took(tmp / "kiln-summary.json")
    print()
    print(f"{'image':16} {'kolla-build':>12} {'kiln':>8}")
    for name in CHAIN:
        print(f"{name:16} {kolla_images.get(name, float('nan')):11.1f}s "
              f"{kiln_images.get(name, float('nan')):7.1f}s")
    ratio = wall["kiln"] / wall["kolla-build"]
    print(f"{'wall':16} {wall['kolla-build']:11.1f}s {wall['kiln']:7.1f}s")
    print(f"kiln outside its images' builds: "
          f"{wall['kiln'] - sum(kiln_images.values()):.1f} s; kolla-build outside its "
          f"images' builds: {wall['kolla-build'] - sum(kolla_images.values()):.1f} s")
    print(f"kiln / kolla-build: {ratio:.3f} (target <= {TARGET})  "
          f"[run order: {', '.join(order)}; logs in {tmp}]")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
