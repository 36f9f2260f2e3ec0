"""Kolla's template API (``--template-api kolla``): what kolla-build gives templates.

With it, Kolla's own ``docker/`` tree renders through kiln's single Jinja
environment into the Dockerfiles kolla-build writes, byte for byte:

- Kolla's lexer options (Jinja's defaults: no trim_blocks, no lstrip_blocks,
  the final newline dropped) and lenient ``jinja2.Undefined``;
- its render variables (``base_distro``, ``namespace`` with the registry,
  ``users`` ...), computed once for the run from :class:`KollaSettings`;
- its functions (``handle_repos``, ``cleanup_repos``, ``debian_package_install``,
  ``raise_error``) and its ``customizable`` filter. The repository table
  (Kolla's ``repos.yaml`` merged with ``--repos-yaml``) is read once, and each
  distinct ``handle_repos`` call is worked out once per run, where kolla-build
  re-reads the YAML files on every call.

The defaults are kolla 23.0.0's. This module is the only one that knows them;
:func:`settings_from_conf` is its only reader of oslo.config.

Where kiln differs from kolla-build on purpose:

- ``--template-override`` files extend each other for real (kolla-build
  pastes them into one text and deletes their ``extends`` lines). The output
  is the same unless two files set the same top-level variable: kolla-build
  keeps the later file's, which needs the first file on top of the chain
  (``TemplateAPI.overrides_first_on_top``). Text
  before ``{% extends %}`` in a second or later file is output by kiln.
- ``env`` holds the proxy variables and the ``--template-env`` ones, not the
  whole process environment.
- ``--debian-arch`` is honoured (kolla-build 23 derives ``debian_arch`` from
  ``--base-arch`` whatever it says).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import jinja2
from oslo_config import cfg

from builder.exceptions import ConfigError, TemplateError
from builder.naming import ImageNaming
from builder.templateapi import TemplateAPI

if TYPE_CHECKING:
    import networkx as nx

# --- kolla 23.0.0's defaults -------------------------------------------------

DISTROS = ("debian", "rocky", "ubuntu")
ARCHES = ("x86_64", "aarch64")
DEBIAN_ARCHES = {"x86_64": "amd64", "aarch64": "arm64"}
# --base -> (base image, base tag)
BASE_IMAGES = {
    "debian": ("debian", "trixie"),
    "rocky": ("quay.io/rockylinux/rockylinux", "10"),
    "ubuntu": ("ubuntu", "24.04"),
}
# PRETTY_NAME of /etc/os-release that the base image checks for
SUPPORTED_DISTRO_NAMES = {
    "debian": "Debian GNU/Linux 13 (trixie)",
    "rocky": "Rocky Linux 10.* (Red Quartz)",
    "ubuntu": "Ubuntu 24.04.* LTS",
}
PACKAGE_TYPES = {"debian": "deb", "ubuntu": "deb", "rocky": "rpm"}
PACKAGE_MANAGERS = {"debian": "apt", "ubuntu": "apt", "rocky": "dnf"}
OPENSTACK_RELEASE = "2026.2"
OPENSTACK_RELEASE_CODENAME = "Hibiscus"
MAINTAINER = "Kolla Project (https://launchpad.net/kolla)"
NAMESPACE = "kolla"

# Kolla's service users: "name id" pairs, uid = gid = id; the group is the
# user's name unless _USER_GROUPS says otherwise. [<name>-user] sections of
# the config files change them (uid, gid, group) or add users.
_USER_IDS = """
kolla 42400 ansible 42401 aodh 42402 barbican 42403 bifrost 42404
ceilometer 42405 cinder 42407 cloudkitty 42408 collectd 42409 congress 42410
designate 42411 elasticsearch 42412 etcd 42413 freezer 42414 glance 42415
gnocchi 42416 grafana 42417 heat 42418 horizon 42420 influxdb 42421
ironic 42422 kafka 42423 keystone 42425 kibana 42426 qemu 42427 magnum 42428
manila 42429 mistral 42430 monasca 42431 mongodb 42432 murano 42433
mysql 42434 neutron 42435 nova 42436 octavia 42437 rabbitmq 42439
rally 42440 sahara 42441 senlin 42443 solum 42444 swift 42445 tacker 42446
td-agent 42447 telegraf 42448 trove 42449 vmtp 42450 watcher 42451
zookeeper 42453 haproxy 42454 memcached 42457 vitrage 42459 redis 42460
ironic-inspector 42461 odl 42462 zun 42463 dragonflow 42464 qdrouterd 42465
ec2api 42466 sensu 42467 skydive 42468 kuryr 42469 blazar 42471
prometheus 42472 libvirt 42473 fluentd 42474 almanach 42475
openvswitch 42476 hugetlbfs 42477 logstash 42478 storm 42479 tempest 42480
nfast 42481 placement 42482 cyborg 42483 masakari 42485 hacluster 42486
proxysql 42487 letsencrypt 42488 venus 42489 opensearch 42490 skyline 42491
opensearch-dashboards 42492 hsmusers 42493 valkey 42494 kerbside 42495
"""
_USER_GROUPS = {"hacluster": "haclient"}

# Images kolla-build does not build (nor render with --template-only, nor
# list) on a base or arch, with their descendants: keys are "<base>",
# "<arch>" or "<base>+<arch>", and match when every part does.
UNBUILDABLE = {
    "aarch64": ("bifrost-base",),
    "rocky": ("collectd", "hacluster-pcs", "nova-spicehtml5proxy", "ovsdpdk", "tgtd"),
}

# handle_repos()/cleanup_repos(): where build-only repositories are saved
REPOS_BACKUP_DIR = "/tmp/kolla-repos-backup"  # noqa: S108 (a path in the image)
_URL_KEYS = ("baseurl", "metalink", "mirrorlist", "url")
_PROXY_VARIABLES = tuple(name for base in ("http_proxy", "https_proxy", "ftp_proxy",
                                           "no_proxy", "all_proxy")
                         for name in (base, base.upper()))

# Jinja's defaults, which kolla-build uses (they change the compiled code).
KOLLA_SYNTAX = {"trim_blocks": False, "lstrip_blocks": False,
                "keep_trailing_newline": False}


def _host_arch() -> str:
    machine = os.uname().machine
    machine = "aarch64" if machine == "arm64" else machine
    return machine if machine in ARCHES else "x86_64"


def _default_users() -> dict[str, KollaUser]:
    words = _USER_IDS.split()
    return {name: KollaUser(int(uid), int(uid), _USER_GROUPS.get(name, name))
            for name, uid in zip(words[::2], words[1::2], strict=True)}


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
    cfg.StrOpt("base-arch", default=_host_arch(), choices=ARCHES,
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


# --- settings --------------------------------------------------------------------

@dataclass(frozen=True)
class KollaUser:
    uid: int | None
    gid: int | None
    group: str


@dataclass(frozen=True)
class KollaSettings:
    """Kolla's render settings, resolved: what templates will be given.

    Build one with :func:`kolla_settings` (Kolla's defaults for a base) or
    :func:`settings_from_conf`.
    """

    base: str
    base_image: str
    base_tag: str
    base_arch: str
    debian_arch: str
    base_package_type: str
    distro_package_manager: str
    supported_distro_name: str | None
    openstack_release: str
    openstack_release_codename: str
    openstack_branch: str
    openstack_branch_slashed: str
    maintainer: str
    kolla_version: str
    users: Mapping[str, KollaUser]
    rpm_setup: tuple[str, ...]
    clean_package_cache: bool
    use_dumb_init: bool
    docker_healthchecks: bool
    repos_yaml: str            # --repos-yaml as given ('' when none)
    patches_path: str | None
    # Kolla's own repos.yaml (None: not found; handle_repos() then fails)
    kolla_repos_yaml: Path | None
    # the environment templates see as ``env`` (proxy variables, --template-env)
    environment: Mapping[str, str] = field(default_factory=dict)
    # ARG lines added after the first FROM: (name, value)
    pip_args: tuple[tuple[str, str], ...] = ()
    # images Kolla does not build on this base and arch (their descendants
    # neither); empty with --enable-unbuildable
    unbuildable: frozenset[str] = frozenset()
    # Kolla's image naming where the user left kiln's: None keeps kiln's
    namespace: str | None = None
    tag: str | None = None


def kolla_settings(base: str = "rocky", *, base_tag: str | None = None,
                   base_image: str | None = None, base_arch: str | None = None,
                   debian_arch: str | None = None,
                   openstack_release: str = OPENSTACK_RELEASE,
                   openstack_release_codename: str = OPENSTACK_RELEASE_CODENAME,
                   openstack_branch: str | None = None,
                   openstack_branch_slashed: str | None = None,
                   maintainer: str = MAINTAINER,
                   distro_package_manager: str | None = None,
                   base_package_type: str | None = None,
                   rpm_setup_config: Sequence[str] = (),
                   clean_package_cache: bool = True, use_dumb_init: bool = True,
                   docker_healthchecks: bool = True, repos_yaml: str = "",
                   patches_path: str | None = None, kolla_version: str = "",
                   users: Mapping[str, Mapping[str, Any]] | None = None,
                   kolla_repos_yaml: Path | None = None,
                   environment: Mapping[str, str] | None = None,
                   pip_args: Sequence[tuple[str, str]] = (),
                   enable_unbuildable: bool = False) -> KollaSettings:
    """Kolla's settings for ``base``, each left-out value given Kolla's default.

    ``users`` changes or adds service users: ``{name: {"uid": .., "gid": ..,
    "group": ..}}`` with any of the keys, as ``[<name>-user]`` sections do.
    """
    if base not in DISTROS:
        raise ConfigError(f"--base {base!r}: Kolla's bases are {', '.join(DISTROS)}")
    default_image, default_tag = BASE_IMAGES[base]
    base_arch = base_arch or _host_arch()
    base_tag = base_tag or default_tag
    # the branch defaults both come from the release, as kolla-build's do
    branch = openstack_release if openstack_release == "master" \
        else f"stable-{openstack_release}"
    return KollaSettings(
        base=base,
        base_image=base_image or default_image,
        base_tag=base_tag,
        base_arch=base_arch,
        debian_arch=debian_arch or DEBIAN_ARCHES.get(base_arch, base_arch),
        base_package_type=base_package_type or PACKAGE_TYPES[base],
        distro_package_manager=distro_package_manager or PACKAGE_MANAGERS[base],
        supported_distro_name=SUPPORTED_DISTRO_NAMES.get(base),
        openstack_release=openstack_release,
        openstack_release_codename=openstack_release_codename,
        openstack_branch=openstack_branch or branch,
        openstack_branch_slashed=openstack_branch_slashed or branch.replace("-", "/"),
        maintainer=maintainer,
        kolla_version=kolla_version,
        users=_merge_users(users or {}),
        rpm_setup=rpm_setup_commands(rpm_setup_config),
        clean_package_cache=clean_package_cache,
        use_dumb_init=use_dumb_init,
        docker_healthchecks=docker_healthchecks,
        repos_yaml=repos_yaml or "",
        patches_path=patches_path,
        kolla_repos_yaml=kolla_repos_yaml,
        environment=dict(environment or {}),
        pip_args=tuple(pip_args),
        unbuildable=(frozenset() if enable_unbuildable
                     else unbuildable_images(base, base_arch)),
        namespace=NAMESPACE,
        tag=f"{openstack_release}-{base}-{base_tag}",
    )


def unbuildable_images(base: str, arch: str) -> frozenset[str]:
    """The images Kolla marks unbuildable for a base and arch (descendants aside)."""
    return frozenset(name for key, names in UNBUILDABLE.items()
                     if set(key.split("+")) <= {base, arch} for name in names)


def without_unbuildable(graph: nx.DiGraph, settings: KollaSettings) -> nx.DiGraph:
    """The image graph without Kolla's unbuildable images and their descendants.

    kolla-build neither builds, lists nor renders (--template-only) them.
    """
    dropped: set[str] = set()
    stack = [name for name in settings.unbuildable if name in graph]
    while stack:
        name = stack.pop()
        if name not in dropped:
            dropped.add(name)
            stack.extend(graph.successors(name))
    if not dropped:
        return graph
    return graph.subgraph(set(graph) - dropped).copy()


def _merge_users(changes: Mapping[str, Mapping[str, Any]]) -> dict[str, KollaUser]:
    users = _default_users()
    for name, values in changes.items():
        user = users.get(name, KollaUser(None, None, name))
        users[name] = replace(user, **{key: values[key] for key in ("uid", "gid", "group")
                                       if key in values})
    return users


def rpm_setup_commands(configs: Iterable[str]) -> tuple[str, ...]:
    """Kolla's rpm_setup: one Dockerfile line per --rpm_setup_config entry."""
    commands = []
    for config in configs:
        if config is None:
            continue
        if config.endswith(".rpm"):
            commands.append(f"RUN dnf -y install {config}")
        elif config.endswith(".repo") and config.startswith("http"):
            commands.append(f"RUN curl -L {config} -o "
                            f"/etc/yum.repos.d/{config.split('/')[-1]}")
        elif config.endswith(".repo"):
            commands.append(f"COPY {config} /etc/yum.repos.d/")
        elif not config:
            commands.append("")
        else:
            raise ConfigError(f"rpm_setup_config {config!r}: RPM setup must be "
                              f"given as .rpm or .repo files")
    return tuple(commands)


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
        kolla_version=(conf.kolla_version if conf.kolla_version is not None
                       else detect_kolla_version(templates_dir)),
        users=_user_sections(_config_files(conf)),
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


def kolla_naming(settings: KollaSettings, naming: ImageNaming) -> ImageNaming:
    """kiln's image naming with Kolla's namespace and tag where the user left kiln's."""
    return replace(naming, namespace=settings.namespace or naming.namespace,
                   tag=settings.tag or naming.tag)


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


def _config_files(conf: cfg.ConfigOpts) -> list[str]:
    files = list(conf.config_file or [])
    for directory in conf.config_dir or []:
        files.extend(sorted(str(p) for p in Path(directory).glob("*.conf")))
    return files


def _user_sections(paths: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``[<name>-user]`` sections of the config files: {name: {uid, gid, group}}."""
    from builder.config import read_settings  # config imports this module

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


def find_kolla_repos_yaml(templates_dir: Path | None) -> Path | None:
    """Kolla's repos.yaml beside its ``docker/`` tree (package or source layout)."""
    if templates_dir is None:
        return None
    parent = templates_dir.resolve().parent
    for candidate in (parent / "template" / "repos.yaml",
                      parent / "kolla" / "template" / "repos.yaml"):
        if candidate.is_file():
            return candidate
    return None


def detect_kolla_version(templates_dir: Path | None) -> str:
    """What kolla-build labels images with, for the Kolla holding ``templates_dir``.

    A git checkout (``docker/`` beside ``.git``): its short commit; an
    installed package (``site-packages/kolla/docker``): the package version.
    """
    if templates_dir is None:
        return ""
    root = templates_dir.resolve().parent
    if (root / ".git").exists():
        try:
            result = subprocess.run(
                ["git", f"--git-dir={root / '.git'}", "log", "-n1", "--pretty=format:%h"],
                capture_output=True, text=True, check=False, timeout=30)
        except (OSError, subprocess.SubprocessError):
            result = None
        if result is not None and result.returncode == 0 and result.stdout.strip():
            return result.stdout.strip()
    for metadata in sorted(root.parent.glob(f"{root.name}-*.dist-info/METADATA")):
        try:
            with open(metadata, encoding="utf-8") as source:
                for line in source:
                    if line.startswith("Version:"):
                        return line.split(":", 1)[1].strip()
                    if not line.strip():
                        break
        except OSError:
            continue
    return ""


# --- template functions ------------------------------------------------------------

def customizable(context: jinja2.runtime.Context, values: Any, list_name: str) -> Any:
    """Kolla's list hook: ``<image>_<list>_override``, else ``_append`` then ``_remove``.

    As in Kolla: an undefined list stays undefined, the override is returned
    as given, the template's list is changed in place (a template that uses it
    again sees the change) and ``_remove`` drops the first equal item of each.
    """
    if isinstance(values, jinja2.Undefined):
        return values
    stem = f"{context['image_name'].replace('-', '_')}_{list_name}_"
    if stem + "override" in context:
        return context[stem + "override"]
    if not isinstance(values, list):
        values = list(values)  # a run-wide tuple: changes stay in this render
    if stem + "append" in context:
        values.extend(context[stem + "append"])
    if stem + "remove" in context:
        for item in context[stem + "remove"]:
            if item in values:
                values.remove(item)
    return values


def debian_package_install(packages: Iterable[str], clean_package_cache: bool = True) -> str:
    """The shell command installing apt packages and .deb URLs (``http...``)."""
    packages = list(packages)
    names = [p for p in packages if not p.startswith("http")]
    steps = []
    if names:
        steps += ["apt-get --error-on=any update",
                  "apt-get -y install --no-install-recommends " + " ".join(names)]
        if clean_package_cache:
            steps += ["apt-get clean", "rm -rf /var/lib/apt/lists/*"]
    for url in (p for p in packages if p.startswith("http")):
        deb = url.rsplit("/", 1)[-1]
        steps += [f"curl --location {url} -o {deb}", f"dpkg -i {deb}", f"rm -rf {deb}"]
    return " && ".join(steps)


def raise_error(message: str):
    """Stop rendering with the template's message."""
    raise TemplateError(str(message))


def insert_pip_args(dockerfile: str, pip_args: Sequence[tuple[str, str]]) -> str:
    """Kolla's ``ARG PIP_...`` lines, right after the first FROM line."""
    if not pip_args:
        return dockerfile
    lines = dockerfile.split("\n")
    for i, line in enumerate(lines):
        if re.match(r"^FROM\s", line, re.IGNORECASE):
            lines[i + 1:i + 1] = [f"ARG {name}" for name, _ in pip_args]
            break
    return "\n".join(lines)


def _echo_to(path: str, lines: Sequence[str], *, append: bool = False) -> str:
    """``echo 'line' >path && echo 'line' >>path ...``"""
    return " && ".join(f"echo '{line}' {'>>' if append or i else '>'}{path}"
                       for i, line in enumerate(lines))


class RepoTable:
    """Kolla's repository table, read once: handle_repos() and cleanup_repos().

    The table is Kolla's repos.yaml with the ``--repos-yaml`` file merged in
    (a section of the override replaces whole repository entries). For a
    package type, distro and arch, the repositories are those of the sections
    ``<package type>``, ``<distro>`` and ``<distro>-<arch>``, later sections
    adding keys to earlier entries (an entry that gets a URL is no longer the
    distro's own). Every distinct call is answered once per run.
    """

    def __init__(self, defaults: Path | None, override: str = ""):
        self._defaults_path = defaults
        self._override_path = override
        self._data: tuple[dict, dict] | None = None
        self._lists: dict[tuple, tuple[dict, dict]] = {}
        self._answers: dict[tuple, str] = {}

    # the YAML, read on first use: a tree that never calls handle_repos()
    # needs no repos.yaml
    def _tables(self) -> tuple[dict, dict]:
        if self._data is None:
            if self._defaults_path is None:
                raise TemplateError(
                    "handle_repos(): Kolla's repos.yaml was not found beside "
                    "--templates-dir; name it with --kolla-repos-yaml")
            defaults = _read_yaml(self._defaults_path)
            merged = {section: dict(repos or {}) for section, repos in defaults.items()}
            if self._override_path:
                override = Path(self._override_path).expanduser()
                for section, repos in _read_yaml(override).items():
                    merged.setdefault(section, {}).update(repos or {})
            self._data = (merged, defaults)
        return self._data

    def _repo_lists(self, package_type, distro, arch) -> tuple[dict, dict]:
        key = (package_type, distro, arch)
        if key not in self._lists:
            merged, defaults = self._tables()
            self._lists[key] = (_flatten(merged, key), _flatten(defaults, key))
        return self._lists[key]

    def handle_repos(self, context: jinja2.runtime.Context, names: Any, mode: str) -> str:
        if not isinstance(names, list):
            raise TemplateError("handle_repos(): the first argument should be a "
                                "list of repositories")
        settings = _context_settings(context)
        key = (tuple(names), mode, *settings)
        try:
            return self._answers[key]
        except KeyError:
            pass
        except TypeError:  # an unhashable name: not worth remembering
            return self._enable_disable(names, mode, *settings)
        answer = self._answers[key] = self._enable_disable(names, mode, *settings)
        return answer

    def cleanup_repos(self, context: jinja2.runtime.Context) -> str:
        package_type, distro, arch, _ = _context_settings(context)
        key = ("cleanup", package_type, distro, arch)
        if key not in self._answers:
            self._answers[key] = self._cleanup(package_type, distro, arch)
        return self._answers[key]

    def _enable_disable(self, names: list, mode: str, package_type: str,
                        distro: str, arch: str, codename: str | None) -> str:
        repos, default_repos = self._repo_lists(package_type, distro, arch)
        if package_type == "rpm" and self._override_path:
            _check_shared_repo_files(repos, default_repos)
        parts: list[str] = []
        saved: set[str] = set()
        last = len(names) - 1
        for index, name in enumerate(names):
            try:
                repo = repos[name]
            except (KeyError, TypeError):
                raise TemplateError(
                    f"handle_repos(): no repository {name!r} for {distro} "
                    f"({package_type}, {arch}) in repos.yaml") from None
            if package_type == "rpm":
                if mode == "enable":
                    parts.append(_dnf_enable(name, repo, default_repos, saved))
                    if index != last:
                        parts.append(" && ")
                elif mode == "disable" and repo.get("distro"):
                    parts.append(f"dnf config-manager --disable {repo['name']} || true")
            elif package_type == "deb" and mode == "enable" and not repo.get("distro"):
                parts.append(_apt_enable(name, repo, codename, saved))
                if index != last:
                    parts.append(" && ")
        commands = "".join(parts)
        return f"RUN {commands}" if commands else ""

    def _cleanup(self, package_type: str, distro: str, arch: str) -> str:
        repos, default_repos = self._repo_lists(package_type, distro, arch)
        steps: list[str] = []
        restored: set[str] = set()
        backup = REPOS_BACKUP_DIR
        for name, repo in repos.items():
            if not repo.get("build_only") or repo.get("distro"):
                continue
            if package_type == "rpm":
                own_file = f"{name}.repo"
                repo_file = _rpm_repo_file(name, repo, default_repos)
                if repo_file != own_file:
                    steps.append(f"rm -f /etc/yum.repos.d/{own_file}")
                    if repo_file in restored:
                        continue
                    restored.add(repo_file)
                steps.append(f"[ -f {backup}/{repo_file}.enabled ] && ( mv "
                             f"{backup}/{repo_file} /etc/yum.repos.d/{repo_file} "
                             f"2>/dev/null || rm -f /etc/yum.repos.d/{repo_file} ) "
                             f"|| true")
            elif package_type == "deb":
                target = f"/etc/apt/sources.list.d/{name}.sources"
                steps.append(f"[ -f {backup}/{name}.enabled ] && ( mv "
                             f"{backup}/{name}.sources {target} 2>/dev/null "
                             f"|| rm -f {target} ) || true")
        if not steps:
            return ""
        steps.append(f"rm -rf {backup}")
        return "RUN " + " \\\n    && ".join(steps)


def _context_settings(context) -> tuple[Any, Any, Any, Any]:
    return (context.get("base_package_type"), context.get("base_distro"),
            context.get("base_arch"), context.get("openstack_release_codename"))


def _read_yaml(path: Path) -> dict:
    import yaml  # oslo.config needs PyYAML too

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when there is one
    try:
        with open(path, encoding="utf-8") as source:
            data = yaml.load(source, Loader=loader)  # noqa: S506 (a safe loader)
    except OSError as exc:
        raise ConfigError(f"cannot read repos.yaml: {exc.strerror}", path=str(path)) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid repos.yaml: {exc}", path=str(path)) from exc
    if not isinstance(data, dict):
        raise ConfigError("invalid repos.yaml: expected a mapping of sections",
                          path=str(path))
    return data


def _flatten(table: Mapping[str, Mapping], key: tuple[str, str, str]) -> dict[str, dict]:
    package_type, distro, arch = key
    result: dict[str, dict] = {}
    for section in (package_type, distro, f"{distro}-{arch}"):
        for name, repo in (table.get(section) or {}).items():
            if name in result:
                merged = {**result[name], **repo}
                if any(k in merged for k in _URL_KEYS):
                    merged.pop("distro", None)
                result[name] = merged
            else:
                result[name] = repo
    return result


def _check_shared_repo_files(repos: Mapping[str, dict], default_repos: Mapping[str, dict]):
    """An override of a distro repo rewrites a .repo file other distro repos share."""
    overridden = sorted(name for name, repo in repos.items()
                        if not repo.get("distro")
                        and default_repos.get(name, {}).get("distro"))
    if not overridden:
        return
    groups = {default_repos[name].get("file_group") for name in overridden
              if default_repos.get(name, {}).get("file_group")}
    left = sorted(name for name, repo in repos.items()
                  if repo.get("distro") and name not in overridden
                  and repo.get("file_group") in groups)
    if left:
        raise TemplateError(
            f"Repositories {overridden} override distro-provided repos and will "
            f"remove their .repo file. Repositories {left} are still using "
            f"distro defaults and share the same file. Please also override "
            f"them in your repos.yaml.")


def _rpm_repo_file(name: str, repo: Mapping, default_repos: Mapping[str, dict]) -> str:
    return (repo.get("file_group") or default_repos.get(name, {}).get("file_group")
            or f"{name}.repo")


def _dnf_enable(name: str, repo: Mapping, default_repos: Mapping[str, dict],
                saved: set[str]) -> str:
    if repo.get("distro"):
        return f"dnf config-manager --enable {repo['name']} || true"
    text = ""
    if repo.get("build_only"):
        repo_file = _rpm_repo_file(name, repo, default_repos)
        if repo_file not in saved:
            saved.add(repo_file)
            text += (f"mkdir -p {REPOS_BACKUP_DIR} && cp /etc/yum.repos.d/{repo_file} "
                     f"{REPOS_BACKUP_DIR}/{repo_file} 2>/dev/null || true && touch "
                     f"{REPOS_BACKUP_DIR}/{repo_file}.enabled && ")
    path = f"/etc/yum.repos.d/{name}.repo"
    title = repo["name"]
    text += (f"grep -rlF '[{title}]' /etc/yum.repos.d/ 2>/dev/null | xargs -r rm -f && "
             + _echo_to(path, [f"[{title}]", f"name={title}", "enabled=1"]))
    extra = []
    if repo.get("gpgcheck"):
        extra.append(f"gpgcheck={repo['gpgcheck']}")
    if repo.get("repo_gpgcheck"):
        extra.append(f"repo_gpgcheck={repo['repo_gpgcheck']}")
    if not any(k in repo for k in ("baseurl", "metalink", "mirrorlist")):
        raise TemplateError(f"Repository '{name}' has no baseurl, metalink, or mirrorlist")
    if "gpgkey" not in repo:
        raise TemplateError(f"Repository '{name}' has no gpgkey")
    for i, key in enumerate(repo["gpgkey"].splitlines()):
        extra.append(f"gpgkey={key}" if i == 0 else f"       {key}")
    if "baseurl" in repo:
        extra += [f"baseurl={url}" for url in repo["baseurl"].splitlines()]
    elif "metalink" in repo:
        extra.append(f"metalink={repo['metalink']}")
    else:
        extra.append(f"mirrorlist={repo['mirrorlist']}")
    return text + " && " + _echo_to(path, extra, append=True)


def _apt_enable(name: str, repo: Mapping, codename: str | None, saved: set[str]) -> str:
    path = f"/etc/apt/sources.list.d/{name}.sources"
    text = ""
    if repo.get("build_only") and path not in saved:
        saved.add(path)
        text += (f"mkdir -p {REPOS_BACKUP_DIR} && cp {path} "
                 f"{REPOS_BACKUP_DIR}/{name}.sources 2>/dev/null || true && touch "
                 f"{REPOS_BACKUP_DIR}/{name}.enabled && ")
    key = repo["gpg_key"]
    signed_by = key if key.startswith("/") else f"/etc/kolla/apt-keys/{key}"
    suite = repo["suite"].replace("{openstack_release_codename}",
                                  str(codename).lower())
    lines = [f"Uris: {repo['url']}", f"Components: {repo['component']}",
             "Types: deb", f"Suites: {suite}", f"Signed-By: {signed_by}"]
    if repo.get("trusted"):
        lines.append("Trusted: yes")
    if "arch" in repo:
        lines.append(f"Architectures: {repo['arch']}")
    return text + _echo_to(path, lines)


# --- the API -----------------------------------------------------------------------

def render_variables(settings: KollaSettings, naming: ImageNaming) -> dict[str, Any]:
    """The variables kolla-build gives every template (but image_name)."""
    namespace = (f"{naming.registry}/{naming.namespace}" if naming.registry
                 else naming.namespace)
    return {
        "base_distro": settings.base,
        "base_image": settings.base_image,
        "base_distro_tag": settings.base_tag,
        "base_arch": settings.base_arch,
        "debian_arch": settings.debian_arch,
        "base_package_type": settings.base_package_type,
        "distro_package_manager": settings.distro_package_manager,
        "supported_distro_name": settings.supported_distro_name,
        "repos_yaml": settings.repos_yaml,
        "use_dumb_init": settings.use_dumb_init,
        "docker_healthchecks": settings.docker_healthchecks,
        "image_prefix": naming.prefix,
        "namespace": namespace,
        "tag": naming.tag,
        "openstack_release": settings.openstack_release,
        "openstack_release_codename": settings.openstack_release_codename,
        "openstack_branch": settings.openstack_branch,
        "openstack_branch_slashed": settings.openstack_branch_slashed,
        "maintainer": settings.maintainer,
        "kolla_version": settings.kolla_version,
        # read-only, so that what one image's render does stays in it
        "users": MappingProxyType({
            name: MappingProxyType({"uid": user.uid, "gid": user.gid, "group": user.group})
            for name, user in settings.users.items()}),
        "rpm_setup": settings.rpm_setup,
        "clean_package_cache": settings.clean_package_cache,
        "patches_path": settings.patches_path,
        "env": MappingProxyType(dict(settings.environment)),
    }




def kolla_api(settings: KollaSettings, naming: ImageNaming) -> TemplateAPI:
    """Kolla's template API for one run."""
    if settings is None:
        raise ConfigError("--template-api kolla: no Kolla settings were read")
    repos = RepoTable(settings.kolla_repos_yaml, settings.repos_yaml)

    @jinja2.pass_context
    def handle_repos(context, names, mode):
        return repos.handle_repos(context, names, mode)

    @jinja2.pass_context
    def cleanup_repos(context):
        return repos.cleanup_repos(context)

    # kolla-build reads its override files as one template, in order, so a
    # later file's top-level {% set %} wins: the first file goes on top of
    # the chain (see the module's notes).
    extra: dict[str, Any] = {"overrides_first_on_top": True}
    if settings.pip_args:
        pip_args = settings.pip_args
        extra["postprocess"] = lambda _name, text: insert_pip_args(text, pip_args)
    return TemplateAPI(
        name="kolla",
        syntax=dict(KOLLA_SYNTAX),
        undefined=jinja2.Undefined,
        filters={"customizable": jinja2.pass_context(customizable)},
        globals={
            "handle_repos": handle_repos,
            "cleanup_repos": cleanup_repos,
            "debian_package_install": debian_package_install,
            "raise_error": raise_error,
        },
        variables=render_variables(settings, naming),
        **extra,
    )
