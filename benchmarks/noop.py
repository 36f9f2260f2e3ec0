#!/usr/bin/env python3
"""A no-change kiln-build run against rebuilding with the engine's layer cache.

For each size N (default 32 and 188, Kolla's number of images), generates a
set of N busybox-based images (a tree, each with its own context file and a
COPY and a RUN step), builds it once with kiln, then measures in the same run:

- kiln: a second `kiln-build` of the same set (every image `unchanged`),
  process start to exit, best of 3;
- baseline: `docker build` of every rendered context, one after the other,
  with the layer cache warm (a first pass warms it; the second is timed).

Prints both times and kiln/baseline (target <= 0.1), and what part of kiln's
time is a new interpreter importing the libraries a build needs
(oslo.config, networkx, jinja2, the docker SDK): a fixed cost per run, so the
ratio falls as sets grow. Needs a Docker engine and /usr/bin/busybox.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from busybox import BASE, DOCKER, make_base  # benchmarks/busybox.py
from procenv import import_time, tool_env  # benchmarks/procenv.py

LIBRARIES = ["oslo_config.cfg", "networkx", "jinja2.sandbox", "docker"]


def make_set(root: Path, count: int) -> list[str]:
    names = [f"img-{i:02d}" for i in range(count)]
    for i, name in enumerate(names):
        directory = root / name
        directory.mkdir(parents=True)
        parent = '"' + BASE + '"' if i == 0 else f'image_ref("{names[(i - 1) // 3]}")'
        (directory / "Dockerfile.j2").write_text(
            f"FROM {{{{ {parent} }}}}\nCOPY data.txt /data/{name}.txt\n"
            f"RUN cat /data/{name}.txt > /{name}.out\n")
        (directory / "data.txt").write_text(f"{name}\n")
    # A run of its own: images left by an earlier run must not make the first build a no-op.
    (root / names[0] / "data.txt").write_text(f"{names[0]} {uuid.uuid4()}\n")
    return names


def kiln_build(root: Path, work: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "builder.cli.build", "--templates-dir", str(root),
                    "--namespace", "kiln-bench", "--work-dir", str(work), "--quiet"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   cwd=Path(__file__).resolve().parent.parent, env=env)
    return time.perf_counter() - start


def docker_builds(work: Path, names: list[str]) -> float:
    start = time.perf_counter()
    for name in names:
        subprocess.run([DOCKER, "build", "-q", "-t", f"kiln-bench-plain/{name}:latest",
                        str(work / name)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[32, 188])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = tool_env(tmp)
        make_base(tmp)
        try:
            for count in args.images:
                measure(tmp / f"set-{count}", count, env)
        finally:
            subprocess.run(f"{DOCKER} images --format '{{{{.Repository}}}}:{{{{.Tag}}}}' "
                           f"| grep '^kiln-bench' | xargs -r {DOCKER} rmi -f",
                           shell=True, check=False, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    return 0


def measure(root: Path, count: int, env: dict[str, str]) -> None:
    names = make_set(root / "set", count)
    work = root / "work"
    first = kiln_build(root / "set", work, env)
    noop = min(kiln_build(root / "set", work, env) for _ in range(3))
    docker_builds(work, names)          # warm the cache for plain builds
    warm = docker_builds(work, names)
    floor = min(import_time(sys.executable, LIBRARIES, env) for _ in range(3))
    print(f"{count} images: first kiln build {first:.2f} s; no-change kiln run "
          f"{noop:.2f} s; docker build per image, cache warm {warm:.2f} s; "
          f"ratio {noop / warm:.3f} (target <= 0.1)")
    print(f"  of kiln's {noop:.2f} s, {floor:.2f} s is starting Python and importing "
          f"{', '.join(LIBRARIES)} (ratio {floor / warm:.3f} on its own)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
