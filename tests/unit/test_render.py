"""Template sets and rendering: layers, variants, overrides, customizable, cache."""

from __future__ import annotations

import gc
import os
import weakref

import jinja2
import pytest

from builder.errors import TemplateError
from builder.naming import ImageNaming
from builder.settings import TemplateSettings
from builder.templating.api import customizable
from builder.templating.layers import _walk, load_template_set
from builder.templating.render import Renderer


def render(root, *upper, naming=None, **settings):
    templates = load_template_set(root, upper, (naming or ImageNaming()).namespace)
    renderer = Renderer(templates, naming or ImageNaming(), TemplateSettings(**settings))
    return renderer.render_all(), renderer


@pytest.mark.parametrize("context, expected", [
    ({}, ["a", "b"]),
    ({"nova_api_packages_append": ["c"]}, ["a", "b", "c"]),
    ({"nova_api_packages_remove": ["a"]}, ["b"]),
    ({"nova_api_packages_append": ["c"], "nova_api_packages_remove": ["b", "c"]}, ["a"]),
    ({"nova_api_packages_override": ["z"], "nova_api_packages_append": ["c"]}, ["z"]),
])
def test_customizable_semantics(context, expected):
    values = ["a", "b"]
    result = customizable({"image_name": "nova-api", **context}, values, "packages")
    assert result == expected
    assert values == ["a", "b"]  # the template's list is not mutated


def test_context_files_topmost_layer_wins_and_nested_images_excluded(tree):
    lower = tree({"svc/Dockerfile.j2": "FROM x\n", "svc/start.sh": "lower\n",
                  "svc/conf/a.conf": "a\n", "svc/svc-api/Dockerfile.j2": "FROM y\n",
                  "svc/svc-api/api.conf": "api\n"})
    upper = tree({"svc/start.sh": "upper\n", "svc/extra.txt": "new\n"})
    templates = load_template_set(lower, [upper])
    files = templates.context_files(templates.images["svc"])
    assert sorted(files) == ["conf/a.conf", "extra.txt", "start.sh"]
    assert files["start.sh"].read_text() == "upper\n"
    assert sorted(templates.context_files(templates.images["svc-api"])) == ["api.conf"]


def test_image_moved_between_layers_is_an_error(tree):
    lower = tree({"a/app/Dockerfile.j2": "FROM x\n"})
    upper = tree({"b/app/Dockerfile.j2": "FROM x\n"})
    with pytest.raises(TemplateError, match="image 'app' is at a/app/ in a lower layer but "
                                            "at b/app/"):
        load_template_set(lower, [upper])


def test_variant_only_image_exists_only_in_its_namespace(tree):
    root = tree({"zuul-only/Dockerfile.zuul.j2": "FROM x\n", "common/Dockerfile.j2": "FROM x\n"})
    assert sorted(load_template_set(root, [], "zuul").images) == ["common", "zuul-only"]
    assert sorted(load_template_set(root, [], "opendev").images) == ["common"]


def test_variant_extends_generic_template_across_layers(tree):
    lower = tree({"app/Dockerfile.j2": "FROM x\n{% block run %}RUN generic\n{% endblock %}\n"})
    upper = tree({"app/Dockerfile.opendev.j2":
                  "{% extends parent_template %}\n"
                  "{% block run %}RUN opendev\n{{ super() }}{% endblock %}\n"})
    rendered, _ = render(lower, upper, naming=ImageNaming(namespace="opendev"))
    assert rendered["app"].dockerfile == "FROM x\nRUN opendev\nRUN generic\n"
    assert [p.name for p in rendered["app"].templates] == ["Dockerfile.j2",
                                                          "Dockerfile.opendev.j2"]


def test_three_layers_and_two_overrides_chain_with_super(tree, tmp_path):
    base = tree({"app/Dockerfile.j2": "FROM x\n{% block b %}RUN 0\n{% endblock %}\n"})
    layers = [tree({"app/Dockerfile.j2": "{% extends parent_template %}\n"
                                         f"{{% block b %}}RUN {i}\n{{{{ super() }}}}"
                                         "{% endblock %}\n"}) for i in (1, 2)]
    overrides = []
    for i in (3, 4):
        path = tmp_path / f"o{i}.j2"
        path.write_text("{% extends parent_template %}\n"
                        f"{{% block b %}}RUN {i}\n{{{{ super() }}}}{{% endblock %}}\n")
        overrides.append(path)
    rendered, renderer = render(base, *layers, overrides=tuple(overrides))
    assert rendered["app"].dockerfile == "FROM x\nRUN 4\nRUN 3\nRUN 2\nRUN 1\nRUN 0\n"
    assert renderer.unused_override_blocks() == []


def test_upper_layer_may_replace_a_template_without_extending(tree):
    lower = tree({"app/Dockerfile.j2": "FROM lower\n"})
    upper = tree({"app/Dockerfile.j2": "FROM upper\n"})
    rendered, _ = render(lower, upper)
    assert rendered["app"].dockerfile == "FROM upper\n"


def test_shared_macros_topmost_layer_wins(tree):
    lower = tree({"macros.j2": "{% macro hi() %}lower{% endmacro %}",
                  "app/Dockerfile.j2": "{% import 'macros.j2' as m %}\nFROM x\nRUN {{ m.hi() }}\n"})
    upper = tree({"macros.j2": "{% macro hi() %}upper{% endmacro %}"})
    rendered, _ = render(lower, upper)
    assert "RUN upper" in rendered["app"].dockerfile


def test_context_variables_and_image_ref(tree):
    root = tree({"base/Dockerfile.j2": "FROM x\n",
                 "app/Dockerfile.j2": "FROM {{ image_ref('base') }}\n"
                                      "LABEL n={{ image_name }} ns={{ namespace }} "
                                      "p={{ image_prefix }} t={{ tag }} r={{ registry }} "
                                      "v={{ flavour }}\n"})
    naming = ImageNaming(registry="reg:5000", namespace="acme", prefix="x-", tag="1.0")
    rendered, _ = render(root, naming=naming, variables={"flavour": "mint"})
    assert rendered["app"].dockerfile == (
        "FROM reg:5000/acme/x-base:1.0\n"
        "LABEL n=app ns=acme p=x- t=1.0 r=reg:5000 v=mint\n")


def test_one_environment_compiles_shared_templates_once(tree):
    files = {"macros.j2": "{% macro m() %}x{% endmacro %}"}
    for i in range(20):
        files[f"i{i}/Dockerfile.j2"] = "{% import 'macros.j2' as mc %}\nFROM x\nRUN {{ mc.m() }}\n"
    root = tree(files)
    templates = load_template_set(root)
    renderer = Renderer(templates, ImageNaming(), TemplateSettings())
    loads = []
    original = renderer._loader.get_source
    renderer._loader.get_source = lambda env, name: (loads.append(name), original(env, name))[1]
    renderer.render_all()
    assert loads.count("macros.j2") == 1
    assert len(loads) == 21


def test_bytecode_cache_follows_source_changes(tree, tmp_path):
    root = tree({"app/Dockerfile.j2": "FROM x\nRUN one\n"})
    cache = tmp_path / "cache"
    first, _ = render(root, cache_dir=cache)
    assert first["app"].dockerfile == "FROM x\nRUN one\n"
    assert list(cache.rglob("*.cache"))
    (root / "app" / "Dockerfile.j2").write_text("FROM x\nRUN two\n")
    second, _ = render(root, cache_dir=cache)
    assert second["app"].dockerfile == "FROM x\nRUN two\n"


def test_environment_not_exposed_without_allow_list(tree, monkeypatch):
    monkeypatch.setenv("HOME_SECRET", "x")
    root = tree({"app/Dockerfile.j2": "FROM x\n{{ env | length }}\n"})
    rendered, _ = render(root)
    assert rendered["app"].dockerfile == "FROM x\n0\n"


def test_warm_bytecode_cache_compiles_nothing_and_bad_entries_recompile(
        tree, tmp_path, monkeypatch):
    root = tree({"macros.j2": "{% macro m() %}x{% endmacro %}",
                 "app/Dockerfile.j2": "{% import 'macros.j2' as mc %}\nFROM x\n"
                                      "RUN {{ mc.m() }}\n"})
    cache = tmp_path / "cache"
    first, _ = render(root, cache_dir=cache)
    entries = sorted(cache.rglob("*.cache"))
    assert len(entries) == 2

    def no_compile(*args, **kwargs):
        raise AssertionError("compiled with a warm cache")

    with monkeypatch.context() as patch:
        patch.setattr(jinja2.Environment, "compile", no_compile)
        warm, _ = render(root, cache_dir=cache)
    assert warm["app"].dockerfile == first["app"].dockerfile == "FROM x\nRUN x\n"
    entries[0].write_bytes(b"garbage")
    entries[1].write_bytes(entries[1].read_bytes()[:-20])  # truncated
    again, _ = render(root, cache_dir=cache)
    assert again["app"].dockerfile == first["app"].dockerfile
    warm, _ = render(root, cache_dir=cache)  # rewritten entries load again
    assert warm["app"].dockerfile == first["app"].dockerfile


def test_images_own_templates_are_released_once_rendered(tree, tmp_path):
    root = tree({"macros.j2": "{% macro m() %}x{% endmacro %}",
                 "a/Dockerfile.j2": "{% import 'macros.j2' as mc %}\nFROM x\n"
                                    "{% block b %}RUN {{ mc.m() }}{% endblock %}\n",
                 "b/Dockerfile.j2": "FROM {{ image_ref('a') }}\n"})
    override = tmp_path / "o.j2"
    override.write_text("{% extends parent_template %}\n"
                        "{% block b %}{{ super() }} y{% endblock %}\n")
    rendered, renderer = render(root, overrides=(override,))
    cached = {name for _, name in renderer._env.cache}
    assert cached == {"macros.j2", "override:0"}
    again = renderer.render(load_template_set(root).images["a"])
    assert again.dockerfile == rendered["a"].dockerfile == "FROM x\nRUN x y"
    assert [p.name for p in again.templates] == ["Dockerfile.j2", "o.j2"]


def test_a_dropped_renderer_is_freed_without_the_cyclic_collector(tree):
    root = tree({"app/Dockerfile.j2": "FROM {{ image_ref('app') }}\n"})
    collecting = gc.isenabled()
    gc.disable()
    try:
        _, renderer = render(root)
        dropped = weakref.ref(renderer)
        del renderer
        assert dropped() is None
    finally:
        if collecting:
            gc.enable()


def test_template_newlines_read_as_text(tree):
    root = tree({"app/Dockerfile.j2": ""})
    (root / "app" / "Dockerfile.j2").write_bytes(
        b"FROM x\r\n{% if true %}\r\nRUN a\r\n{% endif %}\rRUN b\r\n")
    rendered, _ = render(root)
    assert rendered["app"].dockerfile == "FROM x\nRUN a\nRUN b\n"


def test_walk_is_top_down_sorted_skips_hidden_dirs_follows_links(tmp_path):
    root = tmp_path / "set"
    for relpath in ["b/x", "a/z/Dockerfile.j2", "a/B/y", "a/.git/hidden", ".hidden/x",
                    "a/b2/y", ".dotfile", "top.j2"]:
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath).write_text("x")
    (root / "linked").symlink_to(root / "a" / "z")
    (root / "broken").symlink_to(tmp_path / "nowhere")

    def reference(top):  # what os.walk(followlinks=True) gives
        for current, dirnames, filenames in os.walk(top, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel = os.path.relpath(current, top)
            yield ("" if rel == "." else rel.replace(os.sep, "/")), sorted(filenames)

    walked = list(_walk(root))
    assert walked == list(reference(root))
    assert [d for d, _ in walked] == ["", "a", "a/B", "a/b2", "a/z", "b", "linked"]
    assert sorted(load_template_set(root).images) == ["linked", "z"]


def test_walk_lists_links_out_of_the_layer_and_loops_as_files(tmp_path):
    root = tmp_path / "set"
    (root / "a" / "b").mkdir(parents=True)
    (root / "c").mkdir()
    (root / "a" / "b" / "f").write_text("x")
    (root / "a" / "up").symlink_to("..")                 # a loop
    (root / "a" / "b" / "root").symlink_to(root)         # a loop through the root
    (root / "c" / "to-a").symlink_to(root / "a")         # inside: followed
    (root / "a" / "b" / "to-c").symlink_to(root / "c")   # c -> a -> b -> c: once
    (root / "out").symlink_to(tmp_path)                  # out of the layer
    walked = dict(_walk(root))
    assert walked[""] == ["out"]
    assert walked["a"] == ["up"]
    assert walked["a/b"] == ["f", "root"]
    assert walked["c/to-a/b"] == ["f", "root", "to-c"]  # to-c: c is on the way here
    assert walked["a/b/to-c"] == ["to-a"]               # and a is, here
    assert sorted(walked) == ["", "a", "a/b", "a/b/to-c", "c", "c/to-a", "c/to-a/b"]
