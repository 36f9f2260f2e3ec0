"""What a run is asked to do, as plain dataclasses: the pipeline's input (no oslo.config)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from builder.build.labels import DEFAULT_SECRET_ARGS
from builder.build.sources.spec import SourceSpec
from builder.naming import ImageNaming
from builder.resources import BUILTIN_TEMPLATES
from builder.security.versions import Constraint
from builder.templating.kolla.settings import KollaSettings

# Names the render context defines itself; a template variable may not shadow them.
RESERVED_TEMPLATE_VARS = frozenset({
    "image_name", "namespace", "image_prefix", "tag", "registry", "image_ref",
    "parent_template", "env", "ca_bundle",
})

def cache_home() -> Path:
    """kiln's cache directory ($XDG_CACHE_HOME/kiln, else ~/.cache/kiln)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache")
    return Path(base) / "kiln"

CA_BUNDLE_NAME = "kiln-ca-bundle.crt"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")


@dataclass(frozen=True)
class Outputs:
    """What the run should produce besides (or instead of) building."""

    template_only: bool = False
    list_images: bool = False
    list_dependencies: bool = False
    save_dependency: Path | None = None
    format: str = "text"
    summary_json_file: Path | None = None
    summary: bool = True                # print the summary at the end (--nosummary: no)

    @property
    def stops_before_build(self) -> bool:
        return (self.template_only or self.list_images
                or self.list_dependencies or self.save_dependency is not None)


@dataclass(frozen=True)
class SelectionCriteria:
    regexes: tuple[str, ...] = ()
    profiles: tuple[str, ...] = ()
    profile_defs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    exclude: tuple[str, ...] = ()
    skip_parents: bool = False


@dataclass(frozen=True)
class TemplateSettings:
    templates_dir: Path = BUILTIN_TEMPLATES
    docker_dirs: tuple[Path, ...] = ()
    overrides: tuple[Path, ...] = ()
    variables: Mapping[str, str] = field(default_factory=dict)
    environment: Mapping[str, str] = field(default_factory=dict)
    strict_undefined: bool = True
    cache_dir: Path | None = None
    ca_bundle: str = ""   # its file name in every build context, when one is given
    api: str = "kiln"     # the template API: "kiln" or "kolla"
    kolla: KollaSettings | None = None


CACHE_MODES = ("read", "write", "readwrite")
EXECUTORS = ("threads", "dask")


@dataclass(frozen=True)
class CacheSettings:
    """--cache-registry: a registry holding images by fingerprint (see builder.build.cache)."""

    registry: str                   # host[:port][/path]
    mode: str = "readwrite"         # read, write or readwrite
    insecure: bool = False          # plain HTTP
    ca_cert: Path | None = None     # PEM CA bundle for its TLS certificate

    @property
    def host(self) -> str:
        return self.registry.partition("/")[0]

    @property
    def path(self) -> str:
        return self.registry.partition("/")[2].strip("/")

    @property
    def reads(self) -> bool:
        return "read" in self.mode

    @property
    def writes(self) -> bool:
        return "write" in self.mode


@dataclass(frozen=True)
class RefreshRequest:
    """Which images to rebuild with fresh packages (builder.build.refresh); empty: none."""

    constraints: tuple[Constraint, ...] = ()    # --refresh PACKAGE[OP VERSION]
    all: bool = False                           # --refresh-all
    max_age: timedelta | None = None            # --max-age

    def __bool__(self) -> bool:
        return bool(self.constraints) or self.all or self.max_age is not None


@dataclass(frozen=True)
class RunOptions:
    """How images are built and pushed."""

    engine: str = "docker"
    threads: int = 8
    retries: int = 0
    push: bool = False
    push_threads: int = 1
    build_args: Mapping[str, str] = field(default_factory=dict)
    network_mode: str | None = None
    pull: bool = False
    no_cache: bool = False
    ca_bundle: Path | None = None
    logs_dir: Path | None = None
    quiet: bool = False
    allowed_to_fail: tuple[str, ...] = ()
    skip_existing: bool = False
    rebuild: bool = False
    secret_build_args: tuple[str, ...] = DEFAULT_SECRET_ARGS
    static_labels: Mapping[str, str] = field(default_factory=dict)  # OCI vendor, authors, ...
    refresh: RefreshRequest = field(default_factory=RefreshRequest)
    cache: CacheSettings | None = None     # --cache-registry
    timeout: float = 120.0                 # seconds for a source download (--timeout)
    engine_base_url: str | None = None     # where the engine listens; None: its default
    executor: str = "threads"              # "threads" or "dask" (builder.build.distributed)
    dask_scheduler: str = ""               # --dask-scheduler ADDRESS


@dataclass(frozen=True)
class BuildSettings:
    naming: ImageNaming
    templates: TemplateSettings
    selection: SelectionCriteria
    outputs: Outputs
    run: RunOptions = field(default_factory=RunOptions)
    sources: Mapping[str, SourceSpec] = field(default_factory=dict)
    # the sources that are Kolla's built-in sections, untouched by the config files
    builtin_sources: frozenset[str] = frozenset()
    source_roots: tuple[Path, ...] = ()    # --source-root: sibling checkouts (Zuul's src/)
    source_overrides: Mapping[str, Path] = field(default_factory=dict)  # --source NAME=PATH
    work_dir: Path | None = None
    debug: bool = False
