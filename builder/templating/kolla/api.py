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

The defaults are kolla 23.0.0's (``settings``);
``options.settings_from_conf`` is their only reader of oslo.config.

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

import re
from collections.abc import Iterable, Sequence
from types import MappingProxyType
from typing import Any

import jinja2

from builder.errors import ConfigError, TemplateError
from builder.naming import ImageNaming
from builder.templating.api import KOLLA_LAYOUT, TemplateAPI
from builder.templating.kolla.context import context_additions
from builder.templating.kolla.repos import RepoTable
from builder.templating.kolla.settings import KollaSettings

# Jinja's defaults, which kolla-build uses (they change the compiled code).
KOLLA_SYNTAX = {"trim_blocks": False, "lstrip_blocks": False,
                "keep_trailing_newline": False}


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
        context_additions=context_additions(settings),
        layout=KOLLA_LAYOUT,
        **extra,
    )
