"""--executor dask over two engines (issue #16): one worker against two.

A wide tree of sleep-bound images (base, then ``--images`` children in two
levels, each ``RUN sleep 3``) is built twice in the same run, each time as a
new set (own namespace, so neither the cache nor the layer cache helps):
once by one Dask worker on the host's Docker daemon, once by that worker and
a second on a Docker daemon started here; ``--builds`` concurrent builds per
worker. The cache registry (a ``docker-registry`` on 127.0.0.1) is the
hand-off.

Prints the speedup of two workers over one (target >= 1.6), the hand-off
cost per image (pushing it to the cache plus pulling its parents, measured
on the workers), and the scheduling overhead per image: the client's time
submitting tasks and handling their events (target < 5 ms), apart from
fetching each task's result (with its log) from its worker, shown beside it.

Needs root, dockerd, the Docker daemon, /usr/bin/busybox, ``docker-registry``
and kiln[distributed]. ``python benchmarks/distributed.py [--images 24]``
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

# This file's folder first on sys.path would make it the `distributed` package.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from benchmarks.busybox import DOCKER, make_base  # noqa: E402
from benchmarks.cache import start_registry  # noqa: E402
from builder.build import distributed  # noqa: E402
from builder.cli.build import main as kiln_build  # noqa: E402
from tests.integration.dask_cluster import DaskCluster, SecondDocker  # noqa: E402


def write_set(root: Path, images: int, seconds: float, mark: str) -> tuple[Path, dict]:
    """base, ``images // 3`` children of it, the rest grandchildren; name -> parent."""
    templates = root / "templates"
    parents = {"base": None}
    first = max(1, images // 3)
    for number in range(images):
        parents[f"img{number:03d}"] = ("base" if number < first
                                       else f"img{number % first:03d}")
    for name, parent in parents.items():
        (templates / name).mkdir(parents=True)
        source = f'{{{{ image_ref("{parent}") }}}}' if parent else "{{ busybox }}"
        (templates / name / "Dockerfile.j2").write_text(
            f"FROM {source}\nRUN sleep {seconds:g} && echo {name} {mark} > /{name}.txt\n")
    return templates, parents


def remove_namespace(namespace: str) -> None:
    """The set's images on the host daemon, also those known by digest only."""
    for _ in range(10):
        listed = subprocess.run(
            [DOCKER, "images", "--no-trunc", "--format", "{{.ID}}",
             "--filter", f"reference={namespace}/*", "--filter", f"reference=*/{namespace}/*"],
            capture_output=True, text=True).stdout.split()
        if not listed:
            return
        subprocess.run([DOCKER, "rmi", "-f", *set(listed)], capture_output=True)


def build(cluster: DaskCluster, registry: str, base: str, tmp: Path, images: int,
          seconds: float, label: str):
    """One set built on the cluster: (seconds, the DaskScheduler, name -> parent)."""
    namespace = f"kiln-bench-{uuid.uuid4().hex[:8]}"
    root = tmp / label
    templates, parents = write_set(root, images, seconds, namespace)
    ran: list = []
    original = distributed.DaskScheduler.run

    def recording(self):
        ran.append(self)
        return original(self)

    distributed.DaskScheduler.run = recording
    try:
        start = time.monotonic()
        code = kiln_build([str(a) for a in (
            "--templates-dir", templates, "--namespace", namespace,
            "--template-var", f"busybox={base}", "--work-dir", root / "work", "--quiet",
            "--network-mode", "host", "--executor", "dask",
            "--dask-scheduler", cluster.address,
            "--cache-registry", registry, "--cache-insecure")])
        elapsed = time.monotonic() - start
    finally:
        distributed.DaskScheduler.run = original
        remove_namespace(namespace)
    if code != 0:
        raise SystemExit(f"kiln-build failed ({code}) on {label}; logs in {root}")
    return elapsed, ran[0], parents


def report(label: str, elapsed: float, scheduler, parents: dict) -> None:
    results = scheduler.results
    count = len(results)
    workers = sorted({r.worker for r in results.values()})
    per_worker = ", ".join(f"{w}: {sum(r.worker == w for r in results.values())}"
                           for w in workers)
    print(f"{label}: {elapsed:.1f} s for {count} images ({per_worker})")
    print(f"  hand-off per image (cache push + parent pulls): "
          f"{statistics.mean(r.hand_off for r in results.values()):.2f} s mean, "
          f"{max(r.hand_off for r in results.values()):.2f} s max")
    scheduling = scheduler.client_seconds - scheduler.fetch_seconds
    print(f"  scheduling overhead per image (client: submitting, bookkeeping, logs): "
          f"{scheduling / count * 1000:.2f} ms (target < 5 ms)")
    print(f"  fetching a task's result (its log, from the worker): "
          f"{scheduler.fetch_seconds / count * 1000:.2f} ms per image")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--builds", type=int, default=2, help="kiln-build per worker")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kiln-bench-dask-") as scratch:
        tmp = Path(scratch)
        base = make_base(tmp)
        registry, host = start_registry(tmp)
        second = SecondDocker.start(images=(base,))
        (tmp / "dask").mkdir()
        cluster = DaskCluster(tmp / "dask").start()
        try:
            cluster.add_worker("w1", builds=options.builds)
            one = build(cluster, host, base, tmp, options.images, options.seconds, "one")
            cluster.add_worker("w2", docker_host=second.host, builds=options.builds)
            two = build(cluster, host, base, tmp, options.images, options.seconds, "two")
        finally:
            cluster.stop()
            second.stop()
            registry.terminate()
            registry.wait(timeout=10)
    print(f"{options.images + 1} images, each RUN sleep {options.seconds:g}, "
          f"{options.builds} builds per worker")
    report("one worker (host daemon)", *one)
    report("two workers (two daemons)", *two)
    print(f"speedup: {one[0] / two[0]:.2f} x (target >= 1.6)")


if __name__ == "__main__":
    main()
