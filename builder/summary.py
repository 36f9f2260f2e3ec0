"""The summary of a run: Kolla's keys (built, failed, not_matched, skipped)
plus unchanged, each a list of {name, image, id, status, reason, duration}."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from builder.exceptions import EXIT_BUILD_FAILED, EXIT_OK, KilnError
from builder.naming import ImageNaming
from builder.scheduler import Outcome, Status

KEYS = ("built", "unchanged", "failed", "not_matched", "skipped")
_KEY_OF = {
    Status.BUILT: "built", Status.PUSHED: "built",
    Status.UNCHANGED: "unchanged",
    Status.FAILED: "failed", Status.PARENT_FAILED: "failed",
    Status.PUSH_FAILED: "failed", Status.CANCELLED: "failed",
    Status.QUEUED: "failed", Status.BUILDING: "failed", Status.PUSHING: "failed",
    Status.SKIPPED: "skipped",
}


def summarize(outcomes: Mapping[str, Outcome], naming: ImageNaming, *,
              skipped: Mapping[str, str] | None = None,
              not_matched: Iterable[str] = (),
              logs: Mapping[str, Path] | None = None,
              allowed_to_fail: Iterable[str] = ()) -> dict:
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
        key = _KEY_OF[outcome.status]
        if key == "failed":
            entry["allowed_to_fail"] = name in allowed
            if outcome.status is not Status.PARENT_FAILED and name in logs:
                entry["log"] = str(logs[name])
        summary[key].append(entry)
    for name, reason in sorted((skipped or {}).items()):
        summary["skipped"].append({"name": name, "image": naming.ref(name), "id": None,
                                   "status": "skipped", "reason": reason, "duration": 0})
    for name in sorted(not_matched):
        summary["not_matched"].append({"name": name, "image": naming.ref(name),
                                       "status": "unmatched"})
    return summary


def exit_code(summary: Mapping[str, list]) -> int:
    failed = [e for e in summary["failed"] if not e.get("allowed_to_fail")]
    return EXIT_BUILD_FAILED if failed else EXIT_OK


def to_json(summary: Mapping[str, list]) -> str:
    return json.dumps(summary, indent=2, sort_keys=True)


def to_text(summary: Mapping[str, list]) -> str:
    lines = []
    for key in ("built", "unchanged", "skipped", "failed"):
        entries = summary[key]
        if not entries:
            continue
        lines.append(f"{key} ({len(entries)}):")
        for e in entries:
            detail = e["status"] if e["status"] != key else ""
            if e.get("duration"):
                detail = f"{detail} {e['duration']:.1f}s".strip()
            if e.get("reason"):
                detail = f"{detail}: {e['reason']}" if detail else e["reason"]
            if e.get("allowed_to_fail"):
                detail += " (allowed to fail)"
            line = f"  {e['image']}" + (f"  {detail}" if detail else "")
            if e.get("log"):
                line += f"\n      log: {e['log']}"
            lines.append(line)
    if summary["not_matched"]:
        lines.append(f"not matched: {len(summary['not_matched'])} image(s)")
    counts = ", ".join(f"{len(summary[k])} {k.replace('_', ' ')}" for k in KEYS)
    lines.append(f"summary: {counts}")
    return "\n".join(lines)


def write_json(summary: Mapping[str, list], path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(to_json(summary) + "\n")
    except OSError as exc:
        raise KilnError(f"--summary-json-file {path}: {exc.strerror}") from exc
