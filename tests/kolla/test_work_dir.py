"""kiln's work dir holds what kolla-build's does: every file of every build context.

kolla-build --template-only and kiln-build --template-api kolla --template-only
with the same config (plugins, additions, a patches dir, an apt sources list
and apt preferences: see ``drop_in``), override files and --docker-dir layers,
for each of Kolla's bases: every file kolla-build writes in an image's
directory is in kiln's build context of that image, same content, same mode;
and kiln writes nothing else but its own two files.

Where the trees differ by design (README, "Coming from kolla-build"):
kolla-build's work dir is ``docker/<group>/<image>/``, a copy of the whole
template tree; kiln's is ``<image>/``, the build contexts alone: the
templates (each image's ``Dockerfile.j2``, ``macros.j2``) and the empty group
directories are not copied, nor a ``__pycache__`` pip left in an installed
kolla's tree. Archives (plugins, additions, sources) are made only when
building, by both tools: see test_kolla_archives.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.kolla.conftest import CUSTOMIZED
from tests.kolla.drop_in import make_drop_in
from tests.kolla.kolla_env import BASES, finish, start_kolla_build
from tests.kolla.test_compat import kiln_args, kiln_dependencies, unbuildable_exclude

KILN_OWN = {".kiln-work-dir", ".kiln-lock"}  # the work dir's marker and lock


@pytest.fixture(scope="module")
def drop_in(tmp_path_factory):
    return make_drop_in(tmp_path_factory.mktemp("drop-in"))


@pytest.fixture(scope="module")
def kolla_trees(kolla_install, drop_in, tmp_path_factory):
    """kolla-build --template-only for each base, all started at once."""
    root = tmp_path_factory.mktemp("kolla-work")
    args = (*CUSTOMIZED, "--docker-dir", str(drop_in.probe_layer))
    runs = {base: start_kolla_build(kolla_install, root / base,
                                    ("--template-only", "--base", base, *args),
                                    drop_in.config)
            for base in BASES}
    yield {base: (process, root / base) for base, process in runs.items()}
    for process in runs.values():
        if process.poll() is None:
            process.kill()
            process.wait()


def entry(path: Path) -> tuple:
    info = os.lstat(path)
    if stat.S_ISDIR(info.st_mode):
        return ("dir", stat.S_IMODE(info.st_mode))
    if stat.S_ISLNK(info.st_mode):
        return ("link", os.readlink(path))
    return ("file", stat.S_IMODE(info.st_mode), path.read_bytes())


def kolla_tree(work_dir: Path) -> tuple[dict[str, tuple], list[str]]:
    """kolla-build's build contexts as ``<image>/<path>``; and what lies outside them."""
    docker = work_dir / "docker"
    images = {path.parent for path in docker.rglob("Dockerfile")}
    tree, outside = {}, []
    for current, dirnames, filenames in os.walk(docker):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        here = Path(current)
        image = next((p for p in (here, *here.parents) if p in images), None)
        for name in (*dirnames, *filenames):
            path = here / name
            if image is None:
                if path not in images:
                    outside.append(path.relative_to(docker).as_posix()
                                   + ("/" if path.is_dir() else ""))
                continue
            if here == image and name == "Dockerfile.j2":
                continue  # the template
            tree[f"{image.name}/{path.relative_to(image).as_posix()}"] = entry(path)
    return tree, outside


def kiln_tree(work_dir: Path) -> dict[str, tuple]:
    tree = {}
    for current, dirnames, filenames in os.walk(work_dir):
        for name in (*dirnames, *filenames):
            path = Path(current) / name
            relpath = path.relative_to(work_dir).as_posix()
            if relpath in KILN_OWN:
                continue
            if "/" in relpath:
                tree[relpath] = entry(path)
    return tree


@pytest.mark.parametrize("base", BASES)
def test_kiln_writes_every_file_kolla_build_writes(base, kiln, kolla_install, kolla_trees,
                                                   drop_in, empty_config, kiln_cache,
                                                   tmp_path):
    exclude = unbuildable_exclude(
        kiln_dependencies(kiln, kolla_install, base, empty_config, kiln_cache), base)
    work = tmp_path / "kiln"
    result = kiln("--template-only", "--work-dir", work,
                  *kiln_args(kolla_install, base, drop_in.config, kiln_cache, *exclude,
                             *CUSTOMIZED, "--docker-dir", drop_in.probe_layer))
    assert result.code == 0, result.err
    process, kolla_work = kolla_trees[base]
    finish(process, kolla_work)
    kolla, outside = kolla_tree(kolla_work)
    ours = kiln_tree(work)

    # outside the build contexts kolla-build has only templates and group directories
    assert outside and all(p.endswith(("/", ".j2")) for p in outside), outside
    # the top of kiln's work dir: one directory per image, and kiln's own files
    top = {p.name for p in work.iterdir()}
    assert top - KILN_OWN == {name.split("/")[0] for name in kolla}
    assert top & KILN_OWN == KILN_OWN
    missing = sorted(set(kolla) - set(ours))
    extra = sorted(set(ours) - set(kolla))
    different = sorted(p for p in set(kolla) & set(ours) if kolla[p] != ours[p])
    assert not missing, f"{len(missing)} path(s) kolla-build writes, kiln not: {missing[:20]}"
    assert not extra, f"{len(extra)} path(s) kiln writes, kolla-build not: {extra[:20]}"
    assert not different, (f"{len(different)} path(s) differ: {different[:10]}; "
                           f"{different[0]}: kolla-build {kolla[different[0]]!r:.200}, "
                           f"kiln {ours[different[0]]!r:.200}")

    # and the inputs did reach the tree (in both)
    assert ours["keystone/patches/series"][2].startswith(b"# keystone patches")
    assert {p for p in ours if p.startswith("keystone/patches")} == {
        "keystone/patches", "keystone/patches/series", "keystone/patches/fix-one.patch",
        "keystone/patches/fix-two.patch"}
    assert ours["nova-api/patches"] == ("dir", 0o755)
    assert ours["base/sources.list"][2] == b"deb http://mirror.example.org/debian trixie main\n"
    assert ours["base/apt_preferences"][2].startswith(b"Package: *")
    assert ours["base/patches/base.patch"][2] == b"--- base\n"
    assert "archive-probe/Dockerfile" in ours and "site-tools/Dockerfile" in ours
