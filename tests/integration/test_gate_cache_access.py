"""A cache registry kiln cannot use, and one it may (issue #15), on real parts:
Debian's ``docker-registry`` with TLS from a CA made by the test and
htpasswd auth, the plain one of conftest, and the real Docker engine.

Each unusable cache (a CA the client does not trust, plain HTTP where TLS
is expected, no credentials, wrong credentials) is one warning line naming
the registry and the reason, and the image is built locally (exit 0).
Credentials come from Docker's config.json (``$DOCKER_CONFIG``), as for
``kiln-registry``: with the right ones, job A fills the cache and job B, on
an emptied engine, finds the image there.
"""

from __future__ import annotations

import base64
import json

import pytest

from builder.build.cache import cache_tag
from builder.build.labels import FINGERPRINT
from builder.registry.auth import Credentials
from builder.registry.client import RegistryClient
from builder.registry.http import RegistryOptions
from tests.integration.registry_fixtures import PASSWORD, USERNAME, tls_registry  # noqa: F401

pytestmark = pytest.mark.timeout(300)

TEMPLATE = "FROM {{ busybox }}\nRUN echo base > /base.txt\n"


@pytest.fixture
def one_image(tmp_path, cleanup_images, build):
    templates = tmp_path / "templates"
    (templates / "base").mkdir(parents=True)
    (templates / "base" / "Dockerfile.j2").write_text(TEMPLATE)
    cleanup_images.track(f"{build.namespace}/base:latest")
    return templates


@pytest.fixture
def docker_config(tmp_path, monkeypatch):
    """``login(username, password)`` writes them to a Docker config of the test's own."""
    directory = tmp_path / "docker-config"
    directory.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(directory))

    def login(host: str, username: str, password: str) -> None:
        auth = base64.b64encode(f"{username}:{password}".encode()).decode()
        (directory / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))

    return login


def cache_warnings(result, host: str) -> list[str]:
    return [line for line in result.err.splitlines() if host in line]


@pytest.mark.parametrize("case, reason", [
    ("untrusted CA", "certificate verify failed"),
    ("plain HTTP", "does not speak TLS"),
    ("no credentials", "requires authentication and no credentials were given"),
    ("wrong credentials", f"refused user {USERNAME!r}"),
])
def test_an_unusable_cache_is_one_warning(case, reason, build, one_image, docker_config,
                                          docker_engine, tls_registry, registry):  # noqa: F811
    args = ["--cache-registry", tls_registry.host, "--cache-ca-cert", tls_registry.ca_cert]
    host = tls_registry.host
    if case == "untrusted CA":
        args = args[:2]
    elif case == "plain HTTP":     # a plain-HTTP registry, TLS expected (no --cache-insecure)
        args, host = ["--cache-registry", registry.host], registry.host
    elif case == "wrong credentials":
        docker_config(tls_registry.host, USERNAME, "not-the-password")
    result, summary = build(*args, templates=one_image)
    assert result.code == 0, result.err
    assert [entry["name"] for entry in summary["built"]] == ["base"]
    assert summary["cached"] == []
    assert docker_engine.inspect(f"{build.namespace}/base:latest") is not None
    warnings = cache_warnings(result, host)
    assert len(warnings) == 1, result.err
    assert "cannot be used" in warnings[0] and reason in warnings[0], warnings[0]
    assert "Traceback" not in result.err


def test_a_cache_with_credentials_from_docker_login(build, one_image, docker_config,
                                                    docker_engine, tls_registry):  # noqa: F811
    docker_config(tls_registry.host, USERNAME, PASSWORD)
    args = ["--cache-registry", tls_registry.host, "--cache-ca-cert", tls_registry.ca_cert]
    ref = f"{build.namespace}/base:latest"

    result, summary = build(*args, templates=one_image)    # job A: built, pushed
    assert result.code == 0, result.err
    assert [entry["name"] for entry in summary["built"]] == ["base"]
    assert cache_warnings(result, tls_registry.host) == [], result.err
    fingerprint = docker_engine.inspect(ref).labels[FINGERPRINT]
    client = RegistryClient(tls_registry.host, RegistryOptions(
        ca_cert=tls_registry.ca_cert, credentials=Credentials(USERNAME, PASSWORD)))
    try:
        entry = client.manifest(f"{build.namespace}/base", cache_tag(fingerprint))
    finally:
        client.close()
    assert entry is not None and entry.labels[FINGERPRINT] == fingerprint

    docker_engine.remove(docker_engine.inspect(ref).id, force=True)   # a new machine
    assert docker_engine.inspect(ref) is None
    result, summary = build(*args, templates=one_image)    # job B: from the cache
    assert result.code == 0, result.err
    assert [entry["name"] for entry in summary["cached"]] == ["base"]
    assert summary["built"] == []
    assert docker_engine.inspect(ref).labels[FINGERPRINT] == fingerprint
    assert docker_engine.run(ref, ["cat", "/base.txt"]) == "base\n"
