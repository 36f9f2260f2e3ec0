"""The environment benchmarked commands run in."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path


def tool_env(tmp: Path) -> dict[str, str]:
    """This process's environment, but interpreters keep compiled modules.

    An installed tool has its modules compiled once; a shell that sets
    PYTHONDONTWRITEBYTECODE would otherwise make every timed run compile them
    again. They go to a private place under ``tmp``.
    """
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
    env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    return env


def import_time(python: str, modules: list[str], env: dict[str, str]) -> float:
    """Seconds for a new interpreter to start and import ``modules``."""
    start = time.perf_counter()
    subprocess.run([python, "-c", "import " + ", ".join(modules)], check=True, env=env)
    return time.perf_counter() - start
