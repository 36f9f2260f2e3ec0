"""Build contexts on disk, and the git state of template layers."""

from __future__ import annotations

import os
import stat

import git
import pytest

from builder.build.context import (
    FIXED_MTIME,
    locked_work_dir,
    prepare_work_dir,
    write_context,
    write_shared_files,
)
from builder.build.prepare import layer_info
from builder.errors import ContextFileError, WorkDirBusy
from builder.templating.api import KILN_LAYOUT, KOLLA_LAYOUT
from builder.templating.layers import Layer, load_template_set
from builder.templating.render import RenderedImage


@pytest.fixture
def sources(tmp_path):
    root = tmp_path / "src"
    (root / "conf" / "deep").mkdir(parents=True)
    (root / "start.sh").write_text("#!/bin/sh\nexec true\n")
    (root / "start.sh").chmod(0o700)
    (root / "conf" / "app.conf").write_text("[DEFAULT]\n")
    (root / "conf" / "app.conf").chmod(0o600)
    (root / "conf" / "deep" / "x.txt").write_bytes(b"\x00binary\xff")
    return root


def image(sources, dockerfile="FROM scratch\n"):
    return RenderedImage(name="app", dockerfile=dockerfile, templates=(), context_files={
        "start.sh": sources / "start.sh",
        "conf/app.conf": sources / "conf" / "app.conf",
        "conf/deep/x.txt": sources / "conf" / "deep" / "x.txt"})


def test_context_files_modes_and_times_are_fixed(sources, tmp_path):
    work = prepare_work_dir(tmp_path / "work")
    old = os.umask(0o077)  # a strict umask must not leak into the context
    try:
        target = write_context(image(sources), work)
    finally:
        os.umask(old)
    assert (target / "Dockerfile").read_text() == "FROM scratch\n"
    assert (target / "conf" / "deep" / "x.txt").read_bytes() == b"\x00binary\xff"
    modes = {p.relative_to(target).as_posix(): stat.S_IMODE(p.stat().st_mode)
             for p in (target, *target.rglob("*"))}
    assert modes == {".": 0o755, "Dockerfile": 0o644, "start.sh": 0o755, "conf": 0o755,
                     "conf/app.conf": 0o644, "conf/deep": 0o755, "conf/deep/x.txt": 0o644}
    assert {p.stat().st_mtime for p in (target, *target.rglob("*"))} == {FIXED_MTIME}


def test_rewriting_a_context_drops_what_the_last_run_left(sources, tmp_path):
    work = prepare_work_dir(tmp_path / "work")
    write_context(image(sources), work)
    (work / "app" / "stray.txt").write_text("left over")
    changed = RenderedImage(name="app", dockerfile="FROM busybox\n", templates=(),
                            context_files={"start.sh": sources / "start.sh"})
    target = write_context(changed, work)
    assert sorted(p.name for p in target.iterdir()) == ["Dockerfile", "start.sh"]
    assert (target / "Dockerfile").read_text() == "FROM busybox\n"


def test_links_may_lead_anywhere_inside_their_layer_only(tmp_path):
    layer = tmp_path / "layer"
    (layer / "app").mkdir(parents=True)
    (layer / "shared.conf").write_text("shared")
    (tmp_path / "outside.conf").write_text("outside")
    (layer / "app" / "in.conf").symlink_to("../shared.conf")
    (layer / "app" / "out.conf").symlink_to(tmp_path / "outside.conf")
    work = prepare_work_dir(tmp_path / "work")

    def app(*names, roots=(layer,)):
        return RenderedImage(name="app", dockerfile="FROM scratch\n", templates=(),
                             context_files={n: layer / "app" / n for n in names},
                             layer_roots=roots)

    assert (write_context(app("in.conf"), work) / "in.conf").read_text() == "shared"
    with pytest.raises(ContextFileError, match="out.conf is a symbolic link to .*outside.conf, "
                                               "out of its template layer"):
        write_context(app("in.conf", "out.conf"), work)
    assert sorted(p.name for p in (work / "app").iterdir()) == ["Dockerfile", "in.conf"]
    # files not from a template layer: only their kind is checked
    target = write_context(app("out.conf", roots=()), work)
    assert (target / "out.conf").read_text() == "outside"


def test_work_dir_lock_is_exclusive_and_released(tmp_path):
    with locked_work_dir(tmp_path / "work") as work:
        with pytest.raises(WorkDirBusy, match="is in use by another kiln run "
                                              f"\\(pid {os.getpid()}, started "):
            with locked_work_dir(work):
                pass
    with locked_work_dir(work):
        pass


def test_layer_git_state_only_inside_a_checkout(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    checkout = tmp_path / "checkout"
    layer_dir = checkout / "templates"
    layer_dir.mkdir(parents=True)
    (layer_dir / "a.txt").write_text("a")
    repo = git.Repo.init(checkout)
    repo.index.add(["templates/a.txt"])
    commit = repo.index.commit("one").hexsha
    repo.create_remote("origin", "https://user:secret@example.com/templates.git")

    outside, inside = layer_info([Layer(0, plain, "base"), Layer(1, layer_dir, "docker-dir 1")])
    assert (outside.commit, outside.dirty, outside.remote) == (None, None, None)
    assert (inside.commit, inside.dirty) == (commit, False)
    assert "secret" not in inside.remote and "example.com/templates.git" in inside.remote
    (layer_dir / "a.txt").write_text("changed")
    assert layer_info([Layer(1, layer_dir, "docker-dir 1")])[0].dirty is True


def kolla_style_set(tmp_path):
    """Two layers: macros.j2, a group keystone/ with two images, and an upper layer
    replacing macros.j2 and adding an image of its own."""
    base, upper = tmp_path / "base", tmp_path / "upper"
    for path, text in {base / "macros.j2": "base macros",
                       base / "keystone" / "keystone-base" / "Dockerfile.j2": "FROM scratch",
                       base / "keystone" / "keystone-base" / "run.sh": "#!/bin/sh",
                       base / "keystone" / "keystone" / "Dockerfile.j2": "FROM scratch",
                       upper / "macros.j2": "upper macros",
                       upper / "site" / "tools" / "Dockerfile.j2": "FROM scratch"}.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (base / "keystone" / "keystone-base" / "run.sh").chmod(0o700)
    return load_template_set(base, [upper])


def test_kolla_layout_puts_contexts_at_their_directories_with_template_copies(tmp_path):
    templates = kolla_style_set(tmp_path)
    image = templates.images["keystone-base"]
    work = prepare_work_dir(tmp_path / "work")
    old = os.umask(0o077)
    try:
        write_shared_files(templates, KOLLA_LAYOUT, work)
        target = write_context(RenderedImage(
            name="keystone-base", dockerfile="FROM scratch\n", templates=(),
            context_files=templates.context_files(image, templates=True),
            context_path=KOLLA_LAYOUT.context_path(image.name, image.directory)), work)
    finally:
        os.umask(old)
    assert target == work / "docker" / "keystone" / "keystone-base"
    found = {p.relative_to(work / "docker").as_posix(): stat.S_IMODE(p.stat().st_mode)
             for p in (work / "docker").rglob("*")}
    # every image's group directory, the shared file (the upper layer's), one context
    assert found == {"macros.j2": 0o644, "keystone": 0o755, "site": 0o755,
                     "keystone/keystone-base": 0o755,
                     "keystone/keystone-base/Dockerfile": 0o644,
                     "keystone/keystone-base/Dockerfile.j2": 0o644,
                     "keystone/keystone-base/run.sh": 0o755}
    assert (work / "docker" / "macros.j2").read_text() == "upper macros"
    # kiln's own layout writes none of it
    other = prepare_work_dir(tmp_path / "other")
    write_shared_files(templates, KILN_LAYOUT, other)
    assert sorted(p.name for p in other.iterdir()) == [".kiln-work-dir"]


def test_a_shared_file_leading_out_of_its_layer_is_refused(tmp_path):
    templates_dir = tmp_path / "base"
    (templates_dir / "app").mkdir(parents=True)
    (templates_dir / "app" / "Dockerfile.j2").write_text("FROM scratch")
    (tmp_path / "secret").write_text("secret")
    (templates_dir / "macros.j2").symlink_to(tmp_path / "secret")
    work = prepare_work_dir(tmp_path / "work")
    with pytest.raises(ContextFileError, match=r"the template set: .*macros.j2 is a symbolic "
                                               r"link to .*secret, out of its template layer"):
        write_shared_files(load_template_set(templates_dir), KOLLA_LAYOUT, work)
    assert not (work / "docker" / "macros.j2").exists()
