"""Version manifests on the real engine: labels, unchanged images, incremental
rebuilds, --rebuild, and kiln-registry inspect/diff."""

from __future__ import annotations

import json
import shutil
from datetime import datetime

import git

from builder.build.labels import FINGERPRINT
from builder.cli.registry import main as registry_main
from tests.integration.conftest import BUILDSET
from tests.integration.test_build import by_name

OCI = "org.opencontainers.image."


def labels_of(engine, ref):
    info = engine.inspect(ref)
    assert info is not None, ref
    return info.labels


def test_labels_on_built_images(build, docker_engine, server, tmp_path):
    upstream = tmp_path / "upstream"
    repo = git.Repo.init(upstream)
    (upstream / "README").write_text("v1\n")
    repo.index.add(["README"])
    commit = repo.index.commit("one").hexsha
    server.files["file.txt"] = b"payload\n"
    config = f"""
[src-git]
type = git
location = {upstream}
[src-url]
type = url
location = http://builder:s3cr3t@127.0.0.1:{server.port}/files/file.txt
"""
    result, summary = build("^(multi|src-git|src-url|pkgs)$",
                            "--label-vendor", "Example Corp", "--label-licenses", "Apache-2.0",
                            "--build-args", "GREETING=hi", "--build-args", "API_TOKEN=tok-123",
                            config=config)
    assert result.code == 0, result.out + result.err
    built = by_name(summary, "built")
    assert sorted(built) == ["base", "leaf", "mid", "multi", "other", "pkgs", "src-git",
                             "src-url"]
    everything = {}
    for name, entry in built.items():
        labels = labels_of(docker_engine, entry["image"])
        everything[name] = labels
        assert labels[FINGERPRINT].startswith("sha256:") and len(labels[FINGERPRINT]) == 71
        assert labels[f"{OCI}title"] == name
        assert labels[f"{OCI}version"] == "latest"
        assert labels[f"{OCI}vendor"] == "Example Corp"
        assert labels[f"{OCI}licenses"] == "Apache-2.0"
        datetime.fromisoformat(labels[f"{OCI}created"])
        manifest = json.loads(labels["kiln.manifest"])
        assert manifest["image"] == name
        # only what the Dockerfile declares, never a secret
        assert manifest["build_args"] == ({"GREETING": "hi"} if name == "leaf" else {})
        assert f"base:{name}/Dockerfile.j2" in manifest["templates"]
        assert "tok-123" not in json.dumps(labels) and "s3cr3t" not in json.dumps(labels)
    # parents: reference, fingerprint and id of what the image was built on
    multi = json.loads(everything["multi"]["kiln.manifest"])
    assert {p["name"] for p in multi["parents"]} == {"leaf", "other"}
    for parent in multi["parents"]:
        assert parent["id"] == built[parent["name"]]["id"]
        assert parent["fingerprint"] == everything[parent["name"]][FINGERPRINT]
    leaf = everything["leaf"]
    assert leaf[f"{OCI}base.name"] == built["mid"]["image"]
    assert leaf[f"{OCI}base.digest"] == built["mid"]["id"]
    # sources: the resolved commit, the scrubbed location
    git_source = json.loads(everything["src-git"]["kiln.manifest"])["sources"][0]
    assert git_source["commit"] == commit and git_source["type"] == "git"
    url_source = json.loads(everything["src-url"]["kiln.manifest"])["sources"][0]
    assert url_source["location"] == f"http://127.0.0.1:{server.port}/files/file.txt"
    # packages found by running the image
    assert json.loads(everything["pkgs"]["kiln.packages"]) == {
        "deb": {"curl": "7.88.1-10", "openssl": "3.0.11-1", "zlib1g": "1:1.2.13-1"}}
    assert json.loads(everything["base"]["kiln.packages"]) == {}


def _copy_set(tmp_path):
    target = tmp_path / "set"
    shutil.copytree(BUILDSET, target)
    return target


def _statuses(summary):
    return {e["name"]: e["status"] for key in ("built", "unchanged") for e in summary[key]}


def test_unchanged_and_incremental_rebuilds(build, docker_engine, tmp_path):
    templates = _copy_set(tmp_path)
    first, summary1 = build("^multi$", templates=templates)
    assert first.code == 0, first.out
    ids1 = {e["name"]: e["id"] for e in summary1["built"]}
    family = {"base", "mid", "leaf", "other", "multi"}
    assert set(ids1) == family

    again, summary2 = build("^multi$", templates=templates)
    assert again.code == 0
    assert _statuses(summary2) == dict.fromkeys(family, "unchanged")
    assert {e["name"]: e["id"] for e in summary2["unchanged"]} == ids1
    for name in family:  # nothing new was made: the tags still name the first images
        assert docker_engine.inspect(f"{build.namespace}/{name}:latest").id == ids1[name]

    (templates / "multi" / "multi.txt").write_text("changed leaf file\n")
    _, summary3 = build("^multi$", templates=templates)
    assert _statuses(summary3) == {**dict.fromkeys(family, "unchanged"), "multi": "built"}
    assert docker_engine.run(f"{build.namespace}/multi:latest", ["cat", "/multi.txt"]) == \
        "changed leaf file\n"

    (templates / "mid" / "mid.conf").write_text("mid config, edited\n")
    _, summary4 = build("^multi$", templates=templates)
    assert _statuses(summary4) == {"base": "unchanged", "other": "unchanged",
                                   "mid": "built", "leaf": "built", "multi": "built"}

    _, summary5 = build("^multi$", "--rebuild", templates=templates)
    assert _statuses(summary5) == dict.fromkeys(family, "built")


def test_changed_build_arg_and_tag_move(build, docker_engine):
    first, summary = build("^leaf$", "--build-args", "GREETING=one")
    assert first.code == 0
    second, summary = build("^leaf$", "--build-args", "GREETING=two")
    assert _statuses(summary) == {"base": "unchanged", "mid": "unchanged", "leaf": "built"}
    build.tags.append("v2")
    third, summary = build("^leaf$", "--build-args", "GREETING=two", "--tag", "v2")
    # A new tag of the same inputs: the existing image is tagged, not rebuilt.
    assert _statuses(summary) == {"base": "unchanged", "mid": "unchanged", "leaf": "unchanged"}
    assert docker_engine.inspect(f"{build.namespace}/leaf:v2") is not None


def test_inspect_and_diff(build, capsys, tmp_path):
    templates = _copy_set(tmp_path)
    build.tags.extend(["a", "b"])
    assert build("^pkgs$", "--tag", "a", templates=templates)[0].code == 0
    (templates / "pkgs" / "packages.txt").write_text(
        "curl 7.88.1-10\nopenssl 3.0.13-1\nzlib1g 1:1.2.13-1\n")
    assert build("^pkgs$", "--tag", "b", templates=templates)[0].code == 0
    ref_a, ref_b = f"{build.namespace}/pkgs:a", f"{build.namespace}/pkgs:b"

    assert registry_main(["diff", ref_a, ref_b, "--format", "json"]) == 0
    diff = json.loads(capsys.readouterr().out)
    assert diff["packages"] == {"deb": {"added": {}, "removed": {},
                                        "changed": {"openssl": {"a": "3.0.11-1",
                                                                "b": "3.0.13-1"}}}}
    assert not diff["fingerprint"]["same"]
    assert diff["parents"] == {} and diff["sources"] == {}

    assert registry_main(["diff", ref_a, ref_b]) == 0
    text = capsys.readouterr().out
    package_lines = [line for line in text.splitlines() if line.startswith(("+ ", "- ", "~ deb"))]
    assert package_lines == ["~ deb openssl 3.0.11-1 -> 3.0.13-1"]

    assert registry_main(["inspect", ref_b]) == 0
    shown = capsys.readouterr().out
    assert "deb openssl 3.0.13-1" in shown and "fingerprint: sha256:" in shown
    assert registry_main(["inspect", ref_b, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["packages"]["deb"]["openssl"] == "3.0.13-1"


def test_inspect_errors(capsys, docker_engine, busybox_base):
    assert registry_main(["inspect", "kiln-test/does-not-exist:1"]) == 2
    assert "no image kiln-test/does-not-exist:1 in the local docker engine" in \
        capsys.readouterr().err
    assert registry_main(["inspect", busybox_base]) == 2
    assert "carries no kiln.fingerprint label" in capsys.readouterr().err
