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
import re
from collections.abc import Sequence
from pathlib import Path

from oslo_config import cfg

from builder import __version__
from builder.build.labels import DEFAULT_SECRET_ARGS
from builder.cli.config_files import (
    CONFIG_SOURCE_KEYS,
    PROJECT,
    config_files,
    describe_oslo_error,
    locate_bad_value,
    long_option,
    option_of_oslo_error,
    read_settings,
    unread_settings,
)
from builder.cli.conversions import settings_from_conf
from builder.errors import ConfigError
from builder.settings import (
    EXECUTORS,
    BuildSettings,
    cache_home,
)
from builder.templating.kolla import options as kolla
from builder.templating.kolla.sources import kolla_default_sources

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
    cfg.MultiStrOpt("docker-dir", short="D", default=[],
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
    cfg.StrOpt("namespace", short="n", default="kiln",
               help="The namespace of image references (<registry>/"
                    "<namespace>/<prefix><name>:<tag>); also selects "
                    "Dockerfile.<namespace>.j2 variants. Default with "
                    "--template-api kolla: kolla."),
    cfg.StrOpt("registry", default="",
               help="Registry host[:port] of image references; none when "
                    "empty."),
    cfg.StrOpt("image-name-prefix", default="",
               help="Prefix of every image name in references."),
    cfg.StrOpt("tag", default="latest",
               help="Tag of the built images. Default with --template-api "
                    "kolla: <openstack-release>-<base>-<base-tag>."),
    cfg.BoolOpt("list-images", default=False,
                help="Print the selected images in a valid build order."),
    cfg.BoolOpt("list-dependencies", short="l", default=False,
                help="Print the dependency graph of the selected images as "
                     "JSON."),
    cfg.StrOpt("save-dependency",
               help="Write the dependency graph as Graphviz DOT to this file "
                    "(.svg or .png are rendered with dot)."),
    cfg.StrOpt("format", short="f", default="text", choices=["text", "json", "none"],
               help="Output format of listings and the summary. none "
                    "(kolla-build's): listings and summary as text. Default "
                    "with --template-api kolla: json, as kolla-build's."),
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
               help="How many times a failed build or push is retried. "
                    "Default with --template-api kolla: 3."),
    cfg.BoolOpt("push", default=False,
                help="Push each image to --registry as soon as it is built."),
    cfg.IntOpt("push-threads", default=1, min=1,
               help="How many images push at once."),
    cfg.MultiStrOpt("build-args", default=[],
                    help="A build argument KEY=VALUE; overrides the "
                         "[build_args] section. Repeatable. Proxy variables "
                         "(HTTP_PROXY, ...) of kiln's environment are passed "
                         "unless set here. kolla-build's form KEY:VALUE[,KEY:"
                         "VALUE...] is read too."),
    cfg.StrOpt("network-mode",
               help="Network mode of build containers, e.g. host. Default "
                    "with --template-api kolla: host, as kolla-build's. "
                    "kolla-build's spelling --network_mode is read too."),
    cfg.BoolOpt("pull", default=False,
                help="Try to pull a newer version of external base images. "
                     "Default with --template-api kolla: true."),
    cfg.BoolOpt("cache", default=True,
                help="Use the engine's layer cache (--nocache: do not)."),
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
    cfg.MultiStrOpt("refresh", default=[],
                    help="PACKAGE[OP VERSION] (as kiln-registry find takes it, "
                         "e.g. 'openssl<3.0.15-1~deb12u1'): rebuild the "
                         "selected images whose local image holds a matching "
                         "package (or whose packages are unknown) without the "
                         "layer cache, so they install today's packages; "
                         "their descendants are rebuilt after them. "
                         "Repeatable."),
    cfg.BoolOpt("refresh-all", default=False,
                help="Rebuild every selected image without the layer cache, "
                     "as --refresh does for matching ones."),
    cfg.StrOpt("max-age",
               help="Refresh (as --refresh does) the selected images built "
                    "longer ago than this, by their "
                    "org.opencontainers.image.created label: a number and a "
                    "unit s, m, h, d or w, e.g. 7d. Empty: no limit."),
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
    cfg.StrOpt("cache-registry", default="",
               help="A registry used as a cache of images by fingerprint, "
                    "HOST[:PORT][/PATH]: an image found there under "
                    "<path>/<namespace>/<name>:kiln-<fingerprint> is not built "
                    "(and pulled only when needed); an image built is pushed "
                    "there. Credentials: docker login. Empty: no cache."),
    cfg.StrOpt("cache-mode", default="readwrite",
               choices=["read", "write", "readwrite"],
               help="read: only look images up in --cache-registry (an "
                    "untrusted check job); write: only push built images "
                    "there; readwrite: both."),
    cfg.BoolOpt("cache-insecure", default=False,
                help="Talk plain HTTP to --cache-registry, without TLS."),
    cfg.StrOpt("cache-ca-cert",
               help="PEM CA certificate(s) the TLS certificate of "
                    "--cache-registry is checked against."),
    cfg.StrOpt("executor", default="threads", choices=list(EXECUTORS),
               help="threads: build on this host's engine; dask: spread the "
                    "builds over the workers of a Dask cluster "
                    "(--dask-scheduler), each building on its own engine, "
                    "images handed over through --cache-registry. Needs "
                    "kiln[distributed]."),
    cfg.StrOpt("dask-scheduler", default="",
               help="Address of the Dask scheduler for --executor dask, e.g. "
                    "tcp://10.0.0.5:8786."),
    cfg.MultiStrOpt("source-root", default=[],
                    help="A directory of sibling checkouts laid out as HOST/"
                         "PATH (Zuul's src/): a git source at scheme://HOST/"
                         "PATH[.git] is taken from DIR/HOST/PATH, as its "
                         "working tree is, when that directory exists. "
                         "Repeatable; the first that has it wins."),
    cfg.MultiStrOpt("source", default=[],
                    help="NAME=PATH: take image NAME's source from this local "
                         "directory or file instead of its config section. "
                         "Repeatable."),
    cfg.StrOpt("undefined", default="strict", choices=["strict", "lenient"],
               help="strict: using an undefined template variable is an "
                    "error; lenient: it renders as an empty string."),
]

# Read from config files only: kiln's older spelling of cache = false
_config_opts = [
    cfg.BoolOpt("nocache", default=False,
                help="Do not use the engine's layer cache (as cache = false)."),
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
    return ([(None, _cli_opts + kolla.CLI_OPTS + _config_opts + kolla.CONFIG_OPTS)]
            + [(group, []) for group in _free_form_groups()])


def new_config() -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    conf.register_cli_opts(_cli_opts + kolla.CLI_OPTS)
    conf.register_opts(_config_opts + kolla.CONFIG_OPTS)
    for group in _free_form_groups():
        conf.register_group(group)
    return conf


def load(argv: Sequence[str], prog: str = "kiln-build") -> BuildSettings:
    """Parse ``argv`` and config files into settings.

    Usage errors (unknown flag, bad choice on the command line) exit through
    argparse with status 2, as every CLI does; everything else is a
    :class:`ConfigError`.
    """
    try:
        conf, source_sections = parse(argv, prog)
        for warning in unread_settings(conf, source_sections, _FREE_FORM_GROUPS):
            LOG.warning("%s", warning)
        defaults = _kolla_default_sources(conf)
        for warning in kolla.warnings(conf, [
                *(setting.value for path in config_files(conf)
                  for setting in read_settings(path)),
                *(value for values in defaults.values() for value in values.values())]):
            LOG.warning("%s", warning)
        return settings_from_conf(conf, source_sections)
    except cfg.Error as exc:
        located = locate_bad_value(argv, prog, _CLI_OPTS_BY_DEST.get(option_of_oslo_error(exc)))
        raise (located or ConfigError(describe_oslo_error(exc))) from exc
    except ValueError as exc:  # a bad value found when an option is read
        raise ConfigError(f"bad option value: {exc}") from exc


def parse(argv: Sequence[str], prog: str = "kiln-build") -> tuple[cfg.ConfigOpts, list[str]]:
    """The parsed options (kolla-build's defaults under --template-api kolla), and the
    source sections of the config files."""
    conf = new_config()
    _parse(conf, argv, prog)
    if conf.template_api == "kolla":
        kolla.use_kolla_defaults(conf)
    return conf, _register_free_form_keys(conf)


def _parse(conf: cfg.ConfigOpts, argv: Sequence[str], prog: str) -> None:
    """Parse; argparse's and oslo.config's exits become one ConfigError line."""
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            conf(_kolla_spellings(argv), project=PROJECT, prog=prog,
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


# kolla-build's spelling of a kiln flag -> kiln's
_KOLLA_FLAGS = {"--network_mode": "--network-mode"}


def _kolla_spellings(argv: Sequence[str]) -> list[str]:
    """The arguments with kolla-build's spelling of kiln's flags made kiln's."""
    result = list(argv)
    for index, arg in enumerate(result):
        if arg == "--":
            break
        flag, equals, value = arg.partition("=")
        if flag in _KOLLA_FLAGS:
            result[index] = _KOLLA_FLAGS[flag] + equals + value
    return result


_CLI_OPTS_BY_DEST = {opt.dest: opt for opt in (_cli_opts + kolla.CLI_OPTS + _config_opts
                                                + kolla.CONFIG_OPTS)}


def _kolla_default_sources(conf: cfg.ConfigOpts) -> dict[str, dict[str, str]]:
    """Kolla's built-in source sections, under --template-api kolla."""
    if conf.template_api != "kolla" or not conf.templates_dir:
        return {}
    return kolla_default_sources(Path(conf.templates_dir))


def _register_free_form_keys(conf: cfg.ConfigOpts) -> list[str]:
    """Register options for user-chosen keys; return the source sections found.

    A section named after an image with a ``type`` key is that image's
    source (Kolla's format: type, location, reference, sha256, enabled).
    Under ``--template-api kolla`` Kolla's built-in source sections come
    first, as kolla-build's defaults: a config file's section of the same
    name changes only the keys it sets (and needs no ``type``).
    """
    defaults = _kolla_default_sources(conf)
    source_sections: list[str] = []
    for section, values in defaults.items():
        conf.register_opts([cfg.StrOpt(key, default=values.get(key))
                            for key in CONFIG_SOURCE_KEYS], group=section)
        source_sections.append(section)
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
            conf.register_opts([cfg.StrOpt(key) for key in CONFIG_SOURCE_KEYS],
                               group=section)
            source_sections.append(section)
    return source_sections
