"""Which source sections belong to which image (no fetching: cheap to import).

Kolla's plugins and additions are sections named ``<image>-plugin-<name>``
and ``<image>-additions-<name>``; :mod:`builder.build.sources.kolla_archives`
packs them. A section that belongs to no image is a warning, as soon as the
template set is known (``--template-only`` and ``--list-images`` too).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from builder.build.sources.spec import SourceSpec

_SECTION = re.compile(r"^.+?-(plugin|additions)-.+$")  # a plugin or addition section


@dataclass(frozen=True)
class KollaExtras:
    """One image's plugin and addition sections, by section name."""

    plugins: tuple[SourceSpec, ...] = ()
    additions: tuple[SourceSpec, ...] = ()


def assign_extras(images: Iterable[str], sources: Mapping[str, SourceSpec]
                  ) -> tuple[dict[str, KollaExtras], list[str]]:
    """Each image's plugins and additions, matched as kolla-build matches them
    (``^<image>-plugin-.+``, ``^<image>-additions-.+``); and the sections that
    look like a plugin or an addition but belong to no image."""
    images = sorted(images)
    claimed: set[str] = set()
    extras = {}
    for image in images:
        found = {}
        for kind, infix in (("plugins", "plugin"), ("additions", "additions")):
            prefix = f"{image}-{infix}-"
            found[kind] = tuple(sources[name] for name in sorted(sources)
                                if name.startswith(prefix) and len(name) > len(prefix))
            claimed.update(spec.name for spec in found[kind])
        extras[image] = KollaExtras(**found)
    known = set(images)
    orphans = [name for name in sorted(sources)
               if name not in claimed and name not in known and _SECTION.match(name)]
    return extras, orphans


def unused_source_warnings(images: Collection[str], sources: Mapping[str, SourceSpec],
                           kolla: bool, builtin: Collection[str] = ()) -> list[str]:
    """One warning per source section of the config that no image uses (kolla-build
    ignores them without a word); Kolla's untouched built-in sections are not the
    user's and are left alone."""
    extras, orphans = assign_extras(images, sources) if kolla else ({}, [])
    claimed = {spec.name for extra in extras.values()
               for spec in (*extra.plugins, *extra.additions)}
    found = []
    for name in sources:
        if name in images or name in claimed or name in builtin:
            continue
        if name in orphans:
            found.append(f"config section [{name}] is a plugin or addition section "
                         f"(<image>-plugin-<name>, <image>-additions-<name>), but the "
                         f"template set has no image it belongs to; it is ignored")
        else:
            found.append(f"config section [{name}] defines a source, but the template "
                         f"set has no image {name!r}")
    return found
