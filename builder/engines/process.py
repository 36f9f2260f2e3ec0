"""Running a command-line tool: its output and error messages, timeouts, cancellation.

Commands are argument lists, never shell text. Each runs in a session of its
own, so a Ctrl-C on kiln's terminal reaches kiln only, and kiln decides what
to stop. Stopping a command (:func:`stop`) first kills the processes it
started (during a build that is the RUN step's container, which as PID 1 of its
namespace ignores SIGTERM), so that the tool fails the step and cleans up its
working container by itself; then SIGTERM; then SIGKILL.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass

from builder.errors import EngineError

TAIL_LINES = 20
STOP_GRACE = 5.0      # seconds a tool gets to exit after its step was killed, and after SIGTERM
_CANCEL_POLL = 0.1    # seconds between looks at a cancel flag

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_LOGRUS = re.compile(r'^time="[^"]*" level=(\w+) msg="((?:[^"\\]|\\.)*)"')
_GO_DUMP = re.compile(r" &\w+\.\w+\{.*$")          # a Go struct printed after a message
_SEVERAL = re.compile(r"^\d+ errors? occurred:$")

def clean(text: str) -> str:
    """One output line without colour codes, carriage-return redraws or trailing space."""
    return _ANSI.sub("", text).rstrip().rpartition("\r")[2].rstrip()


# -- references ---------------------------------------------------------------

def error_message(lines: Iterable[str]) -> str:
    """The tool's own reason for failing, from its (merged) output; "" if it gave none.

    podman and buildah end with ``Error: <reason>`` (a multi-error as
    ``Error: 2 errors occurred:`` and one ``* reason`` line each); their
    libraries log ``time=... level=error msg="..."`` lines before that.
    """
    lines = list(lines)
    for index in range(len(lines) - 1, -1, -1):
        line = lines[index]
        if line.startswith("Error: "):
            text = line.removeprefix("Error: ").strip()
            if _SEVERAL.match(text):
                items = [rest.strip().removeprefix("* ") for rest in lines[index + 1:]
                         if rest.strip().startswith("* ")]
                text = "; ".join(items) or text
            return _GO_DUMP.sub("", " ".join(text.split()))
    for line in reversed(lines):
        match = _LOGRUS.match(line)
        if match and match.group(1) in ("error", "fatal"):
            return " ".join(match.group(2).replace('\\"', '"').split())
    return ""


def last_lines(text: str, count: int) -> list[str]:
    return [clean(line) for line in text.strip().splitlines()][-count:]


# -- processes ----------------------------------------------------------------

@dataclass(frozen=True)
class Completed:
    """A finished short command."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def error(self) -> str:
        """The tool's reason for failing (or its last line of standard error)."""
        lines = last_lines(self.stderr, TAIL_LINES)
        return error_message(lines) or (lines[-1] if lines else "")


@dataclass(frozen=True)
class ToolOutcome:
    """How a streamed command ended."""

    returncode: int
    cancelled: bool                 # stopped because the cancel flag was set
    tail: tuple[str, ...]           # its last lines of output

    @property
    def error(self) -> str:
        return error_message(self.tail)


class Tool:
    """One command-line program, looked up on PATH each time it is run."""

    def __init__(self, program: str, package: str, global_args: Sequence[str] = ()):
        self.program = program
        self.package = package
        self.global_args = tuple(global_args)

    def argv(self, args: Sequence[str]) -> list[str]:
        path = shutil.which(self.program)
        if path is None:
            raise EngineError(f"{self.program} is not installed: "
                              f"apt-get install {self.package}")
        return [path, *self.global_args, *args]

    def _start(self, args: Sequence[str], doing: str, **kwargs) -> subprocess.Popen:
        argv = self.argv(args)
        try:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                    start_new_session=True, **kwargs)
        except OSError as exc:
            reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            raise EngineError(f"{doing} failed: cannot run {argv[0]}: {reason}") from exc

    def run(self, args: Sequence[str], *, doing: str, timeout: float,
            on_timeout=None) -> Completed:
        """Run to completion and return what it printed; EngineError if it overruns.

        ``on_timeout`` is called first when the command overruns (e.g. to
        remove a container the tool left to a monitor process of its own).
        """
        process = self._start(args, doing, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            if on_timeout is not None:
                on_timeout()
            stop(process)
            process.communicate()
            raise EngineError(f"{doing} did not finish within {timeout:g} s") from None
        except BaseException:
            stop(process)
            raise
        return Completed(process.returncode, stdout.decode("utf-8", "replace"),
                         stderr.decode("utf-8", "replace"))

    def stream(self, args: Sequence[str], *, doing: str,
               cancel: threading.Event | None = None) -> Generator[str, None, ToolOutcome]:
        """Yield the output lines (standard error merged) as they come; return a ToolOutcome.

        Setting ``cancel`` stops the command even while it prints nothing;
        closing the generator stops it too. Neither has a time limit: a RUN
        step may be silent for long.
        """
        if cancel is not None and cancel.is_set():
            return ToolOutcome(returncode=-signal.SIGTERM, cancelled=True, tail=())
        process = self._start(args, doing, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        watcher = _CancelWatcher(process, cancel)
        try:
            for raw in process.stdout:
                line = clean(raw.decode("utf-8", "replace"))
                tail.append(line)
                yield line
            process.wait()
        finally:
            watcher.finish()
            process.stdout.close()
        return ToolOutcome(returncode=process.returncode, cancelled=watcher.cancelled,
                       tail=tuple(tail))


class _CancelWatcher:
    """Stops a streamed command when its cancel flag is set, or when it is abandoned."""

    def __init__(self, process: subprocess.Popen, cancel: threading.Event | None):
        self._process = process
        self._cancel = cancel
        self._finished = threading.Event()
        self._lock = threading.Lock()
        self._stopping = False
        self.cancelled = False
        self._thread = None
        if cancel is not None:
            self._thread = threading.Thread(target=self._watch, name="kiln-cli-cancel",
                                            daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        while not self._finished.is_set():
            if self._cancel.wait(_CANCEL_POLL):
                if not self._finished.is_set() and self._process.poll() is None:
                    self.cancelled = True
                    self._stop_once()
                return

    def _stop_once(self) -> None:
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        stop(self._process)

    def finish(self) -> None:
        """The reader is done: at the end of the output, on an error, or closed early."""
        self._finished.set()
        if self._process.poll() is None:
            self._stop_once()
        if self._thread is not None:
            self._thread.join()
        self._process.wait()


def stop(process: subprocess.Popen, grace: float = STOP_GRACE) -> None:
    """End a command and whatever it started; returns once it has exited.

    The containers under the tool (a RUN step's) are killed first, so that
    the tool fails the step and removes its working container and the
    runtime's state; then the tool gets SIGTERM; then it and everything under
    it get SIGKILL.
    """
    if process.poll() is not None:
        return
    if _kill_descendants(process.pid, containers_only=True) and _exited(process, grace):
        return
    try:
        process.terminate()
    except ProcessLookupError:
        pass
    if _exited(process, grace):
        return
    _kill_descendants(process.pid)
    try:
        process.kill()
    except ProcessLookupError:
        pass
    process.wait()


def _exited(process: subprocess.Popen, timeout: float) -> bool:
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, session id) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses.
    fields = data[data.rfind(b")") + 2:].split()
    return (int(fields[1]), int(fields[3])) if len(fields) > 3 else None


def _parent_of(pid: int) -> int | None:
    stat = _stat(pid)
    return stat[0] if stat else None


def descendants(pid: int) -> list[tuple[int, int]]:
    """Every process under ``pid`` as (pid, session), parents before children (Linux /proc)."""
    children: dict[int, list[tuple[int, int]]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                children.setdefault(stat[0], []).append((int(entry), stat[1]))
    found: list[tuple[int, int]] = []
    queue = [pid]
    while queue:
        for child in children.get(queue.pop(0), ()):
            found.append(child)
            queue.append(child[0])
    return found


def _kill_descendants(pid: int, containers_only: bool = False) -> bool:
    """SIGKILL the processes under ``pid``, leaves first; True if there were any.

    ``containers_only``: only those in another session than the tool's (a
    container's processes: its runtime starts it in a session of its own),
    so that the tool's runtime monitor lives on to clean up after it.
    A process is signalled through a pidfd opened after checking that it is
    still a child of the parent it had, so a recycled pid is never hit.
    """
    try:
        session = os.getsid(pid) if containers_only else None
    except OSError:
        return False                    # the tool has exited
    found = [child for child, child_session in descendants(pid)
             if session is None or child_session != session]
    if not found:
        return False
    parents = {child: _parent_of(child) for child in found}
    for child in reversed(found):
        _kill_child(child, parents[child])
    return True


def _kill_child(pid: int, parent: int | None) -> None:
    try:
        pidfd = os.pidfd_open(pid)
    except (OSError, AttributeError):
        pidfd = None
    try:
        if _parent_of(pid) != parent:
            return                      # gone, or reparented (its parent died): not ours now
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    finally:
        if pidfd is not None:
            os.close(pidfd)


# -- what the podman and buildah backends share -------------------------------
