"""The package scan, on every engine: it runs without a network whatever
--network-mode says, a scan that fails fails the image, an image without a
shell is complete with an explicit marker, and an image stamped without a
known scan outcome is not reused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from builder.build.labels import FINGERPRINT, PACKAGES
from builder.engines.base import BuildRequest
from tests.faults.scan_probe import NO_SHELL, PACKAGES_SCAN, SCANNED, Probe, template_set
from tests.integration.test_engines import base, engine, images  # noqa: F401


@pytest.fixture
def probe(engine, base, images, tmp_path) -> Probe:  # noqa: F811
    busybox = shutil.which("busybox")
    assert busybox, "no busybox binary on PATH (install busybox-static)"
    # a base of the test's own: another session may remove the shared one meanwhile
    own_base = images.track(f"{images.namespace}-base/busybox:latest")
    engine.tag(base, own_base)
    made = Probe(engine, own_base, images.namespace, tmp_path,
                 template_set(tmp_path / "set", shell_less_busybox=Path(busybox)))
    images.track(made.ref())
    images.track(made.ref("bare"))
    return made


def test_scan_runs_without_a_network_whatever_the_network_mode(probe):
    result = probe.run()                      # --network-mode host
    assert result.code == 0, result.out + result.err
    labels = probe.engine.inspect(probe.ref()).labels
    # the fake dpkg-query lists the scan container's interfaces: only loopback
    assert json.loads(labels[PACKAGES]) == {"deb": {"net-lo": "1", "probe": "1"}}
    assert labels[PACKAGES_SCAN] == SCANNED
    assert "scanning the packages" in probe.log() and "(no network)" in probe.log()


def test_failed_scan_fails_the_image_and_is_not_reused(probe):
    failed = probe.run(broken_shell="1")
    assert failed.code == 1, failed.out + failed.err
    entry = failed.entries("failed")["probe"]
    assert entry["reason"].startswith("image 'probe': the package scan failed: ")
    assert len(entry["reason"].splitlines()) == 1 and "dpkg-query" not in entry["reason"]
    assert "package scan failed: running" in probe.log()      # the detail is in the log
    assert probe.engine.inspect(probe.ref()) is None
    assert [i for i in probe.images() if i.labels.get(FINGERPRINT)] == []
    again = probe.run(broken_shell="1")
    assert again.code == 1 and "probe" in again.entries("failed")


def test_shell_less_image_is_complete_with_an_explicit_marker(probe):
    first = probe.run("^bare$")
    assert first.code == 0, first.out + first.err
    assert first.entries("built")["bare"]["status"] == "built"
    labels = probe.engine.inspect(probe.ref("bare")).labels
    assert labels[FINGERPRINT].startswith("sha256:")
    assert labels[PACKAGES] == "{}"
    assert labels[PACKAGES_SCAN] == NO_SHELL
    assert "has no /bin/sh" in probe.log("bare")
    second = probe.run("^bare$")
    assert second.code == 0 and second.entries("unchanged")["bare"]["id"] == \
        first.entries("built")["bare"]["id"]


def test_stamp_without_a_known_scan_outcome_is_not_reused(probe):
    first = probe.run()
    assert first.code == 0, first.out + first.err
    complete = probe.engine.inspect(probe.ref())
    # As an earlier kiln stamped an image whose scan failed unnoticed: same
    # fingerprint, "{}" packages, no scan outcome.
    context = probe.tmp_path / "old-stamp"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {complete.id}\n")
    for _ in probe.engine.build(BuildRequest(image="probe", context_dir=context,
                                             tags=(probe.ref(),),
                                             labels={PACKAGES: "{}", PACKAGES_SCAN: ""})):
        pass
    assert probe.engine.inspect(probe.ref()).id != complete.id
    second = probe.run()
    assert second.code == 0, second.out + second.err
    assert "probe" in second.entries("built")
    assert probe.engine.inspect(probe.ref()).labels[PACKAGES_SCAN] == SCANNED


def test_packages_are_read_from_the_image_files_without_a_container(probe):
    result = probe.run(rpm_db="0")
    assert result.code == 0, result.out + result.err
    labels = probe.engine.inspect(probe.ref()).labels
    # the dpkg status file, not the fake dpkg-query (which would list net-lo)
    assert json.loads(labels[PACKAGES]) == {"deb": {"probe": "1"}}
    assert labels[PACKAGES_SCAN] == SCANNED
    log = probe.log()
    assert "read from its files: 1 deb" in log
    assert "in a container" not in log


def test_an_rpm_database_sends_the_scan_to_a_container(probe):
    result = probe.run()                      # the probe has an (empty) rpm database
    assert result.code == 0, result.out + result.err
    log = probe.log()
    assert "packages: the image has an rpm database, which only rpm can read" in log
    assert "scanning the packages" in log and "read from its files" not in log


def test_shell_less_image_read_from_its_files_is_scanned(probe):
    first = probe.run("^bare$", rpm_db="0")
    assert first.code == 0, first.out + first.err
    labels = probe.engine.inspect(probe.ref("bare")).labels
    assert labels[PACKAGES] == "{}" and labels[PACKAGES_SCAN] == SCANNED
    assert "has no /bin/sh" not in probe.log("bare")
