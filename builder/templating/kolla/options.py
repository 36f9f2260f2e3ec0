"""Kolla's options (oslo.config) and `[<name>-user]` sections, read into KollaSettings.

Every option of kolla-build 23.0.0 is declared here or (where kiln has one of
its own of the same name) in ``builder/cli/options.py``. Under
``--template-api kolla`` kolla-build's defaults apply (:func:`use_kolla_defaults`);
options kiln cannot honour are accepted with one warning each (:func:`warnings`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from oslo_config import cfg

from builder.cli.config_files import config_files, read_settings
from builder.errors import ConfigError
from builder.settings import PROXY_VARIABLES
from builder.templating.kolla.settings import (
    ARCHES,
    BASE_IMAGES,
    DEBIAN_ARCHES,
    DISTROS,
    KOLLA_PROFILES,
    MAINTAINER,
    NAMESPACE,
    OPENSTACK_RELEASE,
    OPENSTACK_RELEASE_CODENAME,
    KollaSettings,
    detect_kolla_version,
    find_kolla_repos_yaml,
    host_arch,
    kolla_settings,
)

TARBALLS_BASE = "https://tarballs.opendev.org"
PODMAN_BASE_URL = "unix:///run/podman/podman.sock"

# Kolla passes both spellings of each proxy variable on.
_PROXY_VARIABLES = tuple(name for upper in PROXY_VARIABLES for name in (upper.lower(), upper))


# --- options -------------------------------------------------------------------

_FOR_KOLLA = " (--template-api kolla)"

CLI_OPTS = [
    cfg.StrOpt("base", short="b", default="rocky", choices=DISTROS,
               help="The distro type of the base image" + _FOR_KOLLA + "."),
    cfg.StrOpt("base-tag",
               help="The base distro image tag. Default: Kolla's for --base "
                    "(debian: trixie, rocky: 10, ubuntu: 24.04)."),
    cfg.StrOpt("base-image",
               help="The base image name. Default: Kolla's for --base "
                    "(debian, quay.io/rockylinux/rockylinux, ubuntu)."),
    cfg.StrOpt("base-arch", default=host_arch(), choices=ARCHES,
               sample_default="the host's",
               help="The base architecture" + _FOR_KOLLA + ". Default is "
                    "same as host."),
    cfg.StrOpt("debian-arch", choices=sorted(set(DEBIAN_ARCHES.values())),
               help="The architecture name of Debian packages. Default: "
                    "derived from --base-arch."),
    cfg.StrOpt("openstack-release", default=OPENSTACK_RELEASE,
               help="OpenStack release for building kolla source images and "
                    "kolla-toolbox image" + _FOR_KOLLA + "."),
    cfg.StrOpt("openstack-release-codename", default=OPENSTACK_RELEASE_CODENAME,
               help="OpenStack release codename for Debian OpenStack extrepo "
                    "and Ubuntu Cloud Archive" + _FOR_KOLLA + "."),
    cfg.StrOpt("openstack-branch",
               help="Branch for source images, with a dash. Default: "
                    "stable-<openstack-release> (master for master)."),
    cfg.StrOpt("openstack-branch-slashed",
               help="Branch for source images, with a slash. Default: "
                    "stable/<openstack-release> (master for master)."),
    cfg.StrOpt("maintainer", default=MAINTAINER,
               help="Content of the maintainer label" + _FOR_KOLLA + "."),
    cfg.StrOpt("distro_package_manager",
               help="The package manager templates use. Default: dnf for "
                    "rocky, apt for debian and ubuntu."),
    cfg.StrOpt("base_package_type",
               help="The package type of the distro. Default: rpm for "
                    "rocky, deb for debian and ubuntu."),
    cfg.ListOpt("rpm_setup_config", default=[],
                help="Comma separated list of .rpm or .repo file(s) or URL(s) "
                     "to install before building containers" + _FOR_KOLLA + "."),
    cfg.BoolOpt("clean_package_cache", default=True,
                help="Clean all package cache" + _FOR_KOLLA + "."),
    cfg.BoolOpt("use-dumb-init", default=True,
                help="Use dumb-init as init system in containers"
                     + _FOR_KOLLA + "."),
    cfg.BoolOpt("docker-healthchecks", default=True,
                help="Add Kolla docker healthcheck scripts in the image"
                     + _FOR_KOLLA + "."),
    cfg.StrOpt("repos-yaml", default="",
               help="Path to a repos.yaml override file, merged into Kolla's "
                    "repos.yaml" + _FOR_KOLLA + "."),
    cfg.StrOpt("patches-path",
               help="The path where patch files to be applied are located"
                    + _FOR_KOLLA + "."),
    cfg.StrOpt("apt_sources_list",
               help="Path to custom sources.list (written as base/sources.list)"
                    + _FOR_KOLLA + "."),
    cfg.StrOpt("apt_preferences",
               help="Path to custom apt/preferences (written as "
                    "base/apt_preferences)" + _FOR_KOLLA + "."),
    cfg.StrOpt("pip_index_url",
               help="URL of the primary pip index (adds ARG PIP_INDEX_URL "
                    "after the first FROM)" + _FOR_KOLLA + "."),
    cfg.StrOpt("pip_trusted_host",
               help="Hostname to mark as trusted for pip (adds ARG "
                    "PIP_TRUSTED_HOST)" + _FOR_KOLLA + "."),
    cfg.StrOpt("pip_extra_index_url",
               help="URL of an extra pip index (adds ARG "
                    "PIP_EXTRA_INDEX_URL)" + _FOR_KOLLA + "."),
    cfg.BoolOpt("enable-unbuildable", default=False,
                help="Enable images Kolla marks as unbuildable on --base / "
                     "--base-arch" + _FOR_KOLLA + "."),
    cfg.StrOpt("kolla-repos-yaml",
               help="Kolla's own repos.yaml, the table handle_repos() reads. "
                    "Default: the one that comes with the --templates-dir "
                    "tree (../template/repos.yaml of an installed kolla "
                    "package, ../kolla/template/repos.yaml of a source tree)."),
    # kolla-build's options kiln honours in its own way, or cannot (see warnings())
    cfg.BoolOpt("buildkit", default=True,
                help="kolla-build: build with Docker BuildKit. kiln builds with "
                     "each engine's own API (docker: the classic builder); "
                     "--buildkit is accepted with a warning."),
    cfg.StrOpt("buildkit-builder",
               help="kolla-build: the docker buildx builder. Accepted with a "
                    "warning: kiln does not use buildx."),
    cfg.StrOpt("platform",
               help="kolla-build: the platform of a cross-compile build. "
                    "Accepted with a warning: kiln builds for the engine's "
                    "own platform."),
    cfg.BoolOpt("squash", default=False,
                help="kolla-build: squash the image layers. Accepted with a "
                     "warning: kiln keeps the layers (they are its cache)."),
    cfg.BoolOpt("keep", default=False,
                help="kolla-build: keep failed intermediate containers. "
                     "Accepted with a warning: kiln removes them (the build "
                     "log keeps the output)."),
    cfg.BoolOpt("summary", default=True,
                help="Print the summary of the run at the end (--nosummary: "
                     "do not)."),
    cfg.IntOpt("timeout", default=120,
               help="Time in seconds after which a source download (url or "
                    "git source) times out."),
    cfg.StrOpt("tarballs-base", default=TARBALLS_BASE,
               help="Base URL of OpenStack tarballs, for $tarballs_base in "
                    "Kolla's built-in source sections and config values."),
    cfg.StrOpt("locals-base", default="./",
               help="kolla-build: base directory for local sources, for "
                    "$locals_base in config values."),
    cfg.StrOpt("podman_base_url", default=PODMAN_BASE_URL,
               help="The podman socket kiln talks to with --engine podman, "
                    "when given (else podman's own default)."),
    cfg.StrOpt("kolla-version",
               help="The kolla_version label. Default: the version of the "
                    "kolla package holding --templates-dir, or the short "
                    "commit of a Kolla git checkout, as kolla-build says."),
]


# Read from config files only, as kolla-build does.
CONFIG_OPTS = [
    cfg.BoolOpt("squash-cleanup", default=True,
                help="kolla-build: remove the source image after squashing. "
                     "Accepted with a warning: kiln does not squash."),
    cfg.StrOpt("squash-tmp-dir",
               help="kolla-build: temporary directory used while squashing. "
                    "Accepted with a warning: kiln does not squash."),
]

# kiln's options whose default under --template-api kolla is kolla-build's
KOLLA_DEFAULTS = {"namespace": NAMESPACE, "network_mode": "host", "retries": 3,
                  "pull": True, "format": "json"}


def use_kolla_defaults(conf: cfg.ConfigOpts) -> None:
    """kolla-build's defaults, for options the command line and config leave out.

    The computed ones as kolla-build computes them (base tag, tag, branches,
    Debian arch), and Kolla's [profiles]; a config file's profile of the same
    name wins.
    """
    for name, value in KOLLA_DEFAULTS.items():
        conf.set_default(name, value)
    base_tag = conf.base_tag or BASE_IMAGES[conf.base][1]
    conf.set_default("base_tag", base_tag)
    conf.set_default("tag", f"{conf.openstack_release}-{conf.base}-{base_tag}")
    branch = ("master" if conf.openstack_release == "master"
              else f"stable-{conf.openstack_release}")
    conf.set_default("openstack_branch", branch)
    conf.set_default("openstack_branch_slashed", branch.replace("-", "/"))
    conf.set_default("debian_arch", DEBIAN_ARCHES[conf.base_arch])
    for name, images in KOLLA_PROFILES.items():
        if name not in conf.profiles:
            conf.register_opt(cfg.ListOpt(name, default=list(images)), group="profiles")


def warnings(conf: cfg.ConfigOpts, config_values: Iterable[str]) -> list[str]:
    """One warning per kolla-build option given that kiln cannot honour.

    ``config_values`` are the raw values of the config files and of Kolla's
    built-in source sections (for the
    ``$tarballs_base`` / ``$locals_base`` they may refer to).
    """
    found = []

    def given(name: str) -> bool:
        return is_given(conf, name)

    if given("buildkit") and conf.buildkit:
        found.append("--buildkit: kiln builds with each engine's own API (docker: the "
                     "classic builder, not BuildKit); building without BuildKit")
    if given("buildkit_builder"):
        found.append("--buildkit-builder: kiln does not use docker buildx builders; "
                     "ignored")
    if given("platform"):
        found.append(f"--platform {conf.platform}: kiln builds for the engine's own "
                     f"platform; ignored")
    if given("squash") and conf.squash:
        found.append("--squash: kiln does not squash layers (they are its layer cache "
                     "and what its fingerprints reuse); building without squashing")
    for name in ("squash_cleanup", "squash_tmp_dir"):
        if given(name):
            found.append(f"{name}: kiln does not squash layers; ignored")
    if given("keep") and conf.keep:
        found.append("--keep: kiln always removes the intermediate containers of a failed "
                     "build (its log keeps the output); ignored")
    text = "\n".join(config_values)
    for name, why in (("tarballs_base", "no source section refers to it"),
                      ("locals_base", "kolla-build 23.0.0 itself reads it nowhere")):
        if given(name) and f"${name}" not in text and f"${{{name}}}" not in text:
            found.append(f"--{name.replace('_', '-')}: {why}; kiln uses it only where a "
                         f"config value says ${name} (none does); ignored")
    if given("podman_base_url") and conf.engine != "podman":
        found.append(f"--podman_base_url: used only with --engine podman (the engine is "
                     f"{conf.engine}); ignored")
    return found


def is_given(conf: cfg.ConfigOpts, name: str, group: str | None = None) -> bool:
    """Whether the command line or a config file sets the option (not its default)."""
    where = conf.get_location(name, group)
    return where is not None and where.location.is_user_controlled


def engine_base_url(conf: cfg.ConfigOpts) -> str | None:
    """--podman_base_url when given for the podman engine; None: the engine's default."""
    if conf.engine == "podman" and is_given(conf, "podman_base_url"):
        return conf.podman_base_url
    return None


def settings_from_conf(conf: cfg.ConfigOpts) -> KollaSettings:
    """Read Kolla's options (and ``[<name>-user]`` sections) into settings."""
    templates_dir = Path(conf.templates_dir).expanduser() if conf.templates_dir else None
    settings = kolla_settings(
        conf.base,
        base_tag=conf.base_tag,
        base_image=conf.base_image,
        base_arch=conf.base_arch,
        debian_arch=conf.debian_arch,
        openstack_release=conf.openstack_release,
        openstack_release_codename=conf.openstack_release_codename,
        openstack_branch=conf.openstack_branch,
        openstack_branch_slashed=conf.openstack_branch_slashed,
        maintainer=conf.maintainer,
        distro_package_manager=conf.distro_package_manager,
        base_package_type=conf.base_package_type,
        rpm_setup_config=conf.rpm_setup_config,
        clean_package_cache=conf.clean_package_cache,
        use_dumb_init=conf.use_dumb_init,
        docker_healthchecks=conf.docker_healthchecks,
        repos_yaml=_optional_file(conf.repos_yaml, "--repos-yaml"),
        patches_path=conf.patches_path,
        apt_sources_list=_optional_file(conf.apt_sources_list, "--apt-sources-list") or None,
        apt_preferences=_optional_file(conf.apt_preferences, "--apt-preferences") or None,
        kolla_version=(conf.kolla_version if conf.kolla_version is not None
                       else detect_kolla_version(templates_dir)),
        users=_user_sections(config_files(conf)),
        kolla_repos_yaml=(Path(_optional_file(conf.kolla_repos_yaml, "--kolla-repos-yaml"))
                          .expanduser()
                          if conf.kolla_repos_yaml else find_kolla_repos_yaml(templates_dir)),
        environment={name: os.environ[name]
                     for name in (*_PROXY_VARIABLES, *conf.template_env)
                     if name in os.environ},
        pip_args=tuple((arg, value) for arg, value in (
            ("PIP_INDEX_URL", conf.pip_index_url),
            ("PIP_TRUSTED_HOST", conf.pip_trusted_host),
            ("PIP_EXTRA_INDEX_URL", conf.pip_extra_index_url)) if value),
        enable_unbuildable=conf.enable_unbuildable,
    )
    # Kolla's namespace and tag, unless the user chose kiln's
    return replace(
        settings,
        namespace=None if _user_set(conf, "namespace") else settings.namespace,
        tag=None if _user_set(conf, "tag") else settings.tag)


def _user_set(conf: cfg.ConfigOpts, name: str) -> bool:
    try:
        return conf.get_location(name).location.is_user_controlled
    except (cfg.NoSuchOptError, AttributeError):
        return True


def _optional_file(value: str | None, option: str) -> str:
    """The value as given (templates see it so), once it names a file."""
    if value and not Path(value).expanduser().is_file():
        raise ConfigError(f"{option} {value}: no such file")
    return value or ""


def _user_sections(paths: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``[<name>-user]`` sections of the config files: {name: {uid, gid, group}}."""
    users: dict[str, dict[str, Any]] = {}
    for path in paths:
        for setting in read_settings(path):
            section = setting.section
            if not section.endswith("-user"):
                continue
            user = users.setdefault(section[:-len("-user")], {})
            if setting.key is None:
                continue
            key = setting.key.replace("-", "_")
            if key == "group":
                user[key] = setting.value
            elif key in ("uid", "gid"):
                try:
                    user[key] = int(setting.value)
                except ValueError:
                    raise ConfigError(f"[{section}] {setting.key} = {setting.value!r}: "
                                      f"not an integer", path=path,
                                      line=setting.line) from None
    return users
