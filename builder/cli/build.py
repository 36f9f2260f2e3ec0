"""kiln-build: render, plan and build a family of images."""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Sequence

from builder.build.context import (
    check_output_file,
    locked_work_dir,
    write_context,
    write_shared_files,
)
from builder.build.sources.sections import unused_source_warnings
from builder.build.sources.spec import SourceSpec
from builder.cli import options
from builder.cli.common import report_survives_second_interrupt, run, setup_logging
from builder.errors import EXIT_INTERRUPTED, EXIT_OK, ConfigError, KilnError
from builder.output import listings
from builder.plan import Plan, make_plan
from builder.settings import BuildSettings

PROG = "kiln-build"
LOG = logging.getLogger("builder.cli.build")


def main(argv: Sequence[str] | None = None) -> int:
    return run(PROG, _build, argv)


def _build(argv: list[str]) -> int:
    settings = options.load(argv, prog=PROG)
    if settings.debug:
        setup_logging(PROG, True)
    plan = make_plan(settings)
    for warning in unused_source_warnings(plan.templates.images, settings.sources,
                                          settings.templates.api == "kolla",
                                          settings.builtin_sources):
        LOG.warning("%s", warning)
    settings = _with_source_overrides(settings, plan)
    outputs = settings.outputs
    if outputs.save_dependency is not None:
        listings.save_dependency(plan, outputs.save_dependency)
    if outputs.list_images:
        print(listings.list_images(plan, outputs.format))
    if outputs.list_dependencies:
        print(listings.list_dependencies(plan))
    if outputs.template_only:
        with locked_work_dir(settings.work_dir) as work_dir:
            write_shared_files(plan.templates, plan.layout, work_dir)
            for name in plan.order:
                try:
                    write_context(plan.rendered[name], work_dir)
                except OSError as exc:
                    raise KilnError(f"cannot write the build context of {name} in "
                                    f"{work_dir}: {exc.strerror or exc}") from exc
        LOG.info("rendered %d image(s) into %s", len(plan.order), work_dir)
    if outputs.stops_before_build:
        return EXIT_OK
    if outputs.summary_json_file is not None:
        check_output_file(outputs.summary_json_file, "--summary-json-file")
    return _run_builds(settings, plan)


def _with_source_overrides(settings: BuildSettings, plan: Plan) -> BuildSettings:
    """--source NAME=PATH: image NAME's source section, taken from a local path instead."""
    if not settings.source_overrides:
        return settings
    sources = dict(settings.sources)
    for name, path in sorted(settings.source_overrides.items()):
        if name not in plan.templates.images:
            raise ConfigError(f"--source {name}={path}: the template set has no image "
                              f"{name!r}")
        if name not in sources:
            raise ConfigError(f"--source {name}={path}: image {name!r} has no source "
                              f"(no [{name}] section with a type in the config files)")
        sources[name] = SourceSpec(name=name, type="local", location=str(path))
        LOG.info("image %s: source taken from %s (--source)", name, path)
    return dataclasses.replace(settings, sources=sources)


def _run_builds(settings: BuildSettings, plan: Plan) -> int:
    from builder.build.run import run_builds  # the build machinery loads only to build

    with report_survives_second_interrupt(PROG):
        result = run_builds(settings, plan)
        _report(settings, result.summary)
    LOG.info("build contexts in %s, logs in %s", result.work_dir, result.logs_dir)
    return EXIT_INTERRUPTED if result.interrupted else result.exit_code


def _report(settings: BuildSettings, result: dict) -> None:
    from builder.output.summary import to_json, to_text, write_json

    outputs = settings.outputs
    if not outputs.summary:  # --nosummary
        pass
    elif outputs.format == "json":
        print(to_json(result))
    else:  # text, or kolla-build's none
        print(to_text(result))
    if outputs.summary_json_file is not None:
        write_json(result, outputs.summary_json_file)


if __name__ == "__main__":
    sys.exit(main())
