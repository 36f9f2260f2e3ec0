"""kiln renders Kolla's own tree as kolla-build 23.0.0 does: every Dockerfile, byte for byte.

Each test runs kiln-build (in-process) on the docker/ tree of the kolla
package installed in the throwaway venv, and compares with kolla-build's
output for the same base (see conftest: kolla-build runs in the background).
"""

from __future__ import annotations

import json

import pytest

from builder.templating.kolla.settings import unbuildable_images
from tests.kolla.conftest import CUSTOMIZED
from tests.kolla.kolla_env import (
    BASES,
    dockerfiles,
    kolla_parents,
    kolla_tag,
    parse_kolla_dependencies,
)


def kiln_args(install, base, config, cache, *more):
    # Kolla's namespace and tag given explicitly: kiln's defaults are its own
    return ["--config-file", config, "--template-api", "kolla",
            "--templates-dir", install.docker_dir, "--base", base,
            "--namespace", "kolla", "--tag", kolla_tag(base),
            "--template-cache-dir", cache, *more]


def kiln_dependencies(kiln, install, base, config, cache) -> dict:
    result = kiln("--list-dependencies", *kiln_args(install, base, config, cache))
    assert result.code == 0, result.err
    return json.loads(result.out)


def unbuildable_exclude(dependencies: dict, base: str) -> list[str]:
    """--exclude for the images kolla-build leaves out: Kolla's unbuildable ones
    and their descendants (kiln-build itself renders them)."""
    found = set()
    stack = [name for name in unbuildable_images(base, "x86_64") if name in dependencies]
    while stack:
        name = stack.pop()
        if name not in found:
            found.add(name)
            stack.extend(dependencies[name]["children"])
    return ["--exclude", "^(" + "|".join(sorted(found)) + ")$"] if found else []


def assert_same_dockerfiles(kolla: dict[str, bytes], kiln: dict[str, bytes]) -> None:
    assert sorted(kiln) == sorted(kolla), "the image lists differ"
    different = sorted(name for name in kolla if kolla[name] != kiln[name])
    if different:
        name = different[0]
        kolla_lines = kolla[name].decode().splitlines()
        kiln_lines = kiln[name].decode().splitlines()
        first = next((i for i, (a, b) in enumerate(zip(kolla_lines, kiln_lines, strict=False))
                      if a != b), min(len(kolla_lines), len(kiln_lines)))
        pytest.fail(f"{len(different)} Dockerfile(s) differ: {different[:10]}; "
                    f"{name} line {first + 1}: kolla-build "
                    f"{kolla_lines[first:first + 1]!r}, kiln {kiln_lines[first:first + 1]!r}")


@pytest.mark.parametrize("base", BASES)
def test_every_dockerfile_is_kolla_builds(base, kiln, kolla_install, kolla_runs,
                                          empty_config, kiln_cache, tmp_path):
    exclude = unbuildable_exclude(
        kiln_dependencies(kiln, kolla_install, base, empty_config, kiln_cache), base)
    work = tmp_path / "kiln"
    result = kiln("--template-only", "--work-dir", work,
                  *kiln_args(kolla_install, base, empty_config, kiln_cache, *exclude))
    assert result.code == 0, result.err
    kolla_runs.output(("render", base))
    kolla = dockerfiles(kolla_runs.work_dir(("render", base)))
    assert len(kolla) > 150
    assert_same_dockerfiles(kolla, dockerfiles(work))


@pytest.mark.parametrize("base", ["debian", "rocky"])
def test_overrides_and_docker_dir_give_kolla_builds_dockerfiles(base, kiln, kolla_install,
                                                                kolla_runs, empty_config,
                                                                kiln_cache, tmp_path):
    exclude = unbuildable_exclude(
        kiln_dependencies(kiln, kolla_install, base, empty_config, kiln_cache), base)
    work = tmp_path / "kiln"
    result = kiln("--template-only", "--work-dir", work,
                  *kiln_args(kolla_install, base, empty_config, kiln_cache,
                             *exclude, *CUSTOMIZED))
    assert result.code == 0, result.err
    kolla_runs.output(("customized", base))
    kolla = dockerfiles(kolla_runs.work_dir(("customized", base)))
    kiln_files = dockerfiles(work)
    assert_same_dockerfiles(kolla, kiln_files)
    # and the layer and the overrides did something (in both)
    assert b'layer="site"' in kiln_files["cron"]
    assert b" jq tcpdump htop" in kiln_files["site-tools"]
    assert b"site tools footer" in kiln_files["site-tools"]
    assert b'LABEL site="example"' in kiln_files["base"]
    assert b"site header for base" in kiln_files["base"]
    assert b'nova-compute footer' in kiln_files["nova-compute"]
    assert b"keystone footer" in kiln_files["keystone"]
    if base == "debian":
        assert b" tcpdump strace " in kiln_files["nova-compute"]
        assert b"just-this" in kiln_files["horizon"]
        assert b"haproxy.gpg" not in kiln_files["base"]
    else:
        assert b" vim-enhanced" in kiln_files["base"]


@pytest.mark.parametrize("base", BASES)
def test_every_image_has_kolla_builds_parent(base, kiln, kolla_install, kolla_runs,
                                             empty_config, kiln_cache):
    kolla_runs.output(("render", base))
    kolla = kolla_parents(dockerfiles(kolla_runs.work_dir(("render", base))),
                          "kolla", kolla_tag(base))
    dependencies = kiln_dependencies(kiln, kolla_install, base, empty_config, kiln_cache)
    assert set(kolla) <= set(dependencies)
    assert {name: dependencies[name]["parents"] for name in kolla} == {
        name: [parent] if parent else [] for name, parent in kolla.items()}
    assert [name for name, parent in kolla.items() if parent is None] == ["base"]


def test_list_dependencies_matches_kolla_builds(kiln, kolla_install, kolla_runs,
                                                empty_config, kiln_cache):
    kolla = parse_kolla_dependencies(kolla_runs.output(("dependencies", "rocky")))
    dependencies = kiln_dependencies(kiln, kolla_install, "rocky", empty_config, kiln_cache)
    exclude = unbuildable_exclude(dependencies, "rocky")
    result = kiln("--list-dependencies",
                  *kiln_args(kolla_install, "rocky", empty_config, kiln_cache, *exclude))
    assert result.code == 0, result.err
    kiln_parents = {name: entry["parents"] for name, entry in json.loads(result.out).items()}
    assert kiln_parents == {name: [parent] if parent else [] for name, parent in kolla.items()}
