"""Kolla's non-template context files (patches, apt files) and which image a
plugin or addition section belongs to; the real comparisons with kolla-build
are in tests/kolla (test_work_dir, test_kolla_archives)."""

from __future__ import annotations

import pytest

from builder.build.sources.sections import assign_extras
from builder.build.sources.spec import SourceSpec
from builder.errors import ConfigError
from builder.templating.kolla.context import context_additions, patch_files
from builder.templating.kolla.settings import kolla_settings


def spec(name: str) -> SourceSpec:
    return SourceSpec(name=name, type="local", location="/nowhere")


def test_plugins_and_additions_go_to_the_image_kolla_build_gives_them():
    sources = {name: spec(name) for name in (
        "neutron-server", "neutron-server-plugin-sfc", "neutron-server-plugin-vpnaas",
        "neutron-plugin-x", "horizon-additions-theme", "horizon-additions-",
        "nova-plugin-y", "glance")}
    extras, orphans = assign_extras(["neutron-server", "neutron-base", "horizon"], sources)
    assert [s.name for s in extras["neutron-server"].plugins] == [
        "neutron-server-plugin-sfc", "neutron-server-plugin-vpnaas"]
    assert extras["neutron-server"].additions == ()
    assert [s.name for s in extras["horizon"].additions] == ["horizon-additions-theme"]
    assert extras["neutron-base"].plugins == ()
    # no image "neutron" nor "nova": warned about; "glance" is an image's own section
    assert orphans == ["neutron-plugin-x", "nova-plugin-y"]


def test_patches_as_kolla_build_copies_them(tmp_path):
    folder = tmp_path / "keystone"
    folder.mkdir()
    (folder / "series").write_text("# comment\none.patch\n\nmissing.patch\nsub/two.patch\n")
    (folder / "one.patch").write_text("1")
    (folder / "sub").mkdir()
    (folder / "sub" / "two.patch").write_text("2")
    (folder / "unlisted.patch").write_text("3")
    assert patch_files(folder) == {"patches/series": folder / "series",
                                   "patches/one.patch": folder / "one.patch",
                                   "patches/sub/two.patch": folder / "sub" / "two.patch"}
    assert patch_files(tmp_path / "nova") == {}


def test_a_patch_outside_its_folder_is_refused(tmp_path):
    folder = tmp_path / "keystone"
    folder.mkdir()
    (folder / "series").write_text("ok.patch\n../../etc/passwd\n")
    with pytest.raises(ConfigError) as caught:
        patch_files(folder)
    assert caught.value.line == 2 and caught.value.path == str(folder / "series")


def test_every_image_gets_patches_and_base_the_apt_files(tmp_path):
    sources = tmp_path / "sources.list"
    sources.write_text("deb x\n")
    additions = context_additions(kolla_settings(
        "debian", patches_path=str(tmp_path / "no-such-dir"), apt_sources_list=str(sources)))
    assert additions("nova-api").dirs == ("patches",)
    assert additions("nova-api").files == {}
    assert additions("base").files == {"sources.list": sources}
