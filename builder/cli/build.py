"""kiln-build: render, plan and build a family of images."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from builder import config, report
from builder.cli import run, setup_logging
from builder.context import prepare_work_dir, write_context
from builder.exceptions import EXIT_OK, KilnError
from builder.pipeline import make_plan

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
    raise KilnError("building images needs an engine backend, which is not "
                    "part of kiln yet; use --template-only or a listing option")


if __name__ == "__main__":
    sys.exit(main())
