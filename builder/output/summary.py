"""The summary of a run: Kolla's keys (built, failed, not_matched, skipped)
plus unchanged, cached (found in --cache-registry by fingerprint, not built)
and cancelled, each a list of {name, image, id, status, reason, duration}.

``cancelled`` holds the images an interrupt (Ctrl-C) stopped while they were
building or pushing, or before they started; they are not failures.

With ``--executor dask`` each image built has the ``worker`` that built it,
and ``workers_not_used`` lists the workers left out (their engine did not
answer), each {worker, reason}.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from builder.build.scheduler import Outcome, Status
from builder.errors import EXIT_BUILD_FAILED, EXIT_INTERRUPTED, EXIT_OK, KilnError
from builder.naming import ImageNaming

KEYS = ("built", "cached", "unchanged", "failed", "cancelled", "not_matched", "skipped")
_KEY_OF = {
    Status.BUILT: "built", Status.PUSHED: "built",
    Status.UNCHANGED: "unchanged",
    Status.CACHED: "cached",
    Status.FAILED: "failed", Status.PARENT_FAILED: "failed",
    Status.PUSH_FAILED: "failed",
    Status.CANCELLED: "cancelled",
    # never final once a run has returned; if seen, the run was cut short
    Status.QUEUED: "cancelled", Status.BUILDING: "cancelled", Status.PUSHING: "cancelled",
    Status.SKIPPED: "skipped",
}


def _log_of(outcome: Outcome, logs: Mapping[str, Path]) -> str | None:
    """The image's log file, when it has one from this run: it started (or
    failed before building, which is written there) and the file exists."""
    path = logs.get(outcome.name)
    if path is None or not (outcome.attempts or outcome.status is Status.FAILED):
        return None
    return str(path) if Path(path).is_file() else None


def summarize(outcomes: Mapping[str, Outcome], naming: ImageNaming, *,
              skipped: Mapping[str, str] | None = None,
              not_matched: Iterable[str] = (),
              logs: Mapping[str, Path] | None = None,
              allowed_to_fail: Iterable[str] = (),
              workers_not_used: Mapping[str, str] | None = None) -> dict:
    allowed = set(allowed_to_fail)
    logs = logs or {}
    summary: dict[str, list] = {key: [] for key in KEYS}
    for name, outcome in sorted(outcomes.items()):
        entry = {
            "name": name,
            "image": naming.ref(name),
            "id": outcome.image_id,
            "status": outcome.status.value,
            "reason": outcome.reason,
            "duration": round(outcome.duration + outcome.push_duration, 3),
        }
        if outcome.worker is not None:
            entry["worker"] = outcome.worker
        key = _KEY_OF[outcome.status]
        if key == "failed":
            entry["allowed_to_fail"] = name in allowed
        if key in ("failed", "cancelled"):
            log = _log_of(outcome, logs)
            if log is not None:
                entry["log"] = log
        summary[key].append(entry)
    for name, reason in sorted((skipped or {}).items()):
        summary["skipped"].append({"name": name, "image": naming.ref(name), "id": None,
                                   "status": "skipped", "reason": reason, "duration": 0})
    if workers_not_used:
        summary["workers_not_used"] = [{"worker": worker, "reason": reason} for worker, reason
                                       in sorted(workers_not_used.items())]
    for name in sorted(not_matched):
        summary["not_matched"].append({"name": name, "image": naming.ref(name),
                                       "status": "unmatched"})
    return summary


def exit_code(summary: Mapping[str, list]) -> int:
    """130 when an interrupt cancelled images, 1 when one failed (and is
    not allowed to), else 0."""
    if summary.get("cancelled"):
        return EXIT_INTERRUPTED
    failed = [e for e in summary["failed"] if not e.get("allowed_to_fail")]
    return EXIT_BUILD_FAILED if failed else EXIT_OK


def to_json(summary: Mapping[str, list]) -> str:
    return json.dumps(summary, indent=2, sort_keys=True)


def to_text(summary: Mapping[str, list]) -> str:
    lines = []
    for key in ("built", "cached", "unchanged", "skipped", "failed", "cancelled"):
        entries = summary.get(key, [])
        if not entries:
            continue
        lines.append(f"{key} ({len(entries)}):")
        for e in entries:
            detail = e["status"] if e["status"] != key else ""
            if e.get("duration"):
                detail = f"{detail} {e['duration']:.1f}s".strip()
            if e.get("worker"):
                detail = f"{detail} on {e['worker']}".strip()
            if e.get("reason"):
                detail = f"{detail}: {e['reason']}" if detail else e["reason"]
            if e.get("allowed_to_fail"):
                detail += " (allowed to fail)"
            line = f"  {e['image']}" + (f"  {detail}" if detail else "")
            if e.get("log"):
                line += f"\n      log: {e['log']}"
            lines.append(line)
    for e in summary.get("workers_not_used", ()):
        lines.append(f"worker {e['worker']} not used: {e['reason']}")
    if summary["not_matched"]:
        lines.append(f"not matched: {len(summary['not_matched'])} image(s)")
    # "cached" only when the run had any (--cache-registry): the line stays as it was
    counts = ", ".join(f"{len(summary.get(k, ()))} {k.replace('_', ' ')}" for k in KEYS
                       if k != "cached" or summary.get(k))
    lines.append(f"summary: {counts}")
    return "\n".join(lines)


def write_json(summary: Mapping[str, list], path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(to_json(summary) + "\n")
    except OSError as exc:
        raise KilnError(f"--summary-json-file {path}: {exc.strerror}") from exc
