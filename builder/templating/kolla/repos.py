"""Kolla's ``repos.yaml``: ``handle_repos`` and ``cleanup_repos``, worked out once per run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

from builder.errors import ConfigError, TemplateError

# handle_repos()/cleanup_repos(): where build-only repositories are saved
REPOS_BACKUP_DIR = "/tmp/kolla-repos-backup"  # noqa: S108 (a path in the image)
_URL_KEYS = ("baseurl", "metalink", "mirrorlist", "url")


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
