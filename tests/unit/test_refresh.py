"""--refresh, --refresh-all and --max-age: the duration parser, which images a
refresh picks from their labels, fingerprints and manifests, and bad input."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest

from builder.build.labels import (
    FINGERPRINT,
    MANIFEST,
    PACKAGES,
    PACKAGES_SCAN,
    SCANNED,
    ImageInputs,
    fingerprint,
    manifest_document,
)
from builder.build.refresh import CREATED, Refresh, decide_refreshes, parse_duration
from builder.engines.base import ImageInfo
from builder.security.versions import parse_constraint
from builder.settings import RefreshRequest
from tests.conftest import FAMILY

NOW = "2026-11-22T12:00:00+00:00"


class FakeEngine:
    """Only what decide_refreshes asks: inspect a reference."""

    name = "fake"

    def __init__(self, images: dict[str, ImageInfo]):
        self.images = images
        self.inspected: list[str] = []

    def inspect(self, ref: str) -> ImageInfo | None:
        self.inspected.append(ref)
        return self.images.get(ref)


def stamped(ref: str, packages: dict | None, created: str = "2026-11-21T12:00:00+00:00",
            manifest: dict | None = None) -> ImageInfo:
    labels = {FINGERPRINT: "sha256:" + "1" * 64, CREATED: created,
              MANIFEST: json.dumps(manifest or {"image": ref}), PACKAGES_SCAN: SCANNED}
    if packages is not None:
        labels[PACKAGES] = json.dumps(packages)
    else:
        del labels[PACKAGES_SCAN]
    return ImageInfo(id="sha256:" + "2" * 64, tags=(ref,), labels=labels)


DEBIAN = {"deb": {"base-files": "12.4", "less": "590-2.1~deb12u2", "libc6": "2.36-9"}}
NO_LESS = {"deb": {"base-files": "12.4", "libc6": "2.36-9"}}


# -- durations --------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [
    ("30m", 1800), ("12h", 43200), ("7d", 7 * 86400), ("2w", 14 * 86400),
    ("1d12h", 86400 + 43200), (" 90S ", 90)])
def test_durations(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "7", "d", "7x", "7 d", "-1d", "1.5h", "week", "0d"])
def test_bad_durations(text):
    with pytest.raises(ValueError) as caught:
        parse_duration(text)
    assert "duration" in str(caught.value)


# -- which images -----------------------------------------------------------------------

def test_refresh_picks_the_images_holding_a_matching_package(caplog):
    engine = FakeEngine({"ns/base:t": stamped("ns/base:t", NO_LESS),
                         "ns/tools:t": stamped("ns/tools:t", DEBIAN),
                         "ns/old:t": stamped("ns/old:t", {"deb": {"less": "551-1"}})})
    refs = {"base": "ns/base:t", "tools": "ns/tools:t", "old": "ns/old:t"}
    found = decide_refreshes(engine, refs,
                             RefreshRequest(constraints=(parse_constraint("less>=590"),)), NOW)
    assert found == {"tools": Refresh(date=NOW, reason="less>=590", now=True)}
    assert sorted(engine.inspected) == sorted(refs.values())   # one inspect per image
    assert not caplog.records
    anything = decide_refreshes(engine, refs,
                                RefreshRequest(constraints=(parse_constraint("less"),)), NOW)
    assert sorted(anything) == ["old", "tools"]


def test_unknown_packages_and_missing_images_are_refreshed_with_a_warning(caplog):
    engine = FakeEngine({"ns/unknown:t": stamped("ns/unknown:t", None),
                         "ns/plain:t": stamped("ns/plain:t", NO_LESS)})
    refs = {"unknown": "ns/unknown:t", "absent": "ns/absent:t", "plain": "ns/plain:t"}
    with caplog.at_level(logging.WARNING):
        found = decide_refreshes(engine, refs, RefreshRequest(
            constraints=(parse_constraint("less"),)), NOW)
    assert sorted(found) == ["absent", "unknown"]
    assert found["unknown"].reason == "less (packages unknown)" and found["unknown"].now
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert any("image unknown: refreshed for --refresh less because its packages are "
               "unknown: it has no kiln.packages label" in w for w in warnings)
    assert any("image absent:" in w and "no local image" in w for w in warnings)


def test_max_age_and_refresh_all():
    engine = FakeEngine({
        "ns/day:t": stamped("ns/day:t", NO_LESS, created="2026-11-21T12:00:00+00:00"),
        "ns/month:t": stamped("ns/month:t", NO_LESS, created="2026-10-22T12:00:00+00:00"),
        "ns/naive:t": stamped("ns/naive:t", NO_LESS, created="2026-11-01T00:00:00"),
        "ns/undated:t": stamped("ns/undated:t", NO_LESS, created="")})
    refs = {n: f"ns/{n}:t" for n in ("day", "month", "naive", "undated")}
    found = decide_refreshes(engine, refs, RefreshRequest(max_age=timedelta(days=7)), NOW)
    assert {n: r.reason for n, r in found.items()} == {
        "month": "older than 1w", "naive": "older than 1w",
        "undated": "older than 1w (build time unknown)"}
    assert decide_refreshes(engine, refs, RefreshRequest(max_age=timedelta(weeks=8)),
                            NOW).keys() == {"undated"}
    everything = decide_refreshes(engine, refs, RefreshRequest(all=True), NOW)
    assert {r.reason for r in everything.values()} == {"--refresh-all"}
    assert everything.keys() == refs.keys()


def test_an_earlier_refresh_is_carried_so_the_next_run_finds_the_image_unchanged():
    record = {"date": "2026-11-20T08:00:00+00:00", "reason": "less"}
    engine = FakeEngine({"ns/tools:t": stamped("ns/tools:t", DEBIAN,
                                               manifest={"image": "tools",
                                                         "refreshed": record}),
                         "ns/base:t": stamped("ns/base:t", NO_LESS)})
    refs = {"tools": "ns/tools:t", "base": "ns/base:t"}
    assert decide_refreshes(engine, refs, RefreshRequest(), NOW) == {
        "tools": Refresh(date=record["date"], reason="less", now=False)}
    # refreshed again: the new date wins
    again = decide_refreshes(engine, refs, RefreshRequest(all=True), NOW)
    assert again["tools"] == Refresh(date=NOW, reason="--refresh-all", now=True)


def test_the_refresh_date_changes_the_fingerprint_and_is_in_the_manifest():
    inputs = ImageInputs(name="tools", context_digests={"Dockerfile": "644:ab"})
    plain = fingerprint(inputs)
    refreshed = fingerprint(ImageInputs(name="tools", context_digests={"Dockerfile": "644:ab"},
                                        refreshed=NOW))
    later = fingerprint(ImageInputs(name="tools", context_digests={"Dockerfile": "644:ab"},
                                    refreshed="2026-11-23T12:00:00+00:00"))
    assert len({plain, refreshed, later}) == 3
    # a parent's refresh reaches its children through the parent's fingerprint
    child = [fingerprint(ImageInputs(name="app", context_digests={"Dockerfile": "644:cd"},
                                     parents={"tools": fp})) for fp in (plain, refreshed)]
    assert child[0] != child[1]
    document = manifest_document(name="tools", layers=[], templates={}, sources=(),
                                 parents=[], bases={}, build_args={},
                                 refreshed=Refresh(NOW, "less").record())
    assert document["refreshed"] == {"date": NOW, "reason": "less"}
    assert "refreshed" not in manifest_document(name="tools", layers=[], templates={},
                                                sources=(), parents=[], bases={},
                                                build_args={})


# -- bad input on the command line -------------------------------------------------------

def _error(result) -> str:
    lines = [line for line in result.err.splitlines() if ": error: " in line]
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    return lines[0]


@pytest.mark.parametrize(("args", "expected"), [
    (["--refresh", "less>>1"], "--refresh: invalid package constraint 'less>>1': unknown "
                               "operator '>>'"),
    (["--refresh", "less", "--refresh", "openssl<"],
     "--refresh: invalid package constraint 'openssl<': the operator < needs a version"),
    (["--refresh", "deb:less<x.y"], "--refresh: invalid package constraint 'deb:less<x.y'"),
    (["--max-age", "7x"], "--max-age '7x': not a duration: give a number and a unit"),
    (["--max-age", "0h"], "--max-age '0h': no time at all"),
])
def test_bad_refresh_options_exit_2_naming_them(kiln, args, expected):
    result = kiln("--templates-dir", FAMILY, "--engine", "no-such-engine", *args)
    assert result.code == 2
    assert expected in _error(result)


def test_bad_max_age_in_a_config_file_names_the_file_and_line(kiln, tmp_path):
    conf = tmp_path / "kiln.conf"
    conf.write_text("[DEFAULT]\nthreads = 2\nmax_age = soon\n")
    result = kiln("--templates-dir", FAMILY, "--config-file", conf, "--list-images")
    assert result.code == 2
    assert f"{conf}:3: [DEFAULT] max_age = 'soon': not a duration" in _error(result)


def test_good_refresh_options_reach_the_settings(tmp_path):
    from builder.cli.options import load

    conf = tmp_path / "kiln.conf"
    conf.write_text("[DEFAULT]\nmax_age = 7d\n")
    settings = load(["--templates-dir", str(FAMILY), "--config-file", str(conf),
                     "--refresh", "less>=590", "--refresh", "pypi:requests<2.32"])
    request = settings.run.refresh
    assert [str(c) for c in request.constraints] == ["less>=590", "pypi:requests<2.32"]
    assert request.max_age == timedelta(days=7) and not request.all and request
    assert not load(["--templates-dir", str(FAMILY)]).run.refresh
