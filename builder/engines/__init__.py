"""Container engine backends.

An engine is an :class:`~builder.engines.base.Engine`. Backends register under
the entry-point group ``kiln.engines`` (kiln's own: docker, podman, buildah),
so another package can add one; :func:`load_engine` picks one by name. Only
the modules of this package import an engine SDK or run engine commands.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from builder.engines.base import Engine, EngineOptions
from builder.errors import ConfigError

GROUP = "kiln.engines"


def available_engines() -> dict[str, object]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def load_engine(name: str, options: EngineOptions | None = None) -> Engine:
    found = available_engines()
    if name not in found:
        known = ", ".join(sorted(found)) or "none installed"
        raise ConfigError(f"--engine {name!r} is not a known engine "
                          f"(available: {known})")
    engine_class = found[name].load()
    return engine_class(options or EngineOptions())
