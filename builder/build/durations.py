"""Build durations remembered between runs, for the scheduler's priorities.

With them the scheduler puts the longest remaining chain first by time rather
than by image count.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path


def load_durations(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: float(v) for k, v in data.items()
            if isinstance(v, int | float) and v > 0} if isinstance(data, dict) else {}


def save_durations(path: Path, durations: Mapping[str, float]) -> None:
    """Merge new durations in (atomically; a failure to write only costs speed)."""
    if not durations:
        return
    merged = {**load_durations(path), **{k: round(v, 3) for k, v in durations.items()}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".durations-")
        with os.fdopen(fd, "w") as handle:
            json.dump(merged, handle, sort_keys=True)
        os.replace(temp, path)
    except OSError:
        pass
