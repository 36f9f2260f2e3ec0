"""Kolla's options (oslo.config) and `[<name>-user]` sections, read into KollaSettings."""

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
    DEBIAN_ARCHES,
    DISTROS,
    MAINTAINER,
    OPENSTACK_RELEASE,
    OPENSTACK_RELEASE_CODENAME,
    KollaSettings,
    detect_kolla_version,
    find_kolla_repos_yaml,
    host_arch,
    kolla_settings,
)

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
    cfg.StrOpt("kolla-version",
               help="The kolla_version label. Default: the version of the "
                    "kolla package holding --templates-dir, or the short "
                    "commit of a Kolla git checkout, as kolla-build says."),
]


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
