"""kiln-registry end to end, without an engine or a registry: bad input is one
sentence and exit code 2, before any engine or registry is used.

What needs an engine or a registry is in tests/integration (test_sync.py,
test_find.py, test_sbom.py).
"""

from __future__ import annotations

import pytest

from tests.conftest import free_port


@pytest.fixture(autouse=True)
def no_docker_login(tmp_path_factory, monkeypatch):
    """No test sees the user's own Docker logins."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path_factory.mktemp("docker-config")))


# -- sync, inspect, diff -------------------------------------------------------------

def test_invalid_references_are_one_sentence_before_any_engine_or_registry_call(
        kiln_registry):
    host = f"127.0.0.1:{free_port()}"      # no registry: nothing may be read
    cases = {
        "127.0.0.1:99999/x:y": "port 99999 of registry 127.0.0.1:99999 is not between 1 "
                               "and 65535",
        "": "it is empty (give one such as kolla/nova:latest",
        "Kolla/Nova:x": "its repository name 'Kolla/Nova' must be lower-case",
        f"{host}/Kolla/nova:1": "its repository name 'Kolla/nova' must be lower-case",
        "a:b:c": "'a:b' is not a valid repository name",
        "kolla/nova:": "its tag is empty",
        "kolla/nova@sha256:zz": "its digest 'sha256:zz' is not algorithm:hex",
        "kolla/nova:a b": "it contains white space",
    }
    for ref, problem in cases.items():
        # --engine names no engine: the reference is refused before one is loaded
        shown = kiln_registry("inspect", ref, "--insecure", "--engine", "no-such-engine")
        assert shown.code == 2, (ref, shown.err)
        assert shown.err.startswith(f"kiln-registry: error: invalid image reference "
                                    f"{ref!r}: {problem}"), shown.err
        assert shown.err.count("\n") == 1 and shown.out == ""
    # diff checks both references before reading the first (from a registry not there)
    diff = kiln_registry("diff", f"{host}/kiln-test-none/x:1", "a:b:c", "--insecure")
    assert diff.code == 2 and "invalid image reference 'a:b:c'" in diff.err, diff.err
    assert "no image" not in diff.err

    bad_port = kiln_registry("sync", "--destination", "127.0.0.1:99999", "--insecure")
    assert bad_port.code == 2
    assert bad_port.err == ("kiln-registry: error: port 99999 of registry 127.0.0.1:99999 "
                            "is not between 1 and 65535 (give a registry as host or "
                            "host:port)\n")



# -- find ------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["less<<1", "--local"], "invalid package constraint 'less<<1': unknown operator '<<'"),
    (["deb:less<1:", "--local"], "is not a Debian version"),
    (["", "--local"], "the package constraint is empty"),
    (["less", "--local", "--image", "x"], "--image names images of a registry"),
    (["less", "--registry", "no/such"], "must be given as host or host:port"),
])
def test_find_bad_input_is_one_line_and_exit_2(kiln_registry, args, message):
    result = kiln_registry("find", *args)
    assert result.code == 2, result.out + result.err
    assert message in result.err
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err
    assert result.out == ""


@pytest.mark.parametrize("args", [["less", "--local", "--format", "yaml"],
                                  ["less"],
                                  ["less", "--local", "--registry", "127.0.0.1:1"]])
def test_find_bad_options_exit_2(kiln_registry, args):
    result = kiln_registry("find", *args)
    assert result.code == 2, result.out + result.err
    assert "Traceback" not in result.err and result.out == ""



# -- sbom ------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["kiln/a:latest", "--format", "swid"], "invalid choice: 'swid'"),
    (["Kiln/A:latest"], "must be lower-case"),
    (["kiln/a:latest", "--output", "/nonexistent-dir/x.json"], "does not exist"),
])
def test_sbom_bad_input_exit_2(kiln_registry, args, message):
    result = kiln_registry("sbom", *args)
    assert result.code == 2, result.out + result.err
    assert message in result.err and "Traceback" not in result.err and result.out == ""
