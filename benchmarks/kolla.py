#!/usr/bin/env python3
"""Render speed of kiln against kolla-build 23.0.0 on Kolla's own template tree.

Uses the throwaway kolla venv of the tests (made from PyPI if missing, see
tests/kolla/kolla_env.py) and, in the same run, interleaved, takes the best of
``--repeat`` times of:

- end to end, each tool's command line with ``--template-only`` into a new
  work dir (interpreter start, imports, options, rendering, writing):
  ``kolla-build`` and ``kiln-build --template-api kolla``, kiln once with an
  empty compiled-template cache (a first run) and once with it warm;
- rendering alone, in-process: kolla-build's ``create_dockerfiles()`` (run
  inside the kolla venv), and kiln's ``make_plan()`` (template set, render
  of every image, image graph), cache cold and warm.

Prints seconds and each kolla-build/kiln ratio. Target: >= 40.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from procenv import import_time, tool_env  # noqa: E402  (benchmarks/procenv.py)

from builder.cli import options  # noqa: E402
from builder.plan import make_plan  # noqa: E402
from tests.kolla.kolla_env import (  # noqa: E402
    KollaUnavailable,
    dockerfiles,
    install_kolla,
    kolla_tag,
)

# What `kiln-build --template-only` cannot start without (the project's chosen
# libraries for options, the image graph and templates).
LIBRARIES = ["oslo_config.cfg", "networkx", "jinja2.sandbox"]

# Run inside the kolla venv: time kolla-build's own rendering step.
KOLLA_RENDER = """
import json, sys, time
from oslo_config import cfg
from kolla.common import config as common_config
from kolla.image.kolla_worker import KollaWorker
conf = cfg.ConfigOpts()
common_config.parse(conf, sys.argv[1:], prog="kolla-build")
worker = KollaWorker(conf)
worker.setup_working_dir()
worker.find_dockerfiles()
start = time.perf_counter()
worker.create_dockerfiles()
print(json.dumps({"seconds": time.perf_counter() - start,
                  "images": len(worker.docker_build_paths)}))
"""


class Bench:
    def __init__(self, base: str, tmp: Path):
        self.install = install_kolla(log=lambda m: print(m, file=sys.stderr))
        self.base = base
        self.tmp = tmp
        self.config = tmp / "empty.conf"
        self.config.write_text("")
        self.warm_cache = tmp / "warm-cache"
        self.runs = 0
        self.env = tool_env(tmp)  # both interpreters keep compiled modules

    def fresh(self, name: str) -> Path:
        self.runs += 1
        return self.tmp / f"{name}-{self.runs}"

    def kiln_args(self, cache: Path | str) -> list[str]:
        return ["--config-file", str(self.config), "--template-api", "kolla",
                "--templates-dir", str(self.install.docker_dir), "--base", self.base,
                "--namespace", "kolla", "--tag", kolla_tag(self.base),
                "--template-cache-dir", str(cache)]

    # end to end -------------------------------------------------------------------
    def kolla_cli(self) -> tuple[float, Path]:
        work = self.fresh("kolla")
        return _timed([str(self.install.kolla_build), "--config-file", str(self.config),
                       "--template-only", "--base", self.base, "--work-dir", str(work)],
                      self.env), work

    def kiln_cli(self, cache: Path) -> tuple[float, Path]:
        work = self.fresh("kiln")
        return _timed([sys.executable, "-m", "builder.cli.build", *self.kiln_args(cache),
                       "--template-only", "--work-dir", str(work)], self.env), work

    # rendering alone ----------------------------------------------------------------
    def kolla_render(self) -> float:
        work = self.fresh("kolla-render")
        result = subprocess.run(
            [str(self.install.venv / "bin" / "python"), "-c", KOLLA_RENDER,
             "--config-file", str(self.config), "--template-only", "--base", self.base,
             "--work-dir", str(work)],
            capture_output=True, text=True, check=True, env=self.env)
        return json.loads(result.stdout.strip().splitlines()[-1])["seconds"]

    def kiln_render(self, cache: Path) -> float:
        start = time.perf_counter()
        settings = options.load(self.kiln_args(cache))
        plan = make_plan(settings)
        seconds = time.perf_counter() - start
        assert len(plan.rendered) > 150
        return seconds


def _timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT, env=env)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="debian", choices=["debian", "ubuntu", "rocky"])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kiln-bench-kolla-") as tmp:
        try:
            bench = Bench(args.base, Path(tmp))
        except KollaUnavailable as exc:
            print(f"cannot benchmark: {exc}", file=sys.stderr)
            return 1
        # warm the cache once, and check the outputs are the same
        _, kiln_work = bench.kiln_cli(bench.warm_cache)
        _, kolla_work = bench.kolla_cli()
        kiln_files, kolla_files = dockerfiles(kiln_work), dockerfiles(kolla_work)
        # (kiln renders Kolla's unbuildable images too, unless its pipeline drops them)
        if any(kiln_files.get(name) != text for name, text in kolla_files.items()):
            print("kiln's and kolla-build's Dockerfiles differ", file=sys.stderr)
            return 1
        times: dict[str, list[float]] = {}
        for _ in range(args.repeat):
            for name, measure in (
                    ("kolla-build", lambda: bench.kolla_cli()[0]),
                    ("kiln-build, cache cold", lambda: bench.kiln_cli(bench.fresh("cache"))[0]),
                    ("kiln-build, cache warm", lambda: bench.kiln_cli(bench.warm_cache)[0]),
                    ("kolla render", bench.kolla_render),
                    ("kiln render, cache cold", lambda: bench.kiln_render(bench.fresh("cache"))),
                    ("kiln render, cache warm", lambda: bench.kiln_render(bench.warm_cache)),
                    ("libraries", lambda: import_time(sys.executable, LIBRARIES, bench.env))):
                times.setdefault(name, []).append(measure())
        best = {name: min(values) for name, values in times.items()}
        print(f"Kolla tree of kolla 23.0.0, --base {args.base}: kolla-build "
              f"{len(kolla_files)} images, kiln {len(kiln_files)}, identical Dockerfiles; "
              f"best of {args.repeat}, {os.cpu_count()} CPUs")
        print(f"end to end, --template-only: kolla-build {best['kolla-build']:6.2f} s")
        for state in ("cold", "warm"):
            seconds = best[f"kiln-build, cache {state}"]
            print(f"  kiln-build, template cache {state}: {seconds:6.3f} s  "
                  f"ratio {best['kolla-build'] / seconds:6.1f}x")
        print(f"  (of which starting Python and importing the libraries kiln-build needs "
              f"here, {', '.join(LIBRARIES)}: {best['libraries']:.3f} s; no kiln-build "
              f"can beat {best['kolla-build'] / best['libraries']:.1f}x)")
        print(f"rendering alone: kolla-build create_dockerfiles() {best['kolla render']:6.2f} s")
        for state in ("cold", "warm"):
            seconds = best[f"kiln render, cache {state}"]
            print(f"  kiln make_plan(), template cache {state}: {seconds:6.3f} s  "
                  f"ratio {best['kolla render'] / seconds:6.1f}x "
                  f"({seconds / len(kiln_files) * 1e3:.2f} ms/image)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
