"""Ctrl-C at the command-line edge (builder.cli.common), in a process of its own.

A second Ctrl-C while kiln writes its summary is noted and the summary
finished, a third stops at once; once the command is done, a Ctrl-C while the
interpreter ends cannot kill the process by the signal.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from builder.errors import EXIT_INTERRUPTED

ROOT = Path(__file__).resolve().parents[2]

REPORT = """
import signal, sys
from builder.cli.common import report_survives_second_interrupt
with report_survives_second_interrupt("kiln-build"):
    try:
        signal.raise_signal(signal.SIGINT)
    except KeyboardInterrupt:
        print("first: raised", flush=True)
    signal.raise_signal(signal.SIGINT)
    print("second: noted", flush=True)
    if sys.argv[1] == "3":
        signal.raise_signal(signal.SIGINT)
        print("third: not reached", flush=True)
print("restored:", signal.getsignal(signal.SIGINT) is signal.default_int_handler)
"""

AT_EXIT = """
import atexit, signal, sys
atexit.register(lambda: print("at exit, SIGINT ignored:",
                              signal.getsignal(signal.SIGINT) is signal.SIG_IGN, flush=True))
from builder.cli.common import run
sys.exit(run("kiln-test", lambda argv: 3, None))
"""


def python(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_second_interrupt_is_noted_and_the_report_finished():
    done = python(REPORT, "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "first: raised\nsecond: noted\nrestored: True\n"
    assert done.stderr == ("kiln-build: interrupted again: finishing the summary "
                           "(Ctrl-C again to stop at once)\n")


def test_third_interrupt_stops_at_once():
    done = python(REPORT, "3")
    assert done.returncode == EXIT_INTERRUPTED, done.stderr
    assert done.stdout == "first: raised\nsecond: noted\n"


def test_interrupts_are_ignored_while_the_interpreter_ends():
    done = python(AT_EXIT)
    assert done.returncode == 3, done.stderr
    assert done.stdout == "at exit, SIGINT ignored: True\n"
