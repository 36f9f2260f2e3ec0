"""Source sections (Kolla's format) parsed into a SourceSpec, and what a prepared source is."""

from __future__ import annotations

import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from builder.errors import SourceError, scrub_url

URL_SCHEMES = ("http", "https", "file")
SOURCE_TYPES = ("local", "git", "url")
SOURCE_KEYS = ("type", "location", "reference", "sha256", "enabled")

_TRUE = ("true", "yes", "1")
_FALSE = ("false", "no", "0")
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class SourceSpec:
    """Where one image's source comes from (one config section)."""

    name: str
    type: str
    location: str
    reference: str | None = None
    sha256: str | None = None
    enabled: bool = True


@dataclass(frozen=True)
class PreparedSource:
    """The archive written for one image's source, and what it was made from."""

    name: str
    archive: Path
    type: str
    location: str
    reference: str | None
    commit: str | None
    sha256: str
    content_digest: str
    dirty: bool | None = None       # a sibling checkout with uncommitted changes
    speculative: bool = False       # taken from a sibling checkout (--source-root)


# --------------------------------------------------------------------------- parsing


def parse_source(name: str, values: Mapping[str, str]) -> SourceSpec:
    """Validate one raw source section; unknown options are errors (typos would be silent)."""

    def fail(option: str, problem: str) -> SourceError:
        return SourceError(f"[{name}] {option}: {problem}", image=name)

    raw = {key.strip().lower(): value for key, value in values.items() if value is not None}
    for key in sorted(raw):
        if key not in SOURCE_KEYS:
            raise fail(key, f"unknown option; expected one of {', '.join(SOURCE_KEYS)}")
    check_name(name)
    kind = raw.get("type", "").strip().lower()
    if not kind:
        raise fail("type", f"missing; expected one of {', '.join(SOURCE_TYPES)}")
    if kind not in SOURCE_TYPES:
        raise fail("type", f"unknown source type {kind!r}; expected one of "
                           f"{', '.join(SOURCE_TYPES)}")
    location = raw.get("location", "").strip()
    if not location:
        raise fail("location", "missing")
    if kind == "url":
        scheme = urllib.parse.urlsplit(location).scheme.lower()
        if scheme not in URL_SCHEMES:
            raise fail("location", f"{scrub_url(location)} is not an http, https or file URL")
    reference = raw.get("reference", "").strip() or None
    if reference is not None and kind != "git":
        raise fail("reference", f"only git sources have a reference (type is {kind})")
    digest = raw.get("sha256", "").strip().lower() or None
    if digest is not None:
        if kind != "url":
            raise fail("sha256", f"only url sources have a sha256 (type is {kind})")
        if not _HEX64.fullmatch(digest):
            raise fail("sha256", "expected 64 hexadecimal characters")
    enabled_text = raw.get("enabled", "true").strip().lower()
    if enabled_text in _TRUE:
        enabled = True
    elif enabled_text in _FALSE:
        enabled = False
    else:
        raise fail("enabled", f"{enabled_text!r} is not a boolean (true/false/yes/no/1/0)")
    return SourceSpec(name=name, type=kind, location=location, reference=reference,
                      sha256=digest, enabled=enabled)


def check_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\0" in name or name != name.strip():
        raise SourceError(f"{name!r} is not a usable image name for a source", image=name)


def source_error(spec: SourceSpec, detail: str, hint: str | None = None) -> SourceError:
    location = scrub_url(spec.location)
    return SourceError(f"image {spec.name}, {spec.type} source {location}: {detail}",
                       image=spec.name, location=location, hint=hint)

