"""kiln-registry find against the real registry and the real engine.

Images: ``base`` and ``pkgs`` built by kiln-build (``pkgs`` has a stand-in
dpkg status file listing curl, openssl and zlib1g), and busybox images carrying
hand-written kiln labels: ``alpha`` (less, republished as revision 2 with a
newer less), ``beta`` (an older less), ``gamma`` (no kiln.packages: unknown)
and ``delta`` (vim only). All are published with ``kiln-registry sync``.
"""

from __future__ import annotations

import json

import pytest

from builder.build.labels import PACKAGES
from tests.integration import registry_fixtures, security_fixtures, sync_fixtures
from tests.integration.sync_fixtures import plain_client

fault_proxy = registry_fixtures.fault_proxy
no_docker_login = sync_fixtures.no_docker_login
packaged = security_fixtures.packaged

TAG = "ocata"
ALPHA_1 = {"deb": {"less": "590-1", "libssl3": "3.0.11-1~deb12u2"}}
ALPHA_2 = {"deb": {"less": "590-2", "libssl3": "3.0.15-1~deb12u1"}}
BETA = {"deb": {"less": "551-1+b1"}, "pypi": {"requests": "2.31.0"}}
DELTA = {"deb": {"vim": "2:9.0.1378-2"}}


@pytest.fixture
def published(build, packaged, kiln_registry, registry, docker_engine):
    """The six images, local and synced to the registry (alpha twice: ocata-2 is newest)."""
    assert packaged.namespace == build.namespace
    ns = build.namespace
    build.tags.append(TAG)
    result, _ = build("^pkgs$", "--tag", TAG)
    assert result.code == 0, result.out + result.err
    packaged.make("alpha", TAG, ALPHA_1, version="1")
    packaged.make("beta", TAG, BETA)
    packaged.make("gamma", TAG, None)
    packaged.make("delta", TAG, DELTA)
    names = ["alpha", "base", "beta", "delta", "gamma", "pkgs"]
    packaged.track_pushed(registry.host, names, [f"{TAG}-1", f"{TAG}-2"])
    sync = ["sync", "--namespace", ns, "--tag", TAG, "--destination", registry.host,
            "--insecure", "--retries", "1"]
    first = kiln_registry(*sync)
    assert first.code == 0, first.out + first.err
    assert "6 images: 6 pushed" in first.out
    packaged.make("alpha", TAG, ALPHA_2, version="2")
    second = kiln_registry(*sync)
    assert second.code == 0, second.out + second.err
    assert "6 images: 1 pushed, 5 unchanged" in second.out
    client = plain_client(registry.host)
    assert sorted(client.list_tags(f"{ns}/alpha")) == [TAG, f"{TAG}-1", f"{TAG}-2"]
    return ns


def find(kiln_registry, host, ns, *args):
    return kiln_registry("find", *args, "--registry", host, "--insecure", "--namespace", ns,
                         "--tag", TAG, "--retries", "0")


def test_find_in_the_registry(published, kiln_registry, registry, fault_proxy):
    ns, client = published, plain_client(registry.host)
    digest = {name: client.manifest_digest(f"{ns}/{name}", TAG)
              for name in ("alpha", "base", "beta", "delta", "gamma", "pkgs")}

    shown = find(kiln_registry, registry.host, ns, "less>=0", "--format", "json")
    assert shown.code == 0, shown.err
    report = json.loads(shown.out)
    assert report["checked"] == 6 and report["missing"] == [] and report["errors"] == []
    matches = {m["image"]: m for m in report["matches"]}
    assert sorted(matches) == ["alpha", "beta"]
    assert matches["alpha"]["packages"] == [{"kind": "deb", "name": "less",
                                             "version": "590-2"}]
    assert matches["alpha"]["tag"] == f"{TAG}-2"            # the newest revision
    assert matches["alpha"]["reference"] == f"{registry.host}/{ns}/alpha:{TAG}-2"
    assert matches["alpha"]["digest"] == digest["alpha"]
    assert matches["beta"]["packages"] == [{"kind": "deb", "name": "less",
                                            "version": "551-1+b1"}]
    assert [(u["image"], u["digest"]) for u in report["unknown"]] == [
        ("gamma", digest["gamma"])]
    assert "no kiln.packages label" in report["unknown"][0]["reason"]
    # base: kiln-build's busybox image, whose scan found no package manager
    assert {m["image"] for m in report["no_match"]} == {"base", "delta", "pkgs"}
    assert "could not be checked" in shown.err and "gamma" not in shown.err

    # text: one line per match with the version, the kind and the digest; unknowns apart
    text = find(kiln_registry, registry.host, ns, "less>=0")
    assert text.code == 0, text.err
    alpha_line = next(line for line in text.out.splitlines() if "alpha" in line)
    for part in ("deb less 590-2", f"{ns}/alpha:{TAG}-2", digest["alpha"]):
        assert part in alpha_line
    head, unknown = text.out.split("unknown: 1 image whose packages cannot be checked:")
    assert "2 of 6 images" in head and "beta" in head and "gamma" not in head
    assert "gamma" in unknown and "no kiln.packages label" in unknown

    # a version older than any: none (exit 1), the unknown image still listed
    none = find(kiln_registry, registry.host, ns, "less<0:0")
    assert none.code == 1, none.out + none.err
    assert "less<0:0: none of 6 images" in none.out
    assert "gamma" in none.out and "alpha" not in none.out

    # Debian order: ~deb12u1 before the release; the old revision is not searched
    older = find(kiln_registry, registry.host, ns, "deb:libssl3<3.0.15-1", "--format", "json")
    assert older.code == 0, older.err
    assert [(m["image"], m["packages"][0]["version"]) for m in
            json.loads(older.out)["matches"]] == [("alpha", "3.0.15-1~deb12u1")]
    assert find(kiln_registry, registry.host, ns, "less=590-1").code == 1
    pypi = find(kiln_registry, registry.host, ns, "pypi:Requests<2.32", "--format", "json")
    assert [m["image"] for m in json.loads(pypi.out)["matches"]] == ["beta"]
    # kiln-build's own package scan (the stand-in dpkg status file of pkgs)
    scanned = find(kiln_registry, registry.host, ns, "openssl<3.0.15", "--format", "json")
    assert scanned.code == 0, scanned.err
    assert [(m["image"], m["packages"]) for m in json.loads(scanned.out)["matches"]] == [
        ("pkgs", [{"kind": "deb", "name": "openssl", "version": "3.0.11-1"}])]

    # REGEX and --image narrow the images searched
    only = find(kiln_registry, registry.host, ns, "less", "^al", "--format", "json")
    assert json.loads(only.out)["checked"] == 1
    named = find(kiln_registry, registry.host, ns, "less", "--image", "beta", "--image",
                 "nosuch", "--format", "json")
    named_report = json.loads(named.out)
    assert [m["image"] for m in named_report["matches"]] == ["beta"]
    assert named_report["missing"] == ["nosuch"]


def test_find_reads_labels_only(published, kiln_registry, fault_proxy):
    ns = published
    result = kiln_registry("find", "less>=0", "--registry", fault_proxy.host, "--insecure",
                           "--namespace", ns, "--tag", TAG, "--threads", "3")
    assert result.code == 0, result.out + result.err
    seen = [(method, path.split("?")[0]) for method, path in fault_proxy.seen]
    blobs = [path for method, path in seen if "/blobs/" in path]
    manifests = [path for method, path in seen if "/manifests/" in path]
    # per image: one manifest and its config blob, nothing else of the image's content
    assert len(blobs) == 6 and len(manifests) == 6 and len(set(blobs)) == 6
    assert all(method == "GET" for method, path in seen)
    client = plain_client(fault_proxy.host)
    for path in blobs:
        repository, _, digest = path.removeprefix("/v2/").partition("/blobs/")
        info = client.manifest(repository, TAG)
        assert info.config_digest == digest, path          # the config, never a layer
    assert any(path.endswith("/alpha/manifests/ocata-2") for path in manifests)


def test_find_local_images(published, kiln_registry, docker_engine):
    ns = published
    shown = kiln_registry("find", "less>=0", "--local", "--namespace", ns, "--format", "json")
    assert shown.code == 0, shown.out + shown.err
    report = json.loads(shown.out)
    matches = {m["image"]: m for m in report["matches"]}
    assert sorted(matches) == ["alpha", "beta"]
    alpha = docker_engine.inspect(f"{ns}/alpha:{TAG}")
    assert matches["alpha"]["id"] == alpha.id and matches["alpha"]["digest"] is None
    assert matches["alpha"]["reference"] == f"{ns}/alpha:{TAG}"
    assert json.loads(alpha.labels[PACKAGES]) == {"deb": {"less": "590-2",
                                                          "libssl3": "3.0.15-1~deb12u1"}}
    assert [u["image"] for u in report["unknown"]] == ["gamma"]

    none = kiln_registry("find", "less<0:0", "--local", "--namespace", ns, "--tag", TAG)
    assert none.code == 1, none.out + none.err
    assert "gamma" in none.out and "alpha" not in none.out
    # without --namespace, REGEX matches the repository path
    anywhere = kiln_registry("find", "less", f"^{ns}/(alpha|gamma)$", "--local", "--format",
                             "json")
    assert anywhere.code == 0, anywhere.err
    found = json.loads(anywhere.out)
    assert [m["image"] for m in found["matches"]] == [f"{ns}/alpha"]
    assert [u["image"] for u in found["unknown"]] == [f"{ns}/gamma"]
    nothing = kiln_registry("find", "less", "--local", "--namespace", f"{ns}-none")
    assert nothing.code == 2 and "no image stamped by kiln-build" in nothing.err


