"""kiln-build --refresh on the real Docker engine, then kiln-registry sync to a real registry.

A small Debian set: base (FROM debian:bookworm-slim) -> tools (installs less)
-> app (purges less again, so only its parent holds it), and sibling (a child
of base without less). ``--refresh less`` must rebuild tools without the layer
cache (its apt-get layer is new), rebuild app because its parent changed,
leave base and sibling unchanged, and make sync publish new revisions of
exactly tools and app.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from builder.build.labels import FINGERPRINT, MANIFEST
from tests.integration import sync_fixtures
from tests.integration.conftest import unavailable
from tests.integration.sync_fixtures import plain_client

no_docker_login = sync_fixtures.no_docker_login

DEBIAN = "debian:bookworm-slim"
TAG = "2024.1"
DOCKERFILES = {
    "base": f"FROM {DEBIAN}\nRUN echo base > /base.txt\n",
    "tools": ('FROM {{ image_ref("base") }}\n'
              "RUN apt-get update && apt-get install -y --no-install-recommends less "
              "&& rm -rf /var/lib/apt/lists/*\n"),
    "app": 'FROM {{ image_ref("tools") }}\nRUN dpkg --purge less && echo app > /app.txt\n',
    "sibling": 'FROM {{ image_ref("base") }}\nRUN echo sibling > /sibling.txt\n',
}


@pytest.fixture
def debian_set(tmp_path, docker_engine):
    if docker_engine.inspect(DEBIAN) is None:
        bootstrap = Path(__file__).resolve().parents[2] / ".ci" / "bootstrap-base"
        result = subprocess.run(["bash", str(bootstrap), DEBIAN], capture_output=True,
                                text=True, timeout=900, check=False)
        if result.returncode != 0 or docker_engine.inspect(DEBIAN) is None:
            unavailable(f"cannot make {DEBIAN} with {bootstrap}: "
                        f"{(result.stdout + result.stderr)[-1500:]}")
    root = tmp_path / "templates"
    for name, text in DOCKERFILES.items():
        (root / name).mkdir(parents=True)
        (root / name / "Dockerfile.j2").write_text(text)
    return root


def layers(ref: str) -> list[str]:
    out = subprocess.run(["docker", "image", "inspect", "--format", "{{json .RootFS.Layers}}",
                          ref], capture_output=True, text=True, check=True, timeout=60).stdout
    return json.loads(out)


def statuses(summary) -> dict[str, tuple[str, str]]:
    return {e["name"]: (e["status"], e["reason"]) for key in ("built", "unchanged", "failed")
            for e in summary[key]}


@pytest.mark.timeout(900)
def test_refresh_rebuilds_matching_images_without_cache_and_sync_publishes_them(
        build, debian_set, docker_engine, cleanup_images, registry, kiln_registry, tmp_path):
    ns = build.namespace
    build.tags.append(TAG)
    for name in DOCKERFILES:
        cleanup_images.track(f"{ns}/{name}:{TAG}")

    def kiln_build(*args):
        result, summary = build("--tag", TAG, *args, templates=debian_set)
        assert result.code == 0, result.out + result.err
        return result, summary

    def ref(name):
        return f"{ns}/{name}:{TAG}"

    sync = ["sync", "--namespace", ns, "--tag", TAG, "--destination", registry.host,
            "--insecure", "--retries", "1"]

    _, first = kiln_build()
    assert {n: s for n, (s, _) in statuses(first).items()} == dict.fromkeys(DOCKERFILES,
                                                                            "built")
    before = {name: docker_engine.inspect(ref(name)) for name in DOCKERFILES}
    old_layers = {name: layers(ref(name)) for name in DOCKERFILES}
    published = kiln_registry(*sync)
    assert published.code == 0, published.out + published.err
    assert "4 images: 4 pushed, 0 unchanged, 0 failed" in published.out

    # an ordinary run: nothing changed, nothing rebuilt
    _, same = kiln_build()
    assert {n: s for n, (s, _) in statuses(same).items()} == dict.fromkeys(DOCKERFILES,
                                                                           "unchanged")

    _, refreshed = kiln_build("--refresh", "less")
    assert statuses(refreshed) == {"base": ("unchanged", ""), "sibling": ("unchanged", ""),
                                   "tools": ("built", "refreshed: less"), "app": ("built", "")}
    after = {name: docker_engine.inspect(ref(name)) for name in DOCKERFILES}
    for name in ("base", "sibling"):
        assert after[name].id == before[name].id
        assert after[name].labels[FINGERPRINT] == before[name].labels[FINGERPRINT]
    for name in ("tools", "app"):
        assert after[name].id != before[name].id
        assert after[name].labels[FINGERPRINT] != before[name].labels[FINGERPRINT]
    # built without the layer cache: tools' own apt-get layer is new, its base's is not
    new_tools = layers(ref("tools"))
    assert new_tools[:len(old_layers["base"])] == old_layers["base"]
    assert new_tools[-1] != old_layers["tools"][-1]
    manifest = json.loads(after["tools"].labels[MANIFEST])
    assert manifest["refreshed"]["reason"] == "less"
    assert manifest["refreshed"]["date"] == \
        after["tools"].labels["org.opencontainers.image.created"]
    assert "refreshed" not in json.loads(after["app"].labels[MANIFEST])
    tools_log = (tmp_path / "work" / "logs" / "tools.log").read_text()
    assert "refreshing (less): not reused, built without the layer cache" in tools_log

    # the next ordinary run keeps the refreshed images: all unchanged
    _, later = kiln_build()
    assert {n: s for n, (s, _) in statuses(later).items()} == dict.fromkeys(DOCKERFILES,
                                                                            "unchanged")
    assert docker_engine.inspect(ref("tools")).id == after["tools"].id

    synced = kiln_registry(*sync)
    assert synced.code == 0, synced.out + synced.err
    assert "4 images: 2 pushed, 2 unchanged, 0 failed" in synced.out
    client = plain_client(registry.host)
    for name, tags in (("tools", [TAG, f"{TAG}-1", f"{TAG}-2"]),
                       ("app", [TAG, f"{TAG}-1", f"{TAG}-2"]),
                       ("base", [TAG, f"{TAG}-1"]), ("sibling", [TAG, f"{TAG}-1"])):
        repository = f"{ns}/{name}"
        assert sorted(client.list_tags(repository)) == tags, name
        # the floating tag names the newest revision
        assert client.manifest_digest(repository, TAG) == \
            client.manifest_digest(repository, tags[-1])
    assert client.manifest(f"{ns}/tools", TAG).labels[FINGERPRINT] == \
        after["tools"].labels[FINGERPRINT]

