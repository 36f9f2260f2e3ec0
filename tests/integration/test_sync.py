"""kiln-registry sync, promote, list, inspect and diff against real registries.

Debian's docker-registry on 127.0.0.1: conftest's plain one (the "public"
registry the engine publishes to) and registry_fixtures' TLS + htpasswd one
(a user's own registry, its CA made by the test). Images come from kiln-build
(the first test) or are small fingerprinted images built directly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest
import requests
import yaml

from builder.build.labels import FINGERPRINT
from builder.publish.origins import EngineSource, RegistrySource
from builder.publish.revisions import SetNaming
from builder.publish.sync import SyncSettings, SyncStatus, sync
from builder.registry.copy import copy_image
from tests.integration import registry_fixtures, sync_fixtures
from tests.integration.conftest import free_port
from tests.integration.registry_fixtures import PASSWORD
from tests.integration.sync_fixtures import fingerprint_of, plain_client, tls_args, tls_client

# Fixtures this module uses from the fixture modules.
tls_registry = registry_fixtures.tls_registry
fault_proxy = registry_fixtures.fault_proxy
image_maker = sync_fixtures.image_maker
slow_proxy = sync_fixtures.slow_proxy
no_docker_login = sync_fixtures.no_docker_login

TAG = "ocata"


def recording():
    """A session noting (method, path) of every response."""
    session = requests.Session()
    seen: list[tuple[str, str]] = []
    session.hooks["response"].append(
        lambda response, *a, **k: seen.append((response.request.method,
                                               urlsplit(response.request.url).path)))
    return session, seen


def engine_sync(registry, namespace, *extra, tag=TAG):
    return ["sync", "--namespace", namespace, "--tag", tag, "--destination", registry.host,
            "--insecure", "--retries", "1", *extra]


def tags_of(client, repository):
    return sorted(client.list_tags(repository))


def digests(client, repository, *tags):
    return [client.manifest_digest(repository, tag) for tag in tags]


# -- scenario 1: a fresh build from the engine to a public-style registry -------------------

def test_engine_to_registry_revisions(build, kiln_registry, registry, docker_engine, tmp_path):
    build.tags.append(TAG)
    ns, client = build.namespace, plain_client(registry.host)
    assert build("^leaf$", "--tag", TAG, "--build-args", "GREETING=one")[0].code == 0
    published = tmp_path / "published.json"
    args = engine_sync(registry, ns, "--output", published)

    first = kiln_registry(*args)
    assert first.code == 0, first.out + first.err
    assert "3 images: 3 pushed, 0 unchanged, 0 failed" in first.out
    for name in ("base", "mid", "leaf"):
        repo = f"{ns}/{name}"
        assert tags_of(client, repo) == [TAG, f"{TAG}-1"]
        current, revision = digests(client, repo, TAG, f"{TAG}-1")
        assert current == revision
        local = docker_engine.inspect(f"{ns}/{name}:{TAG}")
        info = client.manifest(repo, TAG)
        assert info.labels[FINGERPRINT] == local.labels[FINGERPRINT]
        assert info.config_digest == local.id
        # the tag the engine pushed from is gone again
        assert docker_engine.inspect(f"{registry.host}/{repo}:{TAG}-1") is None
    document = json.loads(published.read_text())
    assert document["tag"] == TAG and document["failed"] == []
    assert document["images"]["leaf"] == {
        "reference": f"{registry.host}/{ns}/leaf:{TAG}-1", "tag": f"{TAG}-1",
        "digest": client.manifest_digest(f"{ns}/leaf", TAG)}

    second = kiln_registry(*args)
    assert second.code == 0, second.err
    assert "3 images: 0 pushed, 3 unchanged, 0 failed" in second.out
    assert all(tags_of(client, f"{ns}/{n}") == [TAG, f"{TAG}-1"]
               for n in ("base", "mid", "leaf"))

    assert build("^leaf$", "--tag", TAG, "--build-args", "GREETING=two")[0].code == 0
    dry = kiln_registry(*args, "--dry-run")
    assert dry.code == 0, dry.err
    assert f"would push leaf  {registry.host}/{ns}/leaf:{TAG}-2, then {TAG} moves to it" \
        in dry.out
    assert "(dry run: nothing changed)" in dry.out
    assert tags_of(client, f"{ns}/leaf") == [TAG, f"{TAG}-1"]
    third = kiln_registry(*engine_sync(registry, ns, "--output", tmp_path / "out.yaml"))
    assert third.code == 0, third.err
    assert "3 images: 1 pushed, 2 unchanged, 0 failed" in third.out
    assert tags_of(client, f"{ns}/leaf") == [TAG, f"{TAG}-1", f"{TAG}-2"]
    current, newest, oldest = digests(client, f"{ns}/leaf", TAG, f"{TAG}-2", f"{TAG}-1")
    assert current == newest != oldest
    assert tags_of(client, f"{ns}/mid") == [TAG, f"{TAG}-1"]
    listed = yaml.safe_load((tmp_path / "out.yaml").read_text())
    assert {name: entry["tag"] for name, entry in listed["images"].items()} == {
        "base": f"{TAG}-1", "mid": f"{TAG}-1", "leaf": f"{TAG}-2"}

    # list: revisions with fingerprints and created dates
    shown = kiln_registry("list", "leaf", "--registry", registry.host, "--insecure",
                          "--namespace", ns, "--tag", TAG, "--format", "json")
    assert shown.code == 0, shown.err
    tags = json.loads(shown.out)["images"]["leaf"]["tags"]
    assert [t["tag"] for t in tags] == [TAG, f"{TAG}-2", f"{TAG}-1"]
    assert [t["revision"] for t in tags] == [None, 2, 1]
    assert all(t["fingerprint"].startswith("sha256:") and t["created"] for t in tags)
    text = kiln_registry("list", "^leaf$", "--registry", registry.host, "--insecure",
                         "--namespace", ns, "--tag", TAG).out
    assert f"  {TAG}-2  fingerprint sha256:" in text and f"({TAG})" in text

    # inspect and diff read registry references from the image config
    ref_old = f"{registry.host}/{ns}/leaf:{TAG}-1"
    inspected = kiln_registry("inspect", ref_old, "--insecure", "--format", "json")
    assert inspected.code == 0, inspected.err
    assert json.loads(inspected.out)["manifest"]["build_args"] == {"GREETING": "one"}
    diff = kiln_registry("diff", ref_old, f"{ns}/leaf:{TAG}", "--insecure", "--format", "json")
    assert diff.code == 0, diff.err
    assert json.loads(diff.out)["build_args"] == {"GREETING": {"a": "one", "b": "two"}}


def test_no_change_sync_costs_a_fixed_number_of_requests_per_image(
        image_maker, kiln_registry, registry, tls_registry):
    count = 4
    names = [f"img{n}" for n in range(count)]
    for name in names:
        image_maker.make(name, TAG, "1")
    ns = image_maker.namespace
    assert kiln_registry(*engine_sync(registry, ns)).code == 0
    assert kiln_registry("sync", "--source", registry.host, "--source-insecure",
                         "--namespace", ns, "--tag", TAG, "--destination", tls_registry.host,
                         *tls_args(tls_registry), stdin=PASSWORD).code == 0
    naming = SetNaming(ns, "", TAG)
    settings = SyncSettings(source=naming, destination=naming)

    # engine -> registry: per image the tag list, a HEAD of T and the newest revision's
    # manifest (its config digest is the local image id); plus one ping.
    session, seen = recording()
    dest = plain_client(registry.host, session=session)
    results = sync(EngineSource(image_maker.engine), dest, [], settings)
    assert [r.status for r in results] == [SyncStatus.UNCHANGED] * count
    assert len(seen) <= 3 * count + 1, seen
    assert not [path for _, path in seen if "/blobs/" in path]

    # registry -> TLS registry: the same, one 401 answer more, and one HEAD per image and
    # the catalog at the source.
    source_session, source_seen = recording()
    dest_session, dest_seen = recording()
    source = plain_client(registry.host, session=source_session)
    dest = tls_client(tls_registry, session=dest_session)
    results = sync(RegistrySource(source), dest, [], settings)
    assert [r.status for r in results] == [SyncStatus.UNCHANGED] * count
    assert len(dest_seen) <= 3 * count + 2, dest_seen
    assert len(source_seen) <= count + 1, source_seen
    assert not [path for _, path in dest_seen + source_seen if "/blobs/" in path]


# -- release tags ------------------------------------------------------------------------------

def test_release_tags_are_written_once(image_maker, kiln_registry, registry, tmp_path):
    ns, client, release = image_maker.namespace, plain_client(registry.host), "4.0.0"
    repo = f"{ns}/nova"
    image_maker.make("nova", release, "1")
    output = tmp_path / "release.yml"
    first = kiln_registry(*engine_sync(registry, ns, "--output", output, tag=release))
    assert first.code == 0, first.err
    assert tags_of(client, repo) == [release]
    original = client.manifest_digest(repo, release)
    assert yaml.safe_load(output.read_text())["images"]["nova"]["tag"] == release
    assert "0 pushed, 1 unchanged" in kiln_registry(*engine_sync(registry, ns,
                                                                 tag=release)).out

    image_maker.make("nova", release, "2")
    refused = kiln_registry(*engine_sync(registry, ns, tag=release))
    assert refused.code == 1
    assert f"release tag {registry.host}/{repo}:{release} is immutable" in refused.out
    assert "--force" in refused.out
    assert client.manifest_digest(repo, release) == original

    forced = kiln_registry(*engine_sync(registry, ns, "--force", tag=release))
    assert forced.code == 0, forced.out
    assert tags_of(client, repo) == [release]
    assert client.manifest(repo, release).labels[FINGERPRINT] == fingerprint_of("nova 2")

    # a tag outside the release pattern gets revisions; a custom pattern makes it a release
    image_maker.make("nova", "stable", "1")
    assert kiln_registry(*engine_sync(registry, ns, "--release-pattern", "^stable$",
                                      tag="stable")).code == 0
    assert tags_of(client, repo) == [release, "stable"]


# -- scenario 2: a public-style registry to a user's own, with its own revisions ------------

def test_registry_to_registry_numbers_revisions_independently(
        image_maker, kiln_registry, registry, tls_registry):
    ns = image_maker.namespace
    public, private = plain_client(registry.host), tls_client(tls_registry)
    repo = f"{ns}/glance"
    mirror = ["sync", "--source", registry.host, "--source-insecure", "--namespace", ns,
              "--tag", TAG, "--destination", tls_registry.host, "--destination-namespace",
              f"{ns}-mine", *tls_args(tls_registry)]
    for version in ("1", "2"):
        image_maker.make("glance", TAG, version)
        assert kiln_registry(*engine_sync(registry, ns)).code == 0
    assert tags_of(public, repo) == [TAG, f"{TAG}-1", f"{TAG}-2"]

    first = kiln_registry(*mirror, stdin=PASSWORD)
    assert first.code == 0, first.out + first.err
    mine = f"{ns}-mine/glance"
    assert tags_of(private, mine) == [TAG, f"{TAG}-1"]
    # the copy keeps the digest: the user's -1 is the public -2
    assert digests(private, mine, TAG, f"{TAG}-1") == digests(public, repo, TAG, TAG)
    assert "0 pushed, 1 unchanged" in kiln_registry(*mirror, stdin=PASSWORD).out

    image_maker.make("glance", TAG, "3")
    assert kiln_registry(*engine_sync(registry, ns)).code == 0
    second = kiln_registry(*mirror, stdin=PASSWORD)
    assert second.code == 0, second.out
    assert tags_of(public, repo) == [TAG, f"{TAG}-1", f"{TAG}-2", f"{TAG}-3"]
    assert tags_of(private, mine) == [TAG, f"{TAG}-1", f"{TAG}-2"]
    assert digests(private, mine, f"{TAG}-2") == digests(public, repo, f"{TAG}-3")
    assert digests(private, mine, TAG) == digests(private, mine, f"{TAG}-2")


# -- promote -----------------------------------------------------------------------------------

def test_promote_retags_deployed_to_old_and_the_candidate_to_deployed(
        image_maker, kiln_registry, registry):
    ns, client = image_maker.namespace, plain_client(registry.host)
    repo = f"{ns}/nova"
    for version in ("1", "2"):
        image_maker.make("nova", TAG, version)
        assert kiln_registry(*engine_sync(registry, ns)).code == 0
    rev1, rev2 = digests(client, repo, f"{TAG}-1", f"{TAG}-2")
    args = ["nova", "--registry", registry.host, "--insecure", "--namespace", ns,
            "--tag", TAG]

    first = kiln_registry("promote", *args, "--revision", "1")
    assert first.code == 0, first.out + first.err
    assert f"{TAG}-deployed -> {TAG}-1" in first.out
    assert digests(client, repo, f"{TAG}-deployed", f"{TAG}-old") == [rev1, None]

    dry = kiln_registry("promote", *args, "--check", "--dry-run")
    assert dry.code == 0, dry.err
    assert f"--- {registry.host}/{repo}:{TAG}-1" in dry.out
    assert f"+++ {registry.host}/{repo}:{TAG}-2" in dry.out
    assert f"fingerprint: {fingerprint_of('nova 1')} -> {fingerprint_of('nova 2')}" in dry.out
    assert "~ build_arg VERSION: 1 -> 2" in dry.out
    assert "would promote" in dry.out
    assert digests(client, repo, f"{TAG}-deployed", f"{TAG}-old") == [rev1, None]

    promoted = kiln_registry("promote", *args, "--check")
    assert promoted.code == 0, promoted.err
    assert f"{TAG}-deployed -> {TAG}-2, {TAG}-old -> {TAG}-1" in promoted.out
    assert digests(client, repo, f"{TAG}-deployed", f"{TAG}-old", TAG) == [rev2, rev1, rev2]

    again = kiln_registry("promote", *args)
    assert again.code == 0 and f"{TAG}-deployed is already {TAG}-2" in again.out
    assert digests(client, repo, f"{TAG}-deployed", f"{TAG}-old") == [rev2, rev1]

    missing = kiln_registry("promote", *args, "--revision", "7")
    assert missing.code == 1 and f"{repo}:{TAG}-7 does not exist" in missing.out


# -- interruption ------------------------------------------------------------------------------

def test_sync_killed_between_revision_and_tag_move_is_finished_by_a_rerun(
        image_maker, kiln_registry, registry):
    ns, client = image_maker.namespace, plain_client(registry.host)
    repo = f"{ns}/keystone"
    args = ["sync", "--source", registry.host, "--source-insecure", "--namespace", ns,
            "--destination-namespace", f"{ns}-copy", "--tag", TAG,
            "--destination", registry.host, "--insecure"]
    for version in ("1", "2"):
        image_maker.make("keystone", TAG, version)
        assert kiln_registry(*engine_sync(registry, ns)).code == 0
        if version == "1":
            assert kiln_registry(*args).code == 0
    copy = f"{ns}-copy/keystone"
    before = client.manifest_digest(copy, TAG)

    killed = subprocess.run([sys.executable, "-m", "builder.cli.registry", *args],
                            env={**os.environ, "KILN_SYNC_STOP_AFTER": "revision"},
                            capture_output=True, text=True, timeout=60)
    assert killed.returncode == 75, killed.stderr
    assert f"stopping after {copy}:{TAG}-2" in killed.stderr
    # the revision is complete, T has not moved
    assert tags_of(client, copy) == [TAG, f"{TAG}-1", f"{TAG}-2"]
    assert client.manifest_digest(copy, TAG) == before
    assert client.manifest_digest(copy, f"{TAG}-2") == client.manifest_digest(repo, TAG)

    rerun = kiln_registry(*args)
    assert rerun.code == 0, rerun.out + rerun.err
    assert f"moved      keystone  {TAG} -> {registry.host}/{copy}:{TAG}-2 ({TAG} lagged " \
           f"behind {TAG}-2)" in rerun.out
    assert tags_of(client, copy) == [TAG, f"{TAG}-1", f"{TAG}-2"]
    assert digests(client, copy, TAG) == digests(client, copy, f"{TAG}-2")
    assert "1 image: 0 pushed, 1 moved, 0 unchanged, 0 failed" in rerun.out
    final = kiln_registry(*args)
    assert "1 image: 0 pushed, 1 unchanged, 0 failed" in final.out


# -- bad input and faults ------------------------------------------------------------------------

def test_unknown_image_unreachable_registry_and_bad_password(
        image_maker, kiln_registry, registry, tls_registry):
    ns = image_maker.namespace
    image_maker.make("cinder", TAG, "1")

    unknown = kiln_registry(*engine_sync(registry, ns), "cinderx")
    assert unknown.code == 2
    assert "no image at the local docker engine tagged" in unknown.err
    assert "matches 'cinderx' (images: cinder)" in unknown.err

    empty = kiln_registry(*engine_sync(registry, f"{ns}-none"))
    assert empty.code == 2 and "no image of the set is at the local docker engine" in empty.err

    port = free_port()
    unreachable = kiln_registry("sync", "--namespace", ns, "--tag", TAG, "--destination",
                                f"127.0.0.1:{port}", "--insecure", "--retries", "0")
    assert unreachable.code == 1
    assert f"reaching registry 127.0.0.1:{port} failed after 1 attempt: cannot reach" \
        in unreachable.err
    assert "is the registry running" in unreachable.err

    refused = kiln_registry("list", "--registry", tls_registry.host, "--namespace", ns,
                            "--ca-cert", tls_registry.ca_cert, "--username", "kiln",
                            "--password-stdin", stdin="wrong-password\n")
    assert refused.code == 1
    assert f"authentication to registry {tls_registry.host} failed" in refused.err
    assert "wrong-password" not in refused.err + refused.out

    untrusted = kiln_registry("list", "--registry", tls_registry.host, "--namespace", ns)
    assert untrusted.code == 1 and "--ca-cert" in untrusted.err

    bad = kiln_registry("sync", "--namespace", ns, "--destination", registry.host,
                        "--output", "published.txt")
    assert bad.code == 2 and "must end in .json, .yaml or .yml" in bad.err


def test_5xx_during_a_copy_is_retried_then_fails_naming_the_image(
        image_maker, kiln_registry, registry, fault_proxy):
    ns, client = image_maker.namespace, plain_client(registry.host)
    for name in ("heat", "nova"):
        image_maker.make(name, TAG, "1")
    assert kiln_registry(*engine_sync(registry, ns)).code == 0
    args = ["sync", "--source", registry.host, "--source-insecure", "--namespace", ns,
            "--tag", TAG, "--destination", fault_proxy.host, "--insecure", "--retries", "1",
            "--destination-namespace", f"{ns}-copy", "--threads", "1"]

    # heat, then nova: the first upload fails once (retried), every later one always
    fault_proxy.fail_uploads = 1
    retried = kiln_registry(*args, "heat")
    assert retried.code == 0, retried.out + retried.err
    assert fault_proxy.failed == 1
    fault_proxy.fail_uploads = 100
    failed = kiln_registry(*args)
    assert failed.code == 1
    line = next(line for line in failed.out.splitlines() if line.startswith("failed"))
    assert "nova" in line and f"copying {registry.host}/{ns}/nova@sha256:" in line
    assert f"to {fault_proxy.host}/{ns}-copy/nova:{TAG}-1 failed" in line
    assert "500" in line and "2 attempts" in line
    assert "unchanged  heat" in failed.out
    assert "1 failed" in failed.out
    # nothing tagged: neither the revision nor T
    assert client.list_tags(f"{ns}-copy/nova") == []
    assert not [path for method, path in fault_proxy.seen
                if method == "PUT" and "/nova/manifests/" in path]


def test_destination_tags_that_are_not_kiln_revisions(image_maker, kiln_registry, registry):
    ns, client = image_maker.namespace, plain_client(registry.host)
    image_maker.make("horizon", TAG, "1")
    image_maker.make("other", "foreign", "1")
    assert kiln_registry(*engine_sync(registry, ns, tag="foreign")).code == 0
    # someone pushed horizon:ocata by hand: no revisions
    repo = f"{ns}/horizon"
    foreign = copy_image(client, f"{ns}/other", "foreign-1", client, repo, TAG)

    refused = kiln_registry(*engine_sync(registry, ns), "horizon")
    assert refused.code == 1
    assert f"destination tags are not kiln revisions: {registry.host}/{repo}:{TAG} exists " \
           f"but no {TAG}-N revision does" in refused.out
    assert tags_of(client, repo) == [TAG]
    assert client.manifest_digest(repo, TAG) == foreign

    forced = kiln_registry(*engine_sync(registry, ns, "--force"), "horizon")
    assert forced.code == 0, forced.out
    assert tags_of(client, repo) == [TAG, f"{TAG}-1"]
    assert digests(client, repo, TAG) == digests(client, repo, f"{TAG}-1") != [foreign]

    # T moved by hand to an image that is none of the revisions
    client.put_tag(repo, foreign, TAG)
    moved = kiln_registry(*engine_sync(registry, ns), "horizon")
    assert moved.code == 1
    assert f"{repo}:{TAG} names an image that is none of its revisions" in moved.out
    assert client.manifest_digest(repo, TAG) == foreign


# -- Ctrl-C --------------------------------------------------------------------------------------

def complete(client, repository, reference) -> bool:
    """Whether ``reference`` names a manifest whose config and layers the registry holds."""
    info = client.manifest(repository, reference, labels=False)
    if info is None:
        return False
    status, _, body = client_get(client, f"/v2/{repository}/manifests/{info.digest}")
    document = json.loads(body)
    blobs = [document["config"]["digest"]] + [layer["digest"] for layer in document["layers"]]
    return status == 200 and all(
        requests.head(f"{client.base_url}/v2/{repository}/blobs/{blob}",
                      timeout=10).status_code == 200 for blob in blobs)


def client_get(client, path):
    response = requests.get(client.base_url + path, timeout=10, headers={
        "Accept": "application/vnd.docker.distribution.manifest.v2+json, "
                  "application/vnd.oci.image.manifest.v1+json"})
    return response.status_code, response.headers, response.content


@pytest.mark.parametrize("source", ["registry", "engine"])
def test_ctrl_c_reports_and_outputs_exactly_what_was_published(
        source, image_maker, kiln_registry, registry, slow_proxy, tmp_path):
    ns, client = image_maker.namespace, plain_client(registry.host)
    names = [f"svc{n}" for n in range(6)]
    for name in names:
        image_maker.make(name, TAG, "1")
        image_maker.tracked.track(f"{slow_proxy.host}/{ns}-copy/{name}:{TAG}-1")
    common = ["--namespace", ns, "--destination-namespace", f"{ns}-copy", "--tag", TAG,
              "--insecure", "--threads", "2"]
    if source == "registry":
        assert kiln_registry(*engine_sync(registry, ns)).code == 0
        common += ["--source", registry.host, "--source-insecure"]
    output = tmp_path / "published.json"
    # svc1's first blob upload is held until after the Ctrl-C: svc1 is in flight then
    slow_proxy.upload_delay, slow_proxy.hold = 0.2, f"/{ns}-copy/svc1/blobs/uploads/"
    process = subprocess.Popen(
        [sys.executable, "-m", "builder.cli.registry", "sync", *common,
         "--destination", slow_proxy.host, "--output", output],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Ctrl-C once a first image is published (its T moved), svc1 being in flight
        deadline = time.monotonic() + 60
        while not (slow_proxy.held.is_set() and any(
                path.endswith(f"/manifests/{TAG}") for path in slow_proxy.tagged)):
            assert time.monotonic() < deadline and process.poll() is None, \
                process.communicate()
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        time.sleep(0.5)
        slow_proxy.release.set()
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, out + err
    assert "Traceback" not in err
    assert "6 images: " in out, out + err     # the report, despite the interruption

    # What the registry holds: for each image, T and T-1 together, complete, or nothing.
    published = set()
    for name in names:
        repo = f"{ns}-copy/{name}"
        tags = tags_of(client, repo)
        if TAG in tags:
            assert tags == [TAG, f"{TAG}-1"], (name, tags)
            assert digests(client, repo, TAG) == digests(client, repo, f"{TAG}-1")
            assert complete(client, repo, TAG), name
            published.add(name)
        else:
            # a copy is stopped before its revision is written; an engine push finishes
            # it, and then T moves
            assert tags == [], (name, tags)
    assert published and published != set(names), (published, out, err)
    svc1 = next(line for line in out.splitlines() if line.split()[1:2] == ["svc1"])
    if source == "registry":
        # the copy stopped within its upload or before its next blob: nothing written
        assert svc1.startswith("stopped    svc1  interrupted "), out
        assert f" from {registry.host}/{ns}/svc1@sha256:" in svc1
        assert svc1.endswith(f"; {slow_proxy.host}/{ns}-copy/svc1:{TAG}-1 was not written")
        assert not [path for path in slow_proxy.tagged if "/svc1/" in path]
    else:
        # the engine's push is not stopped: it finished, and T moved to it
        assert svc1.startswith("pushed     svc1  "), out

    reported = {line.split()[1] for line in out.splitlines() if line.startswith("pushed ")}
    stopped = {line.split()[1] for line in out.splitlines() if line.startswith("stopped ")}
    assert reported == published, out
    assert stopped == set(names) - published, out
    assert f"6 images: {len(published)} pushed, 0 unchanged, 0 failed, " \
           f"{6 - len(published)} stopped" in out
    assert f"interrupted: {6 - len(published)} of 6 images not synced" in err
    document = json.loads(output.read_text())
    assert set(document["images"]) == published
    assert document["stopped"] == sorted(set(names) - published)
    assert document["failed"] == []
    for name in published:
        assert document["images"][name] == {
            "reference": f"{slow_proxy.host}/{ns}-copy/{name}:{TAG}-1", "tag": f"{TAG}-1",
            "digest": client.manifest_digest(f"{ns}-copy/{name}", TAG)}

    # a rerun converges: the rest is pushed, what was published is left alone
    slow_proxy.upload_delay = 0
    rerun = kiln_registry("sync", *common, "--destination", slow_proxy.host, "--output",
                          output)
    assert rerun.code == 0, rerun.out + rerun.err
    assert f"6 images: {6 - len(published)} pushed, {len(published)} unchanged, 0 failed" \
        in rerun.out
    for name in names:
        repo = f"{ns}-copy/{name}"
        assert tags_of(client, repo) == [TAG, f"{TAG}-1"]
        assert complete(client, repo, TAG)
    assert set(json.loads(output.read_text())["images"]) == set(names)


def test_a_second_ctrl_c_stops_at_once_and_a_rerun_converges(
        image_maker, kiln_registry, registry, slow_proxy):
    ns, client = image_maker.namespace, plain_client(registry.host)
    names = ["api", "svc1", "worker"]
    for name in names:
        image_maker.make(name, TAG, "1")
    assert kiln_registry(*engine_sync(registry, ns)).code == 0
    args = ["sync", "--source", registry.host, "--source-insecure", "--namespace", ns,
            "--destination-namespace", f"{ns}-copy", "--tag", TAG, "--insecure",
            "--destination", slow_proxy.host, "--threads", "3"]
    # svc1's copy hangs once its blobs are copied, putting its revision's manifest
    slow_proxy.hold = f"/{ns}-copy/svc1/manifests/"
    process = subprocess.Popen([sys.executable, "-m", "builder.cli.registry", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert slow_proxy.held.wait(60), process.communicate()
        process.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert process.poll() is None          # still waiting for svc1
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    finally:
        slow_proxy.release.set()
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, out + err
    assert "interrupted again: stopping now" in err and "Traceback" not in err
    # (the manifest held may still reach the registry: T-1 without T, which a rerun moves)
    assert TAG not in tags_of(client, f"{ns}-copy/svc1")
    for name in names:
        repo = f"{ns}-copy/{name}"
        if TAG in tags_of(client, repo):
            assert complete(client, repo, TAG)
            assert digests(client, repo, TAG) == digests(client, repo, f"{TAG}-1")

    slow_proxy.hold = None
    rerun = kiln_registry(*args)
    assert rerun.code == 0, rerun.out + rerun.err
    for name in names:
        assert tags_of(client, f"{ns}-copy/{name}") == [TAG, f"{TAG}-1"]
