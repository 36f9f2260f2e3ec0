"""Fixtures for kiln-registry find and sbom: small images with hand-written kiln labels.

``packaged.make(name, tag, packages)`` builds ``<namespace>/<name>:<tag>`` from
the busybox base with the labels kiln-build stamps (``kiln.fingerprint``,
``kiln.manifest``, ``kiln.packages``, ``kiln.packages.scan`` and the OCI keys,
in builder/manifest.py's format), the package list chosen by the test: much
faster than a kiln-build run, and it can carry packages busybox has none of.
The namespace is ``cleanup_images``' (the ``build`` fixture's too); every image
is removed after the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from builder.build.labels import (
    FINGERPRINT,
    MANIFEST,
    PACKAGES,
    PACKAGES_SCAN,
    SCANNED,
    canonical,
    oci_labels,
)
from builder.engines.base import BuildRequest, EngineError, ImageInfo
from builder.engines.docker import DockerEngine
from tests.integration.conftest import TestImages
from tests.integration.sync_fixtures import fingerprint_of

UPSTREAM = "https://opendev.org/openstack/example"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
BASE_ID = "sha256:" + "b" * 64


def kiln_labels(name: str, tag: str, packages: dict | None, scan: str | None,
                version: str) -> dict[str, str]:
    """The labels kiln-build would stamp on image ``name`` (packages None: no label)."""
    manifest = {
        "kiln": "test", "image": name,
        "layers": [{"label": "base", "path": "/templates", "commit": COMMIT, "dirty": False}],
        "templates": {f"base:{name}/Dockerfile.j2": "sha256:" + "1" * 64},
        "sources": [{"name": f"{name}-src", "type": "git", "location": UPSTREAM,
                     "reference": "master", "commit": COMMIT, "content": None}],
        "parents": [],
        "bases": [{"ref": "debian:bookworm", "id": BASE_ID}],
        "build_args": {"VERSION": version},
    }
    labels = oci_labels(title=name, version=tag, created="2024-05-01T12:00:00+00:00",
                        base_name="debian:bookworm", base_digest=BASE_ID, revision=COMMIT,
                        source=UPSTREAM, static={})
    labels[FINGERPRINT] = fingerprint_of(f"{name} {version}")
    labels[MANIFEST] = canonical(manifest)
    if packages is not None:
        labels[PACKAGES] = canonical(packages)
    if scan is not None:
        labels[PACKAGES_SCAN] = scan
    return labels


@dataclass
class PackagedImages:
    engine: DockerEngine
    base: str
    tracked: TestImages
    workdir: Path
    built: dict[str, ImageInfo] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return self.tracked.namespace

    def make(self, name: str, tag: str, packages: dict | None, *, scan: str | None = SCANNED,
             version: str = "1") -> ImageInfo:
        labels = kiln_labels(name, tag, packages, scan, version)
        context = self.workdir / f"{name}-{version}"
        context.mkdir(parents=True, exist_ok=True)
        (context / "Dockerfile").write_text(f"FROM {self.base}\n")
        ref = self.tracked.ref(name, tag)
        for _ in self.engine.build(BuildRequest(image=name, context_dir=context, tags=(ref,),
                                                labels=labels)):
            pass
        info = self.engine.inspect(ref)
        assert info is not None and info.labels[FINGERPRINT] == labels[FINGERPRINT]
        self.built[f"{ref} {version}"] = info
        return info

    def track_pushed(self, host: str, names: list[str], tags: list[str]) -> None:
        """The local tags sync makes for the engine to push (sync removes them)."""
        for name in names:
            for tag in tags:
                self.tracked.ref(name, tag, host=host)


@pytest.fixture
def packaged(docker_engine, busybox_base, cleanup_images, tmp_path) -> Iterator[PackagedImages]:
    maker = PackagedImages(docker_engine, busybox_base, cleanup_images, tmp_path / "packaged")
    yield maker
    cleanup_images.remove_all()
    for info in maker.built.values():       # the images a later build took the tag from
        try:
            docker_engine.remove(info.id)
        except EngineError:
            pass

