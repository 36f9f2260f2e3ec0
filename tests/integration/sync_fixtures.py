"""Fixtures for kiln-registry sync tests: small fingerprinted images and a slow proxy.

(``kiln_registry``, the in-process CLI runner, is in tests/conftest.py.)

- ``image_maker``: builds tiny busybox-based images stamped with a chosen
  ``kiln.fingerprint`` (as kiln-build would stamp them) in a unique namespace,
  removed after the test. Much faster than a kiln-build run, and the
  fingerprint is under the test's control.
- ``slow_proxy``: a proxy in front of the plain registry that slows blob
  uploads and notes every manifest put, to interrupt a sync mid-run.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from builder.build.labels import FINGERPRINT, MANIFEST
from builder.engines.base import BuildRequest, EngineError, ImageInfo
from builder.engines.docker import DockerEngine
from builder.registry.auth import Credentials
from builder.registry.client import RegistryClient
from builder.registry.http import RegistryOptions
from tests.integration.conftest import TestImages
from tests.integration.registry_fixtures import PASSWORD, USERNAME, FaultProxy

FAST = {"backoff": 0.01}


def fingerprint_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass
class ImageMaker:
    """``make(name, tag, version)``: ``<namespace>/<name>:<tag>``, fingerprint from version."""

    engine: DockerEngine
    base: str
    tracked: TestImages
    workdir: Path
    built: dict[str, ImageInfo] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return self.tracked.namespace

    def make(self, name: str, tag: str, version: str) -> ImageInfo:
        """An image whose content and fingerprint depend on (name, version) only."""
        context = self.workdir / f"{name}-{version}"
        context.mkdir(parents=True, exist_ok=True)
        (context / "stamp").write_text(f"{name} {version}\n")
        (context / "Dockerfile").write_text(f"FROM {self.base}\nCOPY stamp /stamp\n")
        ref = self.tracked.ref(name, tag)
        labels = {FINGERPRINT: fingerprint_of(f"{name} {version}"),
                  MANIFEST: json.dumps({"kiln": "test", "image": name,
                                        "build_args": {"VERSION": version}})}
        for _ in self.engine.build(BuildRequest(image=name, context_dir=context, tags=(ref,),
                                                labels=labels)):
            pass
        info = self.engine.inspect(ref)
        assert info is not None
        self.built[ref] = info
        return info

    def track_pushed(self, host: str, name: str, tags: list[str]) -> None:
        """Local tags sync makes for the engine to push (removed by sync; tracked in case)."""
        for tag in tags:
            self.tracked.ref(name, tag, host=host)


@pytest.fixture
def image_maker(docker_engine, busybox_base, cleanup_images, tmp_path) -> Iterator[ImageMaker]:
    maker = ImageMaker(docker_engine, busybox_base, cleanup_images, tmp_path / "images")
    yield maker
    cleanup_images.remove_all()
    for info in maker.built.values():    # the images a later build took the tag from
        try:
            docker_engine.remove(info.id)
        except EngineError:
            pass


@pytest.fixture(autouse=True)
def no_docker_login(tmp_path_factory, monkeypatch):
    """No test sees the user's own Docker logins."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path_factory.mktemp("docker-config")))


def plain_client(host: str, session=None, **options) -> RegistryClient:
    return RegistryClient(host, RegistryOptions(insecure=True, **{**FAST, **options}),
                          session=session)


def tls_client(reg, session=None, **options) -> RegistryClient:
    return RegistryClient(reg.host, RegistryOptions(
        ca_cert=reg.ca_cert, credentials=Credentials(USERNAME, PASSWORD),
        **{**FAST, **options}), session=session)


def tls_args(reg) -> list[str]:
    """kiln-registry options for the TLS + htpasswd registry (password on stdin)."""
    return ["--ca-cert", reg.ca_cert, "--username", USERNAME, "--password-stdin"]


@dataclass
class SlowProxy(FaultProxy):
    """A FaultProxy that slows blob uploads and notes the manifests put.

    Each blob upload's final PUT waits ``upload_delay`` seconds; a PUT whose
    path contains ``hold`` waits (``held`` set) until ``release`` is set.
    ``tagged`` lists ``<repository>/manifests/<reference>`` of every manifest put.
    """

    upload_delay: float = 0.0
    hold: str | None = None
    tagged: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.held = threading.Event()
        self.release = threading.Event()
        super().__post_init__()

    def _forward(self, handler) -> None:
        method, path = handler.command, handler.path
        if method == "PUT" and self.hold and self.hold in path:
            self.held.set()
            self.release.wait(60)
        if method == "PUT" and "/blobs/uploads/" in path:
            time.sleep(self.upload_delay)
        super()._forward(handler)
        if method == "PUT" and "/manifests/" in path:
            with self._lock:
                self.tagged.append(path.split("?")[0].removeprefix("/v2/"))

    def stop(self) -> None:
        self.release.set()
        super().stop()


@pytest.fixture
def slow_proxy(registry) -> Iterator[SlowProxy]:
    """A SlowProxy in front of conftest's plain registry."""
    proxy = SlowProxy(registry.url, paginate=False)
    try:
        yield proxy
    finally:
        proxy.stop()
