"""Progress output: plain timestamped lines, and the live view's content."""

from __future__ import annotations

import io
import re

from rich.console import Console

from builder.build.scheduler import Status
from builder.output.progress import LiveProgress, PlainProgress, make_progress


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


def test_plain_lines_after_an_interrupt():
    stream = io.StringIO()
    with PlainProgress(stream) as progress:
        progress.event("base", Status.BUILDING, "")
        progress.event("slow", Status.BUILDING, "")
        progress.event("base", Status.BUILT, "")
        progress.event("slow", Status.CANCELLED, "interrupted while building")
        for name in ("a", "b", "c"):
            progress.event(name, Status.CANCELLED, "not started: interrupted")
    lines = [line.split(" ", 1)[1] for line in stream.getvalue().splitlines()]
    assert lines == ["base: building", "slow: building", "base: built",
                     "slow: cancelled (interrupted while building)",
                     "interrupted: 3 image(s) not started"]
    quiet = io.StringIO()
    with PlainProgress(quiet, quiet=True) as progress:
        progress.event("slow", Status.BUILDING, "")
        progress.event("slow", Status.CANCELLED, "interrupted while building")
        progress.event("a", Status.CANCELLED, "not started: interrupted")
    assert quiet.getvalue() == ""  # the summary lists them


def test_live_view_after_an_interrupt():
    console = Console(file=io.StringIO(), width=100, force_terminal=False)
    progress = LiveProgress(["base", "slow", "child"], console=console)
    progress.event("base", Status.BUILDING, "")
    progress.event("base", Status.BUILT, "")
    progress.event("slow", Status.BUILDING, "")
    progress.event("slow", Status.CANCELLED, "interrupted while building")
    progress.event("child", Status.CANCELLED, "not started: interrupted")
    console.print(progress._render())
    shown = console.file.getvalue()
    assert "slow: cancelled (interrupted while building)" in shown
    assert "child: cancelled" not in shown
    assert "1 done, 0 failed, 0 running, 0 queued, 2 cancelled, of 3" in shown
