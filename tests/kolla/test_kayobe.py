"""A downstream's real config: what Kayobe generates, rendered by kiln as by kolla-build.

Kayobe (openstack/kayobe, role ``kolla-build``) writes ``kolla-build.conf``
from its template (``base``, ``base_tag``, ``namespace``, ``network_mode=host``,
``tag``, ``template_override``, then one section per ``kolla_sources`` entry
with ``type``/``location``/``reference``) and ``template-override.j2`` from
``kolla_build_customizations`` (one ``{% set <var> = <JSON> %}`` each) and
``kolla_build_blocks`` (one ``{% block %}`` each, whose content users keep
from Ansible's own templating with ``{% raw %}``: it reaches the file as
Kolla's Jinja). The pair below has that shape; both tools are given it
unchanged and must write the same Dockerfiles.
"""

from __future__ import annotations

from pathlib import Path

from tests.kolla.kolla_env import dockerfiles, run_kolla_build

KOLLA_BUILD_CONF = """\
# Ansible managed

[DEFAULT]

# Base container image distribution.
base=debian

# Base container image tag.
base_tag=trixie

# Docker namespace to use for Kolla images.
namespace=kayobe

# Use host networking by default, in line with Kolla Ansible's default Docker
# engine configuration.
network_mode=host

# Docker image tag to apply.
tag=2026.2-kayobe

# Path to a file containing template overrides.
template_override={config_path}/template-override.j2

[bifrost-base]
# Type of source for bifrost-base.
type = git
# Location of source for bifrost-base.
location = https://opendev.org/openstack/bifrost
# Reference of source for bifrost-base.
reference = stable/2026.2

[keystone-base]
# Type of source for keystone-base.
type = git
# Location of source for keystone-base.
location = https://git.example.com/keystone
# Reference of source for keystone-base.
reference = downstream

"""

# kolla_build_customizations then kolla_build_blocks, as Kayobe writes them
TEMPLATE_OVERRIDE = """\
# Ansible managed


{% extends parent_template %}


{% set keystone_base_packages_append = ["libapache2-mod-auth-openidc"] %}

{% set nova_compute_packages_append = ["tcpdump", "strace"] %}

{% set nova_compute_packages_remove = ["ceph-common"] %}


{% block base_header %}
LABEL site="kayobe-example"
{% if base_distro in ['debian', 'ubuntu'] %}
RUN echo "deb-based {{ base_distro }} {{ base_distro_tag }}" > /etc/kayobe-build
{% endif %}
{% endblock %}

{% block keystone_footer %}
RUN echo {% raw %}'{{ .State.Health.Status }}'{% endraw %} > /etc/kayobe-healthcheck-format \\
    && {{ macros.install_packages(['jq'] | customizable("footer_packages")) }}
{% endblock %}

{% block nova_compute_footer %}
{{ super() }}
RUN echo "{{ image_name }} built by kayobe"
{% endblock %}

"""

IMAGES = ("^base$", "keystone", "nova-compute", "bifrost-deploy")


def _write_pair(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "template-override.j2").write_text(TEMPLATE_OVERRIDE)
    conf = directory / "kolla-build.conf"
    conf.write_text(KOLLA_BUILD_CONF.format(config_path=directory))
    return conf


def test_kayobe_config_renders_as_with_kolla_build(kiln, kolla_install, kiln_cache, tmp_path):
    conf = _write_pair(tmp_path / "kayobe-config")
    kolla_work = tmp_path / "kolla"
    run_kolla_build(kolla_install, kolla_work, ["--template-only", *IMAGES], conf)
    kiln_work = tmp_path / "kiln"
    result = kiln("--config-file", conf, "--template-api", "kolla", "--templates-dir",
                  kolla_install.docker_dir, "--template-cache-dir", kiln_cache,
                  "--template-only", "--work-dir", kiln_work, *IMAGES)
    assert result.code == 0, result.err
    assert ": warning: " not in result.err, result.err
    kolla, mine = dockerfiles(kolla_work), dockerfiles(kiln_work)
    assert {"base", "openstack-base", "keystone-base", "keystone", "nova-compute",
            "bifrost-deploy"} <= set(mine)
    different = sorted(name for name in mine if mine[name] != kolla.get(name))
    assert not different, f"Dockerfiles differ from kolla-build's: {different}"
    # the config and the override did what Kayobe means (in both)
    # (the override's "# Ansible managed" comes first, in both)
    assert b"\nFROM debian:trixie\n" in mine["base"]
    assert b'LABEL site="kayobe-example"' in mine["base"]
    assert b'deb-based debian trixie' in mine["base"]
    assert b"\nFROM kayobe/keystone-base:2026.2-kayobe\n" in mine["keystone"]
    assert b"libapache2-mod-auth-openidc" in mine["keystone-base"]
    assert b"'{{ .State.Health.Status }}'" in mine["keystone"]
    assert b" jq" in mine["keystone"]
    assert b"tcpdump strace" in mine["nova-compute"]
    assert b"ceph-common" not in mine["nova-compute"]
    assert b"nova-compute built by kayobe" in mine["nova-compute"]
