"""kiln's work dir is kolla-build's: the same files at the same paths.

kolla-build --template-only and kiln-build --template-api kolla --template-only
with the same config (plugins, additions, a patches dir, an apt sources list
and apt preferences: see ``drop_in``), override files and --docker-dir layers,
for each of Kolla's bases: both write ``docker/<group>/<image>/``, and every
directory, file and link kolla-build writes under ``docker/`` kiln writes at
the same relative path, with the same content and mode, and nothing else;
beside ``docker/`` kiln has only its own two files (README, "Coming from
kolla-build").

Left out of the comparison: ``__pycache__`` directories. They are not
kolla-build's: pip writes them next to the ``.py`` scripts of an installed
kolla's tree, and kolla-build copies the tree as it finds it (a git checkout
has none); kiln never copies them. Archives (plugins, additions, sources) are
made only when building, by both tools: see test_kolla_archives.
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


def tree(root: Path) -> dict[str, tuple]:
    """Every directory, file and link under ``root`` -> what it is (content and mode);
    ``__pycache__`` directories left out (see the module's notes)."""
    found = {}
    for current, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in (*dirnames, *filenames):
            path = Path(current) / name
            found[path.relative_to(root).as_posix()] = entry(path)
    return found


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
    kolla, ours = tree(kolla_work / "docker"), tree(work / "docker")

    # the top of both work dirs: docker/, and kiln's own files
    assert {p.name for p in kolla_work.iterdir()} == {"docker"}
    assert {p.name for p in work.iterdir()} == {"docker"} | KILN_OWN
    missing = sorted(set(kolla) - set(ours))
    extra = sorted(set(ours) - set(kolla))
    different = sorted(p for p in set(kolla) & set(ours) if kolla[p] != ours[p])
    assert not missing, f"{len(missing)} path(s) kolla-build writes, kiln not: {missing[:20]}"
    assert not extra, f"{len(extra)} path(s) kiln writes, kolla-build not: {extra[:20]}"
    assert not different, (f"{len(different)} path(s) differ: {different[:10]}; "
                           f"{different[0]}: kolla-build {kolla[different[0]]!r:.200}, "
                           f"kiln {ours[different[0]]!r:.200}")

    # and the inputs did reach the tree (in both)
    assert len([p for p in ours if p.endswith("/Dockerfile")]) > 150
    assert "macros.j2" in ours and "keystone/keystone/Dockerfile.j2" in ours
    assert ours["keystone/keystone/patches/series"][2].startswith(b"# keystone patches")
    patches = "keystone/keystone/patches"
    assert {p for p in ours if p.startswith(patches)} == {
        patches, f"{patches}/series", f"{patches}/fix-one.patch", f"{patches}/fix-two.patch"}
    assert ours["nova/nova-api/patches"] == ("dir", 0o755)
    assert ours["base/sources.list"][2] == b"deb http://mirror.example.org/debian trixie main\n"
    assert ours["base/apt_preferences"][2].startswith(b"Package: *")
    assert ours["base/patches/base.patch"][2] == b"--- base\n"
    assert "archive-probe/Dockerfile" in ours and "site/site-tools/Dockerfile" in ours
