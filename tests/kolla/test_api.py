"""Kolla's template API, piece by piece: functions, filter, settings, options, rendering.

No kolla install needed. Expected strings are kolla-build 23.0.0's answers
for the same input (kolla.template.methods on fixtures/minikolla's repos.yaml).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import jinja2
import pytest

from builder.cli import options
from builder.errors import ConfigError, TemplateError
from builder.naming import ImageNaming
from builder.templating.kolla import repos
from builder.templating.kolla.api import (
    customizable,
    debian_package_install,
    insert_pip_args,
    kolla_api,
    raise_error,
)
from builder.templating.kolla.repos import RepoTable
from builder.templating.kolla.settings import (
    KollaUser,
    detect_kolla_version,
    kolla_naming,
    kolla_settings,
    rpm_setup_commands,
    unbuildable_images,
)
from tests.integration.conftest import require_docker

MINIKOLLA = Path(__file__).parent / "fixtures" / "minikolla"
REPOS = MINIKOLLA / "template" / "repos.yaml"

DEBIAN = {"base_package_type": "deb", "base_distro": "debian", "base_arch": "x86_64",
          "openstack_release_codename": "Hibiscus", "image_name": "base"}
ROCKY = {**DEBIAN, "base_package_type": "rpm", "base_distro": "rocky"}


def sources(repo: str, *lines: str) -> str:
    path = f"/etc/apt/sources.list.d/{repo}.sources"
    return " && ".join(f"echo '{line}' {'>>' if i else '>'}{path}"
                       for i, line in enumerate(lines))


# --- debian_package_install ----------------------------------------------------------

def test_debian_package_install_packages_then_cleanup():
    assert debian_package_install(["curl", "git"]) == (
        "apt-get --error-on=any update && apt-get -y install --no-install-recommends "
        "curl git && apt-get clean && rm -rf /var/lib/apt/lists/*")


def test_debian_package_install_keeps_the_cache_when_asked():
    assert debian_package_install(["curl"], False) == (
        "apt-get --error-on=any update && apt-get -y install --no-install-recommends curl")


def test_debian_package_install_downloads_deb_urls_after_packages():
    url = "https://example.org/pool/tool_1.0_amd64.deb"
    assert debian_package_install([url, "curl"]) == (
        "apt-get --error-on=any update && apt-get -y install --no-install-recommends curl"
        " && apt-get clean && rm -rf /var/lib/apt/lists/*"
        f" && curl --location {url} -o tool_1.0_amd64.deb"
        " && dpkg -i tool_1.0_amd64.deb && rm -rf tool_1.0_amd64.deb")


def test_debian_package_install_nothing_to_do():
    assert debian_package_install([]) == ""


# --- customizable ----------------------------------------------------------------------

def context(**variables) -> jinja2.runtime.Context:
    env = jinja2.Environment()
    return env.from_string("").new_context({"image_name": "nova-api", **variables})


def test_customizable_appends_then_removes_in_place():
    values = ["a", "b", "a"]
    result = customizable(context(nova_api_packages_append=["c"],
                                        nova_api_packages_remove=["a", "z"]),
                                values, "packages")
    # Kolla removes the first equal item only, and changes the template's list
    assert result == ["b", "a", "c"]
    assert result is values


def test_customizable_override_is_returned_as_given():
    override = ("x",)
    ctx = context(nova_api_packages_override=override, nova_api_packages_append=["c"])
    assert customizable(ctx, ["a"], "packages") is override


def test_customizable_removes_unhashable_items():
    keys = [{"name": "a", "keyid": "1"}, {"name": "b", "keyid": "2"}]
    ctx = context(nova_api_apt_keys_remove=[{"name": "a", "keyid": "1"}])
    assert customizable(ctx, keys, "apt_keys") == [{"name": "b", "keyid": "2"}]


def test_customizable_leaves_undefined_lists_undefined():
    missing = jinja2.Undefined(name="nova_api_packages")
    assert customizable(context(nova_api_packages_append=["c"]), missing,
                              "packages") is missing


def test_customizable_copies_what_is_not_a_list():
    values = ("a", "b")
    assert customizable(context(nova_api_x_append=["c"]), values, "x") == ["a", "b", "c"]
    assert values == ("a", "b")


# --- handle_repos / cleanup_repos ------------------------------------------------------

def test_handle_repos_deb_skips_distro_repos_and_saves_build_only_ones():
    table = RepoTable(REPOS)
    assert table.handle_repos(DEBIAN, ["debian", "cloud", "grafana"], "enable") == (
        "RUN mkdir -p /tmp/kolla-repos-backup && cp /etc/apt/sources.list.d/cloud.sources "
        "/tmp/kolla-repos-backup/cloud.sources 2>/dev/null || true && touch "
        "/tmp/kolla-repos-backup/cloud.enabled && "
        + sources("cloud", "Uris: https://deb.example.org/openstack", "Components: main",
                  "Types: deb", "Suites: hibiscus-backports",
                  "Signed-By: /usr/share/keyrings/cloud.gpg", "Trusted: yes")
        + " && "
        + sources("grafana", "Uris: https://apt.example.org/grafana", "Components: main",
                  "Types: deb", "Suites: stable", "Signed-By: /etc/kolla/apt-keys/grafana.asc"))


def test_handle_repos_arch_section_adds_keys():
    table = RepoTable(REPOS)
    assert table.handle_repos({**DEBIAN, "base_arch": "aarch64"}, ["grafana"], "enable") == (
        "RUN " + sources("grafana", "Uris: https://apt.example.org/grafana", "Components: main",
                         "Types: deb", "Suites: stable",
                         "Signed-By: /etc/kolla/apt-keys/grafana.asc", "Architectures: amd64"))


def test_handle_repos_only_distro_repos_gives_nothing():
    assert RepoTable(REPOS).handle_repos(DEBIAN, ["debian"], "enable") == ""
    assert RepoTable(REPOS).handle_repos(DEBIAN, ["cloud"], "disable") == ""


def test_handle_repos_rpm_enable():
    path = "/etc/yum.repos.d/rabbitmq.repo"
    lines = ["[rabbitmq_server]", "name=rabbitmq_server", "enabled=1", "gpgcheck=1",
             "repo_gpgcheck=1", "gpgkey=https://example.org/key-1.asc",
             "       https://example.org/key-2.asc", "baseurl=https://yum1.example.org/rabbitmq",
             "baseurl=https://yum2.example.org/rabbitmq"]
    rabbitmq = " && ".join(f"echo '{line}' {'>>' if i else '>'}{path}"
                           for i, line in enumerate(lines))
    answer = RepoTable(REPOS).handle_repos(ROCKY, ["baseos", "rabbitmq", "epel"], "enable")
    assert answer == (
        "RUN dnf config-manager --enable baseos || true && "
        "grep -rlF '[rabbitmq_server]' /etc/yum.repos.d/ 2>/dev/null | xargs -r rm -f && "
        + rabbitmq + " && "
        "grep -rlF '[epel]' /etc/yum.repos.d/ 2>/dev/null | xargs -r rm -f && "
        "echo '[epel]' >/etc/yum.repos.d/epel.repo && "
        "echo 'name=epel' >>/etc/yum.repos.d/epel.repo && "
        "echo 'enabled=1' >>/etc/yum.repos.d/epel.repo && "
        "echo 'gpgkey=https://example.org/RPM-GPG-KEY-EPEL' >>/etc/yum.repos.d/epel.repo && "
        "echo 'metalink=https://mirrors.example.org/metalink?repo=epel' "
        ">>/etc/yum.repos.d/epel.repo")


def test_handle_repos_rpm_disable_only_distro_repos_as_kolla_joins_them():
    answer = RepoTable(REPOS).handle_repos(ROCKY, ["crb", "epel", "baseos"], "disable")
    # (sic: Kolla puts no separator between two disables)
    assert answer == ("RUN dnf config-manager --disable crb || true"
                      "dnf config-manager --disable baseos || true")


def test_repos_yaml_override_replaces_entries_and_saves_shared_file_once(tmp_path):
    override = tmp_path / "repos.yaml"
    override.write_text(
        "rocky:\n"
        + "".join(f"  {name}:\n    baseurl: https://mirror.local/{name}\n"
                  f"    gpgkey: https://mirror.local/key\n    name: {name}\n"
                  f"    build_only: true\n" for name in ("baseos", "appstream")))
    table = RepoTable(REPOS, str(override))
    answer = table.handle_repos(ROCKY, ["baseos", "appstream"], "enable")
    assert answer.count("cp /etc/yum.repos.d/rocky.repo /tmp/kolla-repos-backup/rocky.repo") == 1
    assert "echo 'baseurl=https://mirror.local/appstream' >>/etc/yum.repos.d/appstream.repo" \
        in answer
    assert table.cleanup_repos(ROCKY) == (
        "RUN rm -f /etc/yum.repos.d/baseos.repo \\\n"
        "    && [ -f /tmp/kolla-repos-backup/rocky.repo.enabled ] && ( mv "
        "/tmp/kolla-repos-backup/rocky.repo /etc/yum.repos.d/rocky.repo 2>/dev/null || "
        "rm -f /etc/yum.repos.d/rocky.repo ) || true \\\n"
        "    && rm -f /etc/yum.repos.d/appstream.repo \\\n"
        "    && rm -rf /tmp/kolla-repos-backup")


def test_overriding_one_repo_of_a_shared_file_is_an_error(tmp_path):
    override = tmp_path / "repos.yaml"
    override.write_text("rocky:\n  baseos:\n    baseurl: https://m/b\n    gpgkey: https://m/k\n"
                        "    name: baseos\n")
    with pytest.raises(TemplateError, match=r"Repositories \['appstream'\] are still using"):
        RepoTable(REPOS, str(override)).handle_repos(ROCKY, ["epel"], "enable")


def test_cleanup_repos_deb_and_nothing_to_clean():
    table = RepoTable(REPOS)
    assert table.cleanup_repos(DEBIAN) == (
        "RUN [ -f /tmp/kolla-repos-backup/cloud.enabled ] && ( mv "
        "/tmp/kolla-repos-backup/cloud.sources /etc/apt/sources.list.d/cloud.sources "
        "2>/dev/null || rm -f /etc/apt/sources.list.d/cloud.sources ) || true \\\n"
        "    && rm -rf /tmp/kolla-repos-backup")
    assert table.cleanup_repos(ROCKY) == ""


@pytest.mark.parametrize("names, message", [
    (["nope"], "no repository 'nope' for debian"),
    ("debian", "should be a list"),
])
def test_handle_repos_errors(names, message):
    with pytest.raises(TemplateError, match=message):
        RepoTable(REPOS).handle_repos(DEBIAN, names, "enable")


@pytest.mark.parametrize("entry, message", [
    ("    gpgkey: https://k\n", "has no baseurl, metalink, or mirrorlist"),
    ("    baseurl: https://u\n", "has no gpgkey"),
])
def test_rpm_repo_needs_url_and_key(tmp_path, entry, message):
    override = tmp_path / "repos.yaml"
    override.write_text(f"rpm:\n  broken:\n    name: broken\n{entry}")
    with pytest.raises(TemplateError, match=message):
        RepoTable(REPOS, str(override)).handle_repos(ROCKY, ["broken"], "enable")


def test_repos_yaml_is_read_once_and_answers_remembered(monkeypatch):
    reads = []
    real = repos._read_yaml
    monkeypatch.setattr(repos, "_read_yaml", lambda path: reads.append(path) or real(path))
    table = RepoTable(REPOS)
    first = table.handle_repos(DEBIAN, ["grafana"], "enable")
    for _ in range(50):
        assert table.handle_repos(DEBIAN, ["grafana"], "enable") == first
        table.cleanup_repos(DEBIAN)
    table.handle_repos(ROCKY, ["epel"], "enable")
    assert reads == [REPOS]


def test_missing_repos_yaml_is_reported_when_used():
    with pytest.raises(TemplateError, match="--kolla-repos-yaml"):
        RepoTable(None).handle_repos(DEBIAN, ["grafana"], "enable")


def test_invalid_repos_yaml(tmp_path):
    bad = tmp_path / "repos.yaml"
    bad.write_text("deb: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid repos.yaml"):
        RepoTable(bad).handle_repos(DEBIAN, ["grafana"], "enable")


# --- small functions -------------------------------------------------------------------

def test_raise_error_stops_with_the_message():
    with pytest.raises(TemplateError, match="^no such user$"):
        raise_error("no such user")


def test_rpm_setup_commands():
    assert rpm_setup_commands(
        ["https://x/epel.rpm", "https://x/my.repo", "local.repo", ""]) == (
        "RUN dnf -y install https://x/epel.rpm",
        "RUN curl -L https://x/my.repo -o /etc/yum.repos.d/my.repo",
        "COPY local.repo /etc/yum.repos.d/",
        "")
    with pytest.raises(ConfigError, match="rpm_setup_config 'thing.txt'"):
        rpm_setup_commands(["thing.txt"])


def test_insert_pip_args_after_the_first_from():
    text = "# header\nFROM kolla/base:t AS x\nRUN a\nFROM y\n"
    args = [("PIP_INDEX_URL", "u"), ("PIP_TRUSTED_HOST", "h")]
    assert insert_pip_args(text, args) == (
        "# header\nFROM kolla/base:t AS x\nARG PIP_INDEX_URL\nARG PIP_TRUSTED_HOST\n"
        "RUN a\nFROM y\n")
    assert insert_pip_args(text, []) is text


# --- settings ----------------------------------------------------------------------------

@pytest.mark.parametrize("base, image, tag, package_type, manager", [
    ("debian", "debian", "trixie", "deb", "apt"),
    ("ubuntu", "ubuntu", "24.04", "deb", "apt"),
    ("rocky", "quay.io/rockylinux/rockylinux", "10", "rpm", "dnf"),
])
def test_kolla_defaults_per_base(base, image, tag, package_type, manager):
    settings = kolla_settings(base, base_arch="x86_64")
    assert (settings.base_image, settings.base_tag) == (image, tag)
    assert (settings.base_package_type, settings.distro_package_manager) == (package_type, manager)
    assert settings.tag == f"2026.2-{base}-{tag}"
    assert settings.namespace == "kolla"
    assert settings.openstack_branch == "stable-2026.2"
    assert settings.openstack_branch_slashed == "stable/2026.2"
    assert settings.debian_arch == "amd64"


def test_kolla_settings_derived_values():
    settings = kolla_settings("ubuntu", base_arch="aarch64", base_tag="26.04",
                                    openstack_release="master")
    assert settings.debian_arch == "arm64"
    assert settings.tag == "master-ubuntu-26.04"
    assert (settings.openstack_branch, settings.openstack_branch_slashed) == ("master", "master")


def test_unbuildable_images_for_base_and_arch():
    assert unbuildable_images("debian", "x86_64") == frozenset()
    assert "tgtd" in unbuildable_images("rocky", "x86_64")
    assert unbuildable_images("debian", "aarch64") == {"bifrost-base"}
    assert kolla_settings("rocky", enable_unbuildable=True).unbuildable == frozenset()


def test_users_defaults_and_changes():
    users = kolla_settings("debian", users={
        "nova": {"uid": 1000}, "svc": {"uid": 5, "gid": 6}}).users
    assert users["kolla"] == KollaUser(42400, 42400, "kolla")
    assert users["hacluster"] == KollaUser(42486, 42486, "haclient")
    assert users["nova"] == KollaUser(1000, 42436, "nova")
    assert users["svc"] == KollaUser(5, 6, "svc")
    assert len(kolla_settings("debian").users) == 85


def load(*argv: str):
    return options.load(["--template-api", "kolla", *map(str, argv)])


def test_settings_from_options_and_user_sections(tmp_path):
    conf = tmp_path / "kiln.conf"
    conf.write_text("[DEFAULT]\nmaintainer = Me <me@example.org>\n"
                    "clean_package_cache = false\n"
                    "[nova-user]\nuid = 1000\ngid = 1001\n"
                    "[svc-user]\nuid = 50000\ngid = 50001\ngroup = services\n")
    settings = load("--config-file", conf, "--base", "debian", "--base-tag", "bookworm",
                    "--nouse-dumb-init", "--templates-dir", MINIKOLLA / "docker").templates.kolla
    assert settings.maintainer == "Me <me@example.org>"
    assert settings.clean_package_cache is False
    assert settings.use_dumb_init is False
    assert settings.base_tag == "bookworm"
    assert settings.users["nova"] == KollaUser(1000, 1001, "nova")
    assert settings.users["svc"] == KollaUser(50000, 50001, "services")
    # Kolla's repos.yaml found beside the tree
    assert settings.kolla_repos_yaml == REPOS.resolve()


def test_namespace_and_tag_follow_kolla_unless_given():
    settings = load("--base", "rocky").templates.kolla
    assert (settings.namespace, settings.tag) == ("kolla", "2026.2-rocky-10")
    naming = kolla_naming(settings, ImageNaming())
    assert naming.ref("base") == "kolla/base:2026.2-rocky-10"
    given = load("--base", "rocky", "--namespace", "mine", "--tag", "t1").templates.kolla
    assert (given.namespace, given.tag) == (None, None)
    naming = kolla_naming(given, ImageNaming(namespace="mine", tag="t1"))
    assert naming.ref("x") == "mine/x:t1"


@pytest.mark.parametrize("argv, message", [
    (["--repos-yaml", "/nonexistent/repos.yaml"], "--repos-yaml /nonexistent/repos.yaml"),
    (["--kolla-repos-yaml", "/nonexistent/r.yaml"], "--kolla-repos-yaml"),
    (["--rpm_setup_config", "a.txt"], "rpm_setup_config 'a.txt'"),
])
def test_bad_option_values_name_the_option(argv, message):
    with pytest.raises(ConfigError, match=message):
        load(*argv)


def test_bad_user_section(tmp_path):
    conf = tmp_path / "kiln.conf"
    conf.write_text("[nova-user]\nuid = lots\n")
    with pytest.raises(ConfigError, match=r"\[nova-user\] uid = 'lots': not an integer"):
        load("--config-file", conf)


def test_pip_args_and_environment(monkeypatch):
    monkeypatch.setenv("http_proxy", "http://proxy:3128")
    monkeypatch.setenv("SECRET_TOKEN", "s3cr3t")
    monkeypatch.setenv("MIRROR", "m")
    settings = load("--pip_index_url", "http://pypi.local/simple",
                    "--template-env", "MIRROR").templates.kolla
    assert settings.pip_args == (("PIP_INDEX_URL", "http://pypi.local/simple"),)
    assert settings.environment == {"http_proxy": "http://proxy:3128", "MIRROR": "m"}


def test_kolla_version_of_an_installed_package(tmp_path):
    package = tmp_path / "site-packages" / "kolla"
    (package / "docker").mkdir(parents=True)
    info = tmp_path / "site-packages" / "kolla-23.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kolla\nVersion: 23.0.0\n\nbody\n")
    assert detect_kolla_version(package / "docker") == "23.0.0"
    assert detect_kolla_version(tmp_path / "elsewhere") == ""
    assert load("--templates-dir", package / "docker").templates.kolla.kolla_version == "23.0.0"
    assert load("--templates-dir", package / "docker",
                "--kolla-version", "9.9").templates.kolla.kolla_version == "9.9"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_kolla_version_of_a_git_checkout(tmp_path):
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "README").write_text("x\n")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    short = subprocess.run([*git, "log", "-n1", "--pretty=format:%h"], check=True,
                           capture_output=True, text=True).stdout
    assert detect_kolla_version(tmp_path / "docker") == short


# --- the API -----------------------------------------------------------------------------

def test_api_is_kollas():
    settings = kolla_settings("debian", kolla_version="23.0.0")
    api = kolla_api(settings, ImageNaming(registry="registry.local:5000",
                                                namespace="kolla", prefix="x-", tag="t"))
    assert api.name == "kolla"
    assert api.undefined is jinja2.Undefined
    assert not any(api.syntax.values())
    assert set(api.globals) == {"handle_repos", "cleanup_repos", "debian_package_install",
                                "raise_error"}
    variables = api.variables
    assert variables["namespace"] == "registry.local:5000/kolla"
    assert (variables["image_prefix"], variables["tag"]) == ("x-", "t")
    assert variables["base_distro"] == "debian"
    assert variables["supported_distro_name"] == "Debian GNU/Linux 13 (trixie)"
    assert variables["users"]["nova"]["uid"] == 42436
    assert variables["openstack_release_codename"] == "Hibiscus"


def test_pip_args_are_inserted_after_the_first_from():
    settings = kolla_settings("debian", pip_args=[("PIP_INDEX_URL", "u")])
    api = kolla_api(settings, ImageNaming())
    assert api.postprocess("base", "FROM a\nRUN b") == "FROM a\nARG PIP_INDEX_URL\nRUN b"


# --- rendering a small Kolla-style tree through kiln-build ---------------------------------

def minikolla(kiln, tmp_path, *more, template_only=True):
    conf = tmp_path / "kiln.conf"
    conf.write_text("[svc-user]\nuid = 50000\ngid = 50001\n")
    work = tmp_path / "work"
    result = kiln("--config-file", conf, "--template-api", "kolla", "--templates-dir",
                  MINIKOLLA / "docker", "--template-cache-dir", "",
                  *(("--template-only",) if template_only else ()),
                  "--work-dir", work, "--kolla-version", "23.0.0", *more)
    return result, work


def test_minikolla_renders_like_kolla(kiln, tmp_path):
    result, work = minikolla(kiln, tmp_path, "--base", "debian", "--registry", "reg.local",
                             "--namespace", "kiln", "--tag", "latest",
                             "--image-name-prefix", "p-", "--list-dependencies")
    assert result.code == 0, result.err
    # the parent is found through the registry, namespace, prefix and tag
    assert json.loads(result.out[result.out.index("{"):])["svc-api"]["parents"] == ["base"]
    base = (work / "docker" / "base" / "Dockerfile").read_text()
    assert base.startswith("FROM debian:trixie\n\nLABEL maintainer=\"Kolla Project "
                           "(https://launchpad.net/kolla)\" name=\"base\"\n\n"
                           "LABEL kolla_version=\"23.0.0\" undefined=\"\"\n")
    assert "Suites: hibiscus-backports" in base
    assert ("RUN apt-get --error-on=any update && apt-get -y install --no-install-recommends "
            "curl ca-certificates && apt-get clean") in base
    assert "RUN groupadd --gid 42400 kolla && useradd --uid 42400 kolla\n" in base
    assert "RUN groupadd --gid 50001 svc && useradd --uid 50000 svc\n" in base
    assert "DEBIAN_ARCH=amd64" in base
    assert 'ENTRYPOINT ["dumb-init"' in base
    assert base.endswith("|| true \\\n    && rm -rf /tmp/kolla-repos-backup")  # no final newline
    api = (work / "docker" / "svc" / "svc-api" / "Dockerfile").read_text()
    assert api.startswith("FROM reg.local/kiln/p-base:latest\n")
    assert "RUN chown -R 50000:50001 /var/lib/svc" in api


def test_minikolla_override_and_rocky(kiln, tmp_path):
    override = tmp_path / "override.j2"
    override.write_text("{% extends parent_template %}\n"
                        "{% set svc_api_packages_remove = ['python3-svc'] %}\n"
                        "{% set base_packages_append = ['vim'] %}\n"
                        "{% block svc_api_footer %}RUN echo {{ image_name }}{% endblock %}\n")
    result, work = minikolla(kiln, tmp_path, "--base", "rocky", "--template-override", override)
    assert result.code == 0, result.err
    base = (work / "docker" / "base" / "Dockerfile").read_text()
    assert "RUN dnf -y install curl ca-certificates vim" in base
    assert "echo 'metalink=https://mirrors.example.org/metalink?repo=epel'" in base
    api = (work / "docker" / "svc" / "svc-api" / "Dockerfile").read_text()
    assert "RUN dnf -y install svc-api\n" in api
    assert "RUN echo svc-api\nUSER svc" in api


def test_raise_error_in_a_template_is_a_template_error(kiln, tmp_path):
    work = tmp_path / "work"
    result = kiln("--template-api", "kolla", "--templates-dir", MINIKOLLA / "docker",
                  "--template-cache-dir", "", "--template-only", "--work-dir", work)
    assert result.code != 0
    assert "Failed to find configuration for 'svc' user." in result.err
    assert "svc-api" in result.err


def test_later_override_file_sets_win_as_in_kolla(kiln, tmp_path):
    first, second = tmp_path / "first.j2", tmp_path / "second.j2"
    first.write_text("{% extends parent_template %}\n"
                     "{% set svc_api_packages_append = ['from-first'] %}\n")
    second.write_text("{% extends parent_template %}\n"
                      "{% set svc_api_packages_append = ['from-second'] %}\n")
    result, work = minikolla(kiln, tmp_path, "--base", "debian", "--template-override", first,
                             "--template-override", second)
    assert result.code == 0, result.err
    api = (work / "docker" / "svc" / "svc-api" / "Dockerfile").read_text()
    assert "from-second" in api and "from-first" not in api


def test_work_dir_is_kolla_builds_layout(kiln, tmp_path):
    """Contexts at docker/<group>/<image>/ with kolla-build's copies of the
    templates; the set's other files and its group directories under docker/."""
    result, work = minikolla(kiln, tmp_path, "--base", "debian", "^svc-api$")
    assert result.code == 0, result.err
    docker = work / "docker"
    assert sorted(p.name for p in work.iterdir()) == [".kiln-lock", ".kiln-work-dir", "docker"]
    assert sorted(p.relative_to(docker).as_posix() for p in docker.rglob("*")) == [
        "base", "base/Dockerfile", "base/Dockerfile.j2", "base/patches",  # the parent
        "macros.j2", "svc", "svc/svc-api", "svc/svc-api/Dockerfile",
        "svc/svc-api/Dockerfile.j2", "svc/svc-api/patches"]
    template = MINIKOLLA / "docker" / "svc" / "svc-api" / "Dockerfile.j2"
    assert (docker / "svc" / "svc-api" / "Dockerfile.j2").read_bytes() == template.read_bytes()
    assert (docker / "macros.j2").read_bytes() == (MINIKOLLA / "docker" / "macros.j2").read_bytes()
    assert (docker / "svc" / "svc-api" / "Dockerfile").read_text().startswith("FROM kolla/")


def test_logs_dir_inside_a_kolla_layout_context_is_refused(kiln, tmp_path):
    logs = tmp_path / "work" / "docker" / "svc" / "svc-api" / "logs"
    result, work = minikolla(kiln, tmp_path, "--base", "debian", "--logs-dir", logs,
                             "^svc-api$", template_only=False)
    assert result.code == 2, result.err
    assert (f"--logs-dir {logs} is inside the build context of image 'svc-api' "
            f"({work / 'docker' / 'svc' / 'svc-api'})") in result.err
    assert not logs.exists()


@pytest.mark.parametrize("mode", ["template-only", "build"])
def test_a_shared_template_file_out_of_its_layer_is_one_error(kiln, tmp_path, mode):
    """macros.j2, a link out of the tree: one line naming it, and nothing built."""
    if mode == "build":
        require_docker()
    shutil.copytree(MINIKOLLA, tmp_path / "minikolla")
    tree = tmp_path / "minikolla" / "docker"
    (tmp_path / "elsewhere.j2").write_bytes((tree / "macros.j2").read_bytes())
    (tree / "macros.j2").unlink()
    (tree / "macros.j2").symlink_to(tmp_path / "elsewhere.j2")
    conf = tmp_path / "kiln.conf"
    conf.write_text("[svc-user]\nuid = 50000\ngid = 50001\n")
    work = tmp_path / "work"
    result = kiln("--config-file", conf, "--template-api", "kolla", "--templates-dir", tree,
                  "--template-cache-dir", "", "--work-dir", work, "--kolla-version", "23.0.0",
                  "--namespace", f"kiln-test-{uuid.uuid4().hex[:8]}", "--nopull",
                  *(["--template-only"] if mode == "template-only" else []), "^base$")
    assert result.code == 2, result.err
    errors = [line for line in result.err.splitlines() if ": error: " in line]
    assert errors == [f"kiln-build: error: the template set: {tree / 'macros.j2'} is a "
                      f"symbolic link to {tmp_path / 'elsewhere.j2'}, out of its template "
                      f"layer {tree}; a build context holds only regular files and links to "
                      f"files inside the template layer"], result.err
    assert "Traceback" not in result.err
    assert not (work / "docker" / "base").exists()
