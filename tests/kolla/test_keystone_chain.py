"""Kolla's own images, built by kiln: base -> openstack-base -> keystone-base -> keystone.

The kit in ``shared/kolla-real`` (``$KILN_KOLLA_REAL``, else
``<repo>/../shared/kolla-real``, else ``/work/shared/kolla-real``) makes what
building Kolla 23.0.0's Debian trixie chain offline takes: a local
``debian:trixie``, one template override, two ``type = local`` sources and a
``kolla-build.conf``. kiln is given that same config and override, unchanged,
and Kolla's own docker/ tree, with ``--nopull`` as kolla-build is given it in
the kit's README (no image registry here: ``debian:trixie`` is local); the
kit's smoke test must pass on kiln's keystone (keystone-manage db_sync and
bootstrap, a token with 201 Created), and every image of the chain carries
kiln's labels.

A cold run (CI's fresh machine) builds the four images: about 6-7 minutes.
The images (``kiln-test-kolla-real/*:e2e``) are kept, so that a later run on
the same machine reuses what has not changed, as kiln does for any build: an
image whose fingerprint (its build context, sources, parents, base) matches is
not built again (a few seconds when nothing changed); one whose inputs changed
is built, with the engine's layer cache. (``--rebuild`` would not be faster:
kiln stamps each image with its labels, the build time among them, so a
rebuilt parent is a new image and its children's layers miss the cache.) The
prepared kit is kept in kiln's cache dir (``kolla-real``), so the keystone
sdist is downloaded once.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from builder.build.labels import FINGERPRINT, MANIFEST
from builder.settings import cache_home
from tests.integration.conftest import require_docker, unavailable

DOCKER = "/usr/bin/docker"
CHAIN = ("base", "openstack-base", "keystone-base", "keystone")
NAMESPACE = "kiln-test-kolla-real"
TAG = "e2e"
REPO = Path(__file__).resolve().parents[2]


def find_kit() -> Path:
    candidates = [os.environ.get("KILN_KOLLA_REAL"), REPO.parent / "shared" / "kolla-real",
                  "/work/shared/kolla-real"]
    for candidate in filter(None, candidates):
        if (Path(candidate) / "prepare.sh").is_file():
            return Path(candidate)
    unavailable("the kolla-real kit was not found (set KILN_KOLLA_REAL): "
                + ", ".join(map(str, filter(None, candidates))))


@pytest.fixture(scope="module")
def kit_work() -> Path:
    """The kit prepared (debian:trixie made once; the sources downloaded once)."""
    kit = find_kit()
    require_docker()
    work = cache_home() / "kolla-real"
    result = subprocess.run(["sh", str(kit / "prepare.sh"), str(work)], capture_output=True,
                            text=True, check=False, env={**os.environ, "DOCKER": DOCKER})
    assert result.returncode == 0, f"prepare.sh failed:\n{result.stdout}\n{result.stderr}"
    return work


def labels_of(ref: str) -> dict[str, str]:
    out = subprocess.run([DOCKER, "image", "inspect", ref], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)[0]["Config"]["Labels"] or {}


@pytest.mark.timeout(2400)
def test_kiln_builds_kollas_keystone_chain(kiln, kolla_install, kit_work, tmp_path):
    result = kiln("--template-api", "kolla", "--templates-dir", kolla_install.docker_dir,
                  "--config-file", kit_work / "kolla-build.conf",
                  "--namespace", NAMESPACE, "--tag", TAG, "--nopull",
                  "--work-dir", tmp_path / "work", "^keystone$")
    assert result.code == 0, result.out + result.err
    for name in CHAIN:
        assert f"{NAMESPACE}/{name}:{TAG}" in result.out

    smoke = subprocess.run(["sh", str(find_kit() / "keystone-smoke.sh"),
                            f"{NAMESPACE}/keystone:{TAG}"], capture_output=True, text=True,
                           check=False, env={**os.environ, "DOCKER": DOCKER})
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    for step in ("db_sync-ok", "fernet_setup-ok", "credential_setup-ok", "bootstrap-ok",
                 "token-issue: 201 created true"):
        assert step in smoke.stdout.lower(), smoke.stdout
    assert smoke.stdout.startswith("30.0.0"), smoke.stdout

    parent_fingerprint = None
    for name in CHAIN:
        labels = labels_of(f"{NAMESPACE}/{name}:{TAG}")
        assert labels[FINGERPRINT].startswith("sha256:")
        manifest = json.loads(labels[MANIFEST])
        assert manifest["image"] == name
        parents = [p["fingerprint"] for p in manifest["parents"]]
        assert parents == ([parent_fingerprint] if parent_fingerprint else [])
        parent_fingerprint = labels[FINGERPRINT]
        assert labels["org.opencontainers.image.title"] == name
        assert "kiln.packages" in labels
    sources = {s["name"] for s in json.loads(labels_of(
        f"{NAMESPACE}/keystone-base:{TAG}")[MANIFEST])["sources"]}
    assert sources == {"keystone-base"}
