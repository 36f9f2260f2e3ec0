"""Command-line edge: the only place that prints errors and picks exit codes."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence

from builder.errors import EXIT_INTERRUPTED, KilnError

LOG = logging.getLogger("builder")


class _Formatter(logging.Formatter):
    def __init__(self, prog: str):
        super().__init__()
        self.prog = prog

    def format(self, record: logging.LogRecord) -> str:
        level = record.levelname.lower()
        text = f"{self.prog}: {level}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup_logging(prog: str, debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(prog))
    LOG.handlers[:] = [handler]
    LOG.propagate = False
    LOG.setLevel(logging.DEBUG if debug else logging.INFO)


def run(prog: str, body: Callable[[list[str]], int],
        argv: Sequence[str] | None) -> int:
    """Run a command body, turning kiln's errors into one line and an exit code."""
    command_line = argv is None      # the process is this command (not a test calling it)
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or "-d" in argv
    setup_logging(prog, debug)
    try:
        try:
            return body(argv)
        except KilnError as exc:
            if debug or LOG.isEnabledFor(logging.DEBUG):
                LOG.debug("traceback follows", exc_info=True)
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt:
            print(f"{prog}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
    except KeyboardInterrupt:            # another Ctrl-C while reporting the first
        return EXIT_INTERRUPTED
    finally:
        if command_line:
            _exit_at_next_interrupt()


def _exit_at_next_interrupt() -> None:
    """From now on a Ctrl-C ends the process at once with exit code 130.

    What is left is the interpreter's shutdown, which waits for worker threads
    still finishing an interrupted image: a Ctrl-C there would otherwise kill
    the process by SIGINT instead of exiting with the documented 130.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    signal.signal(signal.SIGINT, lambda signum, frame: os._exit(EXIT_INTERRUPTED))
    # atexit functions run once the threads are joined. Then the interpreter
    # puts SIGINT back to its default, under which a Ctrl-C in the last
    # milliseconds would kill the process by the signal; ignored, it cannot
    # (the interpreter leaves an ignored signal alone).
    atexit.register(signal.signal, signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def report_survives_second_interrupt(prog: str) -> Iterator[None]:
    """The first Ctrl-C interrupts as usual; a second one, while kiln is
    writing what the run did, is noted and the report finished; a third
    ends the process at once (exit 130).

    After the first Ctrl-C a run stops its scheduler and writes its summary
    (milliseconds): a second Ctrl-C there would lose the summary, and with
    it what the run had built. Waiting for builds that are still stopping
    comes later, at exit, and stays interruptible (see ``run``).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    count = 0

    def interrupted(signum, frame):
        nonlocal count
        count += 1
        if count == 1:
            raise KeyboardInterrupt
        if count == 2:
            # os.write: this may run while the main thread is inside a print()
            os.write(2, f"{prog}: interrupted again: finishing the summary "
                        f"(Ctrl-C again to stop at once)\n".encode())
            return
        os._exit(EXIT_INTERRUPTED)

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
