"""Plugins and additions: kiln packs them as kolla-build 23.0.0 does.

kolla-build makes ``plugins-archive`` and ``additions-archive`` only when it
builds (not with --template-only), so both tools build ``archive-probe`` (FROM
scratch, ADD of the two archives: see ``drop_in``) on the real Docker engine
from the same config, and the archives in their build contexts are compared:
the plugins (a directory with a symlink and an executable, a tarball) byte for
byte; the additions (a directory and a git repository) member by member, but
for the ``.git`` directory of kolla-build's clone, which kiln leaves out.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from builder.build.labels import FINGERPRINT, MANIFEST
from tests.integration.conftest import require_docker
from tests.kolla.drop_in import ORPHAN, PROBE, TAR_PROBE, make_drop_in
from tests.kolla.kolla_env import run_kolla_build

DOCKER = "/usr/bin/docker"


def members(archive: Path, skip_git: bool = False, names_only: bool = False
            ) -> dict[str, tuple]:
    """name -> (type, mode, uid, gid, uname, mtime, linkname, content), or
    (type, linkname, content) with ``names_only``."""
    result = {}
    with tarfile.open(archive) as tar:
        for m in tar.getmembers():
            if skip_git and "/.git/" in f"/{m.name}/":
                continue
            data = tar.extractfile(m).read() if m.isreg() else None
            result[m.name.rstrip("/")] = ((m.type, m.linkname, data) if names_only else
                                          (m.type, m.mode, m.uid, m.gid, m.uname, m.mtime,
                                           m.linkname, data))
    return result


def docker(*args: str) -> str:
    return subprocess.run([DOCKER, *args], check=True, capture_output=True,
                          text=True).stdout


def image_file(ref: str, path: str) -> bytes:
    container = docker("create", ref, "none").strip()
    try:
        out = subprocess.run([DOCKER, "cp", f"{container}:{path}", "-"], check=True,
                             capture_output=True).stdout
    finally:
        docker("rm", container)
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        return tar.extractfile(tar.getmembers()[0]).read()


@pytest.fixture
def refs():
    namespace = f"kiln-test-{uuid.uuid4().hex[:10]}"
    made: list[str] = []

    def ref(tool: str) -> tuple[str, str]:
        made.extend(f"{namespace}-{tool}/{name}:t" for name in (TAR_PROBE, PROBE))
        return f"{namespace}-{tool}", made[-1]

    yield ref
    for image in made:
        subprocess.run([DOCKER, "rmi", "-f", image], capture_output=True, check=False)


def test_plugins_and_additions_are_kolla_builds(kiln, kolla_install, refs, tmp_path):
    require_docker()
    drop_in = make_drop_in(tmp_path / "in")
    kolla_namespace, _ = refs("kolla")
    kolla_work = tmp_path / "kolla"
    (tmp_path / "logs").mkdir()
    run_kolla_build(kolla_install, kolla_work,
                    ["--docker-dir", str(drop_in.probe_layer), "--nobuildkit", "--nopull",
                     "--namespace", kolla_namespace, "--tag", "t",
                     "--logs-dir", str(tmp_path / "logs"), f"^{PROBE}"],
                    drop_in.config)
    kolla_context = kolla_work / "docker" / PROBE
    assert (kolla_context / "plugins-archive").is_file(), "kolla-build built nothing"

    kiln_namespace, kiln_ref = refs("kiln")
    work = tmp_path / "kiln"
    args = ["--config-file", drop_in.config, "--template-api", "kolla",
            "--templates-dir", kolla_install.docker_dir, "--docker-dir", drop_in.probe_layer,
            "--namespace", kiln_namespace, "--tag", "t", "--work-dir", work, f"^{PROBE}"]
    result = kiln(*args)
    assert result.code == 0, result.err
    assert f"[{ORPHAN}]" in result.err  # a plugin section of no image: a warning naming it

    context = work / "docker" / PROBE
    assert (context / "plugins-archive").read_bytes() == \
        (kolla_context / "plugins-archive").read_bytes()
    # an image's own source: a directory byte for byte, a tarball's members as they are
    assert (context / f"{PROBE}-archive").read_bytes() == \
        (kolla_context / f"{PROBE}-archive").read_bytes()
    tar_source = f"{TAR_PROBE}/{TAR_PROBE}-archive"
    assert members(work / "docker" / tar_source, names_only=True) == \
        members(kolla_work / "docker" / tar_source, names_only=True)
    assert "other-1.0/other.py" in members(work / "docker" / tar_source)
    kolla_additions = members(kolla_context / "additions-archive", skip_git=True)
    assert members(context / "additions-archive") == kolla_additions
    assert "additions/archive-probe-additions-extra-archive-main/README" in kolla_additions
    assert "plugins/other-1.0/other.py" in members(context / "plugins-archive")

    # in the image, and in its manifest and fingerprint like any source
    assert image_file(kiln_ref, "/plugins/networking-sfc/setup.py") == b"print('sfc')\n"
    assert image_file(kiln_ref, f"/{PROBE}-source/probe-src/main.py") == b"print('main')\n"
    labels = json.loads(docker("image", "inspect", kiln_ref))[0]["Config"]["Labels"]
    sources = {s["name"]: s for s in json.loads(labels[MANIFEST])["sources"]}
    assert set(sources) == {PROBE, f"{PROBE}-plugin-sfc", f"{PROBE}-plugin-other",
                            f"{PROBE}-additions-theme-x", f"{PROBE}-additions-extra"}
    assert sources[f"{PROBE}-additions-extra"]["commit"]
    first = labels[FINGERPRINT]

    assert kiln(*args).code == 0  # unchanged: reused
    assert json.loads(docker("image", "inspect", kiln_ref))[0]["Config"]["Labels"][
        FINGERPRINT] == first
    (drop_in.plugin_dir / "setup.py").write_text("print('sfc 2')\n")
    result = kiln(*args)
    assert result.code == 0, result.err
    labels = json.loads(docker("image", "inspect", kiln_ref))[0]["Config"]["Labels"]
    assert labels[FINGERPRINT] != first
    assert image_file(kiln_ref, "/plugins/networking-sfc/setup.py") == b"print('sfc 2')\n"


def test_every_kolla_image_gets_both_archives_empty_by_default(kiln, kolla_install, refs,
                                                               tmp_path):
    """No plugin nor addition: both archives still made, with the bare directory."""
    require_docker()
    layer = tmp_path / "layer"
    (layer / PROBE).mkdir(parents=True)
    (layer / PROBE / "Dockerfile.j2").write_text(
        "FROM scratch\nADD plugins-archive /\nADD additions-archive /\n")
    config = tmp_path / "empty.conf"
    config.write_text("")
    namespace, _ = refs("kiln")
    work = tmp_path / "kiln"
    result = kiln("--config-file", config, "--template-api", "kolla",
                  "--templates-dir", kolla_install.docker_dir,
                  "--docker-dir", layer, "--namespace", namespace, "--tag", "t",
                  "--work-dir", work, f"^{PROBE}$")
    assert result.code == 0, result.err
    for kind in ("plugins", "additions"):
        assert members(work / "docker" / PROBE / f"{kind}-archive") == {
            kind: (tarfile.DIRTYPE, 0o755, 0, 0, "root", 0, "", None)}


def test_template_copies_in_the_context_count_by_what_they_render(kiln, kolla_install,
                                                                  refs, tmp_path):
    """kolla-build's work dir has each image's Dockerfile.j2 in its context, and so
    has kiln's: a template change that renders the same Dockerfile reuses the image."""
    require_docker()
    layer = tmp_path / "layer"
    template = layer / PROBE / "Dockerfile.j2"
    template.parent.mkdir(parents=True)
    template.write_text("FROM scratch\nADD plugins-archive /\n")
    config = tmp_path / "empty.conf"
    config.write_text("")
    namespace, ref = refs("kiln")
    work = tmp_path / "kiln"
    args = ("--config-file", config, "--template-api", "kolla",
            "--templates-dir", kolla_install.docker_dir, "--docker-dir", layer,
            "--namespace", namespace, "--tag", "t", "--work-dir", work, f"^{PROBE}$")

    def built() -> tuple[str, str]:
        result = kiln(*args)
        assert result.code == 0, result.err
        data = json.loads(docker("image", "inspect", ref))[0]
        return data["Id"], data["Config"]["Labels"][FINGERPRINT]

    first = built()
    template.write_text("{# a comment #}FROM scratch\nADD plugins-archive /\n")
    assert built() == first
    assert (work / "docker" / PROBE / "Dockerfile.j2").read_text().startswith("{# a comment")
    template.write_text("FROM scratch\nADD plugins-archive /plugins-here/\n")
    assert built()[1] != first[1]
