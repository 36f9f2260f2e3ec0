"""kolla-build's own options and what it parses, as JSON (run with the Kolla venv's python).

Reads on standard input ``{"runs": [ARGV, ...], "sources": [SECTION, ...],
"users": [NAME, ...]}`` and prints:

- ``options``: every option of ``kolla.common.config`` in [DEFAULT] and
  [profiles]: name, dest, group, type (oslo.config's class), short, default,
  choices, cli (a command-line option, not only a config file one);
  ``source_keys`` and ``user_keys``: the keys of a source and a user section;
- ``runs``: for each ARGV, the values ``kolla.common.config.parse`` gives
  (Kolla's computed defaults applied): [DEFAULT], [profiles], the named source
  sections and the named ``[<name>-user]`` sections.
"""

import json
import sys

from kolla.common import config
from oslo_config import cfg

CLI = {opt.dest for opt in config._CLI_OPTS}


def main() -> None:
    request = json.load(sys.stdin)
    options = [_describe(opt, group) for group, opts in config.list_opts()
               if group in (None, "profiles") for opt in opts]
    json.dump({
        "options": options,
        "source_keys": [_describe(opt, "<source>") for opt in config.get_source_opts()],
        "user_keys": [_describe(opt, "<user>") for opt in config.get_user_opts(1, 1, "g")],
        "runs": [_parse(argv, request.get("sources", ()), request.get("users", ()))
                 for argv in request.get("runs", ())],
    }, sys.stdout, indent=1, default=str)


def _parse(argv, sources, users) -> dict:
    conf = cfg.ConfigOpts()
    config.parse(conf, argv, default_config_files=[])
    return {
        "DEFAULT": {opt.dest: conf[opt.dest]
                    for opts in (config._CLI_OPTS, config._BASE_OPTS) for opt in opts},
        "profiles": {name: conf.profiles[name] for name in conf.profiles},
        "sources": {name: {key: conf[name][key] for key in conf[name]}
                    for name in sources},
        "users": {name: {key: conf[f"{name}-user"][key] for key in ("uid", "gid", "group")}
                  for name in users},
    }


def _describe(opt: cfg.Opt, group) -> dict:
    return {"name": opt.name, "dest": opt.dest, "group": group,
            "type": type(opt).__name__, "short": opt.short, "default": opt.default,
            "choices": [choice for choice, _ in opt.type.choices.items()]
            if getattr(opt.type, "choices", None) else None,
            "cli": group is None and opt.dest in CLI}


if __name__ == "__main__":
    main()
