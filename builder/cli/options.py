"""kiln-build's options (oslo.config): the command line and config files, read into settings.

With ``templating/kolla/options.py`` this is the only module that knows about
oslo.config. :func:`load` parses the
command line and config files once and returns a :class:`BuildSettings` of
plain values; nothing below the CLI ever reads global configuration.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from oslo_config import cfg

from builder import __version__
from builder.build.labels import DEFAULT_SECRET_ARGS
from builder.build.sources.spec import SOURCE_KEYS, SourceSpec, parse_source
from builder.cli.config_files import (
    PROJECT,
    Setting,
    config_files,
    describe_oslo_error,
    locate_bad_value,
    long_option,
    option_of_oslo_error,
    read_settings,
    unread_settings,
)
from builder.errors import ConfigError, KilnError
from builder.naming import ImageNaming
from builder.resources import BUILTIN_TEMPLATES
from builder.settings import (
    CA_BUNDLE_NAME,
    PROXY_VARIABLES,
    RESERVED_TEMPLATE_VARS,
    BuildSettings,
    Outputs,
    RunOptions,
    SelectionCriteria,
    TemplateSettings,
    cache_home,
)
from builder.templating.kolla import options as kolla
from builder.templating.kolla.settings import kolla_naming

LOG = logging.getLogger(__name__)



def _default_cache_dir() -> str:
    return str(cache_home() / "templates")


_cli_opts = [
    cfg.MultiStrOpt("regex", positional=True, required=False, default=[],
                    help="Build only images whose name matches one of these "
                         "regular expressions (re.search)."),
    cfg.MultiStrOpt("profile", short="p", default=[],
                    help="Build the images of a profile defined in the "
                         "[profiles] section. Repeatable."),
    cfg.MultiStrOpt("exclude", short="e", default=[],
                    help="Never build images whose name matches this regular "
                         "expression; they are expected to exist already. "
                         "Repeatable."),
    cfg.StrOpt("templates-dir",
               help="Template set used as the bottom layer instead of the "
                    "built-in templates/ (for example Kolla's docker/ tree)."),
    cfg.MultiStrOpt("docker-dir", default=[],
                    help="A template layer above the built-in set; the "
                         "topmost layer's file wins for each relative path. "
                         "Repeatable, lowest first."),
    cfg.MultiStrOpt("template-override", default=[],
                    help="A Jinja2 file that extends parent_template and "
                         "overrides blocks or <image>_<list>_append/_remove/"
                         "_override variables. Repeatable; later files win."),
    cfg.BoolOpt("template-only", default=False,
                help="Render the selected images into the work dir and stop."),
    cfg.StrOpt("work-dir",
               help="Where build contexts are rendered. Default: a new "
                    "temporary directory."),
    cfg.StrOpt("namespace", default="kiln",
               help="The namespace of image references (<registry>/"
                    "<namespace>/<prefix><name>:<tag>); also selects "
                    "Dockerfile.<namespace>.j2 variants."),
    cfg.StrOpt("registry", default="",
               help="Registry host[:port] of image references; none when "
                    "empty."),
    cfg.StrOpt("image-name-prefix", default="",
               help="Prefix of every image name in references."),
    cfg.StrOpt("tag", default="latest", help="Tag of the built images."),
    cfg.BoolOpt("list-images", default=False,
                help="Print the selected images in a valid build order."),
    cfg.BoolOpt("list-dependencies", default=False,
                help="Print the dependency graph of the selected images as "
                     "JSON."),
    cfg.StrOpt("save-dependency",
               help="Write the dependency graph as Graphviz DOT to this file "
                    "(.svg or .png are rendered with dot)."),
    cfg.StrOpt("format", default="text", choices=["text", "json"],
               help="Output format of listings and the summary."),
    cfg.StrOpt("summary-json-file",
               help="Also write the JSON summary of the run to this file."),
    cfg.BoolOpt("skip-parents", default=False,
                help="Do not build images that are selected only because a "
                     "requested image descends from them."),
    cfg.BoolOpt("skip-existing", default=False,
                help="Do not build selected images whose reference already "
                     "exists in the engine."),
    cfg.BoolOpt("debug", short="d", default=False,
                help="Verbose output, and tracebacks on errors."),
    cfg.MultiStrOpt("template-var", default=[],
                    help="A template variable KEY=VALUE; overrides the "
                         "[template_vars] section. Repeatable."),
    cfg.ListOpt("template-env", default=[],
                help="Names of process environment variables that templates "
                     "may read as env.NAME. No other variable is exposed."),
    cfg.StrOpt("template-cache-dir", default=_default_cache_dir(),
               sample_default="~/.cache/kiln/templates",
               help="Where compiled templates are kept between runs (entries "
                    "are checked against the template source). Empty: no "
                    "cache."),
    cfg.StrOpt("engine", default="docker",
               help="Container engine backend (entry point group "
                    "kiln.engines): docker, or one a plugin adds."),
    cfg.IntOpt("threads", short="T", default=8, min=1,
               help="How many images build at once."),
    cfg.IntOpt("retries", short="r", default=0, min=0,
               help="How many times a failed build or push is retried."),
    cfg.BoolOpt("push", default=False,
                help="Push each image to --registry as soon as it is built."),
    cfg.IntOpt("push-threads", default=1, min=1,
               help="How many images push at once."),
    cfg.MultiStrOpt("build-args", default=[],
                    help="A build argument KEY=VALUE; overrides the "
                         "[build_args] section. Repeatable. Proxy variables "
                         "(HTTP_PROXY, ...) of kiln's environment are passed "
                         "unless set here."),
    cfg.StrOpt("network-mode",
               help="Network mode of build containers, e.g. host."),
    cfg.BoolOpt("pull", default=False,
                help="Try to pull a newer version of external base images."),
    cfg.BoolOpt("nocache", default=False,
                help="Do not use the engine's layer cache."),
    cfg.StrOpt("ca-bundle",
               help="A PEM file of extra CA certificates put into every build "
                    "context as kiln-ca-bundle.crt, so templates can make "
                    "images trust a TLS-intercepting proxy (see the "
                    "install_ca_bundle macro)."),
    cfg.StrOpt("logs-dir",
               help="One log file per image is written here. Default: "
                    "<work-dir>/logs."),
    cfg.BoolOpt("quiet", short="q", default=False,
                help="Print only failures and the summary."),
    cfg.BoolOpt("rebuild", default=False,
                help="Build every selected image even when the engine already "
                     "holds one with the same kiln.fingerprint."),
    cfg.ListOpt("secret-build-args", default=list(DEFAULT_SECRET_ARGS),
                help="Build arguments (shell patterns) never written to "
                     "labels nor counted in fingerprints."),
    cfg.StrOpt("label-vendor", default="",
               help="org.opencontainers.image.vendor of every image: who "
                    "publishes it."),
    cfg.StrOpt("label-authors", default="",
               help="org.opencontainers.image.authors of every image."),
    cfg.StrOpt("label-licenses", default="",
               help="org.opencontainers.image.licenses of every image (SPDX)."),
    cfg.StrOpt("label-url", default="",
               help="org.opencontainers.image.url of every image."),
    cfg.ListOpt("allowed-to-fail", default=[],
                help="Images whose failure does not make the run fail."),
    cfg.StrOpt("template-api", default="kiln", choices=["kiln", "kolla"],
               help="What templates are given: kiln's template API, or "
                    "Kolla's (render variables, functions and lenient "
                    "undefined values of kolla-build) for Kolla's own tree."),
    cfg.StrOpt("undefined", default="strict", choices=["strict", "lenient"],
               help="strict: using an undefined template variable is an "
                    "error; lenient: it renders as an empty string."),
]

# Sections whose keys the user chooses: an option is registered for each key
# found in the config files. (OptGroup objects keep their options, so each
# ConfigOpts gets new ones.)
_FREE_FORM_GROUPS = {
    "profiles": ("Named lists of image regular expressions, used with "
                 "--profile. Each key is a profile, e.g. "
                 "'infra = base, python-base'.", cfg.ListOpt),
    "template_vars": ("Variables given to every template, e.g. "
                      "'base_image = debian'. --template-var KEY=VALUE "
                      "overrides them.", cfg.StrOpt),
    "build-args": ("Build arguments given to every image build, e.g. "
                   "'PIP_INDEX_URL = http://mirror/simple'. --build-args "
                   "KEY=VALUE overrides them.", cfg.StrOpt),
}


def _free_form_groups() -> list[cfg.OptGroup]:
    return [cfg.OptGroup(name, help=help_text)
            for name, (help_text, _) in _FREE_FORM_GROUPS.items()]


def list_opts():
    """Entry point for oslo-config-generator."""
    return ([(None, _cli_opts + kolla.CLI_OPTS)]
            + [(group, []) for group in _free_form_groups()])


def new_config() -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    conf.register_cli_opts(_cli_opts + kolla.CLI_OPTS)
    for group in _free_form_groups():
        conf.register_group(group)
    return conf


def load(argv: Sequence[str], prog: str = "kiln-build") -> BuildSettings:
    """Parse ``argv`` and config files into settings.

    Usage errors (unknown flag, bad choice on the command line) exit through
    argparse with status 2, as every CLI does; everything else is a
    :class:`ConfigError`.
    """
    conf = new_config()
    try:
        _parse(conf, argv, prog)
        source_sections = _register_free_form_keys(conf)
        for warning in unread_settings(conf, source_sections, _FREE_FORM_GROUPS):
            LOG.warning("%s", warning)
        return _settings(conf, source_sections)
    except cfg.Error as exc:
        located = locate_bad_value(argv, prog, _CLI_OPTS_BY_DEST.get(option_of_oslo_error(exc)))
        raise (located or ConfigError(describe_oslo_error(exc))) from exc
    except ValueError as exc:  # a bad value found when an option is read
        raise ConfigError(f"bad option value: {exc}") from exc


def _parse(conf: cfg.ConfigOpts, argv: Sequence[str], prog: str) -> None:
    """Parse; argparse's and oslo.config's exits become one ConfigError line."""
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            conf(list(argv), project=PROJECT, prog=prog,
                 version=f"{prog} {__version__}")
    except SystemExit as exc:
        if not exc.code:  # --help, --version
            raise
        lines = [line for line in errors.getvalue().splitlines() if line.strip()]
        message = lines[-1] if lines else "invalid command line"
        message = message.removeprefix(f"{prog}: error: ")
        # argparse checks config file values of command-line options too
        match = re.match(r"argument (\S+): ", message)
        if match:
            opt = _CLI_OPTS_BY_DEST.get(long_option(match.group(1)))
            located = locate_bad_value(argv, prog, opt)
            if located is not None:
                raise located from None
        raise ConfigError(f"{message} (see {prog} --help)") from None


_CLI_OPTS_BY_DEST = {opt.dest: opt for opt in _cli_opts + kolla.CLI_OPTS}


def _register_free_form_keys(conf: cfg.ConfigOpts) -> list[str]:
    """Register options for user-chosen keys; return the source sections found.

    A section named after an image with a ``type`` key is that image's
    source (Kolla's format: type, location, reference, sha256, enabled).
    """
    source_sections: list[str] = []
    for path in config_files(conf):
        sections: dict[str, dict] = {}
        try:
            cfg.ConfigParser(path, sections).parse()
        except (OSError, cfg.ParseError) as exc:
            raise ConfigError(f"cannot read config file: {exc}",
                              path=path) from exc
        for group, (_, opt_type) in _FREE_FORM_GROUPS.items():
            for key in sections.get(group, {}):
                if key not in conf[group]:
                    conf.register_opt(opt_type(key), group=group)
        for section, values in sections.items():
            if (section in _FREE_FORM_GROUPS or section == "DEFAULT"
                    or "type" not in values or section in source_sections):
                continue
            conf.register_opts([cfg.StrOpt(key) for key in SOURCE_KEYS], group=section)
            source_sections.append(section)
    return source_sections


def _group_values(conf: cfg.ConfigOpts, group: str) -> dict:
    section = conf[group]
    return {key: section[key] for key in sorted(section)}


def _sources(conf: cfg.ConfigOpts, sections: Sequence[str]) -> dict[str, SourceSpec]:
    specs = {}
    for section in sections:
        values = {key: conf[section][key] for key in SOURCE_KEYS
                  if conf[section][key] is not None}
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


def _settings(conf: cfg.ConfigOpts, source_sections: Sequence[str] = ()) -> BuildSettings:
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
        work_dir=_path(conf.work_dir),
        debug=conf.debug,
    )


def _run_options(conf: cfg.ConfigOpts) -> RunOptions:
    build_args = {name: os.environ[name]
                  for variable in PROXY_VARIABLES
                  for name in (variable, variable.lower()) if name in os.environ}
    build_args.update({k: v for k, v in _group_values(conf, "build-args").items()
                       if v is not None})
    build_args.update(parse_key_values(conf.build_args, "--build-args"))
    return RunOptions(
        engine=conf.engine,
        threads=conf.threads,
        retries=conf.retries,
        push=conf.push,
        push_threads=conf.push_threads,
        build_args=build_args,
        network_mode=conf.network_mode or None,
        pull=conf.pull,
        no_cache=conf.nocache,
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
    )


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
