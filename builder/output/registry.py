"""kiln-registry's text and JSON views of sync, promote, list and inspect results."""

from __future__ import annotations

from collections.abc import Sequence

from builder.publish.promote import PromoteResult
from builder.publish.revisions import (
    deployed_tag,
    old_tag,
)
from builder.publish.sync import Action, SyncResult, SyncSettings, SyncStatus
from builder.reference import short_digest
from builder.registry.client import RegistryClient

_LABELS = {SyncStatus.PUSHED: "pushed", SyncStatus.MOVED: "moved",
           SyncStatus.UNCHANGED: "unchanged", SyncStatus.SKIPPED: "skipped",
           SyncStatus.FAILED: "failed", SyncStatus.STOPPED: "stopped"}
_PLANNED = {Action.PUSH: "would push", Action.MOVE: "would move",
            Action.UNCHANGED: "unchanged", Action.SKIP: "skipped"}


def format_sync(results: Sequence[SyncResult], settings: SyncSettings) -> str:
    tag = settings.tag
    width = max((len(r.image) for r in results), default=0)
    lines = []
    for r in results:
        plan = r.plan
        label = (_PLANNED[plan.action] if r.status is SyncStatus.PLANNED and plan
                 else _LABELS[r.status])
        if r.status in (SyncStatus.FAILED, SyncStatus.STOPPED):
            detail = r.error or ""
        elif plan is None or plan.action is Action.SKIP:
            detail = plan.note if plan else ""
        elif plan.action is Action.PUSH:
            detail = r.reference or ""
            if plan.target != tag:
                detail += f", then {tag} moves to it" if r.status is SyncStatus.PLANNED \
                    else f", {tag} moved to it"
            if plan.note:
                detail += f" ({plan.note})"
        elif plan.action is Action.MOVE:
            detail = f"{tag} -> {r.reference} ({plan.note})"
        else:
            detail = r.reference or ""
        lines.append(f"{label:10s} {r.image:{width}s}  {detail}".rstrip())
    counts = _counts(results)
    lines.append(f"{len(results)} image{'s' if len(results) != 1 else ''}: " +
                 ", ".join(f"{n} {what}" for what, n in counts.items() if n or what in
                           ("pushed", "unchanged", "failed")) +
                 (" (dry run: nothing changed)" if settings.dry_run else ""))
    return "\n".join(lines)


def _counts(results: Sequence[SyncResult]) -> dict[str, int]:
    counts = dict.fromkeys(("pushed", "moved", "unchanged", "skipped", "failed",
                            "stopped"), 0)
    for r in results:
        if r.status is SyncStatus.PLANNED and r.plan is not None:
            key = {Action.PUSH: "pushed", Action.MOVE: "moved", Action.UNCHANGED:
                   "unchanged", Action.SKIP: "skipped"}[r.plan.action]
        else:
            key = r.status.value
        counts[key] += 1
    return counts


def sync_json(results: Sequence[SyncResult], settings: SyncSettings,
               interrupted: bool = False) -> dict:
    return {
        "tag": settings.tag, "dry_run": settings.dry_run, "interrupted": interrupted,
        "counts": _counts(results),
        "results": [{"image": r.image, "status": r.status.value,
                     "action": r.plan.action.value if r.plan else None,
                     "source": r.plan.source if r.plan else None,
                     "reference": r.reference, "tag": r.plan.target if r.plan else None,
                     "digest": r.digest, "revisions": list(r.plan.revisions) if r.plan
                     else [], "note": r.plan.note if r.plan else "", "error": r.error}
                    for r in results]}


def format_promote(results: Sequence[PromoteResult], tag: str, dry_run: bool) -> str:
    lines = []
    width = max((len(r.image) for r in results), default=0)
    for r in results:
        plan = r.plan
        if r.status == "failed":
            detail = r.error or ""
        elif plan is None:
            detail = f"no tag {tag}"
        else:
            candidate = plan.candidate_revision or plan.candidate
            if plan.current:
                detail = f"{deployed_tag(tag)} is already {candidate}"
            else:
                detail = f"{deployed_tag(tag)} -> {candidate}"
                if plan.deployed_digest:
                    detail += f", {old_tag(tag)} -> " \
                              f"{plan.deployed_revision or 'the image deployed before'}"
        label = {"planned": "would promote", "current": "unchanged"}.get(r.status, r.status)
        lines.append(f"{label:13s} {r.image:{width}s}  {detail}".rstrip())
    if dry_run:
        lines.append("dry run: nothing changed")
    return "\n".join(lines)


def promote_json(r: PromoteResult, client: RegistryClient, tag: str) -> dict:
    plan = r.plan
    return {"image": r.image, "status": r.status, "error": r.error,
            "repository": f"{client.host}/{plan.repository}" if plan else None,
            "candidate": plan.candidate_revision or plan.candidate if plan else None,
            "candidate_digest": plan.candidate_digest if plan else None,
            "deployed_before": plan.deployed_revision if plan else None,
            "deployed_digest_before": plan.deployed_digest if plan else None}


def format_list(images: dict, tag: str | None = None) -> str:
    lines = []
    for entry in images.values():
        lines.append(entry["repository"])
        groups: dict[str, list] = {}
        for info in entry["tags"]:
            groups.setdefault(info.digest, []).append(info)
        if not groups:
            lines.append(f"  (no {tag} tags)" if tag else "  (no tags)")
        width = max((len(_leader(g).tag) for g in groups.values()), default=0)
        for group in groups.values():
            leader = _leader(group)
            others = [i.tag for i in group if i is not leader]
            also = f" ({', '.join(others)})" if others else ""
            lines.append(f"  {leader.tag:{width}s}  "
                         f"fingerprint {short_digest(leader.fingerprint)}  "
                         f"created {leader.created or '?'}  digest {short_digest(leader.digest)}"
                         f"{also}")
    return "\n".join(lines)


def _leader(group: list):
    """The revision tag naming an image, else its first tag."""
    return next((i for i in group if i.revision is not None), group[0])


def format_inspect(ref: str, labels: dict) -> str:
    manifest, oci = labels["manifest"], labels["oci"]
    lines = [f"image:       {ref} ({labels['id']})"]
    if labels.get("digest"):
        lines.append(f"digest:      {labels['digest']}")
    lines += [f"fingerprint: {labels['fingerprint']}",
              f"created:     {oci.get('created', '?')}",
              f"built by:    kiln {manifest.get('kiln', '?')}"]
    for key in ("base.name", "base.digest", "revision", "source", "vendor", "licenses"):
        if key in oci:
            lines.append(f"{key + ':':12s} {oci[key]}")
    lines.append("templates:")
    for layer in manifest.get("layers", []):
        state = ("" if layer.get("commit") is None else
                 f" git {layer['commit'][:12]}{' (dirty)' if layer.get('dirty') else ''}")
        lines.append(f"  {layer['label']}: {layer['path']}{state}")
    for path, digest in manifest.get("templates", {}).items():
        lines.append(f"  {path} {digest}")
    if manifest.get("sources"):
        lines.append("sources:")
        for s in manifest["sources"]:
            at = f" @ {s['reference']}" if s.get("reference") else ""
            what = s.get("commit") or s.get("content")
            lines.append(f"  {s['name']}: {s['type']} {s['location']}{at} -> {what}")
    if manifest.get("parents"):
        lines.append("parents:")
        for p in manifest["parents"]:
            lines.append(f"  {p['ref']} (fingerprint {p['fingerprint']}, id {p.get('id')})")
    if manifest.get("build_args"):
        lines.append("build args:")
        lines.extend(f"  {k}={v}" for k, v in manifest["build_args"].items())
    packages = labels["packages"]
    total = sum(len(v) for v in packages.values())
    lines.append(f"packages: {total}" + (" (" + ", ".join(
        f"{len(v)} {k}" for k, v in packages.items()) + ")" if packages else ""))
    for kind, items in packages.items():
        lines.extend(f"  {kind} {name} {version}" for name, version in items.items())
    return "\n".join(lines)
