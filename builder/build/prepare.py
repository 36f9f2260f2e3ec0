"""Before building: write every selected image's build context (rendered
files, sources, CA bundle), then compute fingerprints parents first and the
labels each image will carry. Images whose context cannot be made (a source
that fails) are reported as failures; the scheduler never starts them.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from builder.build.context import write_context, write_shared_files
from builder.build.labels import (
    FINGERPRINT,
    PROXY_ARGS,
    ImageInputs,
    LayerInfo,
    digest_tree,
    file_sha256,
    fingerprint,
    manifest_document,
    oci_labels,
    public_build_args,
)
from builder.build.refresh import Refresh
from builder.build.sources.fetch import prepare_source
from builder.build.sources.kolla_archives import kolla_layout, write_kolla_archives
from builder.build.sources.sections import KollaExtras, assign_extras
from builder.build.sources.spec import PreparedSource
from builder.engines.base import Engine
from builder.errors import KilnError, scrub_url
from builder.naming import ImageNaming
from builder.plan import Plan
from builder.settings import CA_BUNDLE_NAME, BuildSettings
from builder.templating.layers import Layer

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedImage:
    name: str
    ref: str
    context: Path
    fingerprint: str
    parents: tuple[str, ...]          # in-set parents
    base: str | None                  # what the final stage is built on
    labels: Mapping[str, str]         # OCI labels (base.digest of in-set bases added at build)
    manifest: Mapping                 # kiln.manifest (parents' ids added at build)
    refresh: Refresh | None = None    # the refresh its packages come from (.now: this run)

    @property
    def refreshing(self) -> bool:
        """Rebuilt in this run without the layer cache, never reused (--refresh)."""
        return self.refresh is not None and self.refresh.now


@dataclass(frozen=True)
class Preparation:
    images: Mapping[str, PreparedImage]
    failed: Mapping[str, str]         # image -> reason


def prepare(plan: Plan, settings: BuildSettings, engine: Engine, names: Sequence[str],
            work_dir: Path, source_cache: Path, created: str,
            refreshes: Mapping[str, Refresh] | None = None) -> Preparation:
    refreshes = refreshes or {}
    contexts, failed = _write_contexts(plan, settings, names, work_dir, source_cache)
    layers = layer_info(plan.templates.layers)
    base_ids: dict[str, str | None] = {}
    public_args = public_build_args(settings.run.build_args, settings.run.secret_build_args)
    images: dict[str, PreparedImage] = {}
    for name in plan.order:
        if name not in contexts:
            continue
        context, sources = contexts[name]
        parents = tuple(sorted(plan.graph.predecessors(name)))
        parent_fps = {p: _parent_fingerprint(p, images, engine, settings) for p in parents}
        node = plan.graph.nodes[name]
        bases = {ref: _local_id(ref, engine, base_ids) for ref in node["bases"]}
        # Only the arguments the Dockerfile declares reach the build.
        args = {k: v for k, v in public_args.items() if k in node["args"]}
        if settings.run.push:
            _warn_secret_args(name, node["args"], settings.run.build_args, public_args)
        refresh = refreshes.get(name)
        digests = digest_tree(context)
        for copy in plan.rendered[name].template_copies:
            digests.pop(copy, None)  # counted by what it renders: the Dockerfile
        digests["Dockerfile"] = _dockerfile_digest(plan.rendered[name].dockerfile, parents,
                                                   settings.naming)
        inputs = ImageInputs(name=name, context_digests=digests, sources=sources,
                             parents=parent_fps, bases=bases, build_args=args,
                             static_labels=settings.run.static_labels,
                             refreshed=refresh.date if refresh else None)
        ref = settings.naming.ref(name)
        base = plan.graph.nodes[name].get("base")
        top = _layer_of(plan.rendered[name].templates[-1], layers)
        images[name] = PreparedImage(
            name=name, ref=ref, context=context, fingerprint=fingerprint(inputs),
            parents=parents, base=base,
            labels=oci_labels(title=name, version=settings.naming.tag, created=created,
                              base_name=base, base_digest=bases.get(base) if base else None,
                              revision=top.commit if top else None,
                              source=top.remote if top else None,
                              static=settings.run.static_labels),
            manifest=manifest_document(
                name=name, layers=layers,
                templates=_template_digests(plan.rendered[name].templates, layers,
                                            settings.templates.overrides),
                sources=sources,
                parents=[{"name": p, "ref": settings.naming.ref(p),
                          "fingerprint": parent_fps[p], "id": None} for p in parents],
                bases=bases, build_args=args,
                refreshed=refresh.record() if refresh else None),
            refresh=refresh)
    return Preparation(images, failed)


def _write_contexts(plan: Plan, settings: BuildSettings, names: Iterable[str], work_dir: Path,
                    source_cache: Path):
    # Kolla's plugins and additions: archives in every image's context
    extras = (assign_extras(plan.templates.images, settings.sources)[0]
              if settings.templates.api == "kolla" else None)
    write_shared_files(plan.templates, plan.layout, work_dir)  # the set's: raises

    def write(name: str) -> tuple[Path, tuple[PreparedSource, ...]]:
        context = write_context(plan.rendered[name], work_dir)
        sources: tuple[PreparedSource, ...] = ()
        spec = settings.sources.get(name)
        if spec is not None and spec.enabled:
            sources = (prepare_source(spec, context, source_cache, timeout=settings.run.timeout,
                                      source_roots=settings.source_roots),)
            if extras is not None:
                sources = (kolla_layout(spec, sources[0]),)
        if extras is not None:
            sources += write_kolla_archives(extras.get(name, KollaExtras()), context,
                                            source_cache, source_roots=settings.source_roots)
        if settings.run.ca_bundle is not None:
            shutil.copyfile(settings.run.ca_bundle, context / CA_BUNDLE_NAME)
        return context, sources

    names = list(names)
    contexts, failed = {}, {}
    with ThreadPoolExecutor(max(1, settings.run.threads), "kiln-prepare") as pool:
        futures = {name: pool.submit(write, name) for name in names}
        for name, future in futures.items():
            try:
                contexts[name] = future.result()
            except KilnError as exc:
                failed[name] = scrub_url(exc.message)
            except OSError as exc:
                failed[name] = f"cannot write the build context: {exc}"
    return contexts, failed


def _warn_secret_args(name: str, declared: Iterable[str], build_args: Mapping[str, str],
                      public: Mapping[str, str]) -> None:
    """Say when a secret build arg will be published in a pushed image's history.

    kiln keeps secret-looking args and proxies out of labels and fingerprints,
    but a builder records the values of the args a Dockerfile declares in the
    image's history, which a push publishes; undeclared ones never reach it.
    """
    for arg in sorted(set(declared) & set(build_args)):
        if arg in public:
            continue
        value = build_args[arg]
        if arg in PROXY_ARGS:
            if scrub_url(value) == value:
                continue  # a proxy without credentials
            what = "holds a proxy URL with credentials"
        else:
            what = "matches --secret-build-args"
        LOG.warning("image %s: build arg %s %s and its Dockerfile declares it: its value "
                    "stays out of labels, but the engine records it in the image "
                    "history (docker history --no-trunc) that --push publishes",
                    name, arg, what)


def _dockerfile_digest(text: str, parents: Sequence[str], naming: ImageNaming) -> str:
    """The Dockerfile's digest with in-set references written by name.

    Which parent an image is built on is counted through the parent's
    fingerprint; so a new --tag, --registry or --namespace alone changes no
    fingerprint, and kiln tags the existing image instead of rebuilding it.
    """
    for parent in sorted(parents, key=lambda p: -len(naming.ref(p))):
        for ref in (naming.ref(parent), naming.ref(parent, with_registry=False)):
            text = text.replace(ref, f"<kiln image {parent}>")
    return "644:" + hashlib.sha256(text.encode()).hexdigest()


def _parent_fingerprint(parent: str, images: Mapping[str, PreparedImage], engine: Engine,
                        settings: BuildSettings) -> str:
    if parent in images:
        return images[parent].fingerprint
    # Not built in this run (skipped, excluded or failed): whatever the engine holds.
    info = engine.inspect(settings.naming.ref(parent))
    if info is None:
        return "absent"
    return info.labels.get(FINGERPRINT) or info.id


def _local_id(ref: str, engine: Engine, cache: dict[str, str | None]) -> str | None:
    if ref not in cache:
        info = engine.inspect(ref)
        cache[ref] = info.id if info else None
    return cache[ref]


def layer_info(layers: Sequence[Layer]) -> list[LayerInfo]:
    """Each template layer with the git state of the checkout holding it, if any."""
    result = []
    for layer in layers:
        if not _in_git_checkout(layer.root):  # GitPython is slow to load: only if needed
            result.append(LayerInfo(label=layer.label, path=str(layer.root), commit=None,
                                    dirty=None, remote=None))
            continue
        import git

        try:
            repo = git.Repo(layer.root, search_parent_directories=True)
            commit = repo.head.commit.hexsha
            dirty = repo.is_dirty(untracked_files=True, path=str(layer.root))
            remote = next((r.url for r in repo.remotes if r.name == "origin"), None)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError, ValueError):
            commit = dirty = remote = None
        result.append(LayerInfo(label=layer.label, path=str(layer.root), commit=commit,
                                dirty=dirty, remote=scrub_url(remote) if remote else None))
    return result


def _in_git_checkout(path: Path) -> bool:
    path = Path(path).resolve()
    return any((directory / ".git").exists() for directory in (path, *path.parents))


def _layer_of(path: Path, layers: Sequence[LayerInfo]) -> LayerInfo | None:
    text = str(path)
    for layer in reversed(layers):
        if text.startswith(layer.path.rstrip("/") + "/"):
            return layer
    return None


def _template_digests(templates: Sequence[Path], layers: Sequence[LayerInfo],
                      overrides: Sequence[Path]) -> dict[str, str]:
    digests = {}
    override_set = {str(o) for o in overrides}
    for path in templates:
        if str(path) in override_set:
            key = f"override:{path.name}"
        else:
            layer = _layer_of(path, layers)
            key = (f"{layer.label}:{path.relative_to(layer.path).as_posix()}"
                   if layer else str(path))
        digests[key] = "sha256:" + file_sha256(path)
    return digests
