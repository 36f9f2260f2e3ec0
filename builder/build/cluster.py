"""The Dask cluster of ``--executor dask``, checked before anything is built.

:func:`connect` reaches the scheduler, finds the workers that offer the
``kiln-build`` resource and asks each to ping its own engine. An unreachable
scheduler, no worker with the resource, or no worker whose engine answers is
one :class:`ClusterError` naming the address or the workers. A worker whose
engine does not answer, while others do, is left out of the run (its name and
reason go to the summary) and the run goes on with the others.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from builder.build.remote import RESOURCE, ping_engine
from builder.errors import ClusterError, ConfigError

LOG = logging.getLogger(__name__)
EXTRA = "pip install 'kiln[distributed]'"
CONNECT_TIMEOUT = 10    # seconds to reach the scheduler
WORKER_WAIT = 10        # seconds to wait for a first worker to join
START_WORKER = f"DOCKER_HOST=... dask worker ADDRESS --resources {RESOURCE}=2"


@dataclass(frozen=True)
class Cluster:
    client: Any                      # distributed.Client
    address: str
    workers: Mapping[str, str]       # usable worker address -> its name
    not_used: Mapping[str, str]      # worker name -> why it is left out

    def close(self) -> None:
        self.client.close()


def import_distributed():
    """The ``distributed`` package, or one error naming the extra that installs it."""
    try:
        import distributed
    except ImportError as exc:
        raise ConfigError(f"--executor dask needs Dask's distributed package, which is "
                          f"not installed: {EXTRA}") from exc
    return distributed


def connect(address: str, engine: str) -> Cluster:
    """A client of the scheduler at ``address`` and the workers that can build."""
    distributed = import_distributed()
    try:
        client = distributed.Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at {address}: {exc}",
                           hint="is `dask scheduler` running there, and the port open?"
                           ) from exc
    try:
        workers, not_used = _builders(client, address, engine)
    except BaseException:
        client.close()
        raise
    for worker, reason in sorted(not_used.items()):
        LOG.warning("Dask worker %s is not used: %s", worker, reason)
    LOG.info("building on %d Dask worker(s) of %s: %s", len(workers), address,
             ", ".join(sorted(workers.values())))
    return Cluster(client, address, workers, not_used)


def _builders(client, address: str, engine: str) -> tuple[dict[str, str], dict[str, str]]:
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT)
    except TimeoutError:
        pass   # reported below, as no worker with the resource
    try:
        info = client.scheduler_info(n_workers=-1)["workers"]
    except TypeError:  # distributed before 2025: every worker, always
        info = client.scheduler_info()["workers"]
    names = {addr: _name(addr, worker) for addr, worker in info.items()}
    builders = [addr for addr, worker in info.items()
                if worker.get("resources", {}).get(RESOURCE, 0) >= 1]
    if not builders:
        listed = ", ".join(sorted(names.values())) or "none"
        raise ClusterError(f"no worker of the Dask scheduler at {address} has the "
                           f"{RESOURCE} resource (workers: {listed})",
                           hint=f"start them with `{START_WORKER}`")
    pings = client.run(ping_engine, engine, workers=builders, on_error="return")
    usable, not_used = {}, {}
    for addr in builders:
        answer = pings.get(addr, "it did not answer the ping")
        if isinstance(answer, BaseException):
            answer = f"{type(answer).__name__}: {answer}"
        if answer:
            not_used[names[addr]] = f"its {engine} engine does not answer: {answer}"
        else:
            usable[addr] = names[addr]
    if not usable:
        problems = "; ".join(f"worker {worker}: {reason}"
                             for worker, reason in sorted(not_used.items()))
        raise ClusterError(f"no worker of the Dask scheduler at {address} can build: "
                           f"{problems}")
    return usable, not_used


def _name(address: str, worker: Mapping) -> str:
    name = str(worker.get("name", address))
    return name if name == address else f"{name} ({address})"
