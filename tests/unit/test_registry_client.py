"""The registry client before and without a registry: host checks, refusals, no answer.

What needs a registry is in tests/integration/test_registry_client.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import ConfigError, RegistryError
from builder.registry.client import RegistryClient
from builder.registry.http import RegistryOptions
from tests.conftest import free_port

FAST = {"backoff": 0.01}


@pytest.fixture(autouse=True)
def no_docker_login(tmp_path_factory, monkeypatch):
    """No test sees the user's own Docker logins."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path_factory.mktemp("docker-config")))


def test_registry_hosts_are_checked_before_any_request():
    for host, problem in (("127.0.0.1:99999", "port 99999 of registry 127.0.0.1:99999 is "
                                              "not between 1 and 65535"),
                          ("localhost:0", "port 0 of registry localhost:0 is not between"),
                          ("registry:http", "port 'http' of registry 'registry:http' is not "
                                            "a number"),
                          ("bad_host", "'bad_host' is not a valid registry host name")):
        with pytest.raises(ConfigError) as caught:
            RegistryClient(host, RegistryOptions(insecure=True))
        assert problem in str(caught.value), str(caught.value)
    RegistryClient("[::1]:5000")
    RegistryClient("registry.example.com")


def test_unreachable_registry(tmp_path):
    host = f"127.0.0.1:{free_port()}"
    client = RegistryClient(host, RegistryOptions(insecure=True, retries=1, **FAST))
    with pytest.raises(RegistryError) as caught:
        client.ping()
    text = str(caught.value)
    assert f"cannot reach {host}: connection refused" in text
    assert "2 attempts" in text and "is the registry running" in text
    assert client.requests_made == 2


def test_bad_ca_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        RegistryClient("127.0.0.1:1", RegistryOptions(ca_cert=Path(tmp_path / "none.pem")))
