"""Where kiln finds its built-in template set: installed, and in a checkout."""

from __future__ import annotations

from pathlib import Path

from builder.cli import conversions
from builder.resources import BUILTIN_TEMPLATES, builtin_templates
from builder.settings import TemplateSettings

ROOT = Path(__file__).resolve().parents[2]


def test_a_checkout_uses_its_top_level_templates():
    assert BUILTIN_TEMPLATES == ROOT / "templates"
    assert TemplateSettings().templates_dir == ROOT / "templates"
    # templates/ is the one source: no copy of it is kept inside the package.
    assert not (ROOT / "builder" / "templates").exists()


def _package(root: Path, *, packaged: bool, sibling: bool, project: bool) -> Path:
    package = root / "builder"
    package.mkdir(parents=True)
    if packaged:
        (package / "templates" / "base").mkdir(parents=True)
    if sibling:
        (root / "templates" / "base").mkdir(parents=True)
    if project:
        (root / "pyproject.toml").write_text("[project]\n")
    return package


def test_an_installed_package_uses_its_packaged_copy(tmp_path):
    package = _package(tmp_path, packaged=True, sibling=True, project=False)
    assert builtin_templates(package) == package / "templates"


def test_a_stray_templates_directory_in_site_packages_is_not_the_set(tmp_path):
    package = _package(tmp_path, packaged=False, sibling=True, project=False)
    assert builtin_templates(package) == package / "templates"


def test_the_packaged_copy_wins_over_the_checkout(tmp_path):
    package = _package(tmp_path, packaged=True, sibling=True, project=True)
    assert builtin_templates(package) == package / "templates"


def test_a_missing_set_is_one_error_naming_where_it_belongs(tmp_path, kiln, monkeypatch):
    package = _package(tmp_path, packaged=False, sibling=False, project=False)
    missing = builtin_templates(package)
    assert missing == package / "templates"
    monkeypatch.setattr(conversions, "BUILTIN_TEMPLATES", missing)
    result = kiln("--list-images")
    assert result.code == 2
    assert str(missing) in result.err
    assert len(result.err.strip().splitlines()) == 1, result.err
