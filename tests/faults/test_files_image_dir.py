"""Hostile files in an image directory: refused with a message naming them,
never waited on (a FIFO), never read without end (a link to /dev/zero), never
copied from outside the template layer; and logs never in a build context."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys

import pytest

from builder.engines.base import EngineError, EngineOptions
from builder.engines.docker import DockerEngine
from tests.conftest import error_line
from tests.integration.conftest import unavailable

pytestmark = pytest.mark.timeout(120)

DOCKERFILE = "FROM scratch\nCOPY . /srv/\n"


@pytest.fixture
def image_dir(tree):
    """A one-image set: returns (layer root, image directory)."""
    root = tree({"app/Dockerfile.j2": DOCKERFILE, "app/start.sh": "#!/bin/sh\n"})
    return root, root / "app"


def _limit_memory():
    limit = 2 << 30  # reading /dev/zero without end fails here, not in the machine
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def template_only_subprocess(root, work, timeout=60):
    """kiln-build --template-only in its own process, bounded in time and
    memory: a hang or an endless read is a failed test, not a stuck run."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "builder.cli.build", "--templates-dir", str(root),
             "--template-only", "--work-dir", str(work), "--template-cache-dir", ""],
            capture_output=True, text=True, timeout=timeout, check=False,
            preexec_fn=_limit_memory)
    except subprocess.TimeoutExpired:
        pytest.fail(f"kiln-build --template-only hung for {timeout}s")


def test_a_fifo_in_an_image_directory_is_refused_not_waited_on(image_dir, tmp_path):
    root, app = image_dir
    os.mkfifo(app / "pipe")
    result = template_only_subprocess(root, tmp_path / "w", timeout=30)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{app / 'pipe'} is a FIFO (named pipe), not a regular file" in result.stderr
    assert "image 'app'" in result.stderr


def test_a_fifo_as_a_template_is_refused_not_waited_on(tree, tmp_path):
    root = tree({"app/Dockerfile.j2": '{% import "macros.j2" as m %}FROM scratch\n'})
    os.mkfifo(root / "macros.j2")
    result = template_only_subprocess(root, tmp_path / "w", timeout=30)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert (f"{root / 'macros.j2'}: cannot read template: it is a FIFO (named pipe), "
            f"not a regular file") in result.stderr


def test_a_link_to_dev_zero_is_refused_not_read_without_end(image_dir, tmp_path):
    root, app = image_dir
    (app / "zeros").symlink_to("/dev/zero")
    result = template_only_subprocess(root, tmp_path / "w")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{app / 'zeros'} is a symbolic link to /dev/zero, out of its template layer" \
        in result.stderr


def test_a_link_to_a_file_outside_the_layer_is_not_copied(kiln, image_dir, tmp_path):
    root, app = image_dir
    secret = tmp_path / "outside" / "id_rsa"
    secret.parent.mkdir()
    secret.write_text("PRIVATE KEY")
    (app / "key").symlink_to(secret)
    work = tmp_path / "w"
    result = kiln("--templates-dir", root, "--template-only", "--work-dir", work)
    assert result.code == 2
    assert f"{app / 'key'} is a symbolic link to {secret}, out of its template layer " \
           f"{root}" in error_line(result)
    assert not any("PRIVATE KEY" in p.read_text() for p in work.rglob("*") if p.is_file())


def test_a_directory_link_out_of_the_layer_is_not_walked_nor_copied(kiln, image_dir,
                                                                    tmp_path):
    root, app = image_dir
    (app / "everything").symlink_to("/")
    result = kiln("--templates-dir", root, "--template-only", "--work-dir", tmp_path / "w")
    assert result.code == 2
    assert f"{app / 'everything'} is a symbolic link to /, out of its template layer" \
        in error_line(result)


def test_a_directory_link_loop_ends_and_is_named(kiln, image_dir, tmp_path):
    root, app = image_dir
    (app / "again").symlink_to("..")
    result = kiln("--templates-dir", root, "--template-only", "--work-dir", tmp_path / "w")
    assert result.code == 2
    assert f"{app / 'again'} is a symbolic link to .., which is a directory, not a " \
           f"regular file" in error_line(result)


def test_a_socket_is_refused(kiln, image_dir, tmp_path):
    root, app = image_dir
    path = app / "s"
    if len(os.fsencode(path)) >= 100:
        pytest.skip("the path is too long for a unix socket")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(os.fspath(path))
        result = kiln("--templates-dir", root, "--template-only", "--work-dir",
                      tmp_path / "w")
    assert result.code == 2
    assert f"{path} is a socket, not a regular file" in error_line(result)


def test_a_dangling_link_is_named(kiln, image_dir, tmp_path):
    root, app = image_dir
    (app / "gone").symlink_to("missing.conf")
    result = kiln("--templates-dir", root, "--template-only", "--work-dir", tmp_path / "w")
    assert result.code == 2
    assert f"{app / 'gone'} is a dangling symbolic link to missing.conf" in error_line(result)


def test_links_inside_the_layer_still_work(kiln, tree, tmp_path):
    root = tree({"app/Dockerfile.j2": DOCKERFILE, "shared/common.conf": "shared\n",
                 "shared/conf.d/x.conf": "x\n"})
    (root / "app" / "common.conf").symlink_to("../shared/common.conf")
    (root / "app" / "conf.d").symlink_to(root / "shared" / "conf.d")
    work = tmp_path / "w"
    result = kiln("--templates-dir", root, "--template-only", "--work-dir", work)
    assert result.code == 0, result.err
    assert (work / "app" / "common.conf").read_text() == "shared\n"
    assert not (work / "app" / "common.conf").is_symlink()
    assert (work / "app" / "conf.d" / "x.conf").read_text() == "x\n"


def test_a_refused_file_leaves_the_last_context_in_place(kiln, image_dir, tmp_path):
    root, app = image_dir
    work = tmp_path / "w"
    assert kiln("--templates-dir", root, "--template-only", "--work-dir", work).code == 0
    os.mkfifo(app / "pipe")
    assert template_only_subprocess(root, work, timeout=30).returncode == 2
    assert (work / "app" / "start.sh").read_text() == "#!/bin/sh\n"


@pytest.mark.parametrize("where", ["template", "override"])
def test_a_non_utf8_template_is_named(kiln, tree, tmp_path, where):
    root = tree({"app/Dockerfile.j2": "{% block body %}FROM scratch{% endblock %}\n"})
    bad = root / "app" / "Dockerfile.j2"
    args = []
    if where == "override":
        bad = tmp_path / "override.j2"
        args = ["--template-override", bad]
    bad.write_bytes(b"{% block body %}FROM scratch\n# caf\xe9\n{% endblock %}\n")
    result = kiln("--templates-dir", root, *args, "--template-only", "--work-dir",
                  tmp_path / "w")
    assert result.code == 2
    assert f"{bad}: cannot read template: it is not UTF-8 text (byte 0xe9 at offset 34)" \
        in error_line(result)


# ---- logs never in a build context -----------------------------------------

def test_an_image_named_logs_is_not_the_default_logs_dir(kiln, tree, tmp_path):
    root = tree({"logs/Dockerfile.j2": DOCKERFILE})
    work = tmp_path / "w"
    result = kiln("--templates-dir", root, "--work-dir", work, "--engine", "no-such-engine")
    assert result.code == 2
    assert (f"the default logs dir {work / 'logs'} is the build context of image 'logs' "
            f"({work / 'logs'})") in error_line(result)
    assert "give --logs-dir outside it" in result.err
    assert not (work / "logs").exists()


def test_a_logs_dir_inside_a_build_context_is_refused(kiln, image_dir, tmp_path):
    root, _ = image_dir
    work = tmp_path / "w"
    result = kiln("--templates-dir", root, "--work-dir", work, "--logs-dir",
                  work / "app" / "logs", "--engine", "no-such-engine")
    assert result.code == 2
    assert (f"--logs-dir {work / 'app' / 'logs'} is inside the build context of image "
            f"'app' ({work / 'app'})") in error_line(result)


def test_a_fifo_fails_its_image_in_a_build_run_without_hanging(image_dir, tmp_path):
    try:
        DockerEngine(EngineOptions()).ping()
    except EngineError as exc:
        unavailable(str(exc))
    root, app = image_dir
    os.mkfifo(app / "pipe")
    work = tmp_path / "w"
    try:
        result = subprocess.run(
            [sys.executable, "-m", "builder.cli.build", "--templates-dir", str(root),
             "--work-dir", str(work), "--namespace", f"kiln-faults-fifo-{os.getpid()}"],
            capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("kiln-build hung on a FIFO")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    reason = f"{app / 'pipe'} is a FIFO (named pipe), not a regular file"
    assert reason in result.stdout
    assert reason in (work / "logs" / "app.log").read_text()
