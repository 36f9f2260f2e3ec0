"""The image graph: a networkx DAG of the set's images, parent -> child.

There is an edge for every reference a rendered Dockerfile makes to another
image of the set (FROM of any stage, COPY --from, RUN --mount from=). An image
may have several parents; other references are its external bases (node
attribute ``bases``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import networkx as nx

from builder.errors import DockerfileError, GraphError
from builder.graph.dockerfile import ParsedDockerfile, parse_dockerfile
from builder.naming import ImageNaming
from builder.templating.render import RenderedImage


def build_graph(rendered: Mapping[str, RenderedImage],
                naming: ImageNaming,
                build_args: Mapping[str, str] | None = None) -> nx.DiGraph:
    by_ref = {}
    for name in rendered:
        by_ref[naming.ref(name)] = name
        by_ref[naming.ref(name, with_registry=False)] = name
    graph = nx.DiGraph()
    graph.add_nodes_from(rendered, bases=())
    for name, image in sorted(rendered.items()):
        try:
            parsed = parse_dockerfile(image.dockerfile, path=image.name,
                                      build_args=build_args)
        except DockerfileError as exc:
            where = f" at line {exc.line}" if exc.line else ""
            raise GraphError(
                f"the rendered Dockerfile of image {name!r} is invalid{where}: "
                f"{exc.message}", path=str(image.templates[-1])) from exc
        bases = []
        for use in parsed.uses:
            parent = by_ref.get(use.ref)
            if parent is not None:
                graph.add_edge(parent, name)
                continue
            member = naming.set_member(use.ref)
            if member is not None:
                raise GraphError(
                    f"image {name!r} uses {use.ref}, but the template set "
                    f"has no image {member!r}",
                    path=str(image.templates[-1]),
                    hint=f"line {use.line} of the rendered Dockerfile")
            if use.ref not in bases:
                bases.append(use.ref)
        graph.nodes[name]["bases"] = tuple(bases)
        graph.nodes[name]["base"] = final_base(parsed)
        graph.nodes[name]["args"] = parsed.args
    _check_acyclic(graph)
    return graph


def final_base(parsed: ParsedDockerfile) -> str | None:
    """The image the last stage is built on (following earlier stages); None for scratch."""
    stage = parsed.stages[-1]
    by_name = {s.name: s for s in parsed.stages if s.name}
    seen = set()
    while stage.base.lower() in by_name and stage.index not in seen:
        seen.add(stage.index)
        earlier = by_name[stage.base.lower()]
        if earlier.index >= stage.index:
            break
        stage = earlier
    return None if stage.base == "scratch" else stage.base


def _check_acyclic(graph: nx.DiGraph) -> None:
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return
    path = [edge[0] for edge in cycle] + [cycle[0][0]]
    raise GraphError("images depend on each other in a cycle: "
                     + " -> ".join(path))


def build_order(graph: nx.DiGraph, names: Iterable[str] | None = None) -> list[str]:
    """A valid build order (ancestors first), deterministic: ties sorted by name.

    Ordered on the whole graph, so an image comes after its ancestors even
    when the images between them are not among ``names``.
    """
    order = nx.lexicographical_topological_sort(graph)
    if names is None:
        return list(order)
    wanted = set(names)
    return [name for name in order if name in wanted]


def dependencies(graph: nx.DiGraph, names: Iterable[str]) -> dict[str, dict]:
    """``{image: {"parents": [...], "children": [...]}}`` restricted to ``names``."""
    sub = graph.subgraph(names)
    return {name: {"parents": sorted(sub.predecessors(name)),
                   "children": sorted(sub.successors(name))}
            for name in sorted(sub)}


def to_dot(graph: nx.DiGraph, names: Iterable[str]) -> str:
    sub = graph.subgraph(names)
    lines = ["digraph images {", "  rankdir=LR;", "  node [shape=box];"]
    lines += [f"  {_quote(name)};" for name in sorted(sub)]
    lines += [f"  {_quote(parent)} -> {_quote(child)};"
              for parent, child in sorted(sub.edges)]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
