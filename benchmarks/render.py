#!/usr/bin/env python3
"""Render speed of kiln against a new-Jinja-environment-per-image baseline.

Generates synthetic template sets (200 and 2000 images, shared macros, named
blocks, customizable lists, one override file) and times, in the same run:

- baseline: what Kolla does, a new sandboxed Jinja environment (and so a new
  parse and compile of every template) for each image;
- kiln: its Renderer (one environment for the run), from loading the layered
  template set to every rendered Dockerfile in memory; once with no compiled
  template cache (a first run) and once with it warm (every later run).

Prints seconds, the baseline/kiln speed-up, and how kiln's time grows from 200
to 2000 images (10.0 is linear). Target: speed-up >= 20, growth <= ~10.

The growth is why ``Renderer.render_all`` turns the cyclic garbage collector
off while it renders: rendering makes many objects and no reference cycles
worth collecting mid-way (an image's own templates are released once it is
rendered), and the collector's passes over a growing heap would make large
sets slower than linear. Nothing references the Renderer (``image_ref`` is not
a bound method), so a dropped Renderer is freed at once and its environment's
cycles are collected while still young.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jinja2
from jinja2.sandbox import SandboxedEnvironment

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from builder.naming import ImageNaming  # noqa: E402
from builder.settings import TemplateSettings  # noqa: E402
from builder.templating.api import customizable  # noqa: E402
from builder.templating.layers import load_template_set  # noqa: E402
from builder.templating.render import Renderer  # noqa: E402

MACROS = """\
{% macro install(packages) %}
{% if packages %}
RUN apt-get update && apt-get install -y {{ packages | join(' ') }} && rm -rf /var/lib/apt/lists/*
{% endif %}
{% endmacro %}
{% macro pip(packages) %}
{% if packages %}
RUN pip install --no-cache-dir {{ packages | join(' ') }}
{% endif %}
{% endmacro %}
{% macro user(name, uid) %}
RUN groupadd -g {{ uid }} {{ name }} && useradd -u {{ uid }} -g {{ uid }} {{ name }}
{% endmacro %}
"""

IMAGE = """\
{% import "macros.j2" as macros %}
FROM {{ parent }}
LABEL maintainer="kiln" name="{{ image_name }}"
{% block NAME_header %}{% endblock %}
{% set NAME_packages = ["pkg-a-I", "pkg-b-I", "pkg-c-I", "curl", "git"] %}
{% block NAME_packages %}
{{ macros.install(NAME_packages | customizable("packages")) }}
{% endblock %}
{% set NAME_pip_packages = ["lib-I", "client-I"] %}
{% block NAME_pip %}
{{ macros.pip(NAME_pip_packages | customizable("pip_packages")) }}
{% endblock %}
{{ macros.user("svc-I", 1000 + I) }}
{% for port in range(3) %}
EXPOSE {{ 8000 + port }}
{% endfor %}
{% block NAME_footer %}{% endblock %}
USER svc-I
"""

OVERRIDE = """\
{% extends parent_template %}
{% set image_1_packages_append = ["vim"] %}
{% set image_2_packages_remove = ["git"] %}
{% block image_3_footer %}
RUN echo overridden
{% endblock %}
{% block image_0_header %}
RUN echo header
{% endblock %}
"""


def generate(root: Path, count: int) -> Path:
    (root / "macros.j2").write_text(MACROS)
    for i in range(count):
        name = f"image-{i}"
        parent = "debian:bookworm" if i == 0 else f"kiln/image-{(i - 1) // 4}:latest"
        text = (IMAGE.replace("NAME", name.replace("-", "_"))
                .replace("-I", f"-{i}").replace("+ I", f"+ {i}")
                .replace("{{ parent }}", parent))
        directory = root / f"group-{i % 10}" / name
        directory.mkdir(parents=True)
        (directory / "Dockerfile.j2").write_text(text)
        (directory / "start.sh").write_text("#!/bin/sh\nexec true\n")
    override = root.parent / f"override-{count}.j2"
    override.write_text(OVERRIDE)
    return override


def baseline(root: Path, override: Path) -> int:
    """Kolla's approach: one new environment per image."""
    rendered = 0
    for dockerfile in sorted(root.glob("*/*/Dockerfile.j2")):
        env = SandboxedEnvironment(loader=jinja2.FileSystemLoader(
            [str(dockerfile.parent), str(root), str(override.parent)]))
        env.filters["customizable"] = jinja2.pass_context(customizable)
        template = env.get_template(override.name)
        text = template.render(image_name=dockerfile.parent.name,
                               parent_template="Dockerfile.j2")
        rendered += bool(text)
    return rendered


def kiln(root: Path, override: Path, cache: Path | None = None) -> int:
    templates = load_template_set(root)
    renderer = Renderer(templates, ImageNaming(),
                        TemplateSettings(overrides=(override,), cache_dir=cache))
    return len(renderer.render_all())


def kiln_cold(root: Path, override: Path) -> int:
    return kiln(root, override, None)


def kiln_warm(root: Path, override: Path, cache: Path) -> int:
    return kiln(root, override, cache)


def best_of(repeat: int, function, *args) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function(*args)
        times.append(time.perf_counter() - start)
    return min(times) if repeat > 1 else statistics.fmean(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for size in args.sizes:
            root = Path(tmp) / f"set-{size}"
            root.mkdir()
            override = generate(root, size)
            cache = Path(tmp) / f"cache-{size}"
            assert baseline(root, override) == kiln(root, override, cache) == size
            base_s = best_of(args.repeat, baseline, root, override)
            cold_s = best_of(args.repeat, kiln_cold, root, override)
            warm_s = best_of(args.repeat, kiln_warm, root, override, cache)
            results[size] = warm_s
            print(f"{size:5d} images: baseline {base_s:7.3f} s | "
                  f"kiln first run {cold_s:7.3f} s, speed-up {base_s / cold_s:5.1f}x | "
                  f"kiln cache warm {warm_s:7.3f} s, speed-up {base_s / warm_s:5.1f}x "
                  f"({warm_s / size * 1e3:.3f} ms/image)")
        if len(args.sizes) >= 2:
            small, large = args.sizes[0], args.sizes[-1]
            print(f"growth {large}/{small} (cache warm): kiln time "
                  f"x{results[large] / results[small]:.2f} for x{large / small:.0f} "
                  f"images (linear = {large / small:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
