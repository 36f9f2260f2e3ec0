"""Publishing images with tag revisions: sync, promote and list (for kiln-registry).

For a tag ``T`` (``ocata``, ``latest``) a destination repository holds:

- revisions ``T-1``, ``T-2``, ...: each written once, never moved;
- the floating tag ``T``: the newest revision, moved only once that revision
  is complete, so an interrupted sync never leaves ``T`` naming something
  half-pushed, and a rerun finishes the job;
- ``T-deployed`` and ``T-old``: moved by :func:`promote` (the upgrade flow of
  seed 001);
- nothing else of kiln's: any other tag is ignored.

A *release* tag (``4.0.0``, matching a pattern) is written once and never
revised: no ``T-N``, and a different image for it is an error unless forced.

Whether an image changed is decided by its ``kiln.fingerprint`` label (a hash
of every input of the build). Two shortcuts avoid reading labels: the same
manifest digest (registry to registry copies keep it), or a destination
manifest whose config digest is the local image's id (the engine pushed it).

Sync is planned per image (:class:`SyncPlan`: unchanged, push ``T-(N+1)``,
move ``T``, skip) and then executed. Images run in parallel; the results come
back as plain :class:`SyncResult` values. This module never prints; it raises
:class:`SyncError` (or the registry's and engine's own errors).

Stopping (Ctrl-C): once the ``cancel`` event given to :func:`sync` is set, no
image is started any more (each comes back STOPPED); an image being copied
from a registry stops before its next blob, its revision never written; an
image whose revision is complete (a copy that got that far, or a push the
engine finished) has ``T`` moved to it as usual and comes back PUSHED. So
what a stopped run reports PUSHED is exactly what it published, and no ``T``
ever names an incomplete revision.
"""

from __future__ import annotations

import enum
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Protocol, TypeVar

from builder.engine.base import Engine, ImageInfo
from builder.errors import Cancelled, CatalogUnavailable, ConfigError, KilnError, SyncError
from builder.graph.selection import compile_pattern
from builder.manifest import FINGERPRINT
from builder.naming import ImageNaming
from builder.registry.client import (
    REPOSITORY_PATTERN,
    TAG_PATTERN,
    RegistryClient,
    copy_image,
    host_problem,
)

LOG = logging.getLogger(__name__)

DEFAULT_RELEASE_PATTERN = r"^\d+\.\d+\.\d+$"
DEPLOYED = "deployed"               # T-deployed
OLD = "old"                         # T-old
MAX_TAG_LENGTH = 128
_REVISION = re.compile(r"[1-9][0-9]{0,8}")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}
_PUSHED_DIGEST = re.compile(r"digest: (sha256:[0-9a-f]{64})")

R = TypeVar("R")


class Action(enum.Enum):
    UNCHANGED = "unchanged"     # the destination's newest revision has the same fingerprint
    PUSH = "push"               # push as the target revision (or release tag), then move T
    MOVE = "move"               # the newest revision is right, T lags behind: move T only
    SKIP = "skip"               # the source has no such tag


class Status(enum.Enum):
    PUSHED = "pushed"
    MOVED = "moved"
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"
    FAILED = "failed"
    STOPPED = "stopped"         # interrupted before it was published: T not moved
    PLANNED = "planned"         # --dry-run: the plan, not done


# -- names and tags ------------------------------------------------------------------

@dataclass(frozen=True)
class SetNaming:
    """Repositories of an image set in one registry: ``<namespace>/<prefix><name>``, tag T."""

    namespace: str
    prefix: str
    tag: str

    def __post_init__(self):
        ImageNaming(namespace=self.namespace, prefix=self.prefix, tag=self.tag).validate()

    def repository(self, name: str) -> str:
        return ImageNaming(namespace=self.namespace, prefix=self.prefix,
                           tag=self.tag).repository(name, with_registry=False)

    def member(self, repository: str) -> str | None:
        """The image name of a repository of this set, else None."""
        stem = self.repository("")
        if repository.startswith(stem) and "/" not in repository[len(stem):]:
            return repository[len(stem):] or None
        return None


def revision_tag(tag: str, number: int) -> str:
    return f"{tag}-{number}"


def revision_number(candidate: str, tag: str) -> int | None:
    """N if ``candidate`` is ``<tag>-N`` (N a positive integer without leading zeros)."""
    prefix = tag + "-"
    if candidate.startswith(prefix) and _REVISION.fullmatch(candidate[len(prefix):]):
        return int(candidate[len(prefix):])
    return None


def revisions(tags: Iterable[str], tag: str) -> tuple[int, ...]:
    """The revision numbers of ``tag`` among ``tags``, ascending."""
    return tuple(sorted({n for t in tags if (n := revision_number(t, tag)) is not None}))


def is_release(tag: str, pattern: str) -> bool:
    return re.search(pattern, tag) is not None


def select_names(names: Iterable[str], patterns: Sequence[str], where: str) -> list[str]:
    """Names matching any pattern (``re.search``, as kiln-build selects); all if none given."""
    names = sorted(set(names))
    if not names:
        raise ConfigError(f"no image of the set is at {where}")
    if not patterns:
        return names
    chosen: set[str] = set()
    for pattern in patterns:
        regex = compile_pattern(pattern, "image regex")
        hits = {name for name in names if regex.search(name)}
        if not hits:
            LOG.warning("pattern %r matches no image at %s", pattern, where)
        chosen |= hits
    if not chosen:
        shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        raise ConfigError(f"no image at {where} matches {', '.join(map(repr, patterns))} "
                          f"(images: {shown})")
    return sorted(chosen)


def split_local_reference(ref: str) -> tuple[str | None, str, str | None]:
    """``[host/]path[:tag]`` -> (host or None, path, tag or None); digests are not split."""
    name = ref.partition("@")[0]
    slash, colon = name.rfind("/"), name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first, rest, tag
    return None, name, tag


def parse_registry_reference(ref: str) -> tuple[str, str, str] | None:
    """``host[:port]/repo[:tag|@digest]`` -> (host, repository, tag or digest); None if
    the reference names no registry (its first component has no '.' or ':' and is not
    ``localhost``)."""
    name, at, digest = ref.partition("@")
    host, repository, tag = split_local_reference(name)
    if host is None:
        return None
    if host in ("docker.io", "index.docker.io") and "/" not in repository:
        repository = f"library/{repository}"
    return host, repository, (digest if at else tag or "latest")


_DIGEST_REF = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")
MAX_NAME_LENGTH = 255


def reference_problem(ref: str) -> str | None:
    """Why ``ref`` is no image reference ``[host[:port]/]path[:tag][@digest]``, else None.

    The grammar engines and registries share (lower-case path components,
    tags of at most 128 characters, ``algorithm:hex`` digests), checked before
    anything is asked of an engine or a registry.
    """
    if not ref.strip():
        return "it is empty (give one such as kolla/nova:latest, or " \
               "registry.example.com:5000/kolla/nova:latest for a registry)"
    if ref != ref.strip() or any(c.isspace() for c in ref):
        return "it contains white space"
    name, at, digest = ref.partition("@")
    if at and not _DIGEST_REF.fullmatch(digest):
        return f"its digest {digest!r} is not algorithm:hex (such as sha256:<64 hex digits>)"
    host, path, tag = split_local_reference(name)
    if host is not None and (problem := host_problem(host)) is not None:
        return problem
    if tag is not None and not TAG_PATTERN.fullmatch(tag):
        return (f"its tag {tag!r} is not a valid tag (letters, digits, '_', '.' and '-', "
                f"not starting with '.' or '-', at most 128 characters)" if tag
                else "its tag is empty")
    if not path:
        return "it names no repository"
    if not REPOSITORY_PATTERN.fullmatch(path):
        if REPOSITORY_PATTERN.fullmatch(path.lower()):
            return f"its repository name {path!r} must be lower-case"
        return (f"{path!r} is not a valid repository name (lower-case letters and digits, "
                f"separated by '.', '_', '__' or '-', in components separated by '/')")
    if len(name) - (len(tag) + 1 if tag is not None else 0) > MAX_NAME_LENGTH:
        return f"its name is longer than {MAX_NAME_LENGTH} characters"
    return None


def check_reference(ref: str) -> None:
    """:func:`reference_problem` as a :class:`ConfigError` (exit 2) naming the reference."""
    problem = reference_problem(ref)
    if problem is not None:
        raise ConfigError(f"invalid image reference {ref!r}: {problem}")


# -- reading the destination -----------------------------------------------------------

@dataclass(frozen=True)
class Found:
    """What a destination tag names: a manifest digest and its image config's digest."""

    digest: str
    config_digest: str | None


def peek_manifest(client: RegistryClient, repository: str, reference: str) -> Found | None:
    """The digest and config digest a tag names, with one GET of the manifest (no blob)."""
    found = client.manifest(repository, reference, labels=False)
    if found is None:
        return None
    return Found(found.digest, found.config_digest)


def list_repositories(client: RegistryClient) -> list[str]:
    """Every repository a registry lists in its catalog."""
    try:
        return client.list_repositories()
    except CatalogUnavailable as exc:
        raise SyncError(exc.message, hint="name the images with --image NAME instead") from exc


# -- sources -------------------------------------------------------------------------------

@dataclass(frozen=True)
class SourceImage:
    """One image at the source, pinned to what was looked at."""

    name: str
    ref: str                        # for messages
    pin: str                        # the local image id, or the source manifest digest
    image_id: str | None = None     # config digest, when known (the engine's image id)
    digest: str | None = None       # manifest digest, when known (a registry source)
    fingerprint: str | None = None  # None until read


class Source(Protocol):
    """Where sync reads images: the local engine or a registry."""

    description: str

    def images(self, naming: SetNaming) -> dict[str, str]:
        """``name -> reference`` of the set's images tagged ``naming.tag``."""

    def resolve(self, name: str) -> SourceImage | None:
        """The image under that name (None: it has no tag T), pinned."""

    def fingerprint(self, image: SourceImage) -> str | None:
        """Its kiln.fingerprint (None if it has none)."""

    def publish(self, image: SourceImage, dest: RegistryClient, repository: str,
                tag: str, cancel: threading.Event | None = None) -> str:
        """Put the image in the destination under ``tag``, complete; its manifest digest.

        Once ``cancel`` is set it may stop early (raising :class:`Cancelled`)
        provided ``tag`` is left unwritten."""


class EngineSource:
    """Local images tagged ``[host/]<namespace>/<prefix><name>:<T>`` with a kiln.fingerprint.

    The engine pushes the layers (so it must trust and be logged in to the
    destination); the local tag it needs for that is removed afterwards.
    """

    def __init__(self, engine: Engine, names: Sequence[str] = ()):
        self.engine = engine
        self.names = frozenset(names)       # only these, if given
        self.description = f"the local {engine.name} engine"
        self._found: dict[str, dict[str, ImageInfo]] = {}

    def images(self, naming: SetNaming) -> dict[str, str]:
        plain: dict[str, dict[str, ImageInfo]] = {}
        hosted: dict[str, dict[str, ImageInfo]] = {}
        for info in self.engine.images_with_label(FINGERPRINT):
            for ref in info.tags:
                host, path, tag = split_local_reference(ref)
                name = naming.member(path) if tag == naming.tag else None
                if name and (not self.names or name in self.names):
                    (hosted if host else plain).setdefault(name, {})[ref] = info
        # "ns/name:T" wins over "host/ns/name:T" (kiln-build --registry names).
        self._found = {**hosted, **plain}
        return {name: sorted(refs)[0] for name, refs in self._found.items()}

    def resolve(self, name: str) -> SourceImage | None:
        refs = self._found.get(name)
        if not refs:
            return None
        ids = {info.id for info in refs.values()}
        if len(ids) > 1:
            raise SyncError(f"{name}: the local references {', '.join(sorted(refs))} name "
                            f"different images; remove or retag all but one")
        ref, info = sorted(refs.items())[0]
        return SourceImage(name=name, ref=ref, pin=info.id, image_id=info.id,
                           fingerprint=info.labels.get(FINGERPRINT) or None)

    def fingerprint(self, image: SourceImage) -> str | None:
        return image.fingerprint

    def publish(self, image: SourceImage, dest: RegistryClient, repository: str,
                tag: str, cancel: threading.Event | None = None) -> str:
        # The engine's push is not stopped: it ends with the revision complete or failed.
        target = f"{dest.host}/{repository}:{tag}"
        digest = None
        self.engine.tag(image.pin, target)
        try:
            for line in self.engine.push(target):
                found = _PUSHED_DIGEST.search(line)
                digest = found.group(1) if found else digest
        finally:
            try:
                self.engine.remove(target)  # an untag: the image keeps its own tag
            except KilnError as exc:
                LOG.warning("could not remove the local tag %s: %s", target, exc)
        if digest is None:
            digest = dest.manifest_digest(repository, tag)
        if digest is None:
            raise SyncError(f"{image.name}: the engine pushed {target} but the registry "
                            f"does not have it")
        return digest


class RegistrySource:
    """Repositories ``<namespace>/<prefix><name>`` of a registry with a tag T.

    Their names come from the registry's catalog, or from ``names`` (for
    registries without a catalog, such as Docker Hub).
    """

    def __init__(self, client: RegistryClient, names: Sequence[str] = ()):
        self.client = client
        self.names = tuple(names)
        self.description = f"registry {client.host}"
        self._naming: SetNaming | None = None
        self._fingerprints: dict[str, str | None] = {}      # manifest digest -> label

    def images(self, naming: SetNaming) -> dict[str, str]:
        self._naming = naming
        if self.names:
            names = list(self.names)
        else:
            names = [n for r in list_repositories(self.client) if (n := naming.member(r))]
        return {name: self.client.reference(naming.repository(name), naming.tag)
                for name in names}

    def resolve(self, name: str) -> SourceImage | None:
        assert self._naming is not None, "images() first"
        repository = self._naming.repository(name)
        digest = self.client.manifest_digest(repository, self._naming.tag)
        if digest is None:
            return None
        return SourceImage(name=name, ref=self.client.reference(repository, self._naming.tag),
                           pin=digest, digest=digest)

    def fingerprint(self, image: SourceImage) -> str | None:
        if image.fingerprint is not None:
            return image.fingerprint
        if image.pin not in self._fingerprints:
            assert self._naming is not None
            info = self.client.manifest(self._naming.repository(image.name), image.pin)
            if info is None:
                raise SyncError(f"{image.ref} disappeared from the source while syncing")
            self._fingerprints[image.pin] = info.labels.get(FINGERPRINT) or None
        return self._fingerprints[image.pin]

    def publish(self, image: SourceImage, dest: RegistryClient, repository: str,
                tag: str, cancel: threading.Event | None = None) -> str:
        assert self._naming is not None
        return copy_image(self.client, self._naming.repository(image.name), image.pin,
                          dest, repository, tag, cancel)


# -- planning --------------------------------------------------------------------------------

@dataclass(frozen=True)
class SyncSettings:
    source: SetNaming
    destination: SetNaming
    release_pattern: str = DEFAULT_RELEASE_PATTERN
    force: bool = False
    dry_run: bool = False
    threads: int = 4

    @property
    def tag(self) -> str:
        return self.destination.tag

    @property
    def release(self) -> bool:
        return is_release(self.tag, self.release_pattern)


@dataclass(frozen=True)
class SyncPlan:
    image: str
    source: str                     # the source reference
    repository: str                 # at the destination
    action: Action
    target: str | None = None       # the revision (or release tag) pushed or moved to
    revisions: tuple[int, ...] = ()  # existing at the destination
    digest: str | None = None       # what target names, when known before execution
    note: str = ""


@dataclass(frozen=True)
class SyncResult:
    image: str
    status: Status
    plan: SyncPlan | None = None
    reference: str | None = None    # host/repository:target after the sync
    digest: str | None = None
    error: str | None = None


def plan_image(source: Source, dest: RegistryClient, name: str,
               settings: SyncSettings) -> tuple[SyncPlan, SourceImage | None]:
    """What syncing one image needs (reads only)."""
    repository = settings.destination.repository(name)
    image = source.resolve(name)
    if image is None:
        return SyncPlan(name, "", repository, Action.SKIP,
                        note=f"no tag {settings.tag} at the source"), None
    if settings.release:
        return _plan_release(source, image, dest, repository, settings), image
    return _plan_revision(source, image, dest, repository, settings), image


def _plan_release(source: Source, image: SourceImage, dest: RegistryClient,
                  repository: str, settings: SyncSettings) -> SyncPlan:
    tag = settings.tag
    found = peek_manifest(dest, repository, tag)
    if found is None:
        _source_fingerprint(source, image)
        return SyncPlan(image.name, image.ref, repository, Action.PUSH, tag,
                        note="new release tag")
    ref = dest.reference(repository, tag)
    if _same(source, image, dest, repository, found, ref, settings.force):
        return SyncPlan(image.name, image.ref, repository, Action.UNCHANGED, tag,
                        digest=found.digest)
    if not settings.force:
        raise SyncError(f"release tag {ref} is immutable and already holds a different "
                        f"image than {image.ref}", hint="--force replaces it")
    return SyncPlan(image.name, image.ref, repository, Action.PUSH, tag,
                    note="release tag replaced (--force)")


def _plan_revision(source: Source, image: SourceImage, dest: RegistryClient,
                   repository: str, settings: SyncSettings) -> SyncPlan:
    tag = settings.tag
    tags = dest.list_tags(repository)
    numbers = revisions(tags, tag)
    floating_ref = dest.reference(repository, tag)
    if not numbers:
        if tag in tags and not settings.force:
            raise SyncError(f"destination tags are not kiln revisions: {floating_ref} exists "
                            f"but no {tag}-N revision does, so kiln-registry sync did not "
                            f"publish it", hint=f"--force publishes {tag}-1 and moves "
                                                f"{tag} to it")
        return _push_plan(source, image, repository, tag, numbers)
    newest = revision_tag(tag, numbers[-1])
    newest_ref = dest.reference(repository, newest)
    found = peek_manifest(dest, repository, newest)
    if found is None:
        raise SyncError(f"{newest_ref} is listed by the registry but has no manifest")
    floating = dest.manifest_digest(repository, tag) if tag in tags else None
    if floating not in (None, found.digest) and not settings.force:
        older = [revision_tag(tag, n) for n in reversed(numbers[:-1])]
        if not any(dest.manifest_digest(repository, t) == floating for t in older):
            raise SyncError(f"destination tags are not kiln revisions: {floating_ref} names "
                            f"an image that is none of its revisions {tag}-1..{newest}",
                            hint=f"--force moves {tag} to a revision")
    if _same(source, image, dest, repository, found, newest_ref, settings.force):
        action = Action.UNCHANGED if floating == found.digest else Action.MOVE
        note = "" if action is Action.UNCHANGED else f"{tag} lagged behind {newest}"
        return SyncPlan(image.name, image.ref, repository, action, newest, numbers,
                        digest=found.digest, note=note)
    return _push_plan(source, image, repository, tag, numbers)


def _push_plan(source: Source, image: SourceImage, repository: str, tag: str,
               numbers: tuple[int, ...]) -> SyncPlan:
    _source_fingerprint(source, image)      # never publish what sync cannot compare later
    target = revision_tag(tag, (numbers[-1] if numbers else 0) + 1)
    if len(target) > MAX_TAG_LENGTH:
        raise SyncError(f"{image.name}: revision tag {target!r} is longer than "
                        f"{MAX_TAG_LENGTH} characters")
    return SyncPlan(image.name, image.ref, repository, Action.PUSH, target, numbers)


def _source_fingerprint(source: Source, image: SourceImage) -> str:
    found = source.fingerprint(image)
    if found is None:
        raise SyncError(f"{image.ref} carries no {FINGERPRINT} label: it was not built by "
                        f"kiln-build (or its build did not finish)")
    return found


def _same(source: Source, image: SourceImage, dest: RegistryClient, repository: str,
          found: Found, ref: str, force: bool) -> bool:
    """Whether the destination image ``found`` (at ``ref``) is the source image's equal."""
    if image.digest is not None and image.digest == found.digest:
        return True
    if image.image_id is not None and image.image_id == found.config_digest:
        return True
    ours = _source_fingerprint(source, image)
    info = dest.manifest(repository, found.digest)
    theirs = info.labels.get(FINGERPRINT) if info is not None else None
    if theirs is None and not force:
        raise SyncError(f"destination tags are not kiln revisions: {ref} carries no "
                        f"{FINGERPRINT} label", hint="--force publishes over it")
    return theirs == ours


# -- executing ----------------------------------------------------------------------------------

def execute(plan: SyncPlan, image: SourceImage | None, source: Source, dest: RegistryClient,
            settings: SyncSettings,
            after_revision: Callable[[SyncPlan], None] | None = None,
            cancel: threading.Event | None = None) -> SyncResult:
    """Carry out a plan. A revision is complete before ``T`` moves to it.

    A set ``cancel`` may stop the revision's publication (a STOPPED result,
    ``T`` not moved); a revision that got published has ``T`` moved to it.
    """
    reference = dest.reference(plan.repository, plan.target) if plan.target else None
    if settings.dry_run:
        return SyncResult(plan.image, Status.PLANNED, plan, reference, plan.digest)
    if plan.action is Action.SKIP:
        return SyncResult(plan.image, Status.SKIPPED, plan)
    if plan.action is Action.UNCHANGED:
        return SyncResult(plan.image, Status.UNCHANGED, plan, reference, plan.digest)
    if plan.action is Action.MOVE:
        digest = dest.put_tag(plan.repository, plan.digest or plan.target, settings.tag)
        return SyncResult(plan.image, Status.MOVED, plan, reference, digest)
    assert image is not None and plan.target is not None
    LOG.info("pushing %s to %s", image.ref, reference)
    try:
        digest = source.publish(image, dest, plan.repository, plan.target, cancel)
    except Cancelled as exc:
        return SyncResult(plan.image, Status.STOPPED, plan, error=exc.message)
    except KilnError as exc:
        if cancel is None or not cancel.is_set():
            raise
        # An engine whose push Ctrl-C reached too (it shares the terminal): the
        # revision may or may not exist, but T was not moved; a rerun settles it.
        return SyncResult(plan.image, Status.STOPPED, plan,
                          error=f"interrupted while pushing {reference} ({exc}); "
                                f"{settings.tag} was not moved")
    if plan.target != settings.tag:
        if after_revision is not None:
            after_revision(plan)
        dest.put_tag(plan.repository, digest, settings.tag)
    return SyncResult(plan.image, Status.PUSHED, plan, reference, digest)


def sync_image(source: Source, dest: RegistryClient, name: str, settings: SyncSettings,
               after_revision: Callable[[SyncPlan], None] | None = None,
               cancel: threading.Event | None = None) -> SyncResult:
    """Plan and execute one image; a failure becomes a FAILED result naming the image,
    and a set ``cancel`` a STOPPED one (unless its revision got published)."""
    plan = None
    try:
        if cancel is not None and cancel.is_set():
            return SyncResult(name, Status.STOPPED, error="interrupted before it started")
        plan, image = plan_image(source, dest, name, settings)
        if cancel is not None and cancel.is_set() and not settings.dry_run \
                and plan.action in (Action.PUSH, Action.MOVE):
            return SyncResult(name, Status.STOPPED, plan,
                              error="interrupted before it was published")
        return execute(plan, image, source, dest, settings, after_revision, cancel)
    except KilnError as exc:
        return SyncResult(name, Status.FAILED, plan, error=str(exc))


def sync(source: Source, dest: RegistryClient, patterns: Sequence[str],
         settings: SyncSettings,
         after_revision: Callable[[SyncPlan], None] | None = None,
         cancel: threading.Event | None = None) -> list[SyncResult]:
    """Sync the selected images of the set from a source to a destination registry.

    ``after_revision`` is called after each revision is pushed and before ``T``
    moves (a test hook: kiln-registry can end the process there). Setting
    ``cancel`` (from another thread or a signal handler) stops the run: see
    the module's description; the results still cover every selected image.
    """
    dest.ping()
    names = source.images(settings.source)
    where = (f"{source.description} tagged "
             f"{settings.source.repository('*')}:{settings.source.tag}")
    selected = select_names(names, patterns, where)
    return run_parallel(lambda name: sync_image(source, dest, name, settings,
                                                after_revision, cancel),
                        selected, settings.threads)


def run_parallel(work: Callable[[str], R], names: Sequence[str], threads: int) -> list[R]:
    """``work(name)`` for every name on up to ``threads`` threads; results in name order."""
    results: dict[str, R] = {}
    pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="kiln-sync")
    try:
        pending = {pool.submit(work, name): name for name in names}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                results[pending.pop(future)] = future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return [results[name] for name in names]


# -- the list of what was published ---------------------------------------------------------

def output_document(results: Sequence[SyncResult], registry: str,
                    settings: SyncSettings) -> dict:
    """What deployment tools read: each image's revision reference and digest.

    ``{"registry", "namespace", "tag", "images": {name: {"reference",
    "tag", "digest"}}, "failed": [names], "stopped": [names]}``; failed,
    stopped (by an interruption) and skipped images are not in ``images``.
    """
    images = {}
    for result in results:
        if result.status in (Status.PUSHED, Status.MOVED, Status.UNCHANGED) and result.plan:
            images[result.image] = {"reference": result.reference,
                                    "tag": result.plan.target, "digest": result.digest}
    return {"registry": registry, "namespace": settings.destination.namespace,
            "tag": settings.tag, "images": images,
            "failed": sorted(r.image for r in results if r.status is Status.FAILED),
            "stopped": sorted(r.image for r in results if r.status is Status.STOPPED)}


def to_yaml(value, indent: int = 0) -> str:
    """YAML for plain data (dicts, lists, strings, numbers, booleans, None).

    Strings are written as JSON strings, which YAML reads as double-quoted
    scalars.
    """
    pad = "  " * indent
    if isinstance(value, Mapping):
        if not value:
            return "{}\n" if indent == 0 else " {}\n"
        lines = [] if indent == 0 else ["\n"]
        for key, item in value.items():
            lines.append(f"{pad}{_yaml_key(str(key))}:{_yaml_child(item, indent + 1)}")
        return "".join(lines)
    if isinstance(value, list):
        if not value:
            return "[]\n" if indent == 0 else " []\n"
        lines = [] if indent == 0 else ["\n"]
        for item in value:
            lines.append(f"{pad}-{_yaml_child(item, indent + 1)}")
        return "".join(lines)
    return f"{_yaml_scalar(value)}\n"


def _yaml_child(value, indent: int) -> str:
    if isinstance(value, Mapping | list):
        return to_yaml(value, indent)
    return f" {_yaml_scalar(value)}\n"


def _yaml_key(key: str) -> str:
    """A key plain when YAML cannot read it as anything but that string, else quoted."""
    if _PLAIN_KEY.fullmatch(key) and key.lower() not in _YAML_WORDS:
        return key
    return json.dumps(key, ensure_ascii=False)


def _yaml_scalar(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    return json.dumps(str(value), ensure_ascii=False)


# -- promote ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PromotePlan:
    image: str
    repository: str
    candidate: str                  # the tag chosen: T-N, or T
    candidate_digest: str
    candidate_revision: str | None  # the revision tag the candidate is, if found
    deployed_digest: str | None     # what T-deployed names now
    deployed_revision: str | None
    current: bool                   # already deployed: nothing to do


@dataclass(frozen=True)
class PromoteResult:
    image: str
    status: str                     # "promoted", "current", "planned", "skipped", "failed"
    plan: PromotePlan | None = None
    error: str | None = None


def deployed_tag(tag: str) -> str:
    return f"{tag}-{DEPLOYED}"


def old_tag(tag: str) -> str:
    return f"{tag}-{OLD}"


def plan_promote(client: RegistryClient, name: str, repository: str, tag: str,
                 revision: int | None = None) -> PromotePlan | None:
    """Which image becomes ``T-deployed`` (``T-N``, else what ``T`` names); None if the
    repository has no tag T."""
    tags = client.list_tags(repository)
    numbers = revisions(tags, tag)
    candidate = revision_tag(tag, revision) if revision is not None else tag
    if revision is None and tag not in tags:
        return None
    if candidate not in tags:
        known = ", ".join(revision_tag(tag, n) for n in numbers[-5:]) or "none"
        raise SyncError(f"{client.reference(repository, candidate)} does not exist "
                        f"(newest revisions: {known})")
    candidate_digest = client.manifest_digest(repository, candidate)
    if candidate_digest is None:
        raise SyncError(f"{client.reference(repository, candidate)} has no manifest")
    deployed_digest = None
    if deployed_tag(tag) in tags:
        deployed_digest = client.manifest_digest(repository, deployed_tag(tag))
    names = _revision_names(client, repository, tag, numbers,
                            {candidate_digest, deployed_digest} - {None})
    return PromotePlan(
        image=name, repository=repository, candidate=candidate,
        candidate_digest=candidate_digest,
        candidate_revision=candidate if revision is not None else names.get(candidate_digest),
        deployed_digest=deployed_digest,
        deployed_revision=names.get(deployed_digest) if deployed_digest else None,
        current=deployed_digest == candidate_digest)


def _revision_names(client: RegistryClient, repository: str, tag: str,
                    numbers: Sequence[int], digests: set[str]) -> dict[str, str]:
    """``digest -> newest revision tag naming it``, looking from the newest revision down."""
    names: dict[str, str] = {}
    for number in reversed(numbers):
        if len(names) == len(digests):
            break
        candidate = revision_tag(tag, number)
        digest = client.manifest_digest(repository, candidate)
        if digest in digests and digest not in names:
            names[digest] = candidate
    return names


def promote(client: RegistryClient, plan: PromotePlan, tag: str) -> None:
    """``T-deployed`` -> ``T-old``, then the candidate -> ``T-deployed``, by digest.

    Rerunnable: an interruption between the two leaves ``T-old`` equal to
    ``T-deployed``, and a rerun moves ``T-deployed``.
    """
    if plan.current:
        return
    if plan.deployed_digest is not None:
        client.put_tag(plan.repository, plan.deployed_digest, old_tag(tag))
    client.put_tag(plan.repository, plan.candidate_digest, deployed_tag(tag))


def promote_labels(client: RegistryClient, plan: PromotePlan
                   ) -> tuple[Mapping[str, str] | None, Mapping[str, str]]:
    """The labels of the deployed image (None if none is) and of the candidate."""
    candidate = client.manifest(plan.repository, plan.candidate_digest)
    if candidate is None:
        raise SyncError(f"{client.reference(plan.repository, plan.candidate)} disappeared")
    if plan.deployed_digest is None:
        return None, candidate.labels
    deployed = client.manifest(plan.repository, plan.deployed_digest)
    return (deployed.labels if deployed else None), candidate.labels


# -- list -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TagInfo:
    tag: str
    revision: int | None            # N for T-N (with the tag asked for), else None
    digest: str
    fingerprint: str | None
    created: str | None


def family(tags: Iterable[str], tag: str) -> list[str]:
    """``T``, its revisions (newest first), ``T-deployed`` and ``T-old``, those present."""
    tags = set(tags)
    ordered = [tag] + [revision_tag(tag, n) for n in reversed(revisions(tags, tag))]
    ordered += [deployed_tag(tag), old_tag(tag)]
    return [t for t in ordered if t in tags]


def list_image(client: RegistryClient, repository: str, tag: str | None = None
               ) -> list[TagInfo]:
    """Tags of a repository (only T's family if ``tag``) with fingerprint and created date.

    One HEAD per tag, and the manifest and config once per distinct image.
    """
    tags = client.list_tags(repository)
    shown = family(tags, tag) if tag else sorted(tags, key=_tag_order)
    digests = {t: client.manifest_digest(repository, t) for t in shown}
    details = {}
    for digest in dict.fromkeys(d for d in digests.values() if d):
        info = client.manifest(repository, digest)
        details[digest] = ((info.labels.get(FINGERPRINT) or None, info.created)
                           if info else (None, None))
    result = []
    for name in shown:
        digest = digests[name]
        if digest is None:
            continue                # deleted while we looked
        fingerprint, created = details[digest]
        number = revision_number(name, tag) if tag else _any_revision(name, set(tags))
        result.append(TagInfo(name, number, digest, fingerprint, created))
    return result


def _any_revision(candidate: str, tags: set[str]) -> int | None:
    """N if ``candidate`` is ``<T>-N`` for a tag T the repository has."""
    base, _, number = candidate.rpartition("-")
    return revision_number(candidate, base) if base in tags else None


def _tag_order(tag: str) -> tuple:
    """Tags sorted by name, with revision numbers compared as numbers (x-2 before x-10)."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part)
                 for part in re.split(r"(\d+)", tag))


def set_repositories(client: RegistryClient, naming: SetNaming,
                     names: Sequence[str] = ()) -> dict[str, str]:
    """``name -> repository`` of the set in a registry (from its catalog, or ``names``)."""
    if names:
        return {name: naming.repository(name) for name in names}
    return {name: repo for repo in list_repositories(client)
            if (name := naming.member(repo))}
