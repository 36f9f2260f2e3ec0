"""kiln-registry sbom on the real engine and registry: CycloneDX and SPDX, validated.

Images: ``pkgs`` and ``src-git`` built by kiln-build (a stand-in dpkg status file;
a git source), and ``alpha``/``gamma`` with hand-written kiln labels (deb and
pypi packages, a git source at a URL, a Debian base; no kiln.packages),
published with ``kiln-registry sync``. Every document is checked against its
schema (cyclonedx-python-lib's strict JSON validator; spdx-tools' parser and
validator) and must list exactly the packages of ``kiln.packages``.
"""

from __future__ import annotations

import json

import git
import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from builder.build.labels import PACKAGES
from tests.integration import security_fixtures, sync_fixtures
from tests.integration.security_fixtures import COMMIT, UPSTREAM
from tests.integration.sync_fixtures import plain_client

no_docker_login = sync_fixtures.no_docker_login
packaged = security_fixtures.packaged

TAG = "pike"
ALPHA = {"deb": {"less": "590-2", "zlib1g": "1:1.2.13.dfsg-1", "libc6": "2.36-9+deb12u7"},
         "pypi": {"Jinja2": "3.1.4", "pyyaml": "6.0.1"}}


@pytest.fixture
def images(build, packaged, kiln_registry, registry, docker_engine, tmp_path):
    upstream = tmp_path / "upstream"
    repo = git.Repo.init(upstream)
    (upstream / "README").write_text("v1\n")
    repo.index.add(["README"])
    commit = repo.index.commit("one").hexsha
    build.tags.append(TAG)
    result, _ = build("^(pkgs|src-git)$", "--tag", TAG,
                      config=f"[src-git]\ntype = git\nlocation = {upstream}\n")
    assert result.code == 0, result.out + result.err
    packaged.make("alpha", TAG, ALPHA)
    packaged.make("gamma", TAG, None)
    ns = build.namespace
    packaged.track_pushed(registry.host, ["alpha", "gamma", "base", "pkgs", "src-git"],
                          [f"{TAG}-1"])
    synced = kiln_registry("sync", "alpha", "gamma", "--namespace", ns, "--tag", TAG,
                           "--destination", registry.host, "--insecure", "--retries", "1")
    assert synced.code == 0, synced.out + synced.err
    return ns, commit


def purls(locators) -> set[tuple]:
    found = set()
    for locator in locators:
        parsed = PackageURL.from_string(locator)
        found.add((parsed.type, parsed.namespace, parsed.name, parsed.version))
    return found


def expected(labels: dict) -> set[tuple]:
    packages = json.loads(labels[PACKAGES])
    namespace = {"deb": "debian", "pypi": None}
    return {(kind, namespace[kind], name.lower().replace("_", "-"), version)
            for kind, items in packages.items() for name, version in items.items()}


def cyclonedx(text: str) -> dict:
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    document = json.loads(text)
    assert document["bomFormat"] == "CycloneDX" and document["specVersion"] == "1.6"
    return document


def spdx(path):
    document = parse_file(str(path))
    assert validate_full_spdx_document(document) == []
    assert document.creation_info.spdx_version == "SPDX-2.3"
    return document


def test_cyclonedx(images, kiln_registry, registry, docker_engine, tmp_path):
    ns, commit = images
    # a local image kiln-build made: the packages its scan found
    local = kiln_registry("sbom", f"{ns}/pkgs:{TAG}")
    assert local.code == 0, local.err
    document = cyclonedx(local.out)
    pkgs = docker_engine.inspect(f"{ns}/pkgs:{TAG}")
    packages = [c for c in document["components"] if not c["bom-ref"].startswith("source:")]
    assert purls(c["purl"] for c in packages) == expected(pkgs.labels) == {
        ("deb", "debian", "curl", "7.88.1-10"), ("deb", "debian", "openssl", "3.0.11-1"),
        ("deb", "debian", "zlib1g", "1:1.2.13-1")}
    root = document["metadata"]["component"]
    assert root["type"] == "container" and root["name"] == f"{ns}/pkgs"
    assert {"name": "kiln:image-id", "value": pkgs.id} in root["properties"]
    assert root["pedigree"]["ancestors"][0]["name"] == f"{ns}/base"       # FROM, in-set
    # the git source of a kiln-build image: its commit
    src = kiln_registry("sbom", f"{ns}/src-git:{TAG}", "--output", tmp_path / "src.cdx.json")
    assert src.code == 0, src.err
    assert f"written to {tmp_path / 'src.cdx.json'}" in src.out
    source = next(c for c in cyclonedx((tmp_path / "src.cdx.json").read_text())["components"]
                  if c["bom-ref"] == "source:src-git")
    assert source["version"] == commit
    assert {"name": "kiln:source:commit", "value": commit} in source["properties"]

    # from the registry, no layer pulled: the image's purl names its manifest digest
    ref = f"{registry.host}/{ns}/alpha:{TAG}"
    remote = kiln_registry("sbom", ref, "--insecure", "--format", "cyclonedx")
    assert remote.code == 0, remote.err
    document = cyclonedx(remote.out)
    alpha = docker_engine.inspect(f"{ns}/alpha:{TAG}")
    by_ref = {c["bom-ref"]: c for c in document["components"]}
    packages = [c for ref_, c in by_ref.items() if not ref_.startswith("source:")]
    assert purls(c["purl"] for c in packages) == expected(alpha.labels)
    assert len(packages) == 5
    digest = plain_client(registry.host).manifest_digest(f"{ns}/alpha", TAG)
    root = document["metadata"]["component"]
    image_purl = PackageURL.from_string(root["purl"])
    assert (image_purl.type, image_purl.name, image_purl.version) == ("oci", "alpha", digest)
    assert image_purl.qualifiers == {"repository_url": f"{registry.host}/{ns}/alpha",
                                     "tag": TAG}
    assert {"name": "kiln:image-id", "value": alpha.id} in root["properties"]
    assert root["pedigree"]["ancestors"][0]["name"] == "debian"
    assert root["pedigree"]["ancestors"][0]["version"] == "bookworm"
    source = by_ref["source:alpha-src"]
    assert source["version"] == COMMIT
    assert source["externalReferences"] == [{"type": "vcs", "url": UPSTREAM,
                                             "comment": "git source at master"}]
    dependencies = {d["ref"]: d.get("dependsOn", []) for d in document["dependencies"]}
    assert set(dependencies["image"]) == set(by_ref)


def test_spdx(images, kiln_registry, registry, docker_engine, tmp_path):
    ns, commit = images
    output = tmp_path / "alpha.spdx.json"
    result = kiln_registry("sbom", f"{registry.host}/{ns}/alpha:{TAG}", "--insecure",
                           "--format", "spdx", "--output", output)
    assert result.code == 0, result.err
    assert "(5 packages, 1 source)" in result.out
    document = spdx(output)
    alpha = docker_engine.inspect(f"{ns}/alpha:{TAG}")
    by_id = {p.spdx_id: p for p in document.packages}
    contained = {r.related_spdx_element_id for r in document.relationships
                 if r.spdx_element_id == "SPDXRef-Image"
                 and r.relationship_type.name == "CONTAINS"}
    assert purls(ref.locator for spdx_id in contained
                 for ref in by_id[spdx_id].external_references) == expected(alpha.labels)
    digest = plain_client(registry.host).manifest_digest(f"{ns}/alpha", TAG)
    (image_ref,) = by_id["SPDXRef-Image"].external_references
    assert PackageURL.from_string(image_ref.locator).version == digest
    source = next(p for p in document.packages if p.name == "alpha-src")
    assert source.version == COMMIT
    assert source.download_location == f"git+{UPSTREAM}@{COMMIT}"
    kinds = {(r.relationship_type.name, by_id[r.related_spdx_element_id].name)
             for r in document.relationships if r.spdx_element_id == "SPDXRef-Image"
             and r.relationship_type.name != "CONTAINS"}
    assert kinds == {("GENERATED_FROM", "alpha-src"), ("DESCENDANT_OF", "debian")}

    # a local kiln-build image, to standard output: its JSON parses back the same
    shown = kiln_registry("sbom", f"{ns}/pkgs:{TAG}", "--format", "spdx")
    assert shown.code == 0, shown.err
    (tmp_path / "pkgs.spdx.json").write_text(shown.out)
    document = spdx(tmp_path / "pkgs.spdx.json")
    pkgs = docker_engine.inspect(f"{ns}/pkgs:{TAG}")
    assert purls(ref.locator for p in document.packages if p.spdx_id.startswith(
        "SPDXRef-Package-") for ref in p.external_references) == expected(pkgs.labels)
    src = kiln_registry("sbom", f"{ns}/src-git:{TAG}", "--format", "spdx", "--output",
                        tmp_path / "src.spdx.json")
    assert src.code == 0, src.err
    source = next(p for p in spdx(tmp_path / "src.spdx.json").packages
                  if p.name == "src-git")
    assert source.version == commit and commit in source.source_info


def test_refusals(images, kiln_registry, registry, tmp_path):
    ns, _ = images
    for ref, extra in ((f"{ns}/gamma:{TAG}", []),
                       (f"{registry.host}/{ns}/gamma:{TAG}", ["--insecure"])):
        result = kiln_registry("sbom", ref, *extra, "--output", tmp_path / "gamma.json")
        assert result.code == 2, result.out + result.err
        assert result.err.strip() == f"kiln-registry: error: no SBOM for {ref}: its packages " \
                                     f"are unknown, as it has no kiln.packages label"
        assert result.out == "" and not (tmp_path / "gamma.json").exists()
    missing = kiln_registry("sbom", f"{ns}/nosuch:{TAG}")
    assert missing.code == 2 and f"no image {ns}/nosuch:{TAG}" in missing.err


