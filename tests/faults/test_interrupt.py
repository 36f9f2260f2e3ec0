"""Ctrl-C during a build: cancelled images are their own summary key (not
failures), with the time they really ran, a log only when they started, and
true reasons even after a second Ctrl-C.

The end-to-end tests interrupt ``python -m builder.cli.build`` building a
sleeping busybox image on the real engine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from builder.build.scheduler import Outcome, Status
from builder.errors import EXIT_BUILD_FAILED, EXIT_INTERRUPTED, EXIT_OK
from builder.naming import ImageNaming
from builder.output.summary import exit_code, summarize, to_text
from tests.integration.conftest import (  # noqa: F401 (fixtures)
    busybox_base,
    cleanup_images,
    docker_engine,
    server,
)

# --- the summary of an interrupted run ----------------------------------------------


def interrupted_outcomes() -> dict[str, Outcome]:
    return {
        "base": Outcome("base", Status.BUILT, image_id="sha256:b", duration=2.0, attempts=1,
                        build_status=Status.BUILT),
        "slow": Outcome("slow", Status.CANCELLED, "interrupted while building",
                        duration=3.0, attempts=1),
        "child": Outcome("child", Status.CANCELLED, "not started: interrupted"),
        "broken": Outcome("broken", Status.FAILED, "RUN exited 3", duration=1.0, attempts=1),
        "orphan": Outcome("orphan", Status.PARENT_FAILED, "parent 'broken' failed"),
    }


def test_summary_has_cancelled_apart_from_failed(tmp_path):
    logs = {name: tmp_path / f"{name}.log" for name in interrupted_outcomes()}
    for name in ("slow", "broken"):
        logs[name].write_text("kiln: building\n")
    logs["child"].write_text("an old run's log: this run never started child\n")
    summary = summarize(interrupted_outcomes(), ImageNaming(namespace="ns"), logs=logs)
    assert [e["name"] for e in summary["cancelled"]] == ["child", "slow"]
    assert sorted(e["name"] for e in summary["failed"]) == ["broken", "orphan"]
    slow, child = summary["cancelled"][1], summary["cancelled"][0]
    assert (slow["status"], slow["reason"], slow["duration"], slow["log"]) == (
        "cancelled", "interrupted while building", 3.0, str(logs["slow"]))
    assert (child["reason"], child["duration"]) == ("not started: interrupted", 0.0)
    assert "log" not in child
    assert summary["failed"][0]["log"] == str(logs["broken"])
    assert exit_code(summary) == EXIT_INTERRUPTED
    text = to_text(summary)
    assert "cancelled (2):\n  ns/child:latest  not started: interrupted\n" \
           f"  ns/slow:latest  3.0s: interrupted while building\n      log: {logs['slow']}" \
           in text
    assert text.splitlines()[-1] == ("summary: 1 built, 0 unchanged, 2 failed, 2 cancelled, "
                                     "0 not matched, 0 skipped")


def test_log_named_only_when_the_file_exists(tmp_path):
    outcomes = {"a": Outcome("a", Status.FAILED, "boom", attempts=1)}
    summary = summarize(outcomes, ImageNaming(), logs={"a": tmp_path / "missing.log"})
    assert "log" not in summary["failed"][0]


def test_exit_codes_without_interrupt():
    outcomes = interrupted_outcomes()
    del outcomes["slow"], outcomes["child"]
    assert exit_code(summarize(outcomes, ImageNaming())) == EXIT_BUILD_FAILED
    assert exit_code(summarize({"base": outcomes["base"]}, ImageNaming())) == EXIT_OK


# --- end to end: Ctrl-C to kiln-build on the real engine ----------------------------

SLOW_SET = {
    "base/Dockerfile.j2": "FROM {{ busybox }}\nRUN echo base > /base.txt\n",
    "slow/Dockerfile.j2": 'FROM {{ image_ref("base") }}\n'
                          "RUN wget -q -O /dev/null http://127.0.0.1:{{ port }}/started/slow"
                          " && sleep 60\n",
    "slow-child/Dockerfile.j2": 'FROM {{ image_ref("slow") }}\nRUN true\n',
}


def interrupt_build(tree, tmp_path, busybox_base, cleanup_images, server,  # noqa: F811
                    signals: int, ran: float = 2.0):
    """kiln-build the slow set; once ``slow`` ran ``ran`` s, send ``signals`` SIGINTs."""
    templates = tree(SLOW_SET, name="slow-set")
    for name in ("base", "slow", "slow-child"):
        cleanup_images.track(f"{cleanup_images.namespace}/{name}:latest")
    summary_file = tmp_path / "summary.json"
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    process = subprocess.Popen(
        [sys.executable, "-m", "builder.cli.build", "--templates-dir", str(templates),
         "--namespace", cleanup_images.namespace, "--template-var", f"busybox={busybox_base}",
         "--template-var", f"port={server.port}", "--network-mode", "host",
         "--work-dir", str(tmp_path / "work"), "--summary-json-file", str(summary_file),
         "--threads", "2", "^slow-child$"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert server.started.wait(120), "the slow build never started"
        time.sleep(ran)
        for _ in range(signals):
            process.send_signal(signal.SIGINT)
            time.sleep(0.05)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else None
    return process.returncode, out, err, summary, tmp_path / "work" / "logs"


def by_name(entries):
    return {entry["name"]: entry for entry in entries}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("signals", [1, 2], ids=["ctrl-c", "ctrl-c-twice"])
def test_interrupted_build_summary(tree, tmp_path, busybox_base, cleanup_images,  # noqa: F811
                                   server, docker_engine, signals):  # noqa: F811
    code, out, err, summary, logs = interrupt_build(
        tree, tmp_path, busybox_base, cleanup_images, server, signals)
    # the second Ctrl-C may come while kiln writes the summary, or while the
    # interpreter ends: the summary is written and the exit code is 130 all the same
    assert code == EXIT_INTERRUPTED, (code, err)
    assert "Traceback" not in err
    assert summary is not None, err
    assert summary["failed"] == [], summary["failed"]
    assert by_name(summary["built"])["base"]["status"] == "built"
    cancelled = by_name(summary["cancelled"])
    slow, child = cancelled["slow"], cancelled["slow-child"]
    assert (slow["status"], slow["reason"]) == ("cancelled", "interrupted while building")
    assert 2.0 <= slow["duration"] < 60, slow
    assert slow["log"] == str(logs / "slow.log") and (logs / "slow.log").is_file()
    assert (child["status"], child["reason"], child["duration"]) == (
        "cancelled", "not started: interrupted", 0)
    assert "log" not in child and not (logs / "slow-child.log").exists()
    assert "cancelled (2):" in out
    assert f"{cleanup_images.namespace}/slow:latest  " in out
    assert docker_engine.inspect(f"{cleanup_images.namespace}/slow:latest") is None
