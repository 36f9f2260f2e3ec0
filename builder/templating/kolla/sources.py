"""Kolla's built-in source sections (``kolla/common/sources.yaml``).

kolla-build knows where every source image's code comes from without a
config file: ``[keystone-base] type = url, location =
$tarballs_base/openstack/keystone/keystone-${openstack_branch}.tar.gz``, and
the default plugins (``[neutron-base-plugin-networking-sfc]``, ...). A
config file's section of the same name changes only the keys it sets. Under
``--template-api kolla`` kiln reads the same file from the Kolla tree it
renders (beside ``docker/``), so a kolla-build.conf that relies on those
defaults works unchanged.

The values come as kolla-build registers them: strings (``$name`` left for
the config parser to substitute), ``enabled`` as ``true``/``false``, and a
per-architecture ``sha256`` mapping in kolla-build's config form
``amd64:<sum>,arm64:<sum>``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

from builder.errors import ConfigError

KEYS = ("type", "location", "reference", "sha256", "enabled", "version")


def find_kolla_sources_yaml(templates_dir: Path | None) -> Path | None:
    """``sources.yaml`` of the Kolla holding ``templates_dir`` (package or source tree)."""
    if templates_dir is None:
        return None
    parent = templates_dir.expanduser().resolve().parent
    for candidate in (parent / "common" / "sources.yaml",
                      parent / "kolla" / "common" / "sources.yaml"):
        if candidate.is_file():
            return candidate
    return None


@lru_cache(maxsize=4)
def kolla_default_sources(templates_dir: Path | None) -> dict[str, dict[str, str]]:
    """section -> {key: value} of Kolla's built-in sources; {} if there are none.

    Cached: the caller must not change what it returns.
    """
    path = find_kolla_sources_yaml(templates_dir)
    if path is None:
        return {}
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read Kolla's source list: {exc}", path=str(path)) from exc
    if not isinstance(loaded, dict):
        raise ConfigError("Kolla's source list is not a mapping of sections", path=str(path))
    sections: dict[str, dict[str, str]] = {}
    for section, values in loaded.items():
        if not isinstance(values, dict) or "type" not in values:
            raise ConfigError(f"Kolla's source list: [{section}] has no type",
                              path=str(path))
        sections[str(section)] = {key: _as_config_value(values[key])
                                  for key in KEYS if values.get(key) is not None}
    return sections


def _as_config_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):      # sha256: {amd64: .., arm64: ..}
        return ",".join(f"{arch}:{digest}" for arch, digest in value.items())
    return str(value)
