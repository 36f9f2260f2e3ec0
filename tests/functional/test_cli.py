"""kiln-build end to end, without an engine: options, outputs and exit codes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import builder
from builder.cli import options
from builder.plan import make_plan
from tests.conftest import DOWNSTREAM, FAMILY, FIXTURES, OVERRIDES, error_line

BUILDSET = FIXTURES / "buildset"     # tests/integration's set (it needs --template-var)
FAMILY_ORDER = ["base", "python-base", "keystone-base", "keystone-api",
                "openstacksdk", "diskimage-builder", "wheels", "runtime"]


def test_list_images_gives_a_valid_build_order(kiln):
    result = kiln("--templates-dir", FAMILY, "--list-images")
    assert result.code == 0, result.err
    assert result.out.split() == FAMILY_ORDER


def test_list_images_json(kiln):
    result = kiln("--templates-dir", FAMILY, "--list-images", "--format", "json")
    assert json.loads(result.out) == FAMILY_ORDER


def test_list_dependencies_exact_shape(kiln):
    result = kiln("--templates-dir", FAMILY, "--list-dependencies", "runtime")
    assert result.code == 0, result.err
    assert json.loads(result.out) == {
        "base": {"parents": [], "children": ["python-base", "runtime"]},
        "python-base": {"parents": ["base"], "children": ["wheels"]},
        "wheels": {"parents": ["python-base"], "children": ["runtime"]},
        "runtime": {"parents": ["base", "wheels"], "children": []},
    }


def test_regex_selects_ancestors_too(kiln):
    result = kiln("--templates-dir", FAMILY, "--list-images", "disk")
    assert result.out.split() == ["base", "python-base", "openstacksdk",
                                  "diskimage-builder"]


def test_skip_parents_keeps_images_asked_for_by_name(kiln):
    # python-base has children, but it was asked for: Kolla would skip it.
    result = kiln("--templates-dir", FAMILY, "--list-images", "--skip-parents",
                  "^python-base$", "keystone-api")
    assert result.out.split() == ["python-base", "keystone-api"]


def test_exclude_drops_image_and_ancestors_only_it_needs(kiln):
    result = kiln("--templates-dir", FAMILY, "--list-images", "runtime",
                  "--exclude", "^wheels$")
    assert result.out.split() == ["base", "runtime"]


def test_profiles_from_config_file(kiln, tmp_path):
    conf = tmp_path / "kiln.conf"
    conf.write_text("[profiles]\ntools = openstacksdk, ^diskimage\n"
                    "keystone = keystone-api\n")
    result = kiln("--config-file", conf, "--templates-dir", FAMILY,
                  "--list-images", "--skip-parents", "--profile", "tools",
                  "-p", "keystone")
    assert result.code == 0, result.err
    assert result.out.split() == ["keystone-api", "openstacksdk",
                                  "diskimage-builder"]


def test_unknown_profile_is_a_config_error(kiln, tmp_path):
    conf = tmp_path / "kiln.conf"
    conf.write_text("[profiles]\ntools = openstacksdk\n")
    result = kiln("--config-file", conf, "--templates-dir", FAMILY,
                  "--list-images", "--profile", "infra")
    assert result.code == 2
    assert "--profile 'infra' is not defined" in result.err
    assert "profiles: tools" in result.err


def test_options_from_config_dir(kiln, tmp_path):
    confdir = tmp_path / "conf.d"
    confdir.mkdir()
    (confdir / "10-naming.conf").write_text(
        "[DEFAULT]\nnamespace = acme\ntag = 1.2.3\nregistry = reg.example:5000\n")
    (confdir / "20-output.conf").write_text("[DEFAULT]\nformat = json\n")
    result = kiln("--config-dir", confdir, "--templates-dir", FAMILY,
                  "--template-only", "--work-dir", tmp_path / "w", "keystone-api")
    assert result.code == 0, result.err
    dockerfile = (tmp_path / "w" / "keystone-api" / "Dockerfile").read_text()
    assert "FROM reg.example:5000/acme/keystone-base:1.2.3" in dockerfile


def test_template_vars_config_section_and_cli_override(kiln, tmp_path):
    conf = tmp_path / "kiln.conf"
    conf.write_text("[template_vars]\nbase_image = debian:bookworm\n"
                    "greeting = hello\n")
    work = tmp_path / "w"
    result = kiln("--config-file", conf, "--templates-dir", FAMILY,
                  "--template-only", "--work-dir", work, "^base$",
                  "--template-var", "base_image=ubuntu:24.04")
    assert result.code == 0, result.err
    assert "ARG BASE_IMAGE=ubuntu:24.04" in (work / "base" / "Dockerfile").read_text()


def test_template_only_writes_contexts_reproducibly(kiln, tmp_path):
    work = tmp_path / "w"
    result = kiln("--templates-dir", FAMILY, "--template-only", "--work-dir",
                  work, "keystone-api")
    assert result.code == 0, result.err
    assert sorted(p.name for p in work.iterdir() if p.is_dir()) == [
        "base", "keystone-api", "keystone-base", "python-base"]
    conf = work / "keystone-base" / "keystone.conf"
    assert conf.read_text() == "[DEFAULT]\n"
    # templates and nested images are not part of a context
    assert not (work / "keystone-base" / "Dockerfile.j2").exists()
    mtimes = {p.stat().st_mtime for p in work.rglob("*") if p.parent != work
              or p.is_dir()}
    assert mtimes == {946684800}
    assert "rendered 4 image(s) into" in result.err


def test_template_only_refuses_a_foreign_non_empty_work_dir(kiln, tmp_path):
    work = tmp_path / "precious"
    work.mkdir()
    (work / "notes.txt").write_text("keep me")
    result = kiln("--templates-dir", FAMILY, "--template-only", "--work-dir", work)
    assert result.code == 2
    assert "not empty and was not made by kiln" in result.err
    assert (work / "notes.txt").read_text() == "keep me"


def test_rerender_replaces_stale_files(kiln, tmp_path):
    work = tmp_path / "w"
    assert kiln("--templates-dir", FAMILY, "--template-only", "--work-dir",
                work, "^base$").code == 0
    (work / "base" / "stale").write_text("old")
    assert kiln("--templates-dir", FAMILY, "--template-only", "--work-dir",
                work, "^base$").code == 0
    assert not (work / "base" / "stale").exists()


def test_docker_dir_layers_and_overrides(kiln, tmp_path):
    work = tmp_path / "w"
    result = kiln("--templates-dir", FAMILY, "--docker-dir", DOWNSTREAM,
                  "--template-override", OVERRIDES / "packages.j2",
                  "--template-override", OVERRIDES / "chained.j2",
                  "--template-only", "--work-dir", work)
    assert result.code == 0, result.err
    python_base = (work / "python-base" / "Dockerfile").read_text()
    assert "RUN install-packages python3 vim\n" in python_base
    assert "RUN echo downstream-footer" in python_base
    assert "RUN install-packages tini\n" in (work / "base" / "Dockerfile").read_text()
    api = (work / "keystone-api" / "Dockerfile").read_text()
    assert api.index("RUN echo chained") < api.index('CMD ["keystone-api", "--debug"]')
    assert "extra" in {p.name for p in work.iterdir()}
    assert "pip install openstacksdk==4.0.0" in (work / "openstacksdk" / "Dockerfile").read_text()
    # a block no image has is reported, naming the file and the block
    assert "chained.j2: block 'not_a_block_anywhere' is overridden but no " \
           "rendered image has it" in result.err


def test_namespace_variant_is_used(kiln, tmp_path):
    work = tmp_path / "w"
    assert kiln("--templates-dir", FAMILY, "--namespace", "opendev",
                "--template-only", "--work-dir", work, "openstacksdk").code == 0
    text = (work / "openstacksdk" / "Dockerfile").read_text()
    assert "--constraint /opendev/constraints.txt" in text
    assert "FROM opendev/python-base:latest" in text
    work2 = tmp_path / "w2"
    assert kiln("--templates-dir", FAMILY, "--namespace", "zuul",
                "--template-only", "--work-dir", work2, "openstacksdk").code == 0
    assert "constraint" not in (work2 / "openstacksdk" / "Dockerfile").read_text()


def test_save_dependency_dot(kiln, tmp_path):
    out = tmp_path / "deps.dot"
    result = kiln("--templates-dir", FAMILY, "--save-dependency", out, "runtime")
    assert result.code == 0, result.err
    dot = out.read_text()
    assert '"wheels" -> "runtime";' in dot
    assert '"base" -> "runtime";' in dot
    assert "keystone" not in dot


@pytest.mark.skipif(shutil.which("dot") is None and not os.environ.get("CI"),
                    reason="graphviz is not installed (CI installs it)")
def test_save_dependency_svg(kiln, tmp_path):
    out = tmp_path / "deps.svg"
    result = kiln("--templates-dir", FAMILY, "--save-dependency", out)
    assert result.code == 0, result.err
    svg = out.read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert "keystone&#45;api" in svg or "keystone-api" in svg


# ---- bad input: one clear message and exit code 2 ------------------------

def _error_line(result):
    lines = [line for line in result.err.splitlines() if ": error: " in line]
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    return lines[0]


def test_syntax_error_names_file_layer_and_line(kiln, tree):
    root = tree({"a/Dockerfile.j2": "FROM x\nRUN true\n{% if %}\n"})
    result = kiln("--templates-dir", root, "--list-images")
    assert result.code == 2
    line = _error_line(result)
    assert f"{root}/a/Dockerfile.j2:3: template syntax error" in line
    assert f"base layer {root}" in line


def test_undefined_variable_in_upper_layer(kiln, tree):
    root = tree({"a/Dockerfile.j2": "FROM x\n{% block b %}{% endblock %}\n"})
    upper = tree({"a/Dockerfile.j2": "{% extends parent_template %}\n"
                                     "{% block b %}\nRUN {{ missing_var }}\n"
                                     "{% endblock %}\n"})
    result = kiln("--templates-dir", root, "--docker-dir", upper, "--list-images")
    assert result.code == 2
    line = _error_line(result)
    assert f"{upper}/a/Dockerfile.j2:3: undefined variable: 'missing_var'" in line
    assert f"docker-dir 1 layer {upper}" in line


def test_lenient_undefined_renders_empty(kiln, tree, tmp_path):
    root = tree({"a/Dockerfile.j2": "FROM x\nRUN echo [{{ missing_var }}]\n"})
    work = tmp_path / "w"
    result = kiln("--templates-dir", root, "--undefined", "lenient",
                  "--template-only", "--work-dir", work)
    assert result.code == 0, result.err
    assert "RUN echo []" in (work / "a" / "Dockerfile").read_text()


def test_missing_include(kiln, tree):
    root = tree({"a/Dockerfile.j2": "FROM x\n{% include 'nope.j2' %}\n"})
    result = kiln("--templates-dir", root, "--list-images")
    assert result.code == 2
    assert f"{root}/a/Dockerfile.j2:2: template 'nope.j2' not found" in _error_line(result)


def test_duplicate_image_name_in_one_layer(kiln, tree):
    root = tree({"x/app/Dockerfile.j2": "FROM a\n", "y/app/Dockerfile.j2": "FROM b\n"})
    result = kiln("--templates-dir", root, "--list-images")
    assert result.code == 2
    line = _error_line(result)
    assert "two images named 'app'" in line
    assert f"{root}/x/app" in line and f"{root}/y/app" in line


def test_cycle_prints_its_path(kiln, tree):
    root = tree({
        "a/Dockerfile.j2": "FROM {{ image_ref('c') }}\n",
        "b/Dockerfile.j2": "FROM {{ image_ref('a') }}\n",
        "c/Dockerfile.j2": "FROM {{ image_ref('b') }}\n",
        "d/Dockerfile.j2": "FROM debian\n",
    })
    result = kiln("--templates-dir", root, "--list-images")
    assert result.code == 2
    line = _error_line(result)
    assert "cycle" in line
    path = line.split("cycle: ")[1].split(" -> ")
    assert path[0] == path[-1] and sorted(path[:-1]) == ["a", "b", "c"]


def test_unknown_parent_in_set(kiln, tree):
    root = tree({"a/Dockerfile.j2": "FROM kiln/ghost:latest\n"})
    result = kiln("--templates-dir", root, "--list-images")
    assert result.code == 2
    line = _error_line(result)
    assert "image 'a' uses kiln/ghost:latest, but the template set has no image 'ghost'" in line
    assert f"{root}/a/Dockerfile.j2" in line


def test_image_ref_of_unknown_image(kiln, tree):
    root = tree({"a/Dockerfile.j2": "FROM {{ image_ref('ghost') }}\n"})
    result = kiln("--templates-dir", root, "--list-images")
    assert result.code == 2
    assert f"{root}/a/Dockerfile.j2:1: image_ref('ghost'): the template set has no image" \
        in _error_line(result)


@pytest.mark.parametrize("args, message", [
    (["--template-var", "novalue"], "--template-var 'novalue': expected KEY=VALUE"),
    (["--template-var", "tag=x"], "template variable 'tag' is reserved"),
    (["--tag", "bad tag!"], "--tag 'bad tag!' is not a valid image tag"),
    (["--namespace", "Upper"], "--namespace 'Upper' is not a valid image namespace"),
    (["--docker-dir", "/nonexistent/kiln"], "--docker-dir /nonexistent/kiln: no such directory"),
    (["--template-override", "/nonexistent.j2"],
     "--template-override /nonexistent.j2: no such file"),
    (["--exclude", "("], "--exclude '(' is not a valid regular expression"),
    (["[unclosed"], "image regex '[unclosed' is not a valid regular expression"),
    (["^nothing-matches$"], "no image is selected: patterns '^nothing-matches$'"),
])
def test_bad_option_values(kiln, args, message):
    result = kiln("--templates-dir", FAMILY, "--list-images", *args)
    assert result.code == 2, result.out
    assert message in _error_line(result)


def test_bad_choice_on_command_line_is_usage_error(kiln):
    result = kiln("--templates-dir", FAMILY, "--format", "xml")
    assert result.code == 2
    line = _error_line(result)
    assert "--format" in line and "xml" in line and "--help" in line


def test_unknown_flag_is_usage_error(kiln):
    result = kiln("--templates-dir", FAMILY, "--no-such-flag")
    assert result.code == 2
    assert "unrecognized arguments: --no-such-flag" in _error_line(result)


def test_bad_value_in_config_file(kiln, tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("[DEFAULT]\nformat = xml\n")
    result = kiln("--config-file", conf, "--templates-dir", FAMILY, "--list-images")
    assert result.code == 2
    line = _error_line(result)
    assert "format" in line and "xml" in line


def test_debug_shows_traceback(kiln, tree):
    root = tree({"a/Dockerfile.j2": "FROM {{ nope }}\n"})
    result = kiln("--templates-dir", root, "--list-images", "--debug")
    assert result.code == 2
    assert "Traceback" in result.err


def test_template_env_allow_list(kiln, tree, tmp_path, monkeypatch):
    monkeypatch.setenv("KILN_TEST_MIRROR", "http://mirror.example")
    monkeypatch.setenv("KILN_TEST_SECRET", "s3cret")
    root = tree({"a/Dockerfile.j2": "FROM x\nRUN echo {{ env.KILN_TEST_MIRROR }}\n"
                                    "{% if env.KILN_TEST_SECRET is defined %}LEAK{% endif %}\n"})
    work = tmp_path / "w"
    result = kiln("--templates-dir", root, "--template-env", "KILN_TEST_MIRROR",
                  "--template-only", "--work-dir", work)
    assert result.code == 0, result.err
    text = (work / "a" / "Dockerfile").read_text()
    assert "RUN echo http://mirror.example" in text
    assert "LEAK" not in text
    denied = kiln("--templates-dir", root, "--list-images")
    assert denied.code == 2
    assert "'KILN_TEST_MIRROR'" in _error_line(denied)


def console_script(name: str) -> Path:
    """The console script installed with the kiln this interpreter imports.

    It is next to the interpreter running the tests (``.venv/bin``), whether or
    not that directory is on PATH; another kiln on PATH is never used.
    """
    path = Path(sys.executable).parent / name
    assert path.is_file(), (f"{name} is not next to {sys.executable}: install kiln into "
                            f"this environment (pip install -e '.[test]')")
    return path


def test_console_script_is_installed():
    result = subprocess.run(
        [sys.executable, "-m", "builder.cli.build", "--templates-dir", str(FAMILY),
         "--list-images", "keystone-api"],
        capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["base", "python-base", "keystone-base", "keystone-api"]
    script = console_script("kiln-build")
    help_text = subprocess.run([script, "--help"], capture_output=True, text=True,
                               check=True).stdout
    for option in ("--docker-dir", "--template-override", "--list-dependencies",
                   "--save-dependency", "--skip-parents", "--template-var"):
        assert option in help_text


def test_builtin_template_set_renders_with_defaults(kiln, tmp_path):
    result = kiln("--template-only", "--work-dir", tmp_path / "w")
    assert result.code == 0, result.err
    assert (tmp_path / "w" / "base" / "Dockerfile").read_text().startswith("FROM ")


def test_kiln_registry_prints_usage():
    result = subprocess.run([sys.executable, "-m", "builder.cli.registry", "--help"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: kiln-registry")


@pytest.mark.parametrize("name", ["kiln-build", "kiln-registry"])
def test_console_scripts_print_the_version(name, tmp_path):
    result = subprocess.run([console_script(name), "--version"], cwd=tmp_path,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{name} {builder.__version__}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", builder.__version__)


def test_a_work_dir_that_cannot_be_made_is_one_clear_error(kiln, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = kiln("--templates-dir", FAMILY, "--template-only", "--work-dir",
                  blocker / "work")
    assert result.code == 2
    assert f"--work-dir {blocker / 'work'}: cannot create it: Not a directory" in result.err
    assert "Traceback" not in result.err


# A parent named through a build argument: the builder substitutes it in FROM,
# so the graph must too. The names sort the wrong way round on purpose, so the
# order is only right if the edge is there.
ARG_FROM_SET = {
    "app/Dockerfile.j2": "ARG BASE=debian:bookworm-slim\nFROM ${BASE}\nRUN true\n",
    "platform/Dockerfile.j2": "FROM debian:bookworm-slim\nRUN true\n",
}
PLATFORM_REF = "kiln/platform:latest"


def _assert_platform_is_apps_parent(kiln, args):
    order = kiln(*args, "--list-images")
    assert order.code == 0, order.err
    assert order.out.split() == ["platform", "app"]
    deps = kiln(*args, "--list-dependencies")
    assert deps.code == 0, deps.err
    assert json.loads(deps.out) == {
        "app": {"parents": ["platform"], "children": []},
        "platform": {"parents": [], "children": ["app"]},
    }
    graph = make_plan(options.load([str(a) for a in args])).graph
    # What the fingerprint and the base label of app are made of.
    assert graph.nodes["app"]["bases"] == ()
    assert graph.nodes["app"]["base"] == PLATFORM_REF


def test_build_args_without_one_the_arg_default_is_an_external_base(kiln, tree):
    root = tree(ARG_FROM_SET)
    result = kiln("--templates-dir", root, "--list-dependencies")
    assert result.code == 0, result.err
    assert json.loads(result.out)["app"]["parents"] == []
    graph = make_plan(options.load(["--templates-dir", str(root)])).graph
    assert graph.nodes["app"]["bases"] == ("debian:bookworm-slim",)


def test_build_args_on_the_command_line_reach_the_graph(kiln, tree):
    root = tree(ARG_FROM_SET)
    _assert_platform_is_apps_parent(
        kiln, ["--templates-dir", root, "--build-args", f"BASE={PLATFORM_REF}"])


def test_build_args_from_the_config_file_reach_the_graph(kiln, tree, tmp_path):
    root = tree(ARG_FROM_SET)
    conf = tmp_path / "kiln.conf"
    conf.write_text(f"[build-args]\nBASE = {PLATFORM_REF}\n")
    _assert_platform_is_apps_parent(kiln, ["--templates-dir", root, "--config-file", conf])


def test_a_build_arg_naming_an_image_missing_from_the_set_is_one_error(kiln, tree):
    root = tree(ARG_FROM_SET)
    result = kiln("--templates-dir", root, "--build-args", "BASE=kiln/ghost:latest",
                  "--list-images")
    assert result.code == 2
    assert "image 'app' uses kiln/ghost:latest, but the template set has no image 'ghost'" \
        in _error_line(result)
    assert "Traceback" not in result.err


# ---- the engine: one clear error before any build -----------------------------------

def test_unreachable_engine_is_one_clear_error(kiln, monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    result = kiln("--templates-dir", BUILDSET, "--template-var", "busybox=x",
                  "--template-var", "port=1", "^base$", "--work-dir", tmp_path / "w")
    assert result.code == 2
    errors = [line for line in result.err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "cannot reach the Docker engine" in errors[0]


def test_unknown_engine_lists_available(kiln):
    result = kiln("--templates-dir", BUILDSET, "--template-var", "busybox=x",
                  "--template-var", "port=1", "--engine", "nonesuch")
    assert result.code == 2
    assert "--engine 'nonesuch' is not a known engine (available: " in result.err
    assert "docker" in result.err



@pytest.mark.parametrize(("args", "message"), [
    (["--executor", "dask", "--cache-registry", "127.0.0.1:5000"],
     "--executor dask needs --dask-scheduler ADDRESS"),
    (["--executor", "dask", "--dask-scheduler", "tcp://127.0.0.1:8786"],
     "--executor dask needs --cache-registry: the workers hand the images they build"),
    (["--executor", "dask", "--dask-scheduler", "tcp://127.0.0.1:8786",
      "--cache-registry", "127.0.0.1:5000", "--cache-mode", "read"],
     "--executor dask needs --cache-mode readwrite or write"),
    (["--executor", "ray"], "executor"),
])
def test_executor_dask_needs_its_companions(kiln, args, message):
    result = kiln("--templates-dir", FAMILY, *args)
    assert result.code == 2
    assert message in error_line(result)


def test_executor_from_the_config_file(kiln, tmp_path):
    conf = tmp_path / "kiln.conf"
    conf.write_text("[DEFAULT]\nexecutor = dask\ndask_scheduler = tcp://127.0.0.1:8786\n")
    result = kiln("--config-file", conf, "--templates-dir", FAMILY)
    assert result.code == 2
    assert "--executor dask needs --cache-registry" in error_line(result)
