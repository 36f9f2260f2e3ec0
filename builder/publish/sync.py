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
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TypeVar

from builder.build.labels import FINGERPRINT
from builder.errors import Cancelled, KilnError, SyncError
from builder.publish.origins import Source, SourceImage
from builder.publish.revisions import (
    DEFAULT_RELEASE_PATTERN,
    MAX_TAG_LENGTH,
    Found,
    SetNaming,
    is_release,
    peek_manifest,
    revision_tag,
    revisions,
    select_names,
)
from builder.registry.client import RegistryClient

LOG = logging.getLogger(__name__)

R = TypeVar("R")


class Action(enum.Enum):
    UNCHANGED = "unchanged"     # the destination's newest revision has the same fingerprint
    PUSH = "push"               # push as the target revision (or release tag), then move T
    MOVE = "move"               # the newest revision is right, T lags behind: move T only
    SKIP = "skip"               # the source has no such tag


class SyncStatus(enum.Enum):
    PUSHED = "pushed"
    MOVED = "moved"
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"
    FAILED = "failed"
    STOPPED = "stopped"         # interrupted before it was published: T not moved
    PLANNED = "planned"         # --dry-run: the plan, not done


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
    status: SyncStatus
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
        return SyncResult(plan.image, SyncStatus.PLANNED, plan, reference, plan.digest)
    if plan.action is Action.SKIP:
        return SyncResult(plan.image, SyncStatus.SKIPPED, plan)
    if plan.action is Action.UNCHANGED:
        return SyncResult(plan.image, SyncStatus.UNCHANGED, plan, reference, plan.digest)
    if plan.action is Action.MOVE:
        digest = dest.put_tag(plan.repository, plan.digest or plan.target, settings.tag)
        return SyncResult(plan.image, SyncStatus.MOVED, plan, reference, digest)
    assert image is not None and plan.target is not None
    LOG.info("pushing %s to %s", image.ref, reference)
    try:
        digest = source.publish(image, dest, plan.repository, plan.target, cancel)
    except Cancelled as exc:
        return SyncResult(plan.image, SyncStatus.STOPPED, plan, error=exc.message)
    except KilnError as exc:
        if cancel is None or not cancel.is_set():
            raise
        # An engine whose push Ctrl-C reached too (it shares the terminal): the
        # revision may or may not exist, but T was not moved; a rerun settles it.
        return SyncResult(plan.image, SyncStatus.STOPPED, plan,
                          error=f"interrupted while pushing {reference} ({exc}); "
                                f"{settings.tag} was not moved")
    if plan.target != settings.tag:
        if after_revision is not None:
            after_revision(plan)
        dest.put_tag(plan.repository, digest, settings.tag)
    return SyncResult(plan.image, SyncStatus.PUSHED, plan, reference, digest)


def sync_image(source: Source, dest: RegistryClient, name: str, settings: SyncSettings,
               after_revision: Callable[[SyncPlan], None] | None = None,
               cancel: threading.Event | None = None) -> SyncResult:
    """Plan and execute one image; a failure becomes a FAILED result naming the image,
    and a set ``cancel`` a STOPPED one (unless its revision got published)."""
    plan = None
    try:
        if cancel is not None and cancel.is_set():
            return SyncResult(name, SyncStatus.STOPPED, error="interrupted before it started")
        plan, image = plan_image(source, dest, name, settings)
        if cancel is not None and cancel.is_set() and not settings.dry_run \
                and plan.action in (Action.PUSH, Action.MOVE):
            return SyncResult(name, SyncStatus.STOPPED, plan,
                              error="interrupted before it was published")
        return execute(plan, image, source, dest, settings, after_revision, cancel)
    except KilnError as exc:
        return SyncResult(name, SyncStatus.FAILED, plan, error=str(exc))


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
