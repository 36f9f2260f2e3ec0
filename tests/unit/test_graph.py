"""The image DAG from rendered Dockerfiles, and selection on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import ConfigError, GraphError
from builder.graph.dag import build_graph, build_order
from builder.graph.selection import select
from builder.naming import ImageNaming
from builder.settings import SelectionCriteria
from builder.templating.render import RenderedImage


def images(**dockerfiles):
    return {name: RenderedImage(name, text, (Path(f"/set/{name}/Dockerfile.j2"),), {})
            for name, text in dockerfiles.items()}


def test_every_kind_of_reference_is_an_edge():
    graph = build_graph(images(
        base="FROM debian:bookworm\n",
        tools="ARG REG=kiln\nFROM ${REG}/base:latest AS tools\nRUN true\n",
        wheels="from kiln/base:latest\n",
        app="FROM --platform=linux/amd64 kiln/tools:latest AS t\n"
            "FROM kiln/base:latest\n"
            "COPY --from=kiln/wheels:latest /wheels /wheels\n"
            "COPY --from=t /bin/x /bin/x\n"
            "RUN --mount=type=bind,from=kiln/wheels:latest,target=/w \\\n    true\n",
    ), ImageNaming())
    assert sorted(graph.predecessors("app")) == ["base", "tools", "wheels"]
    assert graph.nodes["base"]["bases"] == ("debian:bookworm",)
    assert graph.nodes["app"]["bases"] == ()


def test_registry_qualified_and_unqualified_references_match():
    naming = ImageNaming(registry="127.0.0.1:5000")
    graph = build_graph(images(base="FROM scratch\n",
                               a="FROM 127.0.0.1:5000/kiln/base:latest\n",
                               b="FROM kiln/base:latest\n"), naming)
    assert sorted(graph.successors("base")) == ["a", "b"]


def test_self_reference_is_a_cycle():
    with pytest.raises(GraphError, match="cycle: a -> a"):
        build_graph(images(a="FROM kiln/a:latest\n"), ImageNaming())


def test_other_tags_and_namespaces_are_external():
    graph = build_graph(images(a="FROM kiln/ghost:other-tag\nFROM otherns/ghost:latest\n"),
                        ImageNaming())
    assert graph.nodes["a"]["bases"] == ("kiln/ghost:other-tag", "otherns/ghost:latest")


def test_dockerfile_error_is_reported_as_graph_error():
    with pytest.raises(GraphError, match=r"^/set/a/Dockerfile.j2: the rendered Dockerfile "
                                         r"of image 'a' is invalid at line 1: RUN before"):
        build_graph(images(a="RUN true\n"), ImageNaming())


def test_build_order_respects_ancestry_through_unselected_images():
    graph = build_graph(images(a="FROM x\n", b="FROM kiln/a:latest\n",
                               c="FROM kiln/b:latest\n", aa="FROM x\n"), ImageNaming())
    assert build_order(graph) == ["a", "aa", "b", "c"]
    assert build_order(graph, ["c", "a"]) == ["a", "c"]


FAMILY = images(base="FROM x\n", mid="FROM kiln/base:latest\n",
                leaf="FROM kiln/mid:latest\n", other="FROM kiln/base:latest\n")


def test_selection_pulls_in_ancestors():
    graph = build_graph(FAMILY, ImageNaming())
    selection = select(graph, SelectionCriteria(regexes=("leaf",)))
    assert selection.selected == {"base", "mid", "leaf"}
    assert selection.requested == {"leaf"}
    assert selection.not_matched == {"other"}


def test_skip_parents_only_skips_unrequested_ancestors():
    graph = build_graph(FAMILY, ImageNaming())
    selection = select(graph, SelectionCriteria(regexes=("leaf", "^mid$"), skip_parents=True))
    assert selection.selected == {"mid", "leaf"}
    assert selection.skipped_parents == {"base"}


def test_exclude_stops_ancestor_walk():
    graph = build_graph(FAMILY, ImageNaming())
    selection = select(graph, SelectionCriteria(regexes=("leaf",), exclude=("^mid$",)))
    assert selection.selected == {"leaf"}
    assert selection.excluded == {"mid"}


def test_no_pattern_selects_everything():
    graph = build_graph(FAMILY, ImageNaming())
    assert select(graph, SelectionCriteria()).selected == set(FAMILY)


def test_profile_entries_are_regexes():
    graph = build_graph(FAMILY, ImageNaming())
    criteria = SelectionCriteria(profiles=("p",), profile_defs={"p": ("^oth",)},
                                 skip_parents=True)
    assert select(graph, criteria).selected == {"other"}
    with pytest.raises(ConfigError, match="'q' is not defined"):
        select(graph, SelectionCriteria(profiles=("q",)))


def test_build_args_override_arg_defaults_in_from():
    family = images(platform="FROM debian:bookworm\n",
                    app="ARG BASE=debian:bookworm\nFROM ${BASE}\nARG TAG\n"
                        "COPY --from=kiln/platform:${TAG:-none} /x /x\n")
    without = build_graph(family, ImageNaming())
    assert list(without.predecessors("app")) == []
    assert without.nodes["app"]["bases"] == ("debian:bookworm", "kiln/platform:none")
    graph = build_graph(family, ImageNaming(),
                        {"BASE": "kiln/platform:latest", "TAG": "latest", "UNUSED": "x"})
    assert list(graph.predecessors("app")) == ["platform"]
    assert graph.nodes["app"]["bases"] == ()
    assert graph.nodes["app"]["base"] == "kiln/platform:latest"
    assert build_order(graph) == ["platform", "app"]
