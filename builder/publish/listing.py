"""Listing a set's images in a registry: tags and revisions grouped by image."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from builder.build.labels import FINGERPRINT
from builder.publish.revisions import (
    SetNaming,
    family,
    list_repositories,
    revision_number,
)
from builder.registry.client import RegistryClient

# -- list -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TagInfo:
    tag: str
    revision: int | None            # N for T-N (with the tag asked for), else None
    digest: str
    fingerprint: str | None
    created: str | None


def list_image(client: RegistryClient, repository: str, tag: str | None = None
               ) -> list[TagInfo]:
    """Tags of a repository (only T's family if ``tag``) with fingerprint and created date.

    One HEAD per tag, and the manifest and config once per distinct image.
    """
    tags = client.list_tags(repository)
    shown = family(tags, tag) if tag else sorted(tags, key=_tag_order)
    digests = {t: client.manifest_digest(repository, t) for t in shown}
    details = {}
    for digest in dict.fromkeys(d for d in digests.values() if d):
        info = client.manifest(repository, digest)
        details[digest] = ((info.labels.get(FINGERPRINT) or None, info.created)
                           if info else (None, None))
    result = []
    for name in shown:
        digest = digests[name]
        if digest is None:
            continue                # deleted while we looked
        fingerprint, created = details[digest]
        number = revision_number(name, tag) if tag else _any_revision(name, set(tags))
        result.append(TagInfo(name, number, digest, fingerprint, created))
    return result


def set_repositories(client: RegistryClient, naming: SetNaming,
                     names: Sequence[str] = ()) -> dict[str, str]:
    """``name -> repository`` of the set in a registry (from its catalog, or ``names``)."""
    if names:
        return {name: naming.repository(name) for name in names}
    return {name: repo for repo in list_repositories(client)
            if (name := naming.member(repo))}


def _any_revision(candidate: str, tags: set[str]) -> int | None:
    """N if ``candidate`` is ``<T>-N`` for a tag T the repository has."""
    base, _, number = candidate.rpartition("-")
    return revision_number(candidate, base) if base in tags else None


def _tag_order(tag: str) -> tuple:
    """Tags sorted by name, with revision numbers compared as numbers (x-2 before x-10)."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part)
                 for part in re.split(r"(\d+)", tag))
