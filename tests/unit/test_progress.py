"""Progress output: plain timestamped lines, and the live view's content."""

from __future__ import annotations

import io
import re

from rich.console import Console

from builder.progress import LiveProgress, PlainProgress, make_progress
from builder.scheduler import Status


def test_plain_lines_are_timestamped_and_quiet_keeps_failures():
    stream = io.StringIO()
    progress = PlainProgress(stream)
    progress.event("base", Status.BUILDING, "")
    progress.event("app", Status.FAILED, "RUN exited 3")
    lines = stream.getvalue().splitlines()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d base: building", lines[0])
    assert lines[1].endswith("app: failed (RUN exited 3)")
    quiet = io.StringIO()
    progress = PlainProgress(quiet, quiet=True)
    progress.event("base", Status.BUILT, "")
    progress.event("app", Status.PARENT_FAILED, "parent 'base' failed")
    assert quiet.getvalue().splitlines() == [quiet.getvalue().splitlines()[0]]
    assert "app: parent_failed" in quiet.getvalue()


def test_no_terminal_means_plain_lines():
    assert isinstance(make_progress(["a"], quiet=False, stream=io.StringIO()), PlainProgress)


def test_live_view_shows_counts_and_running_images():
    console = Console(file=io.StringIO(), width=100, force_terminal=False)
    progress = LiveProgress(["base", "app", "other"], console=console)
    progress.event("base", Status.BUILDING, "")
    progress.event("base", Status.BUILT, "")
    progress.event("app", Status.BUILDING, "")
    console.print(progress._render())
    shown = console.file.getvalue()
    assert "1 done, 0 failed, 1 running, 1 queued, of 3" in shown
    assert "app" in shown and "building" in shown and "base" not in shown.split("\n", 1)[1]
