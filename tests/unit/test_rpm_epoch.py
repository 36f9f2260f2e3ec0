"""rpm versions carry their epoch (``E:V-R``) from kiln's package scan to ``find``.

The scan's rpm query runs with the real ``rpm`` (Debian's package) over a
database the test fills with two packages it builds with ``rpmbuild``, one
with an epoch and one without; ``find`` then compares the recorded versions
by rpm's rules (a missing epoch is 0).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from builder.build.labels import (
    PACKAGE_SCAN,
    PACKAGES,
    PACKAGES_SCAN,
    SCANNED,
    parse_packages,
    scan_finished,
)
from builder.security.find import MATCH, NO_MATCH, examine
from builder.security.versions import compare, parse_constraint
from tests.integration.conftest import unavailable

SPEC = """\
Name: {name}
Version: 1.2
Release: 3.el9
{epoch}Summary: kiln test package
License: MIT
BuildArch: noarch
%description
kiln test package
%files
"""


@pytest.fixture(scope="module")
def rpm_home(tmp_path_factory):
    """A HOME whose ~/.rpmmacros points rpm at a database holding kiln-epoch
    (epoch 2) and kiln-plain (no epoch), both 1.2-3.el9."""
    if not (shutil.which("rpm") and shutil.which("rpmbuild")):
        unavailable("rpm and rpmbuild are not installed (apt-get install rpm)")
    root = tmp_path_factory.mktemp("rpm")
    specs = []
    for name, epoch in (("kiln-epoch", "Epoch: 2\n"), ("kiln-plain", "")):
        spec = root / f"{name}.spec"
        spec.write_text(SPEC.format(name=name, epoch=epoch))
        specs.append(str(spec))
    subprocess.run(["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {root / 'top'}",
                    *specs], check=True, capture_output=True, timeout=120)
    database, home = root / "db", root / "home"
    home.mkdir()
    subprocess.run(["rpm", "--initdb", "--dbpath", str(database)], check=True,
                   capture_output=True, timeout=60)
    packages = sorted(str(p) for p in (root / "top" / "RPMS").rglob("*.rpm"))
    assert len(packages) == 2
    subprocess.run(["rpm", "-i", "--justdb", "--nodeps", "--dbpath", str(database),
                    *packages], check=True, capture_output=True, timeout=60)
    (home / ".rpmmacros").write_text(f"%_dbpath {database}\n")
    return home


def test_the_scan_records_an_rpm_epoch(rpm_home):
    output = subprocess.run(["/bin/sh", "-c", PACKAGE_SCAN], capture_output=True,
                            text=True, timeout=120, check=True,
                            env={**os.environ, "HOME": str(rpm_home)}).stdout
    assert scan_finished(output)
    assert parse_packages(output)["rpm"] == {"kiln-epoch": "2:1.2-3.el9",
                                             "kiln-plain": "1.2-3.el9"}


def test_find_compares_rpm_epochs():
    labels = {PACKAGES: json.dumps({"rpm": {"kiln-epoch": "2:1.2-3.el9",
                                            "kiln-plain": "1.2-3.el9"}}),
              PACKAGES_SCAN: SCANNED}

    def status(text: str) -> str:
        return examine(labels, parse_constraint(text))[0]

    # epoch 2 outranks any version of epoch 0 (a constraint without one)
    assert status("rpm:kiln-epoch>9.0") == MATCH
    assert status("rpm:kiln-epoch<9.0") == NO_MATCH
    assert status("rpm:kiln-epoch<3:0.1") == MATCH
    assert status("rpm:kiln-epoch=2:1.2") == MATCH          # no release: E:V only
    assert status("rpm:kiln-epoch=1.2") == NO_MATCH         # 0:1.2
    assert status("rpm:kiln-epoch>=2:1.2-4.el9") == NO_MATCH
    # no epoch is epoch 0, written or not
    assert status("rpm:kiln-plain=0:1.2-3.el9") == MATCH
    assert status("rpm:kiln-plain<1:0.1") == MATCH
    assert compare("rpm", "2:1.2-3.el9", "10.0-1") == 1
    assert compare("rpm", "0:1.2-3.el9", "1.2-3.el9") == 0
