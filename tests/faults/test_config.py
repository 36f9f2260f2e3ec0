"""Config file mistakes: typos are warned about (file, line, section and the
nearest known name), bad values are one error line naming where they are."""

from __future__ import annotations

import pytest

from tests.conftest import FAMILY, error_line

pytestmark = pytest.mark.timeout(60)


def warnings_of(result) -> list[str]:
    return [line for line in result.err.splitlines() if ": warning: " in line]


def list_images(kiln, conf, *more):
    return kiln("--config-file", conf, "--templates-dir", FAMILY, "--list-images", *more)


def test_unknown_options_warn_with_file_line_section_and_nearest_name(kiln, tmp_path):
    conf = tmp_path / "kiln.conf"
    conf.write_text("[DEFAULT]\n# comment\nthread = 2\nnamepsace = acme\n"
                    "templates-dir = /nowhere\n")
    result = list_images(kiln, conf)
    assert result.code == 0, result.err
    assert warnings_of(result) == [
        f"kiln-build: warning: {conf}:3: unknown option 'thread' in [DEFAULT], "
        f"ignored (did you mean threads?)",
        f"kiln-build: warning: {conf}:4: unknown option 'namepsace' in [DEFAULT], "
        f"ignored (did you mean namespace?)",
        # oslo.config reads option names with underscores only
        f"kiln-build: warning: {conf}:5: unknown option 'templates-dir' in [DEFAULT], "
        f"ignored (did you mean templates_dir?)",
    ]
    assert "base" in result.out.split()


def test_unknown_sections_warn(kiln, tmp_path):
    conf = tmp_path / "kiln.conf"
    conf.write_text("[bogus]\nx = 1\n\n[build_args]\nA = 1\n[Default]\nthreads = 2\n"
                    "[base]\nlocation = /src\n")
    result = list_images(kiln, conf)
    assert result.code == 0, result.err
    assert warnings_of(result) == [
        f"kiln-build: warning: {conf}:1: unknown section [bogus], ignored",
        f"kiln-build: warning: {conf}:4: unknown section [build_args], ignored "
        f"(did you mean [build-args]?)",
        f"kiln-build: warning: {conf}:6: unknown section [Default], ignored "
        f"(did you mean [DEFAULT]?)",
        f"kiln-build: warning: {conf}:8: unknown section [base], ignored: an image "
        f"source section needs a 'type' key (type, location, reference, sha256, enabled)",
    ]


def test_legitimate_sections_do_not_warn(kiln, tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    conf = tmp_path / "kiln.conf"
    conf.write_text(
        "[DEFAULT]\nthreads = 2\nnamespace = acme\ntemplate_api = kolla\nbase = debian\n"
        "maintainer = me\n"
        "[profiles]\ninfra = base\n"
        "[template_vars]\nanything_goes = 1\n"
        "[build-args]\nPIP_INDEX_URL = http://mirror/simple\n"
        f"[python-base]\ntype = local\nlocation = {source}\nenabled = true\n"
        "[nova-user]\nuid = 1000\ngid = 1000\ngroup = nova\n")
    # (a source for an image the set lacks is a warning: tests/kolla/test_options.py)
    result = list_images(kiln, conf)
    assert result.code == 0, result.err
    assert warnings_of(result) == []


def test_unknown_keys_of_source_and_user_sections(kiln, tmp_path):
    conf = tmp_path / "kiln.conf"
    conf.write_text(f"[python-base]\ntype = local\nlocation = {tmp_path}\nrefernce = x\n"
                    "[nova-user]\nuid = 1000\ngorup = nova\n")
    result = list_images(kiln, conf, "--template-api", "kolla")
    assert result.code == 0, result.err
    assert warnings_of(result) == [
        f"kiln-build: warning: {conf}:4: unknown option 'refernce' in [python-base], "
        f"ignored (did you mean reference?)",
        f"kiln-build: warning: {conf}:7: unknown option 'gorup' in [nova-user], "
        f"ignored (did you mean group?)",
    ]
    # without Kolla's template API nothing reads user sections
    result = list_images(kiln, conf)
    assert result.code == 0, result.err
    assert f"{conf}:5: unknown section [nova-user], ignored: user sections are read " \
           f"only with --template-api kolla" in result.err


def test_warnings_name_the_file_of_a_config_dir(kiln, tmp_path):
    confdir = tmp_path / "conf.d"
    confdir.mkdir()
    (confdir / "10-ok.conf").write_text("[DEFAULT]\nthreads = 2\n")
    (confdir / "20-typo.conf").write_text("[DEFAULT]\n\ntaag = 1.0\n")
    result = kiln("--config-dir", confdir, "--templates-dir", FAMILY, "--list-images")
    assert result.code == 0, result.err
    assert warnings_of(result) == [
        f"kiln-build: warning: {confdir / '20-typo.conf'}:3: unknown option 'taag' in "
        f"[DEFAULT], ignored (did you mean tag?)"]


@pytest.mark.parametrize("line, problem", [
    ("threads = many", "[DEFAULT] threads = 'many': not an integer"),
    ("threads = 0", "[DEFAULT] threads = '0': should be greater than or equal to 1"),
    ("push = maybe", "[DEFAULT] push = 'maybe': unexpected boolean value 'maybe'"),
    ("format = xml", "[DEFAULT] format = 'xml': valid values are [text, json, none], "
                     "but found 'xml'"),
])
def test_bad_value_names_file_line_section_and_option(kiln, tmp_path, line, problem):
    good = tmp_path / "good.conf"
    good.write_text("[DEFAULT]\nthreads = 4\n")
    bad = tmp_path / "bad.conf"
    bad.write_text(f"[DEFAULT]\n# the next line is wrong\n\n{line}\n")
    result = kiln("--config-file", good, "--config-file", bad, "--templates-dir", FAMILY,
                  "--list-images")
    assert result.code == 2
    assert error_line(result) == f"kiln-build: error: {bad}:4: {problem}"


def test_bad_value_on_the_command_line_is_not_blamed_on_a_file(kiln, tmp_path):
    conf = tmp_path / "kiln.conf"
    conf.write_text("[DEFAULT]\nthreads = 4\n")
    result = kiln("--config-file", conf, "--templates-dir", FAMILY, "--list-images",
                  "-T", "many")
    assert result.code == 2
    line = error_line(result)
    assert "argument --threads" in line and str(conf) not in line
    # a good command-line value wins over a bad file value, as before
    conf.write_text("[DEFAULT]\nthreads = many\n")
    result = kiln("--config-file", conf, "--templates-dir", FAMILY, "--list-images",
                  "--threads", "3")
    assert result.code == 0, result.err


def test_bad_source_and_user_sections_name_the_line(kiln, tmp_path):
    conf = tmp_path / "kiln.conf"
    conf.write_text("[DEFAULT]\nthreads = 2\n[python-base]\ntype = git\n"
                    f"location = {tmp_path}\nsha256 = abc\n")
    result = list_images(kiln, conf)
    assert result.code == 2
    assert error_line(result) == (f"kiln-build: error: {conf}:6: [python-base] sha256: "
                                  f"only url sources have a sha256 (type is git)")
    conf.write_text("[svc-user]\nuid = 1\ngid = lots\n")
    result = list_images(kiln, conf, "--template-api", "kolla")
    assert result.code == 2
    assert error_line(result) == (f"kiln-build: error: {conf}:3: [svc-user] gid = 'lots': "
                                  f"not an integer")
