"""Which images a run rebuilds with fresh packages (``--refresh``, ``--refresh-all``,
``--max-age``), decided before anything is built from the local images' labels.

A fingerprint counts kiln's inputs, not the distribution mirrors an image's
``RUN`` steps install from: an image whose templates did not change is reused,
and a build reuses the engine's cached ``apt-get install`` layer. A refresh
forces both: the image is rebuilt without the layer cache, and the refresh
date is counted in its fingerprint (so its descendants' fingerprints change
too, and they are rebuilt after it) and recorded in its manifest as
``"refreshed": {"date": ..., "reason": ...}``.

The refresh set comes from the image each selected image's reference names
on the engine now (one inspect per image, in parallel):

- ``--refresh PACKAGE[OP VERSION]``: its ``kiln.packages`` hold a matching
  package (matched as ``kiln-registry find`` matches). An image whose
  packages are unknown (no local image, no trustworthy ``kiln.packages``, a
  version that cannot be compared) is refreshed too, with a warning saying
  why: it may hold the package.
- ``--refresh-all``: every selected image.
- ``--max-age DURATION``: its ``org.opencontainers.image.created`` is older
  than that (an image without a readable build time is refreshed, with a
  warning).

An image that is not refreshed in this run keeps the refresh its local image
records (date and reason), in its manifest and its fingerprint: otherwise the
next ordinary run would compute the pre-refresh fingerprint and rebuild it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from builder.build.labels import MANIFEST, OCI, is_complete

if TYPE_CHECKING:   # the CLI imports parse_duration: no engine machinery for that
    from builder.engines.base import Engine, ImageInfo
    from builder.security.versions import Constraint
    from builder.settings import RefreshRequest

LOG = logging.getLogger(__name__)
CREATED = f"{OCI}created"

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(?:[0-9]+[smhdw])+")
_PART = re.compile(r"([0-9]+)([smhdw])")
DURATION_EXAMPLE = "a number and a unit (s, m, h, d, w), such as 30m, 12h, 7d, 2w or 1d12h"


def parse_duration(text: str) -> timedelta:
    """``30m``, ``12h``, ``7d``, ``2w`` (or ``1d12h``) -> timedelta; ValueError if not one."""
    value = text.strip().lower()
    if not _DURATION.fullmatch(value):
        raise ValueError(f"not a duration: give {DURATION_EXAMPLE}")
    seconds = sum(int(number) * _UNITS[unit] for number, unit in _PART.findall(value))
    if seconds == 0:
        raise ValueError("no time at all: give a duration above zero "
                         "(--refresh-all refreshes every image)")
    return timedelta(seconds=seconds)


def format_duration(age: timedelta) -> str:
    seconds = int(age.total_seconds())
    for unit in ("w", "d", "h", "m"):
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class Refresh:
    """A refresh an image's packages come from: ``now`` if it happens in this run."""

    date: str           # ISO 8601, the run's build time when now
    reason: str         # "less", "less>=590-2", "--refresh-all", "older than 7d", ...
    now: bool = False

    def record(self) -> dict[str, str]:
        """What the manifest records under ``refreshed``."""
        return {"date": self.date, "reason": self.reason}


def decide_refreshes(engine: Engine, refs: Mapping[str, str], request: RefreshRequest,
                     date: str, threads: int = 8) -> dict[str, Refresh]:
    """image name -> the Refresh it is built under (refreshed now, or carried over).

    ``refs``: each image's target reference; ``date``: this run's build time.
    """
    with ThreadPoolExecutor(max(1, threads), "kiln-refresh") as pool:
        infos = dict(zip(refs, pool.map(engine.inspect, refs.values()), strict=True))
    now = datetime.fromisoformat(date)
    result = {}
    for name, info in infos.items():
        reason = _refresh_reason(name, info, request, now) if request else None
        if reason is not None:
            result[name] = Refresh(date=date, reason=reason, now=True)
        elif info is not None and is_complete(info.labels):
            earlier = _recorded(info)
            if earlier is not None:
                result[name] = earlier
    return result


def _refresh_reason(name: str, info: ImageInfo | None, request: RefreshRequest,
                    now: datetime) -> str | None:
    if request.all:
        return "--refresh-all"
    reasons = []
    for constraint in request.constraints:
        why = _packages_reason(name, info, constraint)
        if why is not None:
            reasons.append(why)
    if request.max_age is not None:
        why = _age_reason(name, info, request.max_age, now)
        if why is not None:
            reasons.append(why)
    return ", ".join(reasons) or None


def _packages_reason(name: str, info: ImageInfo | None, constraint: Constraint) -> str | None:
    from builder.security.find import MATCH, UNKNOWN, examine

    if info is None:
        why = "there is no local image to read its packages from"
    else:
        status, hits, why = examine(info.labels, constraint)
        if status == MATCH:
            return str(constraint)
        if status != UNKNOWN:
            return None
    LOG.warning("image %s: refreshed for --refresh %s because its packages are unknown: %s",
                name, constraint, why)
    return f"{constraint} (packages unknown)"


def _age_reason(name: str, info: ImageInfo | None, max_age: timedelta,
                now: datetime) -> str | None:
    limit = format_duration(max_age)
    created = _created(info)
    if created is None:
        why = ("there is no local image" if info is None
               else f"it has no readable {CREATED} label")
        LOG.warning("image %s: refreshed for --max-age %s because its build time is "
                    "unknown: %s", name, limit, why)
        return f"older than {limit} (build time unknown)"
    if now - created > max_age:
        return f"older than {limit}"
    return None


def _created(info: ImageInfo | None) -> datetime | None:
    if info is None or not info.labels.get(CREATED):
        return None
    try:
        created = datetime.fromisoformat(info.labels[CREATED])
    except ValueError:
        return None
    return created if created.tzinfo else created.replace(tzinfo=UTC)


def _recorded(info: ImageInfo) -> Refresh | None:
    """The refresh a local image's manifest records, if any."""
    try:
        record = json.loads(info.labels.get(MANIFEST) or "{}").get("refreshed")
    except (ValueError, AttributeError):
        return None
    if not (isinstance(record, dict) and isinstance(record.get("date"), str)
            and isinstance(record.get("reason"), str)):
        return None
    return Refresh(date=record["date"], reason=record["reason"])
