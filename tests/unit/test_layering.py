"""The package's layering: pipeline steps receive plain settings and never load oslo.config."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Modules below the command line: none of them may pull in oslo.config (or the CLI).
BELOW_THE_CLI = ("builder.settings", "builder.graph.dag", "builder.graph.selection",
                 "builder.templating.render", "builder.plan", "builder.build.prepare",
                 "builder.templating.kolla.api", "builder.publish.sync",
                 "builder.registry.client")


@pytest.mark.parametrize("module", BELOW_THE_CLI)
def test_no_oslo_config_below_the_cli(module):
    code = (f"import sys, {module}; "
            "print(sorted(m for m in sys.modules if m.startswith(('oslo_config', "
            "'builder.cli', 'builder.templating.kolla.options'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stdout
