"""Listing outputs that need no container engine."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from builder.errors import KilnError
from builder.graph.dag import dependencies, to_dot
from builder.plan import Plan

# extensions rendered with Graphviz's ``dot -T<format>``; any other name
# (``.dot``, ``.gv``, none) gets the DOT text itself
DOT_FORMATS = {f".{name}": name for name in (
    "svg", "png", "pdf", "jpg", "jpeg", "gif", "bmp", "tif", "tiff", "webp",
    "ps", "eps", "svgz")}


def list_images(plan: Plan, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(list(plan.order), indent=2)
    return "\n".join(plan.order)


def list_dependencies(plan: Plan) -> str:
    return json.dumps(dependencies(plan.graph, plan.selection.selected),
                      indent=2, sort_keys=True)


def save_dependency(plan: Plan, path: Path) -> None:
    dot = to_dot(plan.graph, plan.selection.selected)
    output_format = DOT_FORMATS.get(path.suffix.lower())
    if output_format is None:
        _write(path, dot.encode())
        return
    executable = shutil.which("dot")
    if executable is None:
        raise KilnError(f"--save-dependency {path}: rendering {output_format} "
                        f"needs Graphviz's 'dot', which is not on PATH; install "
                        f"graphviz or save as .dot")
    result = subprocess.run([executable, f"-T{output_format}"], input=dot.encode(),
                            capture_output=True, check=False)
    if result.returncode != 0:
        raise KilnError(f"--save-dependency {path}: dot failed: "
                        f"{result.stderr.decode(errors='replace').strip()}")
    _write(path, result.stdout)


def _write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise KilnError(f"--save-dependency {path}: {exc.strerror}") from exc
