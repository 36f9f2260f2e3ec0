"""A build is atomic at its reference, on every engine: until the stamped,
complete image is tagged in one last step, the reference keeps naming the
previous complete image, whatever interrupts or fails the build."""

from __future__ import annotations

import random
import signal
import subprocess

import pytest

from builder.build.labels import FINGERPRINT, PACKAGES
from tests.faults.scan_probe import PACKAGES_SCAN, SCANNED, Probe, template_set
from tests.integration.test_engines import appears, base, engine, gone, images  # noqa: F401


@pytest.fixture
def probe(engine, base, images, tmp_path) -> Probe:  # noqa: F811
    # a base of the test's own: another session may remove the shared one meanwhile
    own_base = images.track(f"{images.namespace}-base/busybox:latest")
    engine.tag(base, own_base)
    made = Probe(engine, own_base, images.namespace, tmp_path, template_set(tmp_path / "set"))
    images.track(made.ref())
    return made


def complete_first(probe: Probe):
    """Build version 1, complete; return its ImageInfo."""
    first = probe.run(version="1")
    assert first.code == 0, first.out + first.err
    info = probe.engine.inspect(probe.ref())
    assert info.labels[FINGERPRINT].startswith("sha256:")
    return info


def interrupt(probe: Probe, process: subprocess.Popen, *argv: str) -> tuple[str, str]:
    """SIGINT kiln-build once ``argv`` runs (in the build or the scan); its output."""
    try:
        assert appears(*argv, within=120), f"{argv} never ran:\n{probe.log()}"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert gone(*argv)
    return out, err


def assert_untouched(probe: Probe, previous) -> None:
    """The reference names the previous complete image; nothing unfinished is left."""
    info = probe.engine.inspect(probe.ref())
    assert info is not None and info.id == previous.id, probe.log()
    assert info.labels[FINGERPRINT] == previous.labels[FINGERPRINT]
    assert probe.engine.run(probe.ref(), ["cat", "/version"]) == "1\n"
    listed = probe.images()
    assert [(i.id, i.tags) for i in listed if i.tags] == [(previous.id, (probe.ref(),))]
    assert [i.id for i in listed if i.labels.get(FINGERPRINT)] == [previous.id]
    # the unfinished image of the last run, if its build ended, was removed
    last_run = probe.log().rpartition(f"kiln: building {probe.ref()}")[2]
    for line in last_run.splitlines():
        if line.startswith("kiln: built sha256:"):
            assert probe.engine.inspect(line.split()[2]) is None, line


def test_interrupt_between_build_and_stamp_keeps_the_previous_image(probe):
    previous = complete_first(probe)
    pause = f"20.{random.randint(1000, 9999)}"       # picks out this scan's sleep
    process, _ = probe.start(version="2", scan_sleep=pause)
    out, err = interrupt(probe, process, "sleep", pause)

    assert process.returncode == 130, out + err
    assert "Traceback" not in err
    assert_untouched(probe, previous)
    log = probe.log()
    assert "scanning the packages" in log
    assert "stamped" not in log.split("scanning the packages")[-1]


def test_interrupt_during_the_build_keeps_the_previous_image(probe):
    previous = complete_first(probe)
    seconds = str(random.randint(3000, 9000))
    process, _ = probe.start(version="2", build_sleep=seconds)
    out, err = interrupt(probe, process, "sleep", seconds)

    assert process.returncode == 130, out + err
    assert_untouched(probe, previous)


def test_failed_scan_keeps_the_previous_image(probe):
    previous = complete_first(probe)
    failed = probe.run(version="2", broken_shell="1")

    assert failed.code == 1, failed.out + failed.err
    entry = failed.entries("failed")["probe"]
    assert entry["status"] == "failed"
    assert entry["reason"].startswith("image 'probe': the package scan failed: ")
    assert "permission denied" in entry["reason"].lower()
    assert "package scan failed" in probe.log()
    assert_untouched(probe, previous)


def test_a_complete_build_moves_the_reference_to_a_stamped_image(probe):
    previous = complete_first(probe)
    second = probe.run(version="2")
    assert second.code == 0, second.out + second.err
    info = probe.engine.inspect(probe.ref())
    assert info.id != previous.id
    assert info.labels[FINGERPRINT] != previous.labels[FINGERPRINT]
    assert "deb" in info.labels[PACKAGES] and '"probe":"2"' in info.labels[PACKAGES]
    assert second.entries("built")["probe"]["id"] == info.id
    assert info.labels[PACKAGES_SCAN] == SCANNED
