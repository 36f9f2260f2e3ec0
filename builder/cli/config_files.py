"""Config files read line by line: where each setting is, and settings no option reads."""

from __future__ import annotations

import argparse
import difflib
import glob
import os
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from oslo_config import cfg

from builder.build.sources.spec import SOURCE_KEYS
from builder.errors import ConfigError

# --- where a setting is: file, line, section --------------------------------

PROJECT = "kiln"   # oslo.config looks for /etc/kiln/<prog>.conf, ~/.kiln/ ...

# The keys of a source section: kiln's, and Kolla's ``version`` (read only
# where a value says ${version}, as kolla-build reads it)
CONFIG_SOURCE_KEYS = (*SOURCE_KEYS, "version")


@dataclass(frozen=True)
class Setting:
    """One ``key = value`` line of a config file (``key`` None: a section header)."""

    path: str
    line: int
    section: str
    key: str | None = None
    value: str = ""


class _LocatingParser(cfg.ConfigParser):
    """oslo.config's own parser, remembering the line of each section and key."""

    def __init__(self, filename: str):
        super().__init__(filename, {})
        self.found: list[Setting] = []
        self._key_line = 0

    def new_section(self, section: str) -> None:
        super().new_section(section)
        self.found.append(Setting(self.filename, self.lineno, section))

    def _split_key_value(self, line: str):
        self._key_line = self.lineno
        return super()._split_key_value(line)

    def assignment(self, key: str, value: list[str]) -> None:
        super().assignment(key, value)
        self.found.append(Setting(self.filename, self._key_line, self.section or "",
                                  key, "\n".join(value)))


def read_settings(path: str) -> list[Setting]:
    """Every section header and ``key = value`` of a config file, in order."""
    parser = _LocatingParser(path)
    try:
        parser.parse()
    except (OSError, cfg.ParseError) as exc:
        raise ConfigError(f"cannot read config file: {exc}", path=path) from exc
    return parser.found


def did_you_mean(name: str, known: Sequence[str], brackets: bool = False) -> str:
    """`` (did you mean threads?)`` for the known name nearest ``name``, if any."""
    def norm(text: str) -> str:
        return text.lower().replace("-", "_")

    by_norm = {norm(k): k for k in known}
    if norm(name) in by_norm:
        match = by_norm[norm(name)]
    else:
        close = difflib.get_close_matches(norm(name), list(by_norm), n=1, cutoff=0.6)
        if not close:
            return ""
        match = by_norm[close[0]]
    return f" (did you mean [{match}]?)" if brackets else f" (did you mean {match}?)"


def config_files(conf: cfg.ConfigOpts) -> list[str]:
    files = list(conf.config_file or [])
    for directory in conf.config_dir or []:
        files.extend(sorted(glob.glob(os.path.join(directory, "*.conf"))))
    return files


def describe_oslo_error(exc: cfg.Error) -> str:
    text = str(exc)
    return text if text else exc.__class__.__name__


def long_option(names: str) -> str:
    """``-T/--threads`` (argparse's name of an argument) -> ``threads``."""
    for name in names.split("/"):
        if name.startswith("--"):
            return name[2:].replace("-", "_")
    return names.lstrip("-").replace("-", "_")


def option_of_oslo_error(exc: cfg.Error) -> str:
    match = re.match(r"Value for option (\S+) ", str(exc))
    return match.group(1).replace("-", "_") if match else ""


def _on_command_line(argv: Sequence[str], opt: cfg.Opt) -> bool:
    flags = {f"--{opt.name}", f"--{opt.dest}"}
    if getattr(opt, "short", None):
        flags.add(f"-{opt.short}")
    if isinstance(opt, cfg.BoolOpt):
        flags |= {f"--no{opt.name}", f"--no{opt.dest}"}
    for arg in argv:
        if arg == "--":
            break
        flag = arg.partition("=")[0]
        if flag in flags or (opt.short and arg.startswith(f"-{opt.short}")
                             and not arg.startswith("--")):
            return True
    return False


def _argv_config_files(argv: Sequence[str], prog: str) -> list[str]:
    """The config files oslo.config reads for ``argv`` (also when it failed)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--config-file", action="append", default=None)
    parser.add_argument("--config-dir", action="append", default=None)
    known, _ = parser.parse_known_args(list(argv))
    files = known.config_file
    if files is None:
        files = cfg.find_config_files(project=PROJECT, prog=prog)
    dirs = known.config_dir
    if dirs is None:
        dirs = cfg.find_config_dirs(project=PROJECT, prog=prog)
    files = [os.path.expanduser(f) for f in files]
    for directory in dirs:
        files.extend(sorted(glob.glob(os.path.join(os.path.expanduser(directory),
                                                   "*.conf"))))
    return [f for f in files if os.path.isfile(f)]


def locate_bad_value(argv: Sequence[str], prog: str,
                     opt: cfg.Opt | None) -> ConfigError | None:
    """A ConfigError naming the file, line and section of a bad option value.

    ``opt`` is an option of [DEFAULT] that oslo.config (or argparse) found a
    bad value for; None when the value did not come from a config file.
    """
    if opt is None or _on_command_line(argv, opt):
        return None
    try:
        settings = [s for path in _argv_config_files(argv, prog)
                    for s in read_settings(path)
                    if s.section == "DEFAULT" and s.key == opt.dest]
    except ConfigError:
        return None
    for setting in settings:
        try:
            opt.type(setting.value)
        except ValueError as exc:
            return _bad_value(setting, _value_problem(exc))
    if settings:  # every value passes alone: name the one that wins
        return _bad_value(settings[-1], "not a valid value")
    return None


def _bad_value(setting: Setting, problem: str) -> ConfigError:
    return ConfigError(f"[{setting.section}] {setting.key} = {setting.value!r}: {problem}",
                       path=setting.path, line=setting.line)


def _value_problem(exc: ValueError) -> str:
    text = str(exc)
    if text.startswith("invalid literal for int()"):
        return "not an integer"
    if text.startswith("could not convert string to float"):
        return "not a number"
    return text[:1].lower() + text[1:] if text else "not a valid value"


# --- settings no one reads ----------------------------------------------------

USER_KEYS = ("uid", "gid", "group")


def unread_settings(conf: cfg.ConfigOpts, source_sections: Sequence[str],
                    free_form_groups: Collection[str]) -> list[str]:
    """Warnings for the sections and options of the config files nothing reads.

    oslo.config ignores them silently, so a typo (``thread = 2``) would
    change nothing without a word. Each warning names the file, line and
    section, and the nearest known name.
    """
    free_form = {name.lower() for name in free_form_groups}
    sources = set(source_sections)
    kolla_api = conf.template_api == "kolla"
    driver_sections = {name.lower() for name in (conf.config_source or [])}
    options = [name for name in conf
               if name not in free_form_groups and name not in sources]
    section_names = ["DEFAULT", *free_form_groups]
    warnings: list[str] = []
    seen: set[tuple] = set()

    def warn(setting: Setting, text: str) -> None:
        if (setting.path, setting.section, setting.key) not in seen:
            seen.add((setting.path, setting.section, setting.key))
            warnings.append(f"{setting.path}:{setting.line}: {text}")

    for path in config_files(conf):
        settings = read_settings(path)
        for setting in settings:
            section = setting.section
            if section.lower() in free_form or section.lower() in driver_sections:
                continue
            if section == "DEFAULT":
                known: Sequence[str] | None = options
            elif section in sources:
                known = CONFIG_SOURCE_KEYS
            elif section.endswith("-user") and kolla_api:
                known = USER_KEYS
            else:
                if setting.key is None:
                    warn(setting, _unknown_section(section, section_names, settings,
                                                   kolla_api))
                continue
            key = setting.key
            if key is None or key in known:
                continue
            if section.endswith("-user"):
                key = key.replace("-", "_")  # as Kolla's user sections read them
                if key in known:
                    continue
            warn(setting, f"unknown option {setting.key!r} in [{section}], ignored"
                          + did_you_mean(setting.key, known))
    return warnings


def _unknown_section(section: str, names: Sequence[str], settings: Sequence[Setting],
                     kolla_api: bool) -> str:
    text = f"unknown section [{section}], ignored"
    if section.endswith("-user") and not kolla_api:
        return f"{text}: user sections are read only with --template-api kolla"
    keys = {s.key for s in settings if s.section == section and s.key}
    if keys & set(SOURCE_KEYS):
        return (f"{text}: an image source section needs a 'type' key "
                f"({', '.join(SOURCE_KEYS)})")
    return text + did_you_mean(section, names, brackets=True)
