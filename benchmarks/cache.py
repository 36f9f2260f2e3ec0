"""The registry cache in a buildset (issue #15): job A builds a set and fills
``--cache-registry``; job B, on an emptied engine, gets the same set from it.

Prints job B's wall time against building the same set from scratch (an
emptied engine, no cache), and the registry requests kiln's cache client
made per image: per miss in job A (target: exactly 1), per cached image in
job B. Target: job B <= 0.25 x scratch for images that take >= 2 s each.

Needs the Docker daemon, /usr/bin/busybox and ``docker-registry`` on PATH.
``python benchmarks/cache.py [--images 20] [--seconds 2] [--shape tree|chain]``
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.busybox import DOCKER, make_base  # noqa: E402
from builder.build import cache as cache_module  # noqa: E402
from builder.cli.build import main as kiln_build  # noqa: E402

REGISTRY_CONFIG = """\
version: 0.1
log:
  level: warn
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


def start_registry(tmp: Path) -> tuple[subprocess.Popen, str]:
    host = f"127.0.0.1:{free_port()}"
    (tmp / "storage").mkdir()
    config = tmp / "registry.yml"
    config.write_text(REGISTRY_CONFIG.format(storage=tmp / "storage", host=host))
    process = subprocess.Popen([shutil.which("docker-registry") or "docker-registry", "serve",
                                str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    for _ in range(150):
        try:
            with urllib.request.urlopen(f"http://{host}/v2/", timeout=1):
                return process, host
        except OSError:
            time.sleep(0.1)
    process.terminate()
    raise SystemExit("docker-registry did not start")


def write_set(tmp: Path, images: int, seconds: float, shape: str = "tree") -> Path:
    """base plus ``images`` images; each RUN takes ``seconds``.

    ``tree``: children of base and grandchildren (three levels); ``chain``:
    each image built on the one before (the worst case for pulling cached
    images one parent after another).
    """
    templates = tmp / "templates"
    (templates / "base").mkdir(parents=True)
    (templates / "base" / "Dockerfile.j2").write_text(
        f"FROM {{{{ busybox }}}}\nRUN sleep {seconds} && echo base > /base.txt\n")
    for number in range(images):
        name = f"img{number:03d}"
        if shape == "chain":
            parent = f"img{number - 1:03d}" if number else "base"
        else:
            parent = "base" if number < images // 2 else f"img{number - images // 2:03d}"
        (templates / name).mkdir()
        (templates / name / "Dockerfile.j2").write_text(
            f'FROM {{{{ image_ref("{parent}") }}}}\n'
            f"RUN sleep {seconds} && echo {name} > /{name}.txt\n")
    return templates


def set_images(namespace: str) -> list[str]:
    """The ids of the engine's images with a reference in the set's namespace
    (a tag, or a digest reference a push to or pull from the cache leaves)."""
    listed = subprocess.run([DOCKER, "images", "--no-trunc", "--format",
                             "{{.Repository}} {{.ID}}"],
                            capture_output=True, text=True, check=True)
    return sorted({line.split()[1] for line in listed.stdout.splitlines()
                   if line.split()[0].split("/")[-2:-1] == [namespace]})


def remove_set(namespace: str) -> None:
    """Every image of the set, by id (all its references): a round removes the
    images without children (a parent with children is refused), so a chain
    takes as many rounds as it is long."""
    ids = set_images(namespace)
    while ids:
        subprocess.run([DOCKER, "rmi", "-f", *ids], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        ids, before = set_images(namespace), ids
        if ids == before:
            raise SystemExit(f"cannot remove the images of the set: {ids}")


def run(args: list) -> float:
    start = time.monotonic()
    code = kiln_build([str(a) for a in args])
    elapsed = time.monotonic() - start
    if code != 0:
        raise SystemExit(f"kiln-build failed ({code}): {args}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--shape", choices=["tree", "chain"], default="tree")
    options = parser.parse_args()
    caches: list = []
    original = cache_module.RegistryCache.__init__

    def recording(self, *a, **k):
        original(self, *a, **k)
        caches.append(self)

    cache_module.RegistryCache.__init__ = recording
    with tempfile.TemporaryDirectory(prefix="kiln-bench-cache-") as scratch:
        tmp = Path(scratch)
        base = make_base(tmp)
        templates = write_set(tmp, options.images, options.seconds, options.shape)
        namespace = f"kiln-bench-{uuid.uuid4().hex[:8]}"
        process, host = start_registry(tmp)
        common = ["--templates-dir", templates, "--namespace", namespace,
                  "--template-var", f"busybox={base}", "--work-dir", tmp / "work",
                  "--quiet", "--threads", "8"]
        cached = ["--cache-registry", host, "--cache-insecure"]
        count = options.images + 1
        try:
            scratch_time = run([*common])
            remove_set(namespace)
            job_a = run([*common, *cached])
            a_requests = caches[-1].requests_made
            remove_set(namespace)
            if left := set_images(namespace):
                raise SystemExit(f"the engine still holds images of the set: {left}")
            job_b = run([*common, *cached])
            b_requests = caches[-1].requests_made
        finally:
            remove_set(namespace)
            process.terminate()
            process.wait(timeout=10)
    print(f"{count} images ({options.shape}), each RUN {options.seconds:g} s, 8 threads")
    print(f"scratch build (emptied engine, no cache): {scratch_time:.1f} s")
    print(f"job A (builds, pushes to the cache):      {job_a:.1f} s "
          f"({job_a / scratch_time:.2f} x scratch); {a_requests / count:.2f} "
          f"requests per lookup miss")
    print(f"job B (emptied engine, all cached):       {job_b:.1f} s: "
          f"{job_b / scratch_time:.3f} x scratch (target <= 0.25); "
          f"{b_requests / count:.2f} requests per cached image")


if __name__ == "__main__":
    main()
