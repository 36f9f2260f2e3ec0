"""Command-line edge: the only place that prints errors and picks exit codes."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence

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
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or "-d" in argv
    setup_logging(prog, debug)
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
