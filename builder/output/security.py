"""The text and JSON of kiln-registry find."""

from __future__ import annotations

from collections.abc import Sequence

from builder.security.find import ERROR, MATCH, NO_MATCH, UNKNOWN


def format_find(report) -> str:
    matches, unknown, errors = (report.having(s) for s in (MATCH, UNKNOWN, ERROR))
    where = report.where + (f", tag {report.tag}" if report.tag else "")
    count = len(report.results)
    images = f"{count} image{'s' if count != 1 else ''} in {where}"
    lines = [f"{report.constraint}: {len(matches)} of {images} "
             f"match{'es' if len(matches) == 1 else ''}" if matches
             else f"{report.constraint}: none of {images} matches"]
    rows = [(r.image, f"{h.kind} {h.name} {h.version}", r.reference, r.digest or r.image_id
             or "") for r in matches for h in r.hits]
    lines += _columns(rows)
    if unknown:
        lines.append(f"unknown: {len(unknown)} image{'s' if len(unknown) != 1 else ''} "
                     f"whose packages cannot be checked:")
        lines += _columns([(r.image, r.reference, r.digest or r.image_id or "",
                            r.reason or "") for r in unknown])
    if errors:
        lines.append(f"error: {len(errors)} image{'s' if len(errors) != 1 else ''} "
                     f"could not be read:")
        lines += _columns([(r.image, r.reference, r.reason or "") for r in errors])
    if report.missing:
        lines.append(f"not searched (no tag {report.tag} nor a revision of it): "
                     f"{', '.join(report.missing)}")
    return "\n".join(lines)


def _columns(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))] if rows else []
    return ["  " + "  ".join(f"{cell:{width}s}" for cell, width in
                             zip(row, widths, strict=True)).rstrip() for row in rows]


def find_json(report) -> dict:
    c = report.constraint

    def image(r) -> dict:
        return {"image": r.image, "reference": r.reference, "tag": r.tag,
                "digest": r.digest, "id": r.image_id}

    return {
        "constraint": str(c), "package": c.name, "kind": c.kind, "operator": c.op,
        "version": c.version, "where": report.where, "tag": report.tag,
        "checked": len(report.results),
        "matches": [{**image(r), "packages": [vars(h) for h in r.hits], "note": r.reason}
                    for r in report.having(MATCH)],
        "unknown": [{**image(r), "reason": r.reason} for r in report.having(UNKNOWN)],
        "no_match": [image(r) for r in report.having(NO_MATCH)],
        "errors": [{**image(r), "error": r.reason} for r in report.having(ERROR)],
        "missing": list(report.missing)}
