"""Fixtures for comparing kiln with a real kolla-build (kolla 23.0.0 from PyPI).

The kolla venv is made once and cached (see ``kolla_env``). When it cannot
be made (PyPI unreachable) the comparison tests are skipped, except under CI
(``CI`` non-empty), where they fail. All kolla-build runs of the session
start together, in the background, the first time one is asked for.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import unavailable
from tests.kolla.kolla_env import (
    BASES,
    KollaInstall,
    KollaUnavailable,
    finish,
    install_kolla,
    start_kolla_build,
)

FIXTURES = Path(__file__).parent / "fixtures"
OVERRIDES = (FIXTURES / "override.j2", FIXTURES / "second.j2")
LAYER = FIXTURES / "layer"  # a --docker-dir: replaces cron, adds site-tools
CUSTOMIZED = ("--docker-dir", str(LAYER),
              *(a for path in OVERRIDES for a in ("--template-override", str(path))))

# every kolla-build run the tests compare with: key -> arguments
KOLLA_RUNS = {
    **{("render", base): ("--template-only", "--base", base) for base in BASES},
    **{("customized", base): ("--template-only", "--base", base, *CUSTOMIZED)
       for base in ("debian", "rocky")},
    ("dependencies", "rocky"): ("--list-dependencies", "--base", "rocky"),
}




@pytest.fixture(scope="session")
def kolla_install() -> KollaInstall:
    try:
        return install_kolla(log=lambda message: None)
    except KollaUnavailable as exc:
        unavailable(str(exc))


@pytest.fixture(scope="session")
def empty_config(tmp_path_factory) -> Path:
    """Both tools read this config file and no other (not /etc/kolla, ~/.kiln ...)."""
    path = tmp_path_factory.mktemp("config") / "empty.conf"
    path.write_text("")
    return path


class KollaRuns:
    """The kolla-build runs of the session, all started at once."""

    def __init__(self, install: KollaInstall, root: Path, config: Path):
        self._root = root
        self._processes: dict[tuple[str, str], subprocess.Popen] = {
            key: start_kolla_build(install, self.work_dir(key), args, config)
            for key, args in KOLLA_RUNS.items()}
        self._outputs: dict[tuple[str, str], str] = {}

    def work_dir(self, key: tuple[str, str]) -> Path:
        return self._root / "-".join(key)

    def output(self, key: tuple[str, str]) -> str:
        """Wait for a run; its standard output."""
        if key not in self._outputs:
            self._outputs[key] = finish(self._processes[key], self.work_dir(key))
        return self._outputs[key]

    def stop(self) -> None:
        for process in self._processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture(scope="session")
def kolla_runs(kolla_install, tmp_path_factory, empty_config):
    runs = KollaRuns(kolla_install, tmp_path_factory.mktemp("kolla-build"), empty_config)
    yield runs
    runs.stop()


@pytest.fixture(scope="session")
def kiln_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kiln-template-cache")
