#!/usr/bin/env python3
"""A no-change `kiln-registry sync` of N images against `skopeo copy` of the same images.

Starts two Debian `docker-registry` instances on 127.0.0.1 (a "public" source
and a "local" destination), builds N small busybox-based images stamped with a
kiln.fingerprint label (default 50), publishes them to the source with
`kiln-registry sync --source engine`, then to the destination with
`kiln-registry sync --source <public>`. Then, in the same run, each timed from
process start to exit (median of --repeat runs):

- kiln, registry -> registry: a second sync (every image `unchanged`);
- kiln, engine -> registry: a second sync from the engine (every image `unchanged`);
- skopeo: `skopeo copy` of every image from the source to the destination,
  one after the other (the blobs are all there already), and 4 at a time.

Prints the times and kiln/skopeo ratios. Needs a Docker engine, docker-registry,
skopeo and /usr/bin/busybox.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from busybox import BASE, DOCKER, make_base  # benchmarks/busybox.py

SKOPEO = shutil.which("skopeo") or "skopeo"
REGISTRY = shutil.which("docker-registry") or "docker-registry"
NAMESPACE = "kiln-bench-sync"
TAG = "bench"
CONFIG = """\
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
http:
  addr: {host}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_registry(directory: Path) -> tuple[str, subprocess.Popen]:
    directory.mkdir()
    host = f"127.0.0.1:{free_port()}"
    config = directory / "config.yml"
    config.write_text(CONFIG.format(storage=directory / "storage", host=host))
    process = subprocess.Popen([REGISTRY, "serve", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{host}/v2/", timeout=1):
                return host, process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"docker-registry did not start on {host}")


def make_images(tmp: Path, count: int) -> list[str]:
    names = [f"img-{i:02d}" for i in range(count)]

    def build(name: str) -> None:
        context = tmp / "images" / name
        context.mkdir(parents=True)
        (context / "stamp").write_text(f"{name}\n")
        (context / "Dockerfile").write_text(f"FROM {BASE}\nCOPY stamp /stamp\n")
        subprocess.run([DOCKER, "build", "-q", "--label", f"kiln.fingerprint=sha256:{name}",
                        "-t", f"{NAMESPACE}/{name}:{TAG}", str(context)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(build, names))
    return names


def kiln_sync(source: str, destination: str, threads: int, expect: str) -> float:
    command = [sys.executable, "-m", "builder.cli.registry", "sync", "--namespace", NAMESPACE,
               "--tag", TAG, "--destination", destination, "--insecure",
               "--threads", str(threads)]
    if source != "engine":
        command += ["--source", source, "--source-insecure"]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0 or expect not in result.stdout:
        raise SystemExit(f"kiln-registry sync failed or did something else:\n"
                         f"{result.stdout}\n{result.stderr}")
    return elapsed


def skopeo_copy(names: list[str], source: str, destination: str, parallel: int) -> float:
    def copy(name: str) -> None:
        subprocess.run([SKOPEO, "copy", "--quiet", "--src-tls-verify=false",
                        "--dest-tls-verify=false",
                        f"docker://{source}/{NAMESPACE}/{name}:{TAG}",
                        f"docker://{destination}/{NAMESPACE}/{name}:{TAG}"],
                       check=True, stdout=subprocess.DEVNULL)

    start = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(copy, names))
    return time.perf_counter() - start


def median(function, repeat: int) -> float:
    return statistics.median(function() for _ in range(repeat))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4, help="kiln-registry --threads")
    args = parser.parse_args()
    processes = []
    names: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        try:
            public, process = start_registry(tmp / "public")
            processes.append(process)
            local, process = start_registry(tmp / "local")
            processes.append(process)
            make_base(tmp)
            names = make_images(tmp, args.images)
            n = len(names)
            first_push = kiln_sync("engine", public, args.threads, f"{n} pushed")
            first_copy = kiln_sync(public, local, args.threads, f"{n} pushed")
            unchanged = f"0 pushed, {n} unchanged, 0 failed"
            kiln_registry = median(lambda: kiln_sync(public, local, args.threads, unchanged),
                                   args.repeat)
            kiln_engine = median(lambda: kiln_sync("engine", public, args.threads, unchanged),
                                 args.repeat)
            skopeo_serial = median(lambda: skopeo_copy(names, public, local, 1), args.repeat)
            skopeo_parallel = median(lambda: skopeo_copy(names, public, local, 4),
                                     args.repeat)
        finally:
            for process in processes:
                process.terminate()
                process.wait()
            if names:
                subprocess.run([DOCKER, "rmi", "-f", *(f"{NAMESPACE}/{name}:{TAG}"
                                                        for name in names)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"{n} images, kiln --threads {args.threads}, median of {args.repeat} runs")
    print(f"first sync engine -> registry (pushes):     {first_push:7.2f} s")
    print(f"first sync registry -> registry (copies):   {first_copy:7.2f} s")
    print(f"no-change sync registry -> registry (kiln): {kiln_registry:7.2f} s")
    print(f"no-change sync engine -> registry (kiln):   {kiln_engine:7.2f} s")
    print(f"skopeo copy, one at a time:                 {skopeo_serial:7.2f} s")
    print(f"skopeo copy, 4 at a time:                   {skopeo_parallel:7.2f} s")
    print(f"ratio kiln registry->registry / skopeo serial:   {kiln_registry / skopeo_serial:.3f}")
    print(f"ratio kiln registry->registry / skopeo 4-way:    "
          f"{kiln_registry / skopeo_parallel:.3f}")
    print(f"ratio kiln engine->registry / skopeo serial:     {kiln_engine / skopeo_serial:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
