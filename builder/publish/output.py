"""The ``--output`` file of a sync: what deployment tools read, as JSON or YAML."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from builder.errors import ConfigError, KilnError
from builder.publish.sync import SyncResult, SyncSettings, SyncStatus

# -- the list of what was published ---------------------------------------------------------

def output_document(results: Sequence[SyncResult], registry: str,
                    settings: SyncSettings) -> dict:
    """What deployment tools read: each image's revision reference and digest.

    ``{"registry", "namespace", "tag", "images": {name: {"reference",
    "tag", "digest"}}, "failed": [names], "stopped": [names]}``; failed,
    stopped (by an interruption) and skipped images are not in ``images``.
    """
    images = {}
    for result in results:
        published = (SyncStatus.PUSHED, SyncStatus.MOVED, SyncStatus.UNCHANGED)
        if result.status in published and result.plan:
            images[result.image] = {"reference": result.reference,
                                    "tag": result.plan.target, "digest": result.digest}
    return {"registry": registry, "namespace": settings.destination.namespace,
            "tag": settings.tag, "images": images,
            "failed": sorted(r.image for r in results if r.status is SyncStatus.FAILED),
            "stopped": sorted(r.image for r in results if r.status is SyncStatus.STOPPED)}


def to_yaml(value) -> str:
    """YAML for plain data (dicts, lists, strings, numbers, booleans, None), keys in order."""
    import yaml  # only a sync with --output *.yaml needs it

    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True,
                          default_flow_style=False)


OUTPUT_FORMATS = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}


def output_kind(path: Path | None) -> str | None:
    if path is None:
        return None
    kind = OUTPUT_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ConfigError(f"--output {path}: the name must end in .json, .yaml or .yml")
    if not path.parent.is_dir():
        raise ConfigError(f"--output {path}: directory {path.parent} does not exist")
    return kind


def write_output(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    except OSError as exc:
        raise KilnError(f"cannot write --output {path}: {exc.strerror or exc}") from exc
