"""Fingerprints and labels: properties (hypothesis) and decoding."""

from __future__ import annotations

import os
import random
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from builder.build.labels import (
    ImageInputs,
    digest_tree,
    fingerprint,
    parse_packages,
    public_build_args,
)
from builder.build.sources.spec import PreparedSource
from builder.publish.compare import diff_images, is_empty

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_./0123456789", min_size=1, max_size=12)
values = st.text(min_size=0, max_size=16)
sources = st.lists(st.builds(
    PreparedSource, name=names, archive=st.just(Path("/x")), type=st.sampled_from(
        ["git", "url", "local"]), location=values, reference=st.none() | values,
    commit=st.none() | values, sha256=values, content_digest=values),
    max_size=3, unique_by=lambda s: s.name)
inputs = st.builds(
    ImageInputs, name=names,
    context_digests=st.dictionaries(names, values, max_size=6),
    sources=sources,
    parents=st.dictionaries(names, values, max_size=3),
    bases=st.dictionaries(names, st.none() | values, max_size=3),
    build_args=st.dictionaries(names, values, max_size=3),
    static_labels=st.dictionaries(names, values, max_size=3))


def shuffled(mapping, rng):
    items = list(mapping.items())
    rng.shuffle(items)
    return dict(items)


@settings(max_examples=200)
@given(inputs, st.randoms())
def test_fingerprint_ignores_order_of_unordered_inputs(image, rng):
    reordered = ImageInputs(
        name=image.name,
        context_digests=shuffled(image.context_digests, rng),
        sources=rng.sample(list(image.sources), len(image.sources)),
        parents=shuffled(image.parents, rng),
        bases=shuffled(image.bases, rng),
        build_args=shuffled(image.build_args, rng),
        static_labels=shuffled(image.static_labels, rng))
    assert fingerprint(reordered) == fingerprint(image)


MAPPINGS = ("context_digests", "parents", "bases", "build_args", "static_labels")


@settings(max_examples=300)
@given(inputs, st.sampled_from(MAPPINGS + ("name", "sources")), st.data())
def test_fingerprint_changes_when_any_single_input_changes(image, field, data):
    fields = {f: getattr(image, f) for f in ("name", "sources") + MAPPINGS}
    if field == "name":
        fields["name"] = data.draw(names.filter(lambda n: n != image.name))
    elif field == "sources":
        if image.sources and data.draw(st.booleans()):
            first = image.sources[0]
            fields["sources"] = (PreparedSource(**{**first.__dict__,
                                                   "commit": (first.commit or "") + "x"}),
                                 *image.sources[1:])
        else:
            extra = data.draw(sources.filter(lambda s: len(s) == 1 and s[0].name not in
                                             {x.name for x in image.sources}))
            fields["sources"] = (*image.sources, *extra)
    else:
        mapping = dict(fields[field])
        if mapping and data.draw(st.booleans()):
            key = data.draw(st.sampled_from(sorted(mapping)))
            if data.draw(st.booleans()):
                del mapping[key]
            else:
                mapping[key] = (mapping[key] or "") + "!"
        else:
            key = data.draw(names.filter(lambda k: k not in mapping))
            mapping[key] = data.draw(values)
        fields[field] = mapping
    assert fingerprint(ImageInputs(**fields)) != fingerprint(image)


def test_fingerprint_is_stable_across_runs():
    image = ImageInputs(name="a", context_digests={"Dockerfile": "644:ab"},
                        parents={"base": "sha256:1"}, bases={"debian": None})
    assert fingerprint(image) == fingerprint(image)
    assert fingerprint(image).startswith("sha256:")


def test_digest_tree_counts_content_and_mode_not_time(tmp_path):
    (tmp_path / "a").write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "run.sh").write_text("#!/bin/sh\n")
    first = digest_tree(tmp_path)
    os.utime(tmp_path / "a", (1, 1))
    assert digest_tree(tmp_path) == first
    (tmp_path / "sub" / "run.sh").chmod(0o755)
    second = digest_tree(tmp_path)
    assert second["sub/run.sh"].startswith("755:") and second["a"] == first["a"]


def test_public_build_args_drop_secrets_and_proxies():
    args = {"GREETING": "hi", "API_TOKEN": "t", "db_password": "p", "HTTP_PROXY": "http://x",
            "https_proxy": "http://u:p@proxy:3128", "MIRROR": "http://user:pw@mirror/x"}
    assert public_build_args(args, ["*TOKEN*", "*PASSWORD*"]) == {
        "GREETING": "hi", "MIRROR": "http://mirror/x"}


def test_parse_packages():
    output = "deb curl 7.88\npypi requests 2.31\napk musl-1.2.4-r2\nnoise\n"
    assert parse_packages(output) == {"apk": {"musl": "1.2.4-r2"}, "deb": {"curl": "7.88"},
                                      "pypi": {"requests": "2.31"}}


def test_diff_of_identical_is_empty_and_random_changes_show():
    rng = random.Random(3)
    a = {"fingerprint": "f", "packages": {"deb": {f"p{i}": "1" for i in range(20)}},
         "manifest": {"parents": [{"name": "base", "fingerprint": "x", "id": "1"}]}}
    assert is_empty(diff_images(a, a))
    b = {"fingerprint": "g", "packages": {"deb": dict(a["packages"]["deb"])},
         "manifest": {"parents": [{"name": "base", "fingerprint": "x", "id": "2"}]}}
    changed = rng.choice(sorted(b["packages"]["deb"]))
    b["packages"]["deb"][changed] = "2"
    diff = diff_images(a, b)
    assert diff["packages"] == {"deb": {"added": {}, "removed": {},
                                        "changed": {changed: {"a": "1", "b": "2"}}}}
    assert diff["parents"] == {}  # same fingerprint, another id: not a difference
