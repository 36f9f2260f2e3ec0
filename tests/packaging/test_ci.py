"""CI runs exactly the test command README.md opens with."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _readme_commands() -> list[str]:
    block = re.search(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README.md does not open with a sh block"
    return [line for line in block.group(1).splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_ci_runs_the_readmes_second_command():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    script = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert script[-1] == commands[1]
    # What precedes it only sets the shell up and moves to the checkout.
    assert script[:-1] == ["set -euo pipefail", 'cd "$(dirname "$0")/.."']
