"""Print kolla-build's own options as JSON (run with the Kolla venv's python).

One object per option: name, dest, group (null: [DEFAULT]), type (oslo.config's
class name), short, default, cli (a command-line option, not only a config
file one), and ``effective``: its value after ``kolla.common.config.parse``
with no arguments and no config file (Kolla's computed defaults applied).
"""

import json
import sys

from kolla.common import config
from oslo_config import cfg

DEFAULT_GROUPS = (None, "profiles")
CLI = {opt.dest for opt in config._CLI_OPTS}


def main() -> None:
    conf = cfg.ConfigOpts()
    config.parse(conf, [], default_config_files=[])
    options = []
    for group, opts in config.list_opts():
        if group not in DEFAULT_GROUPS:
            continue  # source and user sections: one set of keys each, dumped once below
        for opt in opts:
            value = conf[opt.dest] if group is None else conf[group][opt.dest]
            options.append(_describe(opt, group, value))
    source = [_describe(opt, "<source>", None) for opt in config.get_source_opts()]
    user = [_describe(opt, "<user>", None) for opt in config.get_user_opts(1, 1, "g")]
    json.dump({"options": options, "source_keys": source, "user_keys": user},
              sys.stdout, indent=1, default=str)


def _describe(opt: cfg.Opt, group, value) -> dict:
    return {"name": opt.name, "dest": opt.dest, "group": group,
            "type": type(opt).__name__, "short": opt.short,
            "default": opt.default, "cli": group is None and opt.dest in CLI,
            "effective": value}


if __name__ == "__main__":
    main()
