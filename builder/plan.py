"""From settings to a plan: template set -> render -> graph -> selection.

Each step lives in its own module; this one only chains them and hands plain
data to the next step (the scheduler, or the listing outputs).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import networkx as nx

from builder.errors import TemplateError
from builder.graph.dag import build_graph, build_order
from builder.graph.selection import Selection, select
from builder.settings import BuildSettings
from builder.templating.api import KILN_API, TemplateAPI, WorkDirLayout
from builder.templating.layers import TemplateSet, load_template_set
from builder.templating.render import RenderedImage, Renderer

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    templates: TemplateSet
    rendered: Mapping[str, RenderedImage]
    graph: nx.DiGraph
    selection: Selection
    order: tuple[str, ...]  # the selected images, parents first
    layout: WorkDirLayout   # where the build contexts go in the work dir

    def context_paths(self) -> dict[str, str]:
        """Every image of the set -> its build context's path in the work dir."""
        return {name: self.layout.context_path(name, image.directory)
                for name, image in self.templates.images.items()}


def _template_api(settings: BuildSettings) -> TemplateAPI:
    if settings.templates.api == "kolla":
        from builder.templating.kolla.api import kolla_api
        return kolla_api(settings.templates.kolla, settings.naming)
    return KILN_API


def make_plan(settings: BuildSettings) -> Plan:
    templates = load_template_set(settings.templates.templates_dir,
                                  settings.templates.docker_dirs,
                                  settings.naming.namespace)
    for name, image in templates.images.items():
        if not settings.naming.validate_name(name):
            raise TemplateError(
                f"image directory name {name!r} is not a valid image name "
                f"(lower-case letters, digits, '.', '_', '-')",
                path=str(templates.layers[0].root / image.directory))
    api = _template_api(settings)
    renderer = Renderer(templates, settings.naming, settings.templates, api)
    rendered = renderer.render_all()
    for unused in renderer.unused_override_blocks():
        LOG.warning("%s: block %r is overridden but no rendered image has "
                    "it (misspelt, or meant for another image set?)",
                    unused.path, unused.block)
    # The builder substitutes build args in FROM lines: so must the graph, or
    # `ARG BASE` / `FROM ${BASE}` hides a parent and breaks order and fingerprints.
    graph = build_graph(rendered, settings.naming, settings.run.build_args)
    if settings.templates.kolla is not None:
        from builder.templating.kolla.settings import without_unbuildable
        graph = without_unbuildable(graph, settings.templates.kolla)
    selection = select(graph, settings.selection)
    return Plan(templates, rendered, graph, selection,
                tuple(build_order(graph, selection.selected)), api.layout)
