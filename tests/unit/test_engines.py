"""The engines without an engine: names, error messages, refusals before any call.

What needs a running engine is in tests/integration (test_engines.py for
every engine, test_docker_engine.py for Docker's own).
"""

from __future__ import annotations

import pytest

from builder.engines import load_engine
from builder.engines.base import BuildRequest, EngineError, EngineOptions
from builder.engines.docker import DockerEngine, split_reference
from builder.engines.process import error_message
from builder.engines.tool import familiar, is_loopback_registry

CLI_ENGINES = ["podman", "buildah"]     # the engines driven through a command-line tool


def build(engine, context, dockerfile: str, tags) -> list[str]:
    context.mkdir(parents=True, exist_ok=True)
    (context / "Dockerfile").write_text(dockerfile)
    return list(engine.build(BuildRequest(image="test-image", context_dir=context,
                                          tags=tuple(tags))))


# -- Docker ----------------------------------------------------------------------

def test_load_engine_by_name():
    assert isinstance(load_engine("docker"), DockerEngine)


@pytest.mark.parametrize("ref, expected", [
    ("base", ("base", None, None)),
    ("kiln/base:1.0", ("kiln/base", "1.0", None)),
    ("127.0.0.1:5000/kiln/base", ("127.0.0.1:5000/kiln/base", None, None)),
    ("127.0.0.1:5000/kiln/base:1.0", ("127.0.0.1:5000/kiln/base", "1.0", None)),
    ("reg:5000/base@sha256:abc", ("reg:5000/base", None, "sha256:abc")),
    ("reg:5000/base:1@sha256:abc", ("reg:5000/base", "1", "sha256:abc")),
])
def test_split_reference(ref, expected):
    assert split_reference(ref) == expected


def test_build_with_unreachable_engine_raises_engine_error(tmp_path):
    engine = DockerEngine(EngineOptions(base_url="unix:///nonexistent.sock"))
    with pytest.raises(EngineError, match="cannot reach the Docker engine"):
        build(engine, tmp_path / "x", "FROM scratch\n", ["kiln-test-none/x:1"])


def test_ping_bogus_endpoint():
    engine = DockerEngine(EngineOptions(base_url="unix:///nonexistent.sock"))
    with pytest.raises(EngineError) as caught:
        engine.ping()
    assert str(caught.value) == ("cannot reach the Docker engine at unix:///nonexistent.sock: "
                                 "no such file or directory (is dockerd running?)")



# -- the command-line engines and what they share ---------------------------------

@pytest.mark.parametrize("ref, loopback", [
    ("127.0.0.1:5000/kiln/base:1", True),
    ("127.1.2.3:5000/kiln/base", True),
    ("localhost:5000/kiln/base", True),
    ("localhost/kiln/base", True),
    ("[::1]:5000/kiln/base", True),
    ("registry.example.com:5000/kiln/base", False),
    ("10.0.0.1:5000/kiln/base", False),
    ("kiln/base:1", False),               # Docker Hub
    ("localhost", False),                 # an image called localhost, on Docker Hub
])
def test_loopback_registries_are_recognised(ref, loopback):
    assert is_loopback_registry(ref) is loopback


@pytest.mark.parametrize("name, shown", [
    ("localhost/kiln/base:1", "kiln/base:1"),
    ("docker.io/library/busybox:latest", "busybox:latest"),
    ("docker.io/kolla/base:1", "kolla/base:1"),
    ("127.0.0.1:5000/kiln/base:1", "127.0.0.1:5000/kiln/base:1"),
    ("localhost:5000/kiln/base:1", "localhost:5000/kiln/base:1"),
])
def test_stored_names_are_shown_as_docker_shows_them(name, shown):
    assert familiar(name) == shown


def test_error_message_of_a_multi_error():
    output = ["some progress", "Error: 2 errors occurred:", "\t* a: image not known",
              "\t* b: image not known", ""]
    assert error_message(output) == "a: image not known; b: image not known"


@pytest.mark.parametrize("name", CLI_ENGINES)
def test_missing_program_is_one_clear_sentence(name, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    engine = load_engine(name)
    expected = f"{name} is not installed: apt-get install {name}"
    with pytest.raises(EngineError) as caught:
        engine.ping()
    assert str(caught.value) == expected
    with pytest.raises(EngineError, match=expected):
        engine.inspect("kiln-test/anything:1")


def test_buildah_has_no_remote_mode():
    engine = load_engine("buildah", EngineOptions(base_url="unix:///run/podman/podman.sock"))
    with pytest.raises(EngineError, match="buildah works on this machine only"):
        engine.ping()
