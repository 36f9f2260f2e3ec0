"""Showing a run as it goes: a live rich view on a terminal, plain
timestamped lines otherwise. Called from the scheduler's thread only."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, TextIO

from builder.build.scheduler import Status

if TYPE_CHECKING:  # rich is imported only for a live view (it takes a while to load)
    from rich.console import Console, Group

_FAILURES = (Status.FAILED, Status.PARENT_FAILED, Status.PUSH_FAILED)
_FINISHED = (Status.BUILT, Status.UNCHANGED, Status.CACHED, Status.PUSHED, Status.SKIPPED)


class PlainProgress:
    """One timestamped line per event; --quiet keeps only failures.

    After an interrupt, images stopped while running get a line each; those
    that never started are counted in one line at the end.
    """

    def __init__(self, stream: TextIO | None = None, quiet: bool = False):
        self._stream = stream or sys.stderr
        self._quiet = quiet
        self._started: set[str] = set()
        self._not_started = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._not_started and not self._quiet:
            self._print(f"interrupted: {self._not_started} image(s) not started")
        return False

    def event(self, name: str, status: Status, detail: str) -> None:
        if status in (Status.BUILDING, Status.PUSHING):
            self._started.add(name)
        if status is Status.CANCELLED and name not in self._started:
            self._not_started += 1
            return
        if self._quiet and status not in _FAILURES:
            return
        self._print(f"{name}: {status.value}" + (f" ({detail})" if detail else ""))

    def _print(self, text: str) -> None:
        stamp = datetime.now().astimezone().isoformat(timespec="seconds")
        print(f"{stamp} {text}", file=self._stream, flush=True)


class LiveProgress:
    """A rich table of what is building (with elapsed time), done, failed and queued."""

    def __init__(self, names: Iterable[str], console: Console | None = None):
        from rich.console import Console
        from rich.live import Live

        self._console = console or Console(stderr=True)
        self._status = {name: Status.QUEUED for name in names}
        self._started: dict[str, float] = {}
        self._durations: dict[str, float] = {}
        self._t0 = time.monotonic()
        self._lock = threading.Lock()
        self._live = Live(get_renderable=self._render, console=self._console,
                          refresh_per_second=4, transient=False)

    def __enter__(self):
        self._live.__enter__()
        return self

    def __exit__(self, *exc):
        return self._live.__exit__(*exc)

    def event(self, name: str, status: Status, detail: str) -> None:
        now = time.monotonic()
        with self._lock:
            if status in (Status.BUILDING, Status.PUSHING) and name not in self._started:
                self._started[name] = now
            if status.done and name in self._started:
                self._durations[name] = now - self._started.pop(name)
            self._status[name] = status
        if status in _FAILURES:
            self._live.console.print(f"[red]{name}: {status.value}[/red]"
                                     + (f" ({detail})" if detail else ""))
        elif status is Status.CANCELLED and name in self._durations:  # it was running
            self._live.console.print(f"[yellow]{name}: {status.value}[/yellow]"
                                     + (f" ({detail})" if detail else ""))

    def _render(self) -> Group:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        with self._lock:
            statuses = dict(self._status)
            started = dict(self._started)
        now = time.monotonic()
        counts = {
            "done": sum(s in _FINISHED for s in statuses.values()),
            "failed": sum(s in _FAILURES for s in statuses.values()),
            "queued": sum(s is Status.QUEUED for s in statuses.values()),
        }
        cancelled = sum(s is Status.CANCELLED for s in statuses.values())
        heading = Text(f"kiln-build {now - self._t0:.0f}s: {counts['done']} done, "
                       f"{counts['failed']} failed, {len(started)} running, "
                       f"{counts['queued']} queued, "
                       + (f"{cancelled} cancelled, " if cancelled else "")
                       + f"of {len(statuses)}", style="bold")
        table = Table(show_edge=False)
        table.add_column("image")
        table.add_column("status")
        table.add_column("elapsed", justify="right")
        for name, start in sorted(started.items(), key=lambda item: item[1]):
            table.add_row(name, statuses[name].value, f"{now - start:.0f}s")
        return Group(heading, table) if started else Group(heading)


def make_progress(names: Iterable[str], quiet: bool, stream: TextIO | None = None):
    stream = stream or sys.stderr
    if not quiet and stream.isatty():
        return LiveProgress(names)
    return PlainProgress(stream, quiet)
