"""Which images a run builds.

Patterns (positional regexes and the entries of ``--profile`` profiles) are
matched with ``re.search`` as Kolla does; no pattern means every image.
Ancestors of a requested image are selected too, unless ``--skip-parents``.
``--exclude`` removes images (they must already exist), and the ancestors
reached only through them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

import networkx as nx

from builder.errors import ConfigError
from builder.settings import SelectionCriteria

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Selection:
    requested: frozenset[str]      # matched a pattern (and not excluded)
    selected: frozenset[str]       # to be built: requested + needed ancestors
    skipped_parents: frozenset[str]  # ancestors left out by --skip-parents
    excluded: frozenset[str]
    not_matched: frozenset[str]    # every other image of the set


def select(graph: nx.DiGraph, criteria: SelectionCriteria) -> Selection:
    names = sorted(graph)
    patterns = list(criteria.regexes) + _profile_patterns(criteria)
    if patterns:
        requested = set()
        for pattern in patterns:
            regex = compile_pattern(pattern, "image regex")
            hits = {n for n in names if regex.search(n)}
            if not hits:
                LOG.warning("pattern %r matches no image", pattern)
            requested |= hits
    else:
        requested = set(names)
    excluders = [compile_pattern(p, "--exclude") for p in criteria.exclude]
    excluded = {n for n in names if any(r.search(n) for r in excluders)}
    requested -= excluded
    if not requested:
        raise ConfigError("no image is selected: "
                          + _describe(patterns, criteria.exclude))
    needed = _ancestors(graph, requested, excluded)
    if criteria.skip_parents:
        selected, skipped = set(requested), needed - requested
    else:
        selected, skipped = needed, set()
    return Selection(
        requested=frozenset(requested),
        selected=frozenset(selected),
        skipped_parents=frozenset(skipped),
        excluded=frozenset(excluded),
        not_matched=frozenset(set(names) - selected - skipped),
    )


def _ancestors(graph: nx.DiGraph, start: Iterable[str],
               excluded: set[str]) -> set[str]:
    """``start`` and every ancestor reachable without passing an excluded image."""
    seen = set(start)
    stack = list(seen)
    while stack:
        for parent in graph.predecessors(stack.pop()):
            if parent not in seen and parent not in excluded:
                seen.add(parent)
                stack.append(parent)
    return seen


def _profile_patterns(criteria: SelectionCriteria) -> list[str]:
    patterns = []
    for profile in criteria.profiles:
        if profile not in criteria.profile_defs:
            known = ", ".join(sorted(criteria.profile_defs)) or "none defined"
            raise ConfigError(f"--profile {profile!r} is not defined in the "
                              f"[profiles] section (profiles: {known})")
        patterns.extend(criteria.profile_defs[profile])
    return patterns


def compile_pattern(pattern: str, what: str) -> re.Pattern:
    """A regular expression, or a ConfigError naming the option it came from."""
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"{what} {pattern!r} is not a valid regular "
                          f"expression: {exc}") from exc


def _describe(patterns: list[str], exclude: Iterable[str]) -> str:
    parts = []
    if patterns:
        parts.append("patterns " + ", ".join(map(repr, patterns)))
    exclude = list(exclude)
    if exclude:
        parts.append("--exclude " + ", ".join(map(repr, exclude)))
    return " with ".join(parts) if parts else "the template set has no images"
