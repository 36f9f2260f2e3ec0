"""Registry credentials and auth challenges, without a registry."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from builder.errors import ConfigError
from builder.registry.auth import (
    Credentials,
    basic_header,
    docker_config_path,
    docker_credentials,
    parse_challenge,
)


def test_bearer_challenge_with_quoted_and_escaped_values():
    kind, params = parse_challenge(
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:kolla/nova:pull,push",Error="a \\"quoted\\" word"')
    assert kind == "bearer"
    assert params == {"realm": "https://auth.example.com/token",
                      "service": "registry.example.com",
                      "scope": "repository:kolla/nova:pull,push",
                      "error": 'a "quoted" word'}


def test_basic_and_unknown_challenges():
    assert parse_challenge('Basic realm="Registry Realm"') == ("basic", {})
    assert parse_challenge("Negotiate abc") == ("negotiate", {})
    # a Bearer challenge offered after another scheme is still found
    assert parse_challenge('Basic realm="x", Bearer realm="https://t/"')[0] == "bearer"


def test_basic_header():
    header = basic_header(Credentials("user", "pa:ss"))
    assert header == "Basic " + base64.b64encode(b"user:pa:ss").decode()


def _config(tmp_path, document):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(document))
    return path


def test_inline_auth_entries(tmp_path):
    token = base64.b64encode(b"alice:s3cret:x").decode()
    path = _config(tmp_path, {"auths": {"https://registry.example.com:5000/v1/": {"auth": token},
                                        "other.example.com": {"username": "bob",
                                                              "password": "pw"}}})
    assert docker_credentials("registry.example.com:5000", path) == \
        Credentials("alice", "s3cret:x")
    assert docker_credentials("other.example.com", path) == Credentials("bob", "pw")
    assert docker_credentials("nowhere.example.com", path) is None


def test_docker_hub_is_found_under_its_legacy_key(tmp_path):
    token = base64.b64encode(b"hub:pw").decode()
    path = _config(tmp_path, {"auths": {"https://index.docker.io/v1/": {"auth": token}}})
    assert docker_credentials("docker.io", path) == Credentials("hub", "pw")


def test_missing_and_bad_configs(tmp_path):
    assert docker_credentials("h", tmp_path / "absent.json") is None
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read the Docker config"):
        docker_credentials("h", bad)
    with pytest.raises(ConfigError, match="not valid base64"):
        docker_credentials("h", _config(tmp_path, {"auths": {"h": {"auth": "%%%"}}}))
    with pytest.raises(ConfigError, match="not a JSON object"):
        docker_credentials("h", _config(tmp_path, ["a list"]))


def test_credential_helper(tmp_path, monkeypatch):
    helper = tmp_path / "docker-credential-fake"
    helper.write_text('#!/bin/sh\nread server\n'
                      'if [ "$server" = "reg.example.com" ]; then\n'
                      '  echo \'{"Username": "carol", "Secret": "tok"}\'; else exit 1; fi\n')
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    path = _config(tmp_path, {"credHelpers": {"reg.example.com": "fake"}})
    assert docker_credentials("reg.example.com", path) == Credentials("carol", "tok")
    store = _config(tmp_path, {"credsStore": "fake"})
    assert docker_credentials("elsewhere.example.com", store) is None


def test_docker_config_path_honours_docker_config(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert docker_config_path() == tmp_path / "config.json"
