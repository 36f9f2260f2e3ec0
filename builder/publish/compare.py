"""Comparing two images by their kiln labels (for kiln-registry diff)."""

from __future__ import annotations

from collections.abc import Mapping


def diff_images(a: Mapping, b: Mapping) -> dict:
    """What differs between two decoded label sets (see manifest.read_labels).

    Packages: added / removed / changed (with both versions) per kind
    (deb, rpm, apk, pypi); sources, parents and templates: each entry whose
    identity differs, with both values.
    """
    return {
        "fingerprint": {"a": a.get("fingerprint"), "b": b.get("fingerprint"),
                        "same": a.get("fingerprint") == b.get("fingerprint")},
        "packages": _packages(a.get("packages") or {}, b.get("packages") or {}),
        "sources": _keyed(_manifest(a, "sources"), _manifest(b, "sources"), "name"),
        "parents": _keyed(_manifest(a, "parents"), _manifest(b, "parents"), "name",
                          ignore=("id", "ref")),
        "templates": _mapping(_manifest(a, "templates", {}), _manifest(b, "templates", {})),
        "build_args": _mapping(_manifest(a, "build_args", {}), _manifest(b, "build_args", {})),
    }


def is_empty(diff: Mapping) -> bool:
    return diff["fingerprint"]["same"] and not any(
        diff[key] for key in ("packages", "sources", "parents", "templates", "build_args"))


def _manifest(labels: Mapping, key: str, default=None):
    return (labels.get("manifest") or {}).get(key, [] if default is None else default)


def _packages(a: Mapping[str, Mapping[str, str]], b: Mapping[str, Mapping[str, str]]) -> dict:
    result = {}
    for kind in sorted(set(a) | set(b)):
        old, new = a.get(kind, {}), b.get(kind, {})
        added = {n: new[n] for n in sorted(set(new) - set(old))}
        removed = {n: old[n] for n in sorted(set(old) - set(new))}
        changed = {n: {"a": old[n], "b": new[n]}
                   for n in sorted(set(old) & set(new)) if old[n] != new[n]}
        if added or removed or changed:
            result[kind] = {"added": added, "removed": removed, "changed": changed}
    return result


def _keyed(a: list, b: list, key: str, ignore: tuple[str, ...] = ()) -> dict:
    def index(entries):
        return {e.get(key): {k: v for k, v in e.items() if k not in ignore}
                for e in entries if isinstance(e, Mapping)}
    old, new = index(a), index(b)
    return {name: {"a": old.get(name), "b": new.get(name)}
            for name in sorted(set(old) | set(new), key=str)
            if old.get(name) != new.get(name)}


def _mapping(a: Mapping, b: Mapping) -> dict:
    return {k: {"a": a.get(k), "b": b.get(k)} for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)}


def format_diff(diff: Mapping, ref_a: str, ref_b: str) -> str:
    lines = [f"--- {ref_a}", f"+++ {ref_b}"]
    fp = diff["fingerprint"]
    lines.append("fingerprint: same" if fp["same"] else f"fingerprint: {fp['a']} -> {fp['b']}")
    for kind, change in diff["packages"].items():
        for name, version in change["added"].items():
            lines.append(f"+ {kind} {name} {version}")
        for name, version in change["removed"].items():
            lines.append(f"- {kind} {name} {version}")
        for name, versions in change["changed"].items():
            lines.append(f"~ {kind} {name} {versions['a']} -> {versions['b']}")
    for section in ("sources", "parents", "templates", "build_args"):
        for name, values in diff[section].items():
            lines.append(f"~ {section[:-1] if section.endswith('s') else section} {name}: "
                         f"{_short(values['a'])} -> {_short(values['b'])}")
    if is_empty(diff):
        lines.append("no difference")
    return "\n".join(lines)


def _short(value) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, Mapping):
        for key in ("commit", "fingerprint", "content"):
            if value.get(key):
                return f"{key} {value[key]}"
    return str(value)
