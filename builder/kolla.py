"""Kolla's template API (--template-api kolla). Being written: see issue 7."""

from __future__ import annotations

from dataclasses import dataclass

from builder.exceptions import ConfigError

CLI_OPTS: list = []


@dataclass(frozen=True)
class KollaSettings:
    pass


def settings_from_conf(conf) -> KollaSettings:
    return KollaSettings()


def kolla_api(settings: KollaSettings, naming):
    raise ConfigError("--template-api kolla is not available yet")
