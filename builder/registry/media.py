"""Registry media types and manifests: what kiln reads, accepts and copies."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from builder.reference import is_digest

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
IMAGE_MANIFESTS = (DOCKER_MANIFEST, OCI_MANIFEST)
INDEXES = (DOCKER_MANIFEST_LIST, OCI_INDEX)
MANIFEST_ACCEPT = ", ".join((OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
IMAGE_CONFIGS = ("application/vnd.docker.container.image.v1+json",
                 "application/vnd.oci.image.config.v1+json")
# Layers that registries do not hold (Windows base layers fetched from their ``urls``).
FOREIGN_LAYERS = ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                  "application/vnd.oci.image.layer.nondistributable.v1.tar",
                  "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                  "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd")
MAX_MANIFEST_BYTES = 4 << 20     # registries refuse larger manifests
MAX_CONFIG_BYTES = 32 << 20      # an image config is JSON, normally a few KiB
MAX_INDEX_DEPTH = 4


@dataclass(frozen=True)
class ManifestInfo:
    """What a registry holds under a tag or digest, read without pulling layers."""

    digest: str                     # of the manifest (of the index, for a multi-platform image)
    media_type: str
    config_digest: str | None       # for an index: of the linux/amd64 (else first) image
    labels: Mapping[str, str]
    created: str | None
    size: int                       # bytes of the manifest


@dataclass(frozen=True)
class Manifest:
    digest: str
    media_type: str
    data: bytes
    document: dict


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def media_type(content_type: str, document: dict) -> str:
    known = (*IMAGE_MANIFESTS, *INDEXES, *DOCKER_SCHEMA1)
    if content_type in known:
        return content_type
    declared = document.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if document.get("schemaVersion") == 1:
        return DOCKER_SCHEMA1[1]
    if "manifests" in document:
        return OCI_INDEX
    return OCI_MANIFEST if "config" in document else (content_type or OCI_MANIFEST)


def pick_platform(index: dict) -> str | None:
    """The digest of an index's linux/amd64 image, else of its first real platform."""
    entries = [entry for entry in index.get("manifests") or []
               if isinstance(entry, dict) and is_digest(str(entry.get("digest", "")))]
    for entry in entries:
        platform = entry.get("platform") or {}
        if platform.get("os") == "linux" and platform.get("architecture") == "amd64":
            return entry["digest"]
    for entry in entries:
        if (entry.get("platform") or {}).get("os") != "unknown":  # skip attestations
            return entry["digest"]
    return entries[0]["digest"] if entries else None

DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v1+prettyjws")
