"""Shared helpers: run kiln-build and kiln-registry in-process, build template trees on disk."""

from __future__ import annotations

import io
import socket
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from builder.cli.build import main as build_main
from builder.cli.registry import main as registry_main

FIXTURES = Path(__file__).parent / "fixtures"
FAMILY = FIXTURES / "family"
DOWNSTREAM = FIXTURES / "downstream"
OVERRIDES = FIXTURES / "overrides"
# The marker of each test directory (pyproject.toml describes them).
MARKERS = {"unit": "unit", "integration": "integration", "faults": "integration",
           "functional": "integration", "e2e": "e2e", "kolla": "kolla"}


def pytest_collection_modifyitems(items):
    root = Path(__file__).parent
    for item in items:
        try:
            directory = Path(item.fspath).relative_to(root).parts[0]
        except ValueError:
            continue
        marker = MARKERS.get(directory)
        if marker is not None:
            item.add_marker(marker)


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def kiln(capsys):
    """Run kiln-build's main() with arguments; returns exit code and output."""

    def run(*args) -> Result:
        code = build_main([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def kiln_registry(capsys, monkeypatch):
    """``kiln_registry(*args, stdin=None)`` -> Result(code, out, err)."""

    def run(*args, stdin: str | None = None) -> Result:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin or ""))
        code = registry_main([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (just now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def error_line(result: Result) -> str:
    """The one ``: error: `` line of a failed run's stderr (and no traceback)."""
    lines = [line for line in result.err.splitlines() if ": error: " in line]
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    return lines[0]


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for relpath, text in files.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


@pytest.fixture
def tree(tmp_path):
    """tree({"img/Dockerfile.j2": "..."}, name="set") -> a directory with those files."""
    counter = iter(range(1000))

    def make(files: dict[str, str], name: str | None = None) -> Path:
        return write_tree(tmp_path / (name or f"tree{next(counter)}"), files)

    return make
