"""End to end: kiln's built-in template set and the overrides/ example.

The whole built-in set is built on the real Docker engine from a Debian base
that ``.ci/bootstrap-base`` makes locally when it cannot be pulled; then every
image's smoke command (its ``kiln.smoke`` label, run with ``sh -c``) runs in
the image, and its OCI labels are checked. The overrides/ example is rendered
(the changed blocks and added packages must show) and its added image built.

Images are named under the ``kiln-e2e`` namespace, so the user's own images
are never touched, and removed when the module ends (set KILN_E2E_KEEP=1 to
keep them). A missing Docker engine skips these tests, or fails them under CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder.engines.base import EngineError
from builder.templating.layers import load_template_set
from tests.integration.conftest import require_docker, unavailable

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates"
OVERRIDES = ROOT / "overrides"
BOOTSTRAP = ROOT / ".ci" / "bootstrap-base"
BASE_REF = "debian:bookworm-slim"      # the built-in base's default base_image:base_tag
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
NAMESPACE = "kiln-e2e"
OCI = "org.opencontainers.image."
SMOKE = "kiln.smoke"
BUILD_TIMEOUT = 25 * 60
IMAGES = sorted(load_template_set(TEMPLATES).images)


# -- helpers -------------------------------------------------------------------

def kiln_build(*args, log: Path, timeout: int = BUILD_TIMEOUT) -> tuple[int, dict]:
    """Run kiln-build as a user would; return its exit code and JSON summary."""
    summary_file = log.with_suffix(".json")
    ca = ["--ca-bundle", str(HOST_CA_BUNDLE)] if HOST_CA_BUNDLE.is_file() else []
    command = [sys.executable, "-m", "builder.cli.build", "--quiet",
               "--summary-json-file", str(summary_file), *ca, *map(str, args)]
    started = time.monotonic()
    with open(log, "w", encoding="utf-8") as out:
        code = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, timeout=timeout,
                              check=False).returncode
    print(f"kiln-build {' '.join(map(str, args))}: exit {code} in "
          f"{time.monotonic() - started:.0f}s")
    if not summary_file.is_file():
        pytest.fail(f"kiln-build wrote no summary (exit {code}):\n"
                    f"{log.read_text(errors='replace')[-3000:]}", pytrace=False)
    return code, json.loads(summary_file.read_text())


def built(summary: dict) -> dict[str, dict]:
    return {e["name"]: e for key in ("built", "unchanged") for e in summary[key]}


def failures(summary: dict) -> str:
    """The failed images with their reasons and the end of their logs."""
    parts = []
    for entry in summary["failed"]:
        parts.append(f"{entry['name']}: {entry['status']}: {entry.get('reason')}")
        log = entry.get("log")
        if log and Path(log).is_file():
            tail = Path(log).read_text(errors="replace").splitlines()[-25:]
            parts.extend("    " + line for line in tail)
    return "\n".join(parts)


def stage_images() -> set[str]:
    """Untagged images carrying the set's smoke label (multi-stage builds leave
    their first stage, e.g. keystone's "wheels", behind untagged)."""
    docker = shutil.which("docker")
    if docker is None:
        return set()
    result = subprocess.run([docker, "image", "ls", "-q", "--no-trunc", "--filter",
                             "dangling=true", "--filter", f"label={SMOKE}"],
                            capture_output=True, text=True, check=False)
    return set(result.stdout.split()) if result.returncode == 0 else set()


def remove_images(engine, summary: dict, stages_before: set[str]) -> None:
    """Remove what a build tagged, and the stage images it left (not in use)."""
    if os.environ.get("KILN_E2E_KEEP"):
        return
    for entry in built(summary).values():
        try:
            engine.remove(entry["image"], force=True)
        except EngineError:
            pass
    for image_id in sorted(stage_images() - stages_before):
        try:
            engine.remove(image_id)
        except EngineError:
            pass


def smoke(engine, ref: str) -> str:
    """Run the image's smoke command; its output, or a failure naming the command."""
    info = engine.inspect(ref)
    assert info is not None, f"{ref} is not in the engine"
    command = info.labels.get(SMOKE)
    assert command, f"{ref} has no {SMOKE} label"
    try:
        return engine.run(ref, ["sh", "-c", command], timeout=300)
    except EngineError as exc:
        pytest.fail(f"smoke command of {ref} failed: {command}\n{exc}", pytrace=False)


def render(kiln, work: Path, *args) -> dict[str, str]:
    """Render the built-in set (plus args) into work; Dockerfile text by image."""
    result = kiln("--template-only", "--work-dir", work, *args)
    assert result.code == 0, result.err
    assert "overridden but no rendered image has it" not in result.err
    return {p.parent.name: p.read_text() for p in work.glob("*/Dockerfile")}


# -- fixtures ------------------------------------------------------------------

@pytest.fixture(scope="module")
def engine():
    return require_docker()


@pytest.fixture(scope="module")
def debian_base(engine) -> str:
    """debian:bookworm-slim in the engine: present, pulled, or bootstrapped locally."""
    if engine.inspect(BASE_REF) is None:
        result = subprocess.run(["bash", str(BOOTSTRAP), BASE_REF], capture_output=True,
                                text=True, timeout=900, check=False)
        if result.returncode != 0 or engine.inspect(BASE_REF) is None:
            unavailable(f"cannot make {BASE_REF} with {BOOTSTRAP} (needs root or sudo "
                        f"and debootstrap): {(result.stdout + result.stderr)[-1500:]}")
    return BASE_REF


@pytest.fixture(scope="module")
def builtin_set(engine, debian_base, tmp_path_factory):
    """The whole built-in set, built once for this module: kiln's JSON summary."""
    work = tmp_path_factory.mktemp("builtin-set")
    stages = stage_images()
    code, summary = kiln_build("--namespace", NAMESPACE, "--work-dir", work / "work",
                               log=work / "kiln-build.log")
    yield code, summary
    remove_images(engine, summary, stages)


# -- the built-in set ----------------------------------------------------------

def test_builtin_set_has_the_documented_images():
    assert IMAGES == ["base", "diskimage-builder", "keystone", "memcached",
                      "nodepool-builder", "openstacksdk", "placement", "python-base",
                      "python-builder"]


def test_builtin_set_builds(builtin_set):
    code, summary = builtin_set
    assert not summary["failed"], failures(summary)
    assert code == 0
    assert sorted(built(summary)) == IMAGES
    for entry in sorted(built(summary).values(), key=lambda e: -e["duration"]):
        print(f"  {entry['name']:<20} {entry['duration']:6.1f}s")


@pytest.mark.parametrize("name", IMAGES)
def test_smoke_command_passes_in_the_image(engine, builtin_set, name):
    _, summary = builtin_set
    entry = built(summary).get(name)
    assert entry, f"{name} was not built:\n{failures(summary)}"
    smoke(engine, entry["image"])


@pytest.mark.parametrize("name", IMAGES)
def test_oci_labels(engine, builtin_set, name):
    _, summary = builtin_set
    entry = built(summary).get(name)
    assert entry, f"{name} was not built"
    labels = engine.inspect(entry["image"]).labels
    assert labels[f"{OCI}title"] == name
    assert labels[f"{OCI}vendor"] == "kiln"
    assert labels[f"{OCI}licenses"]
    assert len(labels[f"{OCI}description"]) > 10
    assert labels[SMOKE]


def test_multi_stage_image_has_two_in_set_parents(kiln):
    result = kiln("--list-dependencies", "^keystone$")
    assert result.code == 0, result.err
    assert json.loads(result.out)["keystone"]["parents"] == ["python-base", "python-builder"]


def test_ca_bundle_hook_renders_only_when_given(kiln, tmp_path):
    plain = render(kiln, tmp_path / "plain", "^base$")["base"]
    assert "kiln-ca-bundle.crt" not in plain
    bundle = tmp_path / "proxy-ca.crt"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    with_ca = render(kiln, tmp_path / "ca", "^base$", "--ca-bundle", bundle)["base"]
    assert "COPY kiln-ca-bundle.crt /usr/local/share/ca-certificates/" in with_ca
    assert "RUN update-ca-certificates" in with_ca
    for variable in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT"):
        assert f"{variable}=/etc/ssl/certs/ca-certificates.crt" in with_ca


# -- namespace variants (seed 004: opendev/ and zuul/ images) -----------------

def test_namespace_variants_render(kiln, tmp_path):
    generic = render(kiln, tmp_path / "kiln", "openstacksdk", "nodepool-builder")
    opendev = render(kiln, tmp_path / "opendev", "--namespace", f"{NAMESPACE}/opendev",
                     "openstacksdk", "nodepool-builder")
    zuul = render(kiln, tmp_path / "zuul", "--namespace", f"{NAMESPACE}/zuul",
                  "openstacksdk", "nodepool-builder")
    # every image of a namespace builds on that namespace's images
    assert f"FROM {NAMESPACE}/opendev/python-base:latest" in opendev["openstacksdk"]
    assert f"FROM {NAMESPACE}/zuul/diskimage-builder:latest" in zuul["nodepool-builder"]
    # opendev: clouds.yaml location, and the kitchen sink in nodepool-builder
    assert "ENV OS_CLIENT_CONFIG_FILE=/etc/openstack/clouds.yaml" in opendev["openstacksdk"]
    assert "dnf rpm zypper" in opendev["nodepool-builder"]
    assert 'vendor="OpenDev"' in opendev["openstacksdk"]
    # zuul: the SDK without the client, Windows image tools
    assert "pip install openstacksdk\n" in zuul["openstacksdk"]
    assert "python-openstackclient" not in zuul["openstacksdk"]
    assert "ntfs-3g wimtools" in zuul["nodepool-builder"]
    # the generic templates have none of it
    for text in generic.values():
        assert "OS_CLIENT_CONFIG_FILE" not in text and "wimtools" not in text
        assert "zypper" not in text
    assert "python-openstackclient" in generic["openstacksdk"]


def test_zuul_variant_builds(engine, debian_base, tmp_path):
    stages = stage_images()
    code, summary = kiln_build("--namespace", f"{NAMESPACE}/zuul", "--work-dir",
                               tmp_path / "work", "^openstacksdk$", log=tmp_path / "zuul.log")
    try:
        assert not summary["failed"], failures(summary)
        assert code == 0
        ref = built(summary)["openstacksdk"]["image"]
        assert engine.inspect(ref).labels[f"{OCI}vendor"] == "Zuul"
        assert smoke(engine, ref).strip()  # the SDK's version
        with pytest.raises(EngineError):
            engine.run(ref, ["openstack", "--version"])  # no client in zuul's image
    finally:
        remove_images(engine, summary, stages)


# -- the overrides/ example ----------------------------------------------------

OVERRIDE_ARGS = ("--docker-dir", OVERRIDES / "docker",
                 "--template-override", OVERRIDES / "template-overrides.j2")


def test_overrides_example_renders_its_changes(kiln, tmp_path):
    upstream = render(kiln, tmp_path / "upstream")
    acme = render(kiln, tmp_path / "acme", *OVERRIDE_ARGS)

    # the docker-dir adds an image, on an image of the built-in set
    assert sorted(acme) == sorted([*upstream, "cloud-admin"])
    assert acme["cloud-admin"].startswith("FROM kiln/openstacksdk:latest\n")
    assert "python-heatclient" in acme["cloud-admin"]
    # ... and changes one block of keystone by extending it: super() keeps upstream's
    assert "COPY keystone.conf gunicorn.conf.py /etc/keystone/\n" \
           "COPY acme-keystone.conf /etc/keystone/keystone.conf.d/50-acme.conf\n" \
        in acme["keystone"]
    assert (tmp_path / "acme" / "keystone" / "acme-keystone.conf").is_file()
    # the override file appends packages ...
    assert "ca-certificates curl procps tini less vim-tiny \\\n" in acme["base"]
    assert acme["keystone"].count("PyMySQL python-memcached redis") == 2  # wheels + install
    # ... and replaces a block
    assert "PIP_RETRIES=10" in acme["python-base"]
    assert "PIP_DEFAULT_TIMEOUT=60" in upstream["python-base"]
    assert "PIP_DEFAULT_TIMEOUT=60" not in acme["python-base"]
    # nothing else changes
    changed = {name for name in upstream if upstream[name] != acme[name]}
    assert changed == {"base", "python-base", "keystone"}


def test_overrides_example_config_sets_the_vendor(kiln, tmp_path):
    acme = render(kiln, tmp_path / "acme", "--config-file", OVERRIDES / "kiln.conf",
                  *OVERRIDE_ARGS, "--profile", "acme")
    assert sorted(acme) == ["base", "cloud-admin", "keystone", "openstacksdk",
                            "python-base", "python-builder"]
    assert all('org.opencontainers.image.vendor="Acme Cloud"' in text
               for text in acme.values())


def test_overrides_example_image_builds(engine, debian_base, tmp_path):
    stages = stage_images()
    code, summary = kiln_build("--config-file", OVERRIDES / "kiln.conf", *OVERRIDE_ARGS,
                               "--namespace", f"{NAMESPACE}/acme",
                               "--work-dir", tmp_path / "work", "^cloud-admin$",
                               log=tmp_path / "acme.log")
    try:
        assert not summary["failed"], failures(summary)
        assert code == 0
        assert sorted(built(summary)) == ["base", "cloud-admin", "openstacksdk", "python-base"]
        ref = built(summary)["cloud-admin"]["image"]
        assert "openstack" in smoke(engine, ref)
        assert engine.inspect(ref).labels[f"{OCI}vendor"] == "Acme Cloud"
        # the appended packages and the replaced block reached the image
        engine.run(ref, ["sh", "-c", "command -v less && command -v vim.tiny"])
        assert "PIP_RETRIES=10" in engine.run(ref, ["env"])
    finally:
        remove_images(engine, summary, stages)
