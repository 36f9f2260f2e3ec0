"""Two runs on one --work-dir: the second stops at once, naming the first,
instead of overwriting its build contexts and interleaving its logs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import FAMILY, error_line

pytestmark = pytest.mark.timeout(120)

HOLDER = textwrap.dedent("""\
    import sys
    from pathlib import Path
    from builder.build.context import locked_work_dir
    with locked_work_dir(Path(sys.argv[1])):
        print("locked", flush=True)
        sys.stdin.read()   # until the test closes it
""")


@pytest.fixture
def holder(tmp_path):
    """Another process holding the work dir's lock the way a kiln run does."""
    processes = []

    def start(work):
        process = subprocess.Popen([sys.executable, "-c", HOLDER, str(work), "--holder-marker"],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        processes.append(process)
        assert process.stdout.readline().strip() == "locked"
        return process

    yield start
    for process in processes:
        process.stdin.close()
        process.wait(timeout=30)


def test_template_only_on_a_work_dir_in_use_stops_naming_the_holder(kiln, holder, tmp_path):
    work = tmp_path / "w"
    assert kiln("--templates-dir", FAMILY, "--template-only", "--work-dir", work,
                "^base$").code == 0
    dockerfile = (work / "base" / "Dockerfile").read_bytes()
    process = holder(work)
    result = kiln("--templates-dir", FAMILY, "--template-only", "--work-dir", work,
                  "--template-var", "base_image=other:1", "^base$")
    assert result.code == 2
    line = error_line(result)
    assert f"--work-dir {work} is in use by another kiln run (pid {process.pid}, started " \
        in line
    assert "--holder-marker" in line and "wait for it to end or choose another --work-dir" \
        in line
    assert (work / "base" / "Dockerfile").read_bytes() == dockerfile  # untouched


def test_a_build_on_a_work_dir_in_use_stops_before_anything(kiln, holder, tmp_path):
    work = tmp_path / "w"
    holder(work)
    # the lock is taken before the engine is even loaded
    result = kiln("--templates-dir", FAMILY, "--work-dir", work, "--engine",
                  "no-such-engine", "^base$")
    assert result.code == 2
    assert "is in use by another kiln run" in error_line(result)
    assert not (work / "logs").exists() and not (work / "base").exists()


def test_the_lock_is_released_when_its_holder_ends(kiln, holder, tmp_path):
    work = tmp_path / "w"
    process = holder(work)
    assert kiln("--templates-dir", FAMILY, "--template-only", "--work-dir", work,
                "^base$").code == 2
    process.stdin.close()
    process.wait(timeout=30)
    result = kiln("--templates-dir", FAMILY, "--template-only", "--work-dir", work, "^base$")
    assert result.code == 0, result.err
    assert (work / "base" / "Dockerfile").exists()


def test_the_lock_file_says_who_holds_it(kiln, tmp_path):
    work = tmp_path / "w"
    assert kiln("--templates-dir", FAMILY, "--template-only", "--work-dir", work,
                "^base$").code == 0
    # the last holder's record stays; only a held flock means "in use"
    record = json.loads((work / ".kiln-lock").read_text())
    assert set(record) == {"pid", "started", "command"}
    assert kiln("--templates-dir", FAMILY, "--template-only", "--work-dir", work,
                "^base$").code == 0
