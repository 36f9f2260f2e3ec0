"""Fixtures for --executor dask: a second Docker daemon (module-wide) and a
Dask cluster (per test); see dask_cluster.py. The host daemon's docker0 and
default network are checked to work before and after the second daemon.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.conftest import unavailable
from tests.integration.dask_cluster import (
    BIN,
    DaskCluster,
    SecondDocker,
    Unavailable,
    host_network_problem,
)


def host_network_works(image: str) -> None:
    problem = host_network_problem(image)
    assert problem is None, problem


@pytest.fixture(scope="module")
def second_docker(docker_engine, busybox_base) -> Iterator[SecondDocker]:
    host_network_works(busybox_base)
    try:
        daemon = SecondDocker.start(images=(busybox_base,))
    except Unavailable as exc:
        unavailable(str(exc))
    try:
        host_network_works(busybox_base)
        yield daemon
    finally:
        daemon.stop()
    host_network_works(busybox_base)


@pytest.fixture
def dask_cluster(tmp_path) -> Iterator[DaskCluster]:
    if not (BIN / "dask").exists():
        unavailable(f"no dask command in {BIN} (pip install 'kiln[distributed]')")
    root = tmp_path / "dask"
    root.mkdir()
    cluster = DaskCluster(root).start()
    try:
        yield cluster
    finally:
        cluster.stop()
