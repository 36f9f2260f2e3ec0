"""Kolla 23.0.0's defaults and the plain settings of its template API (no oslo.config)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder.errors import ConfigError
from builder.naming import ImageNaming

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
# kolla-build's [profiles]: name -> image regular expressions
KOLLA_PROFILES = {
    "infra": ("cron", "etcd", "fluentd", "haproxy", "hacluster", "keepalived",
              "kolla-toolbox", "letsencrypt", "mariadb", "memcached", "opensearch",
              "openvswitch", "proxysql", "rabbitmq", "tgtd", "valkey"),
    "main": ("ceilometer", "cinder", "glance", "heat", "horizon", "iscsi", "keystone",
             "neutron", "nova-", "placement"),
    "aux": ("aodh", "blazar", "cloudkitty", "designate", "gnocchi", "ironic", "kerbside",
            "magnum", "manila", "masakari", "mistral", "octavia", "tacker", "trove",
            "valkey"),
    "default": ("cron", "kolla-toolbox", "fluentd", "glance", "haproxy", "heat", "horizon",
                "keepalived", "keystone", "mariadb", "memcached", "neutron", "nova-",
                "placement", "proxysql", "openvswitch", "rabbitmq"),
}

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


def host_arch() -> str:
    machine = os.uname().machine
    machine = "aarch64" if machine == "arm64" else machine
    return machine if machine in ARCHES else "x86_64"


def _default_users() -> dict[str, KollaUser]:
    words = _USER_IDS.split()
    return {name: KollaUser(int(uid), int(uid), _USER_GROUPS.get(name, name))
            for name, uid in zip(words[::2], words[1::2], strict=True)}


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
    # --apt-sources-list, --apt-preferences: files copied into base's context
    apt_sources_list: str | None = None
    apt_preferences: str | None = None


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
                   enable_unbuildable: bool = False,
                   apt_sources_list: str | None = None,
                   apt_preferences: str | None = None) -> KollaSettings:
    """Kolla's settings for ``base``, each left-out value given Kolla's default.

    ``users`` changes or adds service users: ``{name: {"uid": .., "gid": ..,
    "group": ..}}`` with any of the keys, as ``[<name>-user]`` sections do.
    """
    if base not in DISTROS:
        raise ConfigError(f"--base {base!r}: Kolla's bases are {', '.join(DISTROS)}")
    default_image, default_tag = BASE_IMAGES[base]
    base_arch = base_arch or host_arch()
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
        apt_sources_list=apt_sources_list,
        apt_preferences=apt_preferences,
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


def kolla_naming(settings: KollaSettings, naming: ImageNaming) -> ImageNaming:
    """kiln's image naming with Kolla's namespace and tag where the user left kiln's."""
    return replace(naming, namespace=settings.namespace or naming.namespace,
                   tag=settings.tag or naming.tag)


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
