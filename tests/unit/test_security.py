"""Reading kiln.packages for find and sbom, without an engine or a registry."""

from __future__ import annotations

import json

import pytest

from builder.build.labels import FINGERPRINT, PACKAGES, PACKAGES_SCAN
from builder.errors import KilnError
from builder.security.find import (
    MATCH,
    NO_MATCH,
    UNKNOWN,
    PackageHit,
    examine,
    newest_revision,
    package_list,
)
from builder.security.sbom import distro, image_packages, purl
from builder.security.versions import parse_constraint

PACKAGES_JSON = json.dumps({"deb": {"less": "590-2", "libssl3": "3.0.15-1~deb12u1"},
                            "pypi": {"requests": "2.31.0"}})


def labels(packages: str | None = PACKAGES_JSON, scan: str | None = "scanned", **extra):
    found = {FINGERPRINT: "sha256:" + "f" * 64, **extra}
    if packages is not None:
        found[PACKAGES] = packages
    if scan is not None:
        found[PACKAGES_SCAN] = scan
    return found


@pytest.mark.parametrize("given, reason", [
    (labels(None), "no kiln.packages label"),
    (labels(""), "is empty"),
    (labels("{not json"), "not JSON"),
    (labels('"unknown"'), "holds no package list"),
    (labels('{"deb": ["less"]}'), "holds no package list"),
    (labels('{"deb": {"less": 590}}'), "holds no package list"),
    (labels("null"), "holds no package list"),
    (labels("{}", scan="no-shell"), "no shell"),
    (labels(PACKAGES_JSON, scan="failed"), "marked 'failed'"),
    (labels("{}", scan=None), "carries no kiln.packages.scan label"),
])
def test_untrusted_package_lists_are_unknown(given, reason):
    packages, why = package_list(given)
    assert packages is None and reason in why
    status, hits, note = examine(given, parse_constraint("less"))
    assert (status, hits) == (UNKNOWN, ()) and reason in note


def test_trusted_package_lists():
    assert package_list(labels("{}"))[0] == {}                  # scanned: nothing installed
    assert package_list(labels(PACKAGES_JSON, scan=None))[0]["deb"]["less"] == "590-2"
    assert examine(labels(), parse_constraint("less>=0"))[:2] == (
        MATCH, (PackageHit("deb", "less", "590-2"),))
    assert examine(labels(), parse_constraint("libssl*<3.0.15-1"))[:2] == (
        MATCH, (PackageHit("deb", "libssl3", "3.0.15-1~deb12u1"),))
    assert examine(labels(), parse_constraint("less<0:0"))[0] == NO_MATCH
    assert examine(labels(), parse_constraint("vim"))[0] == NO_MATCH
    assert examine(labels("{}"), parse_constraint("less"))[0] == NO_MATCH


def test_a_version_that_cannot_be_compared_makes_the_image_unknown_not_skipped():
    weird = labels(json.dumps({"pypi": {"less": "not-pep-440 at all"}}))
    status, _, note = examine(weird, parse_constraint("less>=1.0"))
    assert status == UNKNOWN and "pypi less" in note
    # ... unless another package of the image matches
    both = labels(json.dumps({"deb": {"less": "590-2"}, "pypi": {"less": "1.0"}}))
    status, hits, note = examine(both, parse_constraint("less<0:0"))
    assert status == UNKNOWN and "PEP 440" in note
    status, hits, _ = examine(both, parse_constraint("less>=0:0"))
    assert status == MATCH and [h.kind for h in hits] == ["deb"]


def test_newest_revision():
    assert newest_revision(["ocata", "ocata-1", "ocata-2", "ocata-10", "ocata-old"],
                           "ocata") == "ocata-10"
    assert newest_revision(["ocata"], "ocata") == "ocata"
    assert newest_revision(["4.0.0"], "4.0.0") == "4.0.0"
    assert newest_revision(["pike", "pike-1"], "ocata") is None


def test_sbom_refuses_an_image_whose_packages_are_unknown():
    with pytest.raises(KilnError, match=r"no SBOM for ns/a:latest: .* no kiln.packages label"):
        image_packages("ns/a:latest", labels(None), "sha256:1")
    with pytest.raises(KilnError, match="not built by kiln-build"):
        image_packages("ns/a:latest", {PACKAGES: PACKAGES_JSON}, "sha256:1")


def test_purls_and_the_distribution_from_the_base():
    assert purl("deb", "less", "590-2", None).to_string() == "pkg:deb/debian/less@590-2"
    assert purl("deb", "less", "590-2", "ubuntu").to_string() == "pkg:deb/ubuntu/less@590-2"
    assert purl("deb", "less", "1:2~3", "centos").to_string() == \
        "pkg:deb/debian/less@1:2~3"
    assert purl("rpm", "openssl", "3.0.7-27.el9", "rocky").to_string() == \
        "pkg:rpm/rocky/openssl@3.0.7-27.el9"
    assert purl("rpm", "openssl", "3.0.7-27.el9", None).to_string() == \
        "pkg:rpm/openssl@3.0.7-27.el9"
    assert purl("apk", "musl", "1.2.4-r2", None).to_string() == "pkg:apk/alpine/musl@1.2.4-r2"
    assert purl("pypi", "Foo_Bar", "1.0", None).to_string() == "pkg:pypi/foo-bar@1.0"
    manifest = json.dumps({"bases": [{"ref": "quay.io/centos/centos:stream9", "id": None}]})
    image = image_packages("ns/a:t", labels(**{"kiln.manifest": manifest}), None)
    assert distro(image) == "centos"
    image = image_packages("ns/a:t", labels(**{"org.opencontainers.image.base.name":
                                               "ubuntu:24.04"}), None)
    assert distro(image) == "ubuntu"
    assert distro(image_packages("ns/a:t", labels(), None)) is None
