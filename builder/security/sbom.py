"""SBOMs of one image from its kiln labels: CycloneDX 1.6 JSON or SPDX 2.3 JSON.

The document describes the image (a container: its reference, and its
manifest digest when read from a registry) with:

- every package of ``kiln.packages``, with its package URL:
  ``pkg:deb/<distro>/NAME@VERSION`` (the distribution named by the image's
  external base, ``debian`` when it names none kiln knows),
  ``pkg:rpm/<distro>/...`` (no namespace when unknown),
  ``pkg:apk/alpine/...``, ``pkg:pypi/NAME@VERSION``;
- the sources of ``kiln.manifest`` (name, location, git commit or content
  digest), as components (CycloneDX, with a VCS or distribution external
  reference where the location is a URL) or packages the image is
  GENERATED_FROM (SPDX, with a ``git+URL@COMMIT`` download location);
- its base image (``org.opencontainers.image.base.name``, with the local id
  kiln recorded), as the image's pedigree ancestor (CycloneDX) or a package
  the image is a DESCENDANT_OF (SPDX).

An image whose package list is unknown (see :func:`package_list`) gets no
SBOM: :func:`image_packages` raises a KilnError naming it. The libraries
(cyclonedx-python-lib, spdx-tools, packageurl-python) are imported here
only, when a document is made.
"""

from __future__ import annotations

import datetime
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from builder import __version__
from builder.build.labels import FINGERPRINT, MANIFEST, OCI, PACKAGES_SCAN
from builder.errors import KilnError
from builder.reference import split_reference
from builder.security.find import package_list

FORMATS = ("cyclonedx", "spdx")
# The last path component of a base image -> the purl namespace of its packages.
DISTROS = {"debian": "debian", "ubuntu": "ubuntu", "alpine": "alpine", "centos": "centos",
           "fedora": "fedora", "rockylinux": "rocky", "rocky": "rocky",
           "almalinux": "almalinux", "ubi": "redhat", "ubi8": "redhat", "ubi9": "redhat",
           "ubi10": "redhat", "ubi-minimal": "redhat", "rhel": "redhat",
           "oraclelinux": "oracle", "amazonlinux": "amazon", "leap": "opensuse",
           "tumbleweed": "opensuse", "opensuse": "opensuse"}
DEFAULT_NAMESPACE = {"deb": "debian", "apk": "alpine"}
PURL_TYPES = {"deb": "deb", "rpm": "rpm", "apk": "apk", "pypi": "pypi"}
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")


@dataclass(frozen=True)
class SbomImage:
    """One image as read: its reference, labels, id and (from a registry) digest."""

    reference: str                          # as given: ns/name:tag or host/ns/name:tag
    labels: Mapping[str, str]
    image_id: str | None                    # config digest: the id an engine shows
    digest: str | None = None               # manifest digest (a registry image)
    packages: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def manifest(self) -> dict:
        try:
            data = json.loads(self.labels.get(MANIFEST) or "{}")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    @property
    def sources(self) -> list[dict]:
        return [s for s in self.manifest.get("sources") or [] if isinstance(s, dict)
                and s.get("name")]

    @property
    def base(self) -> tuple[str, str | None] | None:
        name = self.labels.get(f"{OCI}base.name")
        return (name, self.labels.get(f"{OCI}base.digest") or None) if name else None


def image_packages(reference: str, labels: Mapping[str, str], image_id: str | None,
                   digest: str | None = None) -> SbomImage:
    """The image with its package list; a KilnError (exit 2) if that list is unknown."""
    if not labels.get(FINGERPRINT):
        raise KilnError(f"{reference} carries no kiln.fingerprint label: it was not built "
                        f"by kiln-build (or its build did not finish), so kiln knows "
                        f"nothing of its packages")
    packages, why = package_list(labels)
    if packages is None:
        raise KilnError(f"no SBOM for {reference}: its packages are unknown, as {why}")
    return SbomImage(reference, labels, image_id, digest, packages)


def distro(image: SbomImage) -> str | None:
    """The distribution the image's base images name, if kiln knows it."""
    refs = [b.get("ref") for b in image.manifest.get("bases") or [] if isinstance(b, dict)]
    if image.base:
        refs.append(image.base[0])
    for ref in refs:
        if isinstance(ref, str):
            _, path, _ = split_reference(ref)
            found = DISTROS.get(path.rsplit("/", 1)[-1])
            if found:
                return found
    return None


def purl(kind: str, name: str, version: str, vendor: str | None):
    from packageurl import PackageURL
    if kind not in PURL_TYPES:
        return PackageURL("generic", None, name, version, qualifiers={"kind": kind})
    namespace = None
    if kind in ("deb", "rpm", "apk"):
        family = {"debian": "deb", "ubuntu": "deb", "alpine": "apk"}.get(vendor or "", "rpm")
        namespace = vendor if vendor and family == kind else DEFAULT_NAMESPACE.get(kind)
    return PackageURL(PURL_TYPES[kind], namespace, name, version)


def _image_purl(image: SbomImage):
    """``pkg:oci/NAME@DIGEST?repository_url=...&tag=...`` for a registry image, else None."""
    if not image.digest:
        return None
    from packageurl import PackageURL
    host, path, tag = split_reference(image.reference)
    qualifiers = {"repository_url": f"{host}/{path}" if host else path}
    if tag:
        qualifiers["tag"] = tag
    return PackageURL("oci", None, path.rsplit("/", 1)[-1], image.digest,
                      qualifiers=qualifiers)


def _split(reference: str) -> tuple[str, str | None]:
    host, path, tag = split_reference(reference.partition("@")[0])
    return (f"{host}/{path}" if host else path), tag


def _source_version(source: Mapping) -> str | None:
    return source.get("commit") or source.get("content") or source.get("reference")


def _properties(image: SbomImage) -> list[tuple[str, str]]:
    found = [("kiln:fingerprint", image.labels.get(FINGERPRINT, ""))]
    if image.image_id:
        found.append(("kiln:image-id", image.image_id))
    if image.labels.get(PACKAGES_SCAN):
        found.append(("kiln:packages.scan", image.labels[PACKAGES_SCAN]))
    if image.manifest.get("kiln"):
        found.append(("kiln:built-by", f"kiln {image.manifest['kiln']}"))
    for key in ("created", "revision", "source", "version"):
        if image.labels.get(OCI + key):
            found.append((OCI + key, image.labels[OCI + key]))
    return found


# -- CycloneDX -----------------------------------------------------------------------------

def cyclonedx_json(image: SbomImage) -> str:
    """A CycloneDX 1.6 JSON document of the image."""
    from cyclonedx.model import ExternalReference, ExternalReferenceType, Property, XsUri
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType, Pedigree
    from cyclonedx.output.json import JsonV1Dot6

    name, tag = _split(image.reference)
    ancestors = []
    if image.base:
        base_name, base_id = image.base
        base_repo, base_tag = _split(base_name)
        ancestors.append(Component(
            type=ComponentType.CONTAINER, name=base_repo, version=base_tag,
            bom_ref=f"base:{base_name}", description="the base image (FROM)",
            properties=[Property(name="kiln:image-id", value=base_id)] if base_id else None))
    root = Component(type=ComponentType.CONTAINER, name=name, version=tag or image.digest,
                     bom_ref="image", purl=_image_purl(image),
                     pedigree=Pedigree(ancestors=ancestors) if ancestors else None,
                     properties=[Property(name=k, value=v) for k, v in _properties(image)])
    vendor = distro(image)
    components = []
    for kind, items in sorted(image.packages.items()):
        for package, version in sorted(items.items()):
            locator = purl(kind, package, version, vendor)
            components.append(Component(
                type=ComponentType.LIBRARY, name=package, version=version, purl=locator,
                bom_ref=f"{kind}:{package}@{version}",
                properties=[Property(name="kiln:package-kind", value=kind)]))
    for source in image.sources:
        location = str(source.get("location") or "")
        references = []
        if _URL.fullmatch(location):
            references.append(ExternalReference(
                type=ExternalReferenceType.VCS if source.get("type") == "git"
                else ExternalReferenceType.DISTRIBUTION, url=XsUri(location),
                comment=f"{source.get('type')} source" + (
                    f" at {source['reference']}" if source.get("reference") else "")))
        properties = [Property(name=f"kiln:source:{key}", value=str(source[key]))
                      for key in ("type", "location", "reference", "commit", "content")
                      if source.get(key)]
        components.append(Component(
            type=ComponentType.LIBRARY, name=str(source["name"]),
            version=_source_version(source), bom_ref=f"source:{source['name']}",
            description=f"kiln source {source['name']}", external_references=references,
            properties=properties))
    bom = Bom(components=components)
    bom.metadata.component = root
    bom.metadata.tools.components.add(Component(type=ComponentType.APPLICATION,
                                                 name="kiln", version=__version__))
    bom.register_dependency(root, components)
    for component in components:
        bom.register_dependency(component, [])
    return JsonV1Dot6(bom).output_as_string(indent=2) + "\n"


# -- SPDX ----------------------------------------------------------------------------------

def spdx_json(image: SbomImage) -> str:
    """An SPDX 2.3 JSON document of the image, validated before it is returned."""
    import io

    from spdx_tools.spdx.model import (
        Actor,
        ActorType,
        CreationInfo,
        Document,
        ExternalPackageRef,
        ExternalPackageRefCategory,
        Package,
        PackagePurpose,
        Relationship,
        RelationshipType,
        SpdxNoAssertion,
    )
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document
    from spdx_tools.spdx.validation.uri_validators import validate_download_location
    from spdx_tools.spdx.writer.json.json_writer import write_document_to_stream

    def purl_ref(locator) -> list:
        return [ExternalPackageRef(ExternalPackageRefCategory.PACKAGE_MANAGER, "purl",
                                   locator.to_string())] if locator else []

    name, tag = _split(image.reference)
    root = Package(
        spdx_id="SPDXRef-Image", name=name, version=tag or image.digest,
        download_location=SpdxNoAssertion(), files_analyzed=False,
        primary_package_purpose=PackagePurpose.CONTAINER,
        external_references=purl_ref(_image_purl(image)),
        comment="; ".join(f"{k}={v}" for k, v in _properties(image)))
    packages, relationships = [root], [
        Relationship("SPDXRef-DOCUMENT", RelationshipType.DESCRIBES, "SPDXRef-Image")]
    vendor = distro(image)
    for kind, items in sorted(image.packages.items()):
        for number, (package, version) in enumerate(sorted(items.items()), start=1):
            spdx_id = f"SPDXRef-Package-{_spdx_word(kind)}-{number}"
            packages.append(Package(
                spdx_id=spdx_id, name=package, version=version,
                download_location=SpdxNoAssertion(), files_analyzed=False,
                external_references=purl_ref(purl(kind, package, version, vendor)),
                comment=f"kiln.packages {kind}"))
            relationships.append(Relationship("SPDXRef-Image", RelationshipType.CONTAINS,
                                              spdx_id))
    for number, source in enumerate(image.sources, start=1):
        location = str(source.get("location") or "")
        version = _source_version(source)
        download = (f"git+{location}@{source['commit']}" if source.get("type") == "git"
                    and source.get("commit") and _URL.fullmatch(location) else location)
        spdx_id = f"SPDXRef-Source-{number}"
        packages.append(Package(
            spdx_id=spdx_id, name=str(source["name"]), version=version,
            download_location=(download if download and not validate_download_location(
                download) else SpdxNoAssertion()),
            files_analyzed=False, primary_package_purpose=PackagePurpose.SOURCE,
            source_info=" ".join(f"{key}={source[key]}" for key in (
                "type", "location", "reference", "commit", "content") if source.get(key))))
        relationships.append(Relationship("SPDXRef-Image", RelationshipType.GENERATED_FROM,
                                          spdx_id))
    if image.base:
        base_name, base_id = image.base
        base_repo, base_tag = _split(base_name)
        packages.append(Package(
            spdx_id="SPDXRef-Base", name=base_repo, version=base_tag,
            download_location=SpdxNoAssertion(), files_analyzed=False,
            primary_package_purpose=PackagePurpose.CONTAINER,
            comment=f"the base image (FROM) {base_name}" + (f", local id {base_id}"
                                                            if base_id else "")))
        relationships.append(Relationship("SPDXRef-Image", RelationshipType.DESCENDANT_OF,
                                          "SPDXRef-Base"))
    created = datetime.datetime.now(datetime.UTC).replace(microsecond=0, tzinfo=None)
    document = Document(
        CreationInfo(spdx_version="SPDX-2.3", spdx_id="SPDXRef-DOCUMENT", name=image.reference,
                     document_namespace=f"https://spdx.org/spdxdocs/kiln-"
                                        f"{_spdx_word(name)}-{uuid.uuid4()}",
                     creators=[Actor(ActorType.TOOL, f"kiln-{__version__}")],
                     created=created),
        packages=packages, relationships=relationships)
    problems = validate_full_spdx_document(document)
    if problems:
        raise KilnError(f"the SPDX document of {image.reference} is not valid: "
                        f"{problems[0].validation_message}")
    stream = io.StringIO()
    write_document_to_stream(document, stream, validate=False)
    return stream.getvalue().rstrip("\n") + "\n"


def _spdx_word(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", text).strip("-") or "x"


def document(image: SbomImage, kind: str) -> str:
    """The SBOM of ``image`` in ``kind`` (one of FORMATS), as JSON text."""
    return cyclonedx_json(image) if kind == "cyclonedx" else spdx_json(image)
