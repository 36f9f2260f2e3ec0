"""From parsed options to the settings of a run: every value checked and converted."""


from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from oslo_config import cfg, types

from builder.build.refresh import parse_duration
from builder.build.sources.spec import SOURCE_KEYS, SourceSpec, parse_source
from builder.cli.config_files import (
    Setting,
    config_files,
    read_settings,
)
from builder.errors import ConfigError, KilnError
from builder.naming import ImageNaming
from builder.reference import REPOSITORY, host_problem
from builder.resources import BUILTIN_TEMPLATES
from builder.security.versions import parse_constraint
from builder.settings import (
    CA_BUNDLE_NAME,
    PROXY_VARIABLES,
    RESERVED_TEMPLATE_VARS,
    BuildSettings,
    CacheSettings,
    Outputs,
    RefreshRequest,
    RunOptions,
    SelectionCriteria,
    TemplateSettings,
)
from builder.templating.kolla import options as kolla
from builder.templating.kolla.settings import DEBIAN_ARCHES, kolla_naming

LOG = logging.getLogger(__name__)


def _group_values(conf: cfg.ConfigOpts, group: str) -> dict:
    section = conf[group]
    return {key: section[key] for key in sorted(section)}


def _sources(conf: cfg.ConfigOpts, sections: Sequence[str]) -> dict[str, SourceSpec]:
    specs = {}
    for section in sections:
        values = {key: conf[section][key] for key in SOURCE_KEYS
                  if conf[section][key] is not None}
        if ":" in values.get("sha256", ""):
            values["sha256"] = _sha256_for_arch(conf, section, values["sha256"])
        try:
            specs[section] = parse_source(section, values)
        except KilnError as exc:  # e.g. "[glance] location: missing"
            if exc.path is not None:
                raise
            option = re.match(rf"\[{re.escape(section)}\] (\w+):", exc.message)
            where = _where(config_files(conf), section, option and option.group(1))
            if where is None:
                raise
            raise ConfigError(exc.message, path=where.path, line=where.line,
                              hint=exc.hint) from exc
    return specs


def _sha256_for_arch(conf: cfg.ConfigOpts, section: str, value: str) -> str:
    """Kolla's ``sha256 = amd64:<sum>,arm64:<sum>``: the sum for the Debian arch built."""
    arch = conf.debian_arch or DEBIAN_ARCHES[conf.base_arch]
    where = _where(config_files(conf), section, "sha256")
    location = {"path": where.path, "line": where.line} if where else {}
    try:
        sums = types.Dict()(value)
    except ValueError as exc:
        raise ConfigError(f"[{section}] sha256: {exc}", **location) from exc
    if arch not in sums:
        raise ConfigError(f"[{section}] sha256: no sum for {arch} (the Debian arch "
                          f"built; sums are given for {', '.join(sorted(sums))})",
                          **location)
    return sums[arch]


def _where(paths: Sequence[str], section: str, key: str | None) -> Setting | None:
    """The line that wins for ``key`` of ``section`` in these files, else
    where the section last starts."""
    header = found = None
    for path in paths:
        for setting in read_settings(path):
            if setting.section != section:
                continue
            if setting.key is None:
                header = setting
            elif setting.key == key:
                found = setting
    return found or header


def settings_from_conf(conf: cfg.ConfigOpts,
                       source_sections: Sequence[str] = ()) -> BuildSettings:
    """The settings of a run from parsed options and config files."""
    kolla_settings = (kolla.settings_from_conf(conf) if conf.template_api == "kolla"
                      else None)
    naming = ImageNaming(registry=conf.registry.strip("/"),
                         namespace=conf.namespace.strip("/"),
                         prefix=conf.image_name_prefix, tag=conf.tag)
    if kolla_settings is not None:  # Kolla's namespace and tag unless given
        naming = kolla_naming(kolla_settings, naming)
    naming.validate()
    outputs = Outputs(
        template_only=conf.template_only,
        list_images=conf.list_images,
        list_dependencies=conf.list_dependencies,
        save_dependency=_path(conf.save_dependency),
        format=conf.format,
        summary_json_file=_path(conf.summary_json_file),
        summary=conf.summary,
    )
    profiles = {name: tuple(v.strip() for v in values if v.strip())
                for name, values in _group_values(conf, "profiles").items()}
    selection = SelectionCriteria(
        regexes=tuple(conf.regex),
        profiles=tuple(conf.profile),
        profile_defs=profiles,
        exclude=tuple(conf.exclude),
        skip_parents=conf.skip_parents,
    )
    variables = {k: v for k, v in _group_values(conf, "template_vars").items()
                 if v is not None}
    variables.update(parse_key_values(conf.template_var, "--template-var"))
    for key in variables:
        if key in RESERVED_TEMPLATE_VARS:
            raise ConfigError(
                f"template variable {key!r} is reserved: kiln defines it "
                f"itself (set it with its own option instead)")
    templates = TemplateSettings(
        templates_dir=_existing_dir(conf.templates_dir, "--templates-dir")
        if conf.templates_dir else BUILTIN_TEMPLATES,
        docker_dirs=tuple(_existing_dir(d, "--docker-dir")
                          for d in conf.docker_dir),
        overrides=tuple(_existing_file(f, "--template-override")
                        for f in conf.template_override),
        variables=variables,
        environment={name: os.environ[name] for name in conf.template_env
                     if name in os.environ},
        strict_undefined=conf.undefined == "strict",
        cache_dir=_path(conf.template_cache_dir),
        ca_bundle=CA_BUNDLE_NAME if conf.ca_bundle else "",
        api=conf.template_api,
        kolla=kolla_settings,
    )
    if conf.push and not naming.registry:
        raise ConfigError("--push needs --registry: the images are pushed there")
    return BuildSettings(
        naming=naming,
        templates=templates,
        selection=selection,
        outputs=outputs,
        run=_run_options(conf),
        sources=_sources(conf, source_sections),
        builtin_sources=frozenset(
            section for section in source_sections
            if not any(kolla.is_given(conf, key, section) for key in conf[section])),
        source_roots=tuple(_existing_dir(d, "--source-root") for d in conf.source_root),
        source_overrides=_source_overrides(conf.source),
        work_dir=_path(conf.work_dir),
        debug=conf.debug,
    )


def _run_options(conf: cfg.ConfigOpts) -> RunOptions:
    build_args = {name: os.environ[name]
                  for variable in PROXY_VARIABLES
                  for name in (variable, variable.lower()) if name in os.environ}
    build_args.update({k: v for k, v in _group_values(conf, "build-args").items()
                       if v is not None})
    build_args.update(parse_build_args(conf.build_args))
    return RunOptions(
        engine=conf.engine,
        threads=conf.threads,
        retries=conf.retries,
        push=conf.push,
        push_threads=conf.push_threads,
        build_args=build_args,
        network_mode=conf.network_mode or None,
        pull=conf.pull,
        no_cache=not conf.cache or conf.nocache,
        ca_bundle=(_existing_file(conf.ca_bundle, "--ca-bundle")
                   if conf.ca_bundle else None),
        logs_dir=_path(conf.logs_dir),
        quiet=conf.quiet,
        allowed_to_fail=tuple(conf.allowed_to_fail),
        skip_existing=conf.skip_existing,
        rebuild=conf.rebuild,
        secret_build_args=tuple(conf.secret_build_args),
        static_labels={f"org.opencontainers.image.{key}": value for key, value in (
            ("vendor", conf.label_vendor), ("authors", conf.label_authors),
            ("licenses", conf.label_licenses), ("url", conf.label_url)) if value},
        refresh=_refresh_request(conf),
        cache=_cache_settings(conf),
        timeout=conf.timeout,
        engine_base_url=kolla.engine_base_url(conf),
        **_executor(conf),
    )


def _executor(conf: cfg.ConfigOpts) -> dict[str, str]:
    """--executor and --dask-scheduler, checked against the cache they need."""
    address = conf.dask_scheduler.strip()
    if conf.executor != "dask":
        return {"executor": conf.executor, "dask_scheduler": address}
    if not address:
        raise ConfigError("--executor dask needs --dask-scheduler ADDRESS "
                          "(e.g. tcp://10.0.0.5:8786)")
    if not conf.cache_registry.strip():
        raise ConfigError("--executor dask needs --cache-registry: the workers hand "
                          "the images they build to each other through it (a "
                          "worker pulls the parents of its image from there)")
    if conf.cache_mode == "read":
        raise ConfigError("--executor dask needs --cache-mode readwrite or write: "
                          "the images workers build are handed over through "
                          "--cache-registry")
    return {"executor": "dask", "dask_scheduler": address}


def _cache_settings(conf: cfg.ConfigOpts) -> CacheSettings | None:
    """--cache-registry HOST[:PORT][/PATH] and its companions, checked."""
    value = conf.cache_registry.strip().rstrip("/")
    if not value:
        return None
    if "://" in value:
        raise ConfigError(f"--cache-registry {value}: give HOST[:PORT][/PATH] without a "
                          f"scheme (--cache-insecure for plain HTTP)")
    host, _, path = value.partition("/")
    problem = host_problem(host)
    if problem is not None:
        raise ConfigError(f"--cache-registry {value}: {problem}")
    if path and not REPOSITORY.fullmatch(path):
        raise ConfigError(f"--cache-registry {value}: {path!r} is not a valid repository "
                          f"path (lower-case components separated by '/')")
    return CacheSettings(
        registry=value, mode=conf.cache_mode, insecure=conf.cache_insecure,
        ca_cert=(_existing_file(conf.cache_ca_cert, "--cache-ca-cert")
                 if conf.cache_ca_cert else None))


def _source_overrides(items: Sequence[str]) -> dict[str, Path]:
    """--source NAME=PATH, each PATH an existing file or directory."""
    overrides = {}
    for item in items:
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise ConfigError(f"--source {item!r}: expected NAME=PATH")
        path = Path(value).expanduser()
        if not path.exists():
            raise ConfigError(f"--source {name}={value}: no such file or directory")
        overrides[name] = path.resolve()
    return overrides


def _refresh_request(conf: cfg.ConfigOpts) -> RefreshRequest:
    """--refresh, --refresh-all and --max-age, checked (one sentence naming the option)."""
    constraints = []
    for text in conf.refresh:
        try:
            constraints.append(parse_constraint(text))
        except ConfigError as exc:
            raise ConfigError(f"--refresh: {exc.message}") from exc
    max_age = None
    if conf.max_age:
        try:
            max_age = parse_duration(conf.max_age)
        except ValueError as exc:
            setting = _where(config_files(conf), "DEFAULT", "max_age")
            if setting is not None and setting.key and setting.value == conf.max_age:
                raise ConfigError(f"[DEFAULT] max_age = {conf.max_age!r}: {exc}",
                                  path=setting.path, line=setting.line) from exc
            raise ConfigError(f"--max-age {conf.max_age!r}: {exc}") from exc
    return RefreshRequest(constraints=tuple(constraints), all=conf.refresh_all,
                          max_age=max_age)


_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_key_values(items: Sequence[str], option: str) -> dict[str, str]:
    """Turn ``KEY=VALUE`` strings into a dict, naming the option on error."""
    result = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not _KEY.match(key):
            raise ConfigError(
                f"{option} {item!r}: expected KEY=VALUE with KEY a name of "
                f"letters, digits and underscores")
        result[key] = value
    return result


_FIRST_KEY = re.compile(r"^\s*[A-Za-z_][A-Za-z0-9_]*\s*([=:])")


def parse_build_args(items: Sequence[str]) -> dict[str, str]:
    """--build-args values: kiln's ``KEY=VALUE`` or kolla-build's ``KEY:VALUE[,KEY:VALUE]``.

    What follows the first key tells them apart: ``=`` is kiln's form (the
    value may hold commas and colons), ``:`` kolla-build's dict.
    """
    result = {}
    for item in items:
        match = _FIRST_KEY.match(item)
        if match is None:
            raise ConfigError(f"--build-args {item!r}: expected KEY=VALUE, or kolla-build's "
                              f"KEY:VALUE[,KEY:VALUE...], with KEY a name of letters, "
                              f"digits and underscores")
        if match.group(1) == "=":
            result.update(parse_key_values([item], "--build-args"))
            continue
        try:
            pairs = types.Dict()(item)
        except ValueError as exc:
            raise ConfigError(f"--build-args {item!r}: {exc}") from exc
        for key, value in pairs.items():
            if not _KEY.match(key):
                raise ConfigError(f"--build-args {item!r}: {key!r} is not a name of "
                                  f"letters, digits and underscores")
            result[key] = value
    return result


def _path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None


def _existing_dir(value: str, option: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_dir():
        if os.path.lexists(path):
            raise ConfigError(f"{option} {value} is not a directory")
        raise ConfigError(f"{option} {value}: no such directory")
    return path.resolve()


def _existing_file(value: str, option: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(f"{option} {value}: no such file")
    return path.resolve()
