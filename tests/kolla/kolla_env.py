"""A throwaway kolla install to compare kiln with: the venv, kolla-build runs, outputs.

Shared by the tests of ``tests/kolla`` and ``benchmarks/kolla.py``. The venv
is made once (``kolla==23.0.0`` and the ``docker`` library kolla-build
insists on, from PyPI) under ``$KILN_KOLLA_VENV``, else
``<kiln's cache>/test-kolla-venv-23.0.0``, and reused while it works.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import venv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from builder.settings import cache_home
from builder.templating.kolla.settings import BASE_IMAGES, OPENSTACK_RELEASE

KOLLA_VERSION = "23.0.0"
BASES = ("debian", "ubuntu", "rocky")
READY = ".kiln-ready"


class KollaUnavailable(Exception):
    """kolla could not be installed (no PyPI, no venv support, ...)."""


@dataclass(frozen=True)
class KollaInstall:
    venv: Path
    kolla_build: Path
    docker_dir: Path  # Kolla's template tree

    def command(self, *args: str) -> list[str]:
        return [str(self.kolla_build), *args]


def venv_dir() -> Path:
    configured = os.environ.get("KILN_KOLLA_VENV")
    return Path(configured) if configured else cache_home() / f"test-kolla-venv-{KOLLA_VERSION}"


def kolla_tag(base: str) -> str:
    """kolla-build's default --tag for a base."""
    return f"{OPENSTACK_RELEASE}-{base}-{BASE_IMAGES[base][1]}"


def install_kolla(target: Path | None = None, log=print) -> KollaInstall:
    """The kolla venv, made (once, under a lock) if it is not there yet."""
    target = target or venv_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        install = _existing(target)
        if install is not None:
            return install
        log(f"installing kolla=={KOLLA_VERSION} into {target} (from PyPI)")
        shutil.rmtree(target, ignore_errors=True)
        try:
            venv.create(target, with_pip=True, clear=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise KollaUnavailable(f"cannot create a venv at {target}: {exc}") from exc
        result = subprocess.run(
            [str(target / "bin" / "python"), "-m", "pip", "install", "--quiet",
             "--disable-pip-version-check", f"kolla=={KOLLA_VERSION}", "docker"],
            capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = "\n".join(result.stderr.strip().splitlines()[-15:])
            raise KollaUnavailable(f"pip could not install kolla=={KOLLA_VERSION}:\n{tail}")
        install = _probe(target)
        (target / READY).write_text(KOLLA_VERSION + "\n")
        return install


def _existing(target: Path) -> KollaInstall | None:
    marker = target / READY
    if not marker.is_file() or marker.read_text().strip() != KOLLA_VERSION:
        return None
    try:
        return _probe(target)
    except KollaUnavailable:
        return None


def _probe(target: Path) -> KollaInstall:
    result = subprocess.run(
        [str(target / "bin" / "python"), "-c",
         "import importlib.metadata as m, os, sys, kolla, docker\n"
         "print(m.version('kolla'))\n"
         "print(os.path.dirname(kolla.__file__))\n"
         "print(sys.prefix)"],
        capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise KollaUnavailable(f"the kolla venv {target} does not work: "
                               f"{result.stderr.strip()[-500:]}")
    version, package, prefix = result.stdout.split("\n")[:3]
    if version != KOLLA_VERSION:
        raise KollaUnavailable(f"{target} holds kolla {version}, not {KOLLA_VERSION}")
    for candidate in (Path(package) / "docker", Path(prefix) / "share" / "kolla" / "docker"):
        if (candidate / "base").is_dir():
            return KollaInstall(target, target / "bin" / "kolla-build", candidate)
    raise KollaUnavailable(f"kolla's docker/ tree was not found in {target}")


def start_kolla_build(install: KollaInstall, work_dir: Path, args: Sequence[str],
                      config_file: Path) -> subprocess.Popen:
    """kolla-build in the background: stdout to ``<work_dir>.out``, logs to ``.log``."""
    work_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{work_dir}.out", "wb") as out, open(f"{work_dir}.log", "wb") as log:
        return subprocess.Popen(
            install.command("--config-file", str(config_file), "--work-dir",
                            str(work_dir), *args),
            stdout=out, stderr=log, env=_kolla_environment())


def finish(process: subprocess.Popen, work_dir: Path) -> str:
    """Wait for a run; its standard output, or AssertionError with its last logs."""
    code = process.wait()
    if code != 0:
        log = Path(f"{work_dir}.log").read_text(errors="replace")
        tail = "\n".join(log.splitlines()[-20:])
        raise AssertionError(f"kolla-build failed ({code}):\n{tail}")
    return Path(f"{work_dir}.out").read_text(errors="replace")


def run_kolla_build(install: KollaInstall, work_dir: Path, args: Sequence[str],
                    config_file: Path) -> str:
    return finish(start_kolla_build(install, work_dir, args, config_file), work_dir)


def _kolla_environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # kolla's venv, not kiln's tree
    return env


def dockerfiles(work_dir: Path) -> dict[str, bytes]:
    """A work dir of kolla-build's (or of kiln-build's with the Kolla API, the
    same layout: ``docker/<group>/<image>/``): image name -> rendered Dockerfile."""
    return {path.parent.name: path.read_bytes()
            for path in (work_dir / "docker").rglob("Dockerfile")}


def kolla_parents(dockerfiles: Mapping[str, bytes], namespace: str, tag: str,
                  prefix: str = "") -> dict[str, str | None]:
    """Each image's parent as kolla-build finds it: the first FROM line's image."""
    by_ref = {f"{namespace}/{prefix}{name}:{tag}": name for name in dockerfiles}
    parents = {}
    for name, text in dockerfiles.items():
        ref = None
        for line in text.decode().split("\n"):
            if line[:4].upper() == "FROM":
                ref = line.split(" ")[1]
                break
        parents[name] = by_ref.get(ref)
    return parents


def parse_kolla_dependencies(output: str) -> dict[str, str | None]:
    """kolla-build --list-dependencies' nested JSON -> {image: parent}."""
    tree = json.loads(output[output.index("{"):output.rindex("}") + 1])
    parents: dict[str, str | None] = {}

    def walk(node: Mapping, parent: str | None) -> None:
        for name, children in node.items():
            parents[name] = parent
            for child in children:
                if isinstance(child, str):
                    parents[child] = name
                else:
                    walk(child, name)

    walk(tree, None)
    return parents


if __name__ == "__main__":  # python -m tests.kolla.kolla_env: make the venv now
    try:
        print(install_kolla().docker_dir)
    except KollaUnavailable as exc:
        sys.exit(str(exc))
