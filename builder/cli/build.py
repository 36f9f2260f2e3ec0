"""kiln-build: render, plan and build a family of images."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from builder import config, report
from builder.cli import run, setup_logging
from builder.context import prepare_work_dir, write_context
from builder.exceptions import EXIT_INTERRUPTED, EXIT_OK
from builder.pipeline import Plan, make_plan

PROG = "kiln-build"
LOG = logging.getLogger("builder.cli.build")


def main(argv: Sequence[str] | None = None) -> int:
    return run(PROG, _build, argv)


def _build(argv: list[str]) -> int:
    settings = config.load(argv, prog=PROG)
    if settings.debug:
        setup_logging(PROG, True)
    plan = make_plan(settings)
    outputs = settings.outputs
    if outputs.save_dependency is not None:
        report.save_dependency(plan, outputs.save_dependency)
    if outputs.list_images:
        print(report.list_images(plan, outputs.format))
    if outputs.list_dependencies:
        print(report.list_dependencies(plan))
    if outputs.template_only:
        work_dir = prepare_work_dir(settings.work_dir)
        for name in plan.order:
            write_context(plan.rendered[name], work_dir)
        LOG.info("rendered %d image(s) into %s", len(plan.order), work_dir)
    if outputs.stops_before_build:
        return EXIT_OK
    return _run_builds(settings, plan)


def _run_builds(settings: config.BuildSettings, plan: Plan) -> int:
    # The build machinery (engine SDKs, rich, ...) is loaded only to build:
    # --template-only and the listings start faster without it.
    from builder.build import BuildJob, ImageBuilder, reusable_images
    from builder.engine import load_engine
    from builder.history import load_durations, save_durations
    from builder.prepare import prepare
    from builder.progress import make_progress
    from builder.scheduler import Scheduler, SchedulerOptions, Status
    from builder.summary import exit_code, summarize

    options = settings.run
    engine = load_engine(options.engine)
    engine.ping()
    work_dir = prepare_work_dir(settings.work_dir)
    logs_dir = options.logs_dir or work_dir / "logs"
    for name in settings.sources:
        if name not in plan.templates.images:
            LOG.warning("config section [%s] defines a source, but the template "
                        "set has no image %r", name, name)
    to_build, skipped = _skip_existing(engine, settings, plan)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    prepared = prepare(plan, settings, engine, to_build, work_dir,
                       config.cache_home() / "sources", created)
    job = BuildJob(images=prepared.images, options=options, work_dir=work_dir,
                   logs_dir=logs_dir,
                   existing={} if options.rebuild else reusable_images(
                       engine, prepared.images, options.threads))
    builder = ImageBuilder(engine, job)
    for name, reason in prepared.failed.items():
        with open(builder.log_path(name), "a", encoding="utf-8") as log:
            log.write(f"kiln: FAILED before building: {reason}\n")
    progress = make_progress(to_build, options.quiet)
    history = config.cache_home() / "durations.json"
    known = load_durations(history)
    scheduler = Scheduler(
        plan.graph, to_build, builder.build,
        push=builder.push if options.push else None,
        options=SchedulerOptions(
            threads=options.threads, retries=options.retries,
            push_threads=options.push_threads,
            estimates={name: known[ref] for name in to_build
                       if (ref := settings.naming.repository(name)) in known}),
        on_event=progress.event, failed=prepared.failed)
    interrupted = False
    with progress:
        try:
            outcomes = scheduler.run()
        except KeyboardInterrupt:
            interrupted = True
            outcomes = scheduler.outcomes()
    save_durations(history, {settings.naming.repository(name): outcome.duration
                             for name, outcome in outcomes.items()
                             if outcome.build_status is Status.BUILT})
    result = summarize(
        outcomes, settings.naming, skipped=skipped,
        not_matched=plan.selection.not_matched | plan.selection.excluded,
        logs={name: builder.log_path(name) for name in outcomes},
        allowed_to_fail=options.allowed_to_fail)
    _report(settings, result)
    LOG.info("build contexts in %s, logs in %s", work_dir, logs_dir)
    if interrupted:
        return EXIT_INTERRUPTED
    return exit_code(result)


def _skip_existing(engine, settings: config.BuildSettings, plan: Plan
                   ) -> tuple[list[str], dict[str, str]]:
    skipped = {name: "not built: --skip-parents" for name in plan.selection.skipped_parents}
    to_build = []
    for name in plan.order:
        if settings.run.skip_existing and engine.inspect(settings.naming.ref(name)):
            skipped[name] = "already exists (--skip-existing)"
        else:
            to_build.append(name)
    return to_build, skipped


def _report(settings: config.BuildSettings, result: dict) -> None:
    from builder.summary import to_json, to_text, write_json

    outputs = settings.outputs
    if outputs.format == "json":
        print(to_json(result))
    else:
        print(to_text(result))
    if outputs.summary_json_file is not None:
        write_json(result, outputs.summary_json_file)


if __name__ == "__main__":
    sys.exit(main())
