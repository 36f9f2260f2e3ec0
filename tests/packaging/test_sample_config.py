"""The committed sample config is what the generator writes now (tox -e genconfig)."""

from __future__ import annotations

import difflib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "etc" / "kiln-build.conf.sample"
# The command of tox.ini's genconfig environment, into another file.
GENERATOR = [sys.executable, "-m", "oslo_config.generator", "--namespace", "kiln-build",
             "--wrap-width", "79"]


def test_committed_sample_config_is_up_to_date(tmp_path):
    generated = tmp_path / "kiln-build.conf.sample"
    result = subprocess.run([*GENERATOR, "--output-file", str(generated)],
                            capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    expected = generated.read_text()
    assert "#template_cache_dir = ~/.cache/kiln/templates" in expected
    diff = "".join(difflib.unified_diff(
        SAMPLE.read_text().splitlines(keepends=True), expected.splitlines(keepends=True),
        fromfile="etc/kiln-build.conf.sample (committed)",
        tofile="etc/kiln-build.conf.sample (generated now)"))
    assert not diff, ("etc/kiln-build.conf.sample is out of date: run `tox -e genconfig` "
                      "and commit the result.\n" + diff)
