#!/usr/bin/env python3
"""`kiln-registry find` over a registry of N kiln-stamped images (issue #17)
against pulling and scanning them with `docker pull` + `dpkg-query`.

Starts Debian's `docker-registry` on 127.0.0.1 (with its access log, which
gives the requests per image as the server saw them) and fills it with N
images (default 200), each `<ns>/imgNNN` tagged `T-1` and `T`: the layers of
the local `debian:bookworm-slim` (pushed once by the engine, then mounted into
every repository), and a config of its own whose labels are what kiln-build
stamps: `kiln.fingerprint`, `kiln.packages.scan` and a `kiln.packages` of a
Kolla service image's size (the base's real dpkg list, 300 more deb
packages and 250 Python distributions: ~20 KB). Every other image has an older libssl3, so the query
`libssl3<3.0.15-1~deb12u1` must list exactly N/2 images (checked).

Timed, each from process start to exit:

- kiln: `kiln-registry find 'libssl3<3.0.15-1~deb12u1' --registry ... --threads 8`;
- baseline: for a sample of --sample images (default 10), one after another,
  `docker pull`, `docker run --rm IMAGE dpkg-query -W` and `docker rmi`,
  scaled to N. The layers are in the engine already (the base holds them),
  so each pull fetches a manifest and a config only: a lower bound of the
  real baseline, where every image's layers are downloaded.

Target: kiln / baseline < 0.05, one manifest and one config request per image.
Needs the Docker daemon, docker-registry and debian:bookworm-slim (.ci/bootstrap-base).
``python benchmarks/find.py [--images 200] [--sample 10]``
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.busybox import DOCKER  # noqa: E402
from benchmarks.cache import free_port  # noqa: E402
from builder.build.labels import FINGERPRINT, PACKAGES, PACKAGES_SCAN, SCANNED  # noqa: E402

BASE = "debian:bookworm-slim"
TAG = "bench"
QUERY = "libssl3<3.0.15-1~deb12u1"
FIXED, VULNERABLE = "3.0.15-1~deb12u1", "3.0.11-1~deb12u2"
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
REGISTRY_CONFIG = """\
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {storage}
http:
  addr: {host}
"""
ACCESS = re.compile(r'"(GET|HEAD|POST|PUT|PATCH) (/v2/\S*) HTTP')


def start_registry(tmp: Path) -> tuple[subprocess.Popen, str, Path]:
    host = f"127.0.0.1:{free_port()}"
    (tmp / "storage").mkdir()
    config = tmp / "registry.yml"
    config.write_text(REGISTRY_CONFIG.format(storage=tmp / "storage", host=host))
    log = tmp / "registry.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([shutil.which("docker-registry") or "docker-registry",
                                    "serve", str(config)], stdout=out, stderr=out)
    for _ in range(150):
        try:
            requests.get(f"http://{host}/v2/", timeout=1)
            return process, host, log
        except requests.RequestException:
            time.sleep(0.1)
    process.terminate()
    raise SystemExit("docker-registry did not start")


def base_packages() -> dict[str, dict[str, str]]:
    """The base's real dpkg list, 300 more deb packages and 250 Python distributions:
    about what a Kolla service image holds."""
    listed = subprocess.run([DOCKER, "run", "--rm", "--network", "none", BASE, "dpkg-query",
                             "-W", "-f=${Package} ${Version}\\n"], capture_output=True,
                            text=True, check=True).stdout
    deb = dict(line.split(" ", 1) for line in listed.splitlines() if line.strip())
    deb.update({f"libkolla-dep{n:03d}": f"{n % 9}.{n % 13}-{n % 4 + 1}+deb12u1"
                for n in range(300)})
    pypi = {f"openstack-lib-{n:03d}": f"{n % 30}.{n % 7}.{n % 11}" for n in range(250)}
    return {"deb": deb, "pypi": pypi}


def fill(host: str, namespace: str, images: int) -> None:
    """Push the base once with the engine; every image mounts its layers, has its own config."""
    source = f"{host}/{namespace}-src/base:src"
    subprocess.run([DOCKER, "tag", BASE, source], check=True)
    try:
        subprocess.run([DOCKER, "push", "-q", source], check=True, stdout=subprocess.DEVNULL)
    finally:
        subprocess.run([DOCKER, "rmi", source], stdout=subprocess.DEVNULL, check=False)
    url = f"http://{host}/v2"
    session = requests.Session()
    manifest = session.get(f"{url}/{namespace}-src/base/manifests/src",
                           headers={"Accept": MANIFEST_V2}).json()
    base_config = session.get(f"{url}/{namespace}-src/base/blobs/"
                              f"{manifest['config']['digest']}").json()
    packages = base_packages()

    def one(number: int) -> None:
        repository = f"{namespace}/img{number:03d}"
        own = {kind: dict(items) for kind, items in packages.items()}
        own["deb"]["libssl3"] = VULNERABLE if number % 2 else FIXED
        config = json.loads(json.dumps(base_config))
        config["config"]["Labels"] = {
            FINGERPRINT: "sha256:" + hashlib.sha256(f"{namespace}{number}".encode())
            .hexdigest(),
            PACKAGES: json.dumps(own, sort_keys=True, separators=(",", ":")),
            PACKAGES_SCAN: SCANNED}
        blob = json.dumps(config).encode()
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        start = session.post(f"{url}/{repository}/blobs/uploads/")
        start.raise_for_status()
        location = start.headers["Location"]
        joiner = "&" if "?" in location else "?"
        session.put(f"{location}{joiner}digest={digest}", data=blob,
                    headers={"Content-Type": "application/octet-stream"}).raise_for_status()
        for layer in manifest["layers"]:
            session.post(f"{url}/{repository}/blobs/uploads/",
                         params={"mount": layer["digest"], "from": f"{namespace}-src/base"}
                         ).raise_for_status()
        own_manifest = {**manifest, "config": {**manifest["config"], "digest": digest,
                                               "size": len(blob)}}
        body = json.dumps(own_manifest).encode()
        for tag in (f"{TAG}-1", TAG):
            session.put(f"{url}/{repository}/manifests/{tag}", data=body,
                        headers={"Content-Type": MANIFEST_V2}).raise_for_status()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(images)))
    session.close()


def registry_requests(log: Path, since: int, namespace: str) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for line in log.read_text(errors="replace").splitlines()[since:]:
        found = ACCESS.search(line)
        if not found:
            continue
        method, path = found.groups()
        if f"/v2/{namespace}/" not in path:
            counts[f"{method} {path.split('?')[0]}"] += 1
        elif "/manifests/" in path:
            counts[f"{method} manifest"] += 1
        elif "/blobs/" in path:
            counts[f"{method} blob (config)"] += 1
        elif "/tags/list" in path:
            counts[f"{method} tags/list"] += 1
        else:
            counts[f"{method} other"] += 1
    return counts


def kiln_find(host: str, namespace: str) -> tuple[float, dict]:
    command = [str(Path(sys.executable).with_name("kiln-registry")), "find", QUERY,
               "--registry", host, "--insecure", "--namespace", namespace, "--tag", TAG,
               "--threads", "8", "--format", "json"]
    start = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.monotonic() - start
    if result.returncode != 0:
        raise SystemExit(f"kiln-registry find failed ({result.returncode}): {result.stderr}")
    return elapsed, json.loads(result.stdout)


def baseline(host: str, namespace: str, sample: list[int]) -> float:
    """docker pull + dpkg-query in a container + rmi, one image after another."""
    start = time.monotonic()
    for number in sample:
        ref = f"{host}/{namespace}/img{number:03d}:{TAG}"
        subprocess.run([DOCKER, "pull", "-q", ref], check=True, stdout=subprocess.DEVNULL)
        listed = subprocess.run([DOCKER, "run", "--rm", "--network", "none", ref,
                                 "dpkg-query", "-W", "-f=${Package} ${Version}\\n"],
                                capture_output=True, text=True, check=True).stdout
        assert "libc6 " in listed
        subprocess.run([DOCKER, "rmi", ref], check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--sample", type=int, default=10,
                        help="images pulled and scanned for the baseline (scaled to --images)")
    options = parser.parse_args()
    namespace = f"kiln-bench-find-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="kiln-bench-find-") as scratch:
        process, host, log = start_registry(Path(scratch))
        try:
            started = time.monotonic()
            fill(host, namespace, options.images)
            filled = time.monotonic() - started
            since = len(log.read_text(errors="replace").splitlines())
            kiln_time, report = kiln_find(host, namespace)
            counts = registry_requests(log, since, namespace)
            warm_time, _ = kiln_find(host, namespace)
            step = max(1, options.images // options.sample)
            sample = list(range(0, options.images, step))[:options.sample]
            base_time = baseline(host, namespace, sample) * options.images / len(sample)
        finally:
            process.terminate()
            process.wait(timeout=10)
    matches = report["matches"]
    expected = options.images // 2
    print(f"{options.images} kiln-stamped images in a local docker-registry "
          f"(filled in {filled:.1f} s); query {QUERY!r}")
    print(f"matches: {len(matches)} (expected {expected}); checked {report['checked']}, "
          f"unknown {len(report['unknown'])}, errors {len(report['errors'])}")
    if len(matches) != expected or report["checked"] != options.images:
        raise SystemExit("find listed the wrong images")
    print("registry requests during the find:")
    for what, count in sorted(counts.items()):
        print(f"  {what}: {count} ({count / options.images:.2f} per image)")
    print(f"kiln-registry find: {kiln_time:.2f} s (again: {warm_time:.2f} s)")
    print(f"docker pull + dpkg-query: {base_time:.1f} s for {options.images} images "
          f"(measured on {len(sample)}, scaled)")
    print(f"ratio: {kiln_time / base_time:.4f} (target < 0.05)")


if __name__ == "__main__":
    main()
