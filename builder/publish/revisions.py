"""Tag revisions: ``T-N`` names, release tags, ``T-deployed``/``T-old``, a destination's tags."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from builder.errors import CatalogUnavailable, ConfigError, SyncError
from builder.graph.selection import compile_pattern
from builder.naming import ImageNaming
from builder.registry.client import RegistryClient

LOG = logging.getLogger(__name__)

DEFAULT_RELEASE_PATTERN = r"^\d+\.\d+\.\d+$"
DEPLOYED = "deployed"               # T-deployed
OLD = "old"                         # T-old
MAX_TAG_LENGTH = 128
_REVISION = re.compile(r"[1-9][0-9]{0,8}")


# -- names and tags ------------------------------------------------------------------

@dataclass(frozen=True)
class SetNaming:
    """Repositories of an image set in one registry: ``<namespace>/<prefix><name>``, tag T."""

    namespace: str
    prefix: str
    tag: str

    def __post_init__(self):
        ImageNaming(namespace=self.namespace, prefix=self.prefix, tag=self.tag).validate()

    def repository(self, name: str) -> str:
        return ImageNaming(namespace=self.namespace, prefix=self.prefix,
                           tag=self.tag).repository(name, with_registry=False)

    def member(self, repository: str) -> str | None:
        """The image name of a repository of this set, else None."""
        stem = self.repository("")
        if repository.startswith(stem) and "/" not in repository[len(stem):]:
            return repository[len(stem):] or None
        return None


def revision_tag(tag: str, number: int) -> str:
    return f"{tag}-{number}"


def revision_number(candidate: str, tag: str) -> int | None:
    """N if ``candidate`` is ``<tag>-N`` (N a positive integer without leading zeros)."""
    prefix = tag + "-"
    if candidate.startswith(prefix) and _REVISION.fullmatch(candidate[len(prefix):]):
        return int(candidate[len(prefix):])
    return None


def revisions(tags: Iterable[str], tag: str) -> tuple[int, ...]:
    """The revision numbers of ``tag`` among ``tags``, ascending."""
    return tuple(sorted({n for t in tags if (n := revision_number(t, tag)) is not None}))


def is_release(tag: str, pattern: str) -> bool:
    return re.search(pattern, tag) is not None


def select_names(names: Iterable[str], patterns: Sequence[str], where: str) -> list[str]:
    """Names matching any pattern (``re.search``, as kiln-build selects); all if none given."""
    names = sorted(set(names))
    if not names:
        raise ConfigError(f"no image of the set is at {where}")
    if not patterns:
        return names
    chosen: set[str] = set()
    for pattern in patterns:
        regex = compile_pattern(pattern, "image regex")
        hits = {name for name in names if regex.search(name)}
        if not hits:
            LOG.warning("pattern %r matches no image at %s", pattern, where)
        chosen |= hits
    if not chosen:
        shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        raise ConfigError(f"no image at {where} matches {', '.join(map(repr, patterns))} "
                          f"(images: {shown})")
    return sorted(chosen)


# -- reading the destination -----------------------------------------------------------

@dataclass(frozen=True)
class Found:
    """What a destination tag names: a manifest digest and its image config's digest."""

    digest: str
    config_digest: str | None


def peek_manifest(client: RegistryClient, repository: str, reference: str) -> Found | None:
    """The digest and config digest a tag names, with one GET of the manifest (no blob)."""
    found = client.manifest(repository, reference, labels=False)
    if found is None:
        return None
    return Found(found.digest, found.config_digest)


def list_repositories(client: RegistryClient) -> list[str]:
    """Every repository a registry lists in its catalog."""
    try:
        return client.list_repositories()
    except CatalogUnavailable as exc:
        raise SyncError(exc.message, hint="name the images with --image NAME instead") from exc


def deployed_tag(tag: str) -> str:
    return f"{tag}-{DEPLOYED}"


def old_tag(tag: str) -> str:
    return f"{tag}-{OLD}"


def family(tags: Iterable[str], tag: str) -> list[str]:
    """``T``, its revisions (newest first), ``T-deployed`` and ``T-old``, those present."""
    tags = set(tags)
    ordered = [tag] + [revision_tag(tag, n) for n in reversed(revisions(tags, tag))]
    ordered += [deployed_tag(tag), old_tag(tag)]
    return [t for t in ordered if t in tags]
