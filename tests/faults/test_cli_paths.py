"""Output paths a run cannot use are one error line and exit 2, found before
anything is built; --save-dependency never writes DOT into an image file."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import FAMILY, error_line

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "a-file"
    path.write_text("not a directory")
    return path


def build(kiln, work, *args):
    # an engine that cannot load: reaching it would be a different error, so
    # these errors are shown to come before the engine and any build
    return kiln("--templates-dir", FAMILY, "--work-dir", work, "--engine", "no-such-engine",
                *args, "^base$")


def test_a_logs_dir_that_is_a_file(kiln, a_file, tmp_path):
    result = build(kiln, tmp_path / "w", "--logs-dir", a_file)
    assert result.code == 2
    assert f"--logs-dir {a_file} exists and is not a directory" in error_line(result)


def test_a_logs_dir_under_a_file(kiln, a_file, tmp_path):
    result = build(kiln, tmp_path / "w", "--logs-dir", a_file / "logs")
    assert result.code == 2
    assert f"--logs-dir {a_file / 'logs'}: cannot create it: Not a directory" \
        in error_line(result)


def test_a_summary_file_under_a_file_is_refused_before_building(kiln, a_file, tmp_path):
    work = tmp_path / "w"
    result = build(kiln, work, "--summary-json-file", a_file / "summary.json")
    assert result.code == 2
    assert f"--summary-json-file {a_file / 'summary.json'}: {a_file} is not a directory" \
        in error_line(result)
    assert "File exists" not in result.err
    assert not (work / "base").exists()


def test_a_summary_file_that_is_a_directory_is_refused_before_building(kiln, tmp_path):
    work = tmp_path / "w"
    result = build(kiln, work, "--summary-json-file", tmp_path)
    assert result.code == 2
    assert f"--summary-json-file {tmp_path} is a directory" in error_line(result)
    assert not (work / "base").exists()


def test_a_summary_file_in_a_new_directory_is_fine(kiln, tmp_path):
    # its parents are made when it is written: the check reaches the engine
    result = build(kiln, tmp_path / "w", "--summary-json-file", tmp_path / "new" / "s.json")
    assert result.code == 2
    assert "--engine 'no-such-engine' is not a known engine" in error_line(result)


def test_a_docker_dir_that_is_a_file_says_so(kiln, a_file, tmp_path):
    result = kiln("--templates-dir", FAMILY, "--docker-dir", a_file, "--list-images")
    assert result.code == 2
    assert f"--docker-dir {a_file} is not a directory" in error_line(result)


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz is not installed")
def test_save_dependency_pdf_is_a_pdf(kiln, tmp_path):
    out = tmp_path / "deps.pdf"
    result = kiln("--templates-dir", FAMILY, "--save-dependency", out, "runtime")
    assert result.code == 0, result.err
    assert out.read_bytes().startswith(b"%PDF-")


def test_save_dependency_pdf_without_graphviz_is_refused(kiln, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no dot on it
    out = tmp_path / "deps.pdf"
    result = kiln("--templates-dir", FAMILY, "--save-dependency", out, "runtime")
    assert result.code == 2
    assert f"--save-dependency {out}: rendering pdf needs Graphviz's 'dot', which is " \
           f"not on PATH" in error_line(result)
    assert not out.exists()


@pytest.mark.parametrize("name", ["deps.dot", "deps.gv", "deps"])
def test_save_dependency_dot_names_keep_dot_text(kiln, tmp_path, monkeypatch, name):
    monkeypatch.setenv("PATH", str(tmp_path))  # DOT text needs no graphviz
    out = tmp_path / name
    result = kiln("--templates-dir", FAMILY, "--save-dependency", out, "runtime")
    assert result.code == 0, result.err
    assert out.read_text().startswith("digraph ")
