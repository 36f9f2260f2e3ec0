"""One build run: engine -> contexts and fingerprints -> scheduler -> summary.

Everything between the plan and the printed summary; the CLI only prints.
The scheduler is the thread one (this host's engine) or, with ``--executor
dask``, the Dask one (builder.build.distributed): the run only chooses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from builder.build.cache import RegistryCache, lookup_missing
from builder.build.context import locked_work_dir, prepare_logs_dir
from builder.build.durations import load_durations, save_durations
from builder.build.prepare import Preparation, prepare
from builder.build.refresh import decide_refreshes
from builder.build.scheduler import EventFn, Scheduler, SchedulerOptions, Status
from builder.build.worker import BuildJob, ImageBuilder, reusable_images
from builder.engines import load_engine
from builder.engines.base import Engine, EngineOptions
from builder.errors import ClusterError
from builder.output.progress import make_progress
from builder.output.summary import exit_code, summarize
from builder.plan import Plan
from builder.settings import BuildSettings, cache_home

if TYPE_CHECKING:  # Dask's side loads only for --executor dask
    from builder.build.cluster import Cluster
    from builder.build.distributed import DaskScheduler

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    summary: dict
    exit_code: int
    interrupted: bool
    work_dir: Path
    logs_dir: Path


def run_builds(settings: BuildSettings, plan: Plan) -> RunResult:
    with locked_work_dir(settings.work_dir) as work_dir:
        logs_dir = prepare_logs_dir(settings.run.logs_dir, work_dir, plan.context_paths())
        return _run_builds(settings, plan, work_dir, logs_dir)


def _run_builds(settings: BuildSettings, plan: Plan, work_dir: Path,
                logs_dir: Path) -> RunResult:
    options = settings.run
    engine = load_engine(options.engine, EngineOptions(base_url=options.engine_base_url))
    engine.ping()
    with _cluster(settings) as cluster:
        return _run_on(settings, plan, work_dir, logs_dir, engine, cluster)


@contextlib.contextmanager
def _cluster(settings: BuildSettings) -> Iterator[Cluster | None]:
    """--executor dask: the Dask cluster, checked before anything is prepared or built."""
    if settings.run.executor != "dask":
        yield None
        return
    from builder.build.cluster import connect  # loads Dask only when asked for

    cluster = connect(settings.run.dask_scheduler, settings.run.engine)
    try:
        yield cluster
    finally:
        cluster.close()


def _run_on(settings: BuildSettings, plan: Plan, work_dir: Path, logs_dir: Path,
            engine: Engine, cluster: Cluster | None) -> RunResult:
    options = settings.run
    to_build, skipped = _skip_existing(engine, settings, plan)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    # Decided from the images as they are before this run, like the reuse check.
    refreshes = decide_refreshes(engine, {name: settings.naming.ref(name) for name in to_build},
                                 options.refresh, created, options.threads)
    prepared = prepare(plan, settings, engine, to_build, work_dir,
                       cache_home() / "sources", created, refreshes)
    # with Dask, an image is reused from the cache only: the workers' engines differ
    job = BuildJob(images=prepared.images, options=options, work_dir=work_dir,
                   logs_dir=logs_dir,
                   existing={} if options.rebuild or cluster else reusable_images(
                       engine, prepared.images, options.threads))
    builder = ImageBuilder(engine, job)
    cache = _use_cache(settings, plan, to_build, job, builder)
    if cluster is not None and (cache is None or not cache.usable):
        raise ClusterError(f"--executor dask: the cache registry {options.cache.registry} "
                           f"cannot be used, and the workers hand their images over "
                           f"through it")
    for name, reason in prepared.failed.items():
        with open(builder.log_path(name), "a", encoding="utf-8") as log:
            log.write(f"kiln: FAILED before building: {reason}\n")
    history = cache_home() / "durations.json"
    known = load_durations(history)
    progress = make_progress(to_build, options.quiet)
    scheduler = _scheduler(
        settings, plan, to_build, prepared, builder, cluster, progress.event,
        SchedulerOptions(
            threads=options.threads, retries=options.retries,
            push_threads=options.push_threads,
            estimates={name: known[ref] for name in to_build
                       if (ref := settings.naming.repository(name)) in known}))
    interrupted = False
    with progress:
        try:
            outcomes = scheduler.run()
        except KeyboardInterrupt:
            interrupted = True
            outcomes = scheduler.outcomes()
        finally:
            builder.close()
    save_durations(history, {settings.naming.repository(name): outcome.duration
                             for name, outcome in outcomes.items()
                             if outcome.build_status is Status.BUILT})
    summary = summarize(
        outcomes, settings.naming, skipped=skipped,
        not_matched=plan.selection.not_matched | plan.selection.excluded,
        logs={name: builder.log_path(name) for name in outcomes},
        allowed_to_fail=options.allowed_to_fail,
        workers_not_used=scheduler.workers_not_used if cluster is not None else None)
    return RunResult(summary, exit_code(summary), interrupted, work_dir, logs_dir)


def _scheduler(settings: BuildSettings, plan: Plan, to_build: list[str],
               prepared: Preparation, builder: ImageBuilder, cluster: Cluster | None,
               on_event: EventFn, options: SchedulerOptions) -> Scheduler | DaskScheduler:
    """The threads on this host's engine, or the tasks of the Dask cluster."""
    if cluster is None:
        return Scheduler(plan.graph, to_build, builder.build,
                         push=builder.push if settings.run.push else None, options=options,
                         on_event=on_event, failed=prepared.failed)
    from builder.build.distributed import DaskScheduler, Tasks

    return DaskScheduler(cluster, plan.graph, to_build,
                         Tasks(prepared.images, settings.run, settings.naming),
                         options=options, cached=builder.job.cached,
                         write_log=lambda name, text: _append(builder.log_path(name), text),
                         on_event=on_event, failed=prepared.failed)


def _use_cache(settings: BuildSettings, plan: Plan, to_build: list[str], job: BuildJob,
               builder: ImageBuilder) -> RegistryCache | None:
    """--cache-registry: look up the images the engine does not hold; give the
    builder the cache, its trusted entries and the images wanted locally."""
    options = settings.run
    if options.cache is None:
        return None
    cache = RegistryCache(options.cache, settings.naming)
    cached = {}
    distributed = options.executor == "dask"
    if options.cache.reads and not options.rebuild:
        images = {name: image for name, image in job.images.items()
                  if not getattr(image, "refreshing", False)}
        cached = lookup_missing(cache, images,
                                (lambda image: False) if distributed else builder.has_local,
                                options.threads)
    elif options.cache.writes:
        cache.check()
    if cached:
        LOG.info("%d image(s) found in cache registry %s", len(cached), cache.host)
    # a cached image is pulled when it was asked for by name (or is to be
    # pushed); a parent only when an image built here needs it
    wanted = frozenset() if distributed else frozenset(to_build) if options.push else (
        plan.selection.requested & frozenset(to_build))
    builder.use_job(dataclasses.replace(
        job, cache=cache, cached=cached, wanted=wanted,
        push_registry=settings.naming.registry if options.push else ""))
    pulls = builder.fetch_needed()
    if pulls:
        LOG.info("pulling the %d cached image(s) this run needs locally", len(pulls))
    return cache


def _append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as log:
        log.write(text)


def _skip_existing(engine: Engine, settings: BuildSettings, plan: Plan
                   ) -> tuple[list[str], dict[str, str]]:
    skipped = {name: "not built: --skip-parents" for name in plan.selection.skipped_parents}
    to_build = []
    for name in plan.order:
        if settings.run.skip_existing and engine.inspect(settings.naming.ref(name)):
            skipped[name] = "already exists (--skip-existing)"
        else:
            to_build.append(name)
    return to_build, skipped
