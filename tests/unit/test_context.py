"""Build contexts on disk, and the git state of template layers."""

from __future__ import annotations

import os
import stat

import git
import pytest

from builder.build.context import FIXED_MTIME, locked_work_dir, prepare_work_dir, write_context
from builder.build.prepare import layer_info
from builder.errors import ContextFileError, WorkDirBusy
from builder.templating.layers import Layer
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
