"""kolla-build 23.0.0's options, read from kolla's own code, are kiln-build's too.

Kolla's option list comes from ``kolla.common.config`` in the Kolla venv
(``dump_kolla_options.py``), and so do the values kolla-build parses: each
test gives both tools the same command line or config file and compares
what they read, option by option (kiln under ``--template-api kolla``).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from oslo_config import cfg

from builder.cli import options
from builder.cli.conversions import parse_build_args
from builder.errors import ConfigError
from builder.templating.kolla.sources import kolla_default_sources

DUMP = Path(__file__).with_name("dump_kolla_options.py")
MINIKOLLA = Path(__file__).parent / "fixtures" / "minikolla" / "docker"
# kiln's kind of option where it is not kolla-build's (both forms are read)
OTHER_KIND = {"build_args": ("DictOpt", "MultiStrOpt")}
KIND = {"MultiStrOpt": "MultiOpt"}  # a MultiOpt of strings is a MultiStrOpt

SHA_AMD64, SHA_ARM64 = "a" * 64, "b" * 64
SOURCES_CONF = f"""\
[DEFAULT]
base = debian

[etcd]
type = url
version = 3.6.16
location = $tarballs_base/etcd/etcd-v${{version}}-linux-${{debian_arch}}.tar.gz
sha256 = amd64:{SHA_AMD64},arm64:{SHA_ARM64}

[keystone-base]
type = git
location = https://opendev.org/openstack/keystone
reference = stable/2026.2
enabled = false

[keystone-user]
uid = 1042
gid = 1043
group = ks
"""


def _load(argv):
    return options.load([str(arg) for arg in argv])


def _parse(argv):
    return options.parse([str(arg) for arg in argv])


def _kolla(install, runs, sources=(), users=()) -> dict:
    request = {"runs": [[str(a) for a in argv] for argv in runs],
               "sources": list(sources), "users": list(users)}
    result = subprocess.run([str(install.venv / "bin" / "python"), str(DUMP)],
                            input=json.dumps(request), capture_output=True, text=True,
                            check=False, timeout=120,
                            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def kolla_options(kolla_install) -> list[dict]:
    return _kolla(kolla_install, [])["options"]


def _default_options(declared: list[dict]) -> list[dict]:
    return [opt for opt in declared if opt["group"] is None]


def _sample(opt: dict) -> list[str]:
    """A value other than the default, as strings (several for a multi-valued option)."""
    kind, default = opt["type"], opt["default"]
    if kind == "BoolOpt":
        return ["false" if default else "true"]
    if kind == "IntOpt":
        return [str((default or 0) + 2)]
    if kind == "DictOpt":
        return ["A:1,B:http://proxy:3128"]
    if kind == "ListOpt":
        return ["one,two"]
    if kind == "MultiOpt":
        return [f"/v/{opt['dest']}-1", f"/v/{opt['dest']}-2"]
    if opt["choices"]:
        return [next(choice for choice in opt["choices"] if choice != default)]
    return [f"/v/{opt['dest']}"]


def _command_line(declared: list[dict], short: bool) -> list[str]:
    """Every command-line option of kolla-build set, spelt as kolla-build spells it."""
    argv: list[str] = []
    for opt in _default_options(declared):
        if not opt["cli"] or opt["dest"] == "regex":
            continue
        flag = f"-{opt['short']}" if short and opt["short"] else f"--{opt['name']}"
        values = _sample(opt)
        if opt["type"] == "BoolOpt":
            argv.append(flag if values == ["true"] else f"--no{opt['name']}")
            continue
        for value in values:
            argv += [flag, value]
    return [*argv, "^keystone$", "nova"]


def _config_file(declared: list[dict], path: Path) -> Path:
    """Every [DEFAULT] option of kolla-build set, and profiles of its own and Kolla's."""
    lines = ["[DEFAULT]"]
    for opt in _default_options(declared):
        if opt["dest"] != "regex":
            lines += [f"{opt['dest']} = {value}" for value in _sample(opt)]
    lines += ["", "[profiles]", "infra = cron, haproxy", "mine = keystone, glance"]
    path.write_text("\n".join(lines) + "\n")
    return path


def _same(dest: str, kiln, kolla) -> bool:
    if dest == "build_args":
        return parse_build_args(kiln) == (kolla or {})
    if kiln is False and kolla is None:  # a BoolOpt without default: unset, false
        return True
    empty = (None, "", [])
    if kiln in empty or kolla in empty:
        return kiln in empty and kolla in empty
    return kiln == kolla


def _differences(conf: cfg.ConfigOpts, kolla_run: dict, declared: list[dict]) -> list[str]:
    found = []
    for opt in _default_options(declared):
        dest = opt["dest"]
        if not _same(dest, conf[dest], kolla_run["DEFAULT"][dest]):
            found.append(f"{dest}: kiln {conf[dest]!r}, kolla-build "
                         f"{kolla_run['DEFAULT'][dest]!r}")
    for name, images in kolla_run["profiles"].items():
        kiln = conf.profiles[name] if name in conf.profiles else None
        if kiln != images:
            found.append(f"[profiles] {name}: kiln {kiln!r}, kolla-build {images!r}")
    return found


def test_every_kolla_option_is_declared_alike(kolla_options):
    conf = options.new_config()
    kiln = {name: conf._opts[name] for name in conf._opts}  # oslo's: {"opt", "cli"}
    problems = []
    for opt in _default_options(kolla_options):
        dest, name = opt["dest"], f"--{opt['name']}"
        if dest not in kiln:
            problems.append(f"{name}: not an option of kiln-build")
            continue
        mine = kiln[dest]["opt"]
        kinds = (KIND.get(opt["type"], opt["type"]),
                 KIND.get(type(mine).__name__, type(mine).__name__))
        if kinds[0] != kinds[1] and OTHER_KIND.get(dest) != (opt["type"], type(mine).__name__):
            problems.append(f"{name}: kolla-build's is a {opt['type']}, kiln's a "
                            f"{type(mine).__name__}")
        if (mine.short or None) != opt["short"]:
            problems.append(f"{name}: short flag kolla-build -{opt['short']}, "
                            f"kiln -{mine.short}")
        if opt["cli"] and not kiln[dest]["cli"]:
            problems.append(f"{name}: kolla-build takes it on the command line, kiln not")
        # kiln's without choices takes any value (its --engine: any engine plugin)
        if opt["choices"] and mine.type.choices is not None \
                and not set(opt["choices"]) <= set(mine.type.choices):
            problems.append(f"{name}: kolla-build's values {opt['choices']}, kiln's "
                            f"{list(mine.type.choices)}")
    assert not problems, "\n".join(problems)


def test_defaults_are_kolla_builds(kolla_install, kolla_options, empty_config):
    kolla = _kolla(kolla_install, [[]])["runs"][0]
    conf, _ = _parse(["--config-file", empty_config, "--template-api", "kolla"])
    assert not _differences(conf, kolla, kolla_options)


@pytest.mark.parametrize("short", [False, True], ids=["long", "short"])
def test_every_option_on_the_command_line_reads_as_kolla_builds(
        kolla_install, kolla_options, empty_config, short):
    argv = ["--config-file", str(empty_config), *_command_line(kolla_options, short)]
    kolla = _kolla(kolla_install, [argv])["runs"][0]
    conf, _ = _parse([*argv, "--template-api", "kolla"])
    assert not _differences(conf, kolla, kolla_options)
    assert conf.regex == ["^keystone$", "nova"]


def test_every_option_in_a_config_file_reads_as_kolla_builds(kolla_install, kolla_options,
                                                            tmp_path):
    path = _config_file(kolla_options, tmp_path / "kolla-build.conf")
    kolla = _kolla(kolla_install, [["--config-file", path]])["runs"][0]
    conf, _ = _parse(["--config-file", str(path), "--template-api", "kolla"])
    assert not _differences(conf, kolla, kolla_options)
    assert conf.profiles["mine"] == ["keystone", "glance"]


def _assert_same_sources(settings, kolla_sources: dict) -> None:
    """Each source section kolla-build parsed reads the same in kiln's settings."""
    for name, source in kolla_sources.items():
        spec = settings.sources[name]
        sha256 = source["sha256"][settings.templates.kolla.debian_arch] \
            if source["sha256"] else None
        assert (spec.type, spec.location, spec.reference, spec.enabled, spec.sha256) == (
            source["type"], source["location"], source["reference"], source["enabled"],
            sha256), name


def test_sources_and_users_read_as_kolla_builds(kolla_install, tmp_path, caplog):
    path = tmp_path / "kolla-build.conf"
    path.write_text(SOURCES_CONF)
    kolla = _kolla(kolla_install, [["--config-file", path]], sources=["etcd", "keystone-base"],
                   users=["keystone"])["runs"][0]
    settings = _load(["--config-file", str(path), "--template-api", "kolla"])
    assert not [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    _assert_same_sources(settings, kolla["sources"])
    assert settings.sources["etcd"].location.startswith("https://tarballs.opendev.org/etcd/")
    for name, user in kolla["users"].items():
        mine = settings.templates.kolla.users[name]
        assert (mine.uid, mine.gid, mine.group) == (user["uid"], user["gid"], user["group"])


def test_every_source_and_user_key_is_read(kolla_install):
    declared = _kolla(kolla_install, [])
    for key in declared["source_keys"] + declared["user_keys"]:
        assert key["name"] in SOURCES_CONF, f"{key['group']} key {key['name']} is not tested"


# --- --build-args: kiln's KEY=VALUE and kolla-build's KEY:VALUE -----------------------

def test_build_args_in_both_forms(tmp_path, empty_config):
    conf = tmp_path / "kolla-build.conf"
    conf.write_text("[DEFAULT]\nbuild_args = FROM_FILE:1,OTHER:two\n")
    settings = _load([
        "--config-file", conf, "--build-args", "HTTP_PROXY:http://proxy:3128",
        "--build-args", "A:1,B:x:y", "--build-args", "NO_PROXY=localhost,127.0.0.1",
        "--build-args", "EMPTY:", "--build-args", "URL=http://h:1/a"])
    args = settings.run.build_args
    assert {key: args[key] for key in ("HTTP_PROXY", "A", "B", "NO_PROXY", "EMPTY", "URL")} == {
        "HTTP_PROXY": "http://proxy:3128", "A": "1", "B": "x:y",
        "NO_PROXY": "localhost,127.0.0.1", "EMPTY": "", "URL": "http://h:1/a"}
    # kiln adds the command line's to the config file's (kolla-build keeps only those)
    assert (args["FROM_FILE"], args["OTHER"]) == ("1", "two")


@pytest.mark.parametrize("value", ["A:1,B", "1A:2", "A:1,-B:2", "no separator"])
def test_bad_build_args_name_the_option(value, empty_config):
    with pytest.raises(ConfigError, match=r"--build-args"):
        _load(["--config-file", empty_config, "--build-args", value])


# --- options kiln accepts but cannot honour: one warning each ------------------------

SVC_USER = "\n[svc-user]\nuid = 50000\ngid = 50001\n"  # minikolla's service user
WARNED = {
    "--buildkit": "--buildkit: kiln builds with each engine's own API",
    "--buildkit-builder=b": "--buildkit-builder: kiln does not use docker buildx builders",
    "--platform=linux/arm64": "--platform linux/arm64: kiln builds for the engine's own",
    "--squash": "--squash: kiln does not squash layers",
    "--keep": "--keep: kiln always removes the intermediate containers",
    "--tarballs-base=http://mirror": "--tarballs-base: no source section refers to it",
    "--locals-base=/src": "--locals-base: kolla-build 23.0.0 itself reads it nowhere",
    "--podman_base_url=unix:///p.sock": "--podman_base_url: used only with --engine podman",
}


def test_each_option_kiln_cannot_honour_is_one_warning(kiln, tmp_path):
    conf = tmp_path / "kolla-build.conf"
    conf.write_text("[DEFAULT]\nsquash_cleanup = false\nsquash_tmp_dir = /tmp/sq\n" + SVC_USER)
    result = kiln("--config-file", conf, "--template-api", "kolla", "--list-images",
                  "--templates-dir", MINIKOLLA, *WARNED, "^base$")
    assert result.code == 0, result.err
    warnings = [line for line in result.err.splitlines() if ": warning: " in line]
    expected = [*WARNED.values(), "squash_cleanup: kiln does not squash layers",
                "squash_tmp_dir: kiln does not squash layers"]
    for text in expected:
        assert sum(text in line for line in warnings) == 1, (text, result.err)
    assert len(warnings) == len(expected), result.err


def test_what_kiln_does_anyway_is_no_warning(kiln, tmp_path, empty_config):
    """Kolla's defaults, the options kiln honours, and $tarballs_base used, are silent."""
    conf = tmp_path / "kolla-build.conf"
    conf.write_text("[DEFAULT]\ntarballs_base = http://mirror\n\n[svc-api]\ntype = url\n"
                    "location = $tarballs_base/svc.tar.gz\n" + SVC_USER)
    result = kiln("--config-file", conf, "--template-api", "kolla", "--list-images",
                  "--nobuildkit", "--nosquash", "--nokeep", "--nocache", "--nosummary",
                  "--timeout", "30", "--engine", "podman", "--podman_base_url",
                  "unix:///p.sock", "--templates-dir", MINIKOLLA, "^base$")
    assert result.code == 0, result.err
    assert ": warning: " not in result.err, result.err


# --- Kolla's built-in source sections (kolla/common/sources.yaml) ---------------------

BUILT_IN_CHANGES = """\
[nova-base]
enabled = false

[horizon]
location = https://mirror.example.org/horizon.tar.gz

[neutron-base-plugin-networking-sfc]
type = git
location = https://opendev.org/openstack/networking-sfc
reference = master
"""


def test_kolla_built_in_sources_read_as_kolla_builds(kolla_install, tmp_path, caplog):
    """Without a section in the config, every source is kolla-build's own; a section
    of the same name changes only the keys it sets."""
    path = tmp_path / "kolla-build.conf"
    path.write_text(BUILT_IN_CHANGES)
    built_in = kolla_default_sources(kolla_install.docker_dir)
    assert len(built_in) > 50 and "keystone-base" in built_in
    kolla = _kolla(kolla_install, [["--config-file", path, "--base", "debian"]],
                   sources=sorted(built_in))["runs"][0]
    settings = _load(["--config-file", str(path), "--template-api", "kolla", "--base",
                      "debian", "--templates-dir", str(kolla_install.docker_dir)])
    assert not [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert set(kolla["sources"]) <= set(settings.sources)
    _assert_same_sources(settings, kolla["sources"])
    assert settings.sources["nova-base"].enabled is False
    assert settings.sources["horizon"].location == "https://mirror.example.org/horizon.tar.gz"
    assert settings.sources["horizon"].type == "url"        # the key left alone
    assert settings.sources["keystone-base"].location.startswith(
        "https://tarballs.opendev.org/openstack/keystone/keystone-")
    # untouched built-in sections are not the user's: no "unused section" warning for them
    assert "keystone-base" in settings.builtin_sources
    assert not {"nova-base", "horizon", "neutron-base-plugin-networking-sfc"} \
        & settings.builtin_sources


def test_built_in_sources_only_under_the_kolla_api(kolla_install, empty_config):
    settings = _load(["--config-file", str(empty_config),
                      "--templates-dir", str(kolla_install.docker_dir)])
    assert not settings.sources


def test_unused_source_sections_warn_before_any_build(kiln, kolla_install, tmp_path):
    """A plugin section of no image, and a source of no image, are one warning each,
    with --template-only too; Kolla's built-in sections of images the tree lacks are
    not the user's and say nothing."""
    conf = tmp_path / "kolla-build.conf"
    conf.write_text("[nosuch-plugin-x]\ntype = local\nlocation = /tmp\n\n"
                    "[nosuch]\ntype = local\nlocation = /tmp\n" + SVC_USER)
    result = kiln("--config-file", conf, "--template-api", "kolla", "--template-only",
                  "--work-dir", tmp_path / "work", "--templates-dir", MINIKOLLA, "^base$")
    assert result.code == 0, result.err
    warnings = [line for line in result.err.splitlines() if ": warning: " in line]
    assert len(warnings) == 2, result.err
    assert "[nosuch-plugin-x] is a plugin or addition section" in warnings[0] + warnings[1]
    assert "[nosuch] defines a source, but the template set has no image" in result.err

    # Kolla's own tree and its built-in sections, nothing in the config: no warning
    conf.write_text("")
    result = kiln("--config-file", conf, "--template-api", "kolla", "--list-images",
                  "--templates-dir", kolla_install.docker_dir, "^base$")
    assert result.code == 0, result.err
    assert ": warning: " not in result.err, result.err
