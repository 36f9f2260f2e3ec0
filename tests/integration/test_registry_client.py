"""The registry client against real registries: Debian's docker-registry on 127.0.0.1.

Images are built with the Docker engine and pushed to conftest's plain
registry; the TLS + htpasswd registry and the token-auth registry are filled
with ``copy_image``. Request counts come from response hooks on the client's
``requests`` session.
"""

from __future__ import annotations

import base64
import json
import math
import os
import threading
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
import requests

from builder.engines.base import BuildRequest
from builder.errors import Cancelled, RegistryError
from builder.registry.auth import Credentials
from builder.registry.client import RegistryClient
from builder.registry.copy import copy_image
from builder.registry.http import RegistryOptions
from builder.registry.media import DOCKER_MANIFEST, OCI_INDEX
from tests.integration import registry_fixtures
from tests.integration.conftest import TestImages
from tests.integration.registry_fixtures import PASSWORD, USERNAME

# The fixtures this module uses from registry_fixtures.
tls_registry = registry_fixtures.tls_registry
token_registry = registry_fixtures.token_registry
fault_proxy = registry_fixtures.fault_proxy

N_IMAGES = 3
FAST = {"backoff": 0.01}


@dataclass(frozen=True, eq=False)  # hashed by identity
class PushedImage:
    repo: str           # "kiln-test-xxxx/img0"
    tag: str
    digest: str         # as Docker recorded it when pushing
    labels: dict


def recording(session: requests.Session | None = None):
    """A session whose every response (token requests included) is noted as (method, path)."""
    session = session or requests.Session()
    seen: list[tuple[str, str]] = []

    def note(response, *args, **kwargs):
        seen.append((response.request.method, urlsplit(response.request.url).path))

    session.hooks["response"].append(note)
    return session, seen


def plain_client(registry, *, session=None, **options) -> RegistryClient:
    return RegistryClient(registry.host, RegistryOptions(insecure=True, **FAST, **options),
                          session=session)


def tls_client(reg, *, session=None, password: str = PASSWORD, **options) -> RegistryClient:
    options.setdefault("ca_cert", reg.ca_cert)
    return RegistryClient(reg.host, RegistryOptions(
        credentials=Credentials(USERNAME, password), **FAST, **options), session=session)


def token_client(reg, *, session=None, credentials=None, **options) -> RegistryClient:
    if credentials is None:
        credentials = Credentials(USERNAME, PASSWORD)
    return RegistryClient(reg.host, RegistryOptions(insecure=True, credentials=credentials,
                                                    **FAST, **options), session=session)


def blob_requests(seen) -> list[tuple[str, str]]:
    return [(method, path) for method, path in seen if "/blobs/" in path]


@pytest.fixture(scope="module")
def images(registry, docker_engine, busybox_base, tmp_path_factory) -> list[PushedImage]:
    """N small images (own layer, own labels) pushed by Docker to the plain registry."""
    tracked = TestImages(docker_engine)
    pushed = []
    try:
        for number in range(N_IMAGES):
            context = tmp_path_factory.mktemp(f"image{number}")
            (context / "stamp").write_text(uuid.uuid4().hex)
            (context / "Dockerfile").write_text(f"FROM {busybox_base}\nCOPY stamp /stamp\n")
            ref = tracked.ref(f"img{number}", "1.0", host=registry.host)
            labels = {"org.opencontainers.image.title": f"img{number}",
                      "org.kiln.test.stamp": (context / "stamp").read_text()}
            for _ in docker_engine.build(BuildRequest(image=f"img{number}",
                                                      context_dir=context, tags=(ref,),
                                                      labels=labels)):
                pass
            for _ in docker_engine.push(ref):
                pass
            info = docker_engine.inspect(ref)
            digest = next(d.partition("@")[2] for d in info.repo_digests
                          if d.startswith(registry.host + "/"))
            pushed.append(PushedImage(f"{tracked.namespace}/img{number}", "1.0", digest,
                                      labels))
        yield pushed
    finally:
        tracked.remove_all()


@pytest.fixture(autouse=True)
def no_docker_login(tmp_path_factory, monkeypatch):
    """No test sees the user's own Docker logins."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path_factory.mktemp("docker-config")))


def unique(name: str) -> str:
    return f"kiln-test-{uuid.uuid4().hex[:8]}/{name}"


# -- reading -------------------------------------------------------------------------

def test_ping_plain_tls_and_token_registries(registry, tls_registry, token_registry):
    plain_client(registry).ping()
    tls_client(tls_registry).ping()
    token_client(token_registry).ping()


def test_list_tags_follows_link_pagination(registry, fault_proxy, images):
    image = images[0]
    client = plain_client(registry)
    extra = ["1.0-1", "1.0-2", "1.0-3", "1.0-4"]
    for tag in extra:
        assert client.put_tag(image.repo, image.tag, tag) == image.digest
    expected = sorted([image.tag, *extra])

    # Debian's docker-registry 2.8 ignores ?n=: one page, whatever n says.
    assert sorted(client.list_tags(image.repo, page_size=2)) == expected

    # Through a proxy that pages as the distribution spec says (n entries, Link: rel="next").
    paged = RegistryClient(fault_proxy.host, RegistryOptions(insecure=True))
    assert paged.list_tags(image.repo, page_size=2) == expected
    pages = [path for method, path in fault_proxy.seen if "/tags/list" in path]
    assert len(pages) == math.ceil(len(expected) / 2)
    assert all("n=2" in path for path in pages)

    assert client.list_tags(unique("never-pushed")) == []


def test_manifest_reads_labels_from_config_without_layers(registry, images):
    session, seen = recording()
    client = plain_client(registry, session=session)
    for image in images:
        seen.clear()
        info = client.manifest(image.repo, image.tag)
        assert info is not None
        assert info.digest == image.digest
        assert info.media_type == DOCKER_MANIFEST
        assert dict(info.labels).items() >= image.labels.items()
        assert info.created and info.config_digest and info.size > 0
        # One GET of the manifest and one of the config blob: no layer is read.
        assert seen == [("GET", f"/v2/{image.repo}/manifests/{image.tag}"),
                        ("GET", f"/v2/{image.repo}/blobs/{info.config_digest}")]
        assert client.manifest(image.repo, image.digest) == info
    assert client.manifest(images[0].repo, "no-such-tag") is None
    assert client.manifest(unique("never-pushed"), "1.0") is None


def test_put_tag_keeps_the_digest(registry, images):
    client = plain_client(registry)
    image = images[1]
    assert client.put_tag(image.repo, image.tag, "promoted") == image.digest
    assert client.manifest_digest(image.repo, "promoted") == image.digest
    assert "promoted" in client.list_tags(image.repo)
    with pytest.raises(RegistryError, match="no such image"):
        client.put_tag(image.repo, "no-such-tag", "x")


# -- copying -------------------------------------------------------------------------

def test_copy_to_tls_registry_with_auth_keeps_digest_and_labels(registry, tls_registry,
                                                                 images):
    source = plain_client(registry)
    dest = tls_client(tls_registry)
    image = images[0]
    repo = unique("copied")
    assert copy_image(source, image.repo, image.tag, dest, repo, "2.0") == image.digest
    assert dest.list_tags(repo) == ["2.0"]
    copied, original = dest.manifest(repo, "2.0"), source.manifest(image.repo, image.tag)
    assert copied == original
    assert copied.digest == image.digest
    assert dict(copied.labels).items() >= image.labels.items()


def test_copy_within_one_registry_mounts_blobs(registry, images):
    session, seen = recording()
    client = plain_client(registry, session=session)
    image = images[1]
    repo = unique("mounted")
    assert copy_image(client, image.repo, image.tag, client, repo, "1.0") == image.digest
    blobs = blob_requests(seen)
    assert blobs, "the copy should have mounted the blobs"
    assert all(method == "POST" for method, _ in blobs)      # no GET, no upload PUT
    assert client.manifest(repo, "1.0").labels == client.manifest(image.repo, image.tag).labels


def test_unchanged_sync_stays_within_a_fixed_number_of_requests(registry, tls_registry,
                                                               images):
    repos = {image: unique(f"sync{number}") for number, image in enumerate(images)}
    first_source, first_dest = plain_client(registry), tls_client(tls_registry)
    for image, repo in repos.items():
        copy_image(first_source, image.repo, image.tag, first_dest, repo, image.tag)

    # A second run with new clients, as a new kiln-registry process would make.
    source_session, source_seen = recording()
    dest_session, dest_seen = recording()
    source = plain_client(registry, session=source_session)
    dest = tls_client(tls_registry, session=dest_session)
    for image, repo in repos.items():
        assert dest.list_tags(repo) == [image.tag]
        assert dict(dest.manifest(repo, image.tag).labels).items() >= image.labels.items()
    check = list(dest_seen)
    dest_seen.clear()
    for image, repo in repos.items():
        assert copy_image(source, image.repo, image.tag, dest, repo, image.tag) == image.digest
    copies = dest_seen + source_seen

    # The check: tags, manifest and config per image, plus one 401 answer for the first
    # request to the Basic-auth registry. An unchanged copy: a HEAD on each side.
    assert len(check) <= 3 * N_IMAGES + 1
    assert [path for _, path in blob_requests(check)
            if "/blobs/sha256:" not in path] == []                   # config GETs only
    assert len(copies) == 2 * N_IMAGES
    assert all(method == "HEAD" and "/manifests/" in path for method, path in copies)


def test_copy_of_an_index_copies_its_manifests_first(registry, tls_registry, images):
    source = plain_client(registry)
    repo = unique("multi")
    children = []
    for number, arch in enumerate(("amd64", "arm64")):
        image = images[number]
        copy_image(source, image.repo, image.tag, source, repo, f"child-{arch}")
        info = source.manifest(repo, f"child-{arch}")
        children.append({"mediaType": info.media_type, "digest": info.digest,
                         "size": info.size, "platform": {"os": "linux",
                                                         "architecture": arch}})
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                        "manifests": children[::-1]}).encode()
    digest = registry.put_manifest(repo, "1.0", index, OCI_INDEX)

    dest = tls_client(tls_registry)
    dest_repo = unique("multi")
    assert copy_image(source, repo, "1.0", dest, dest_repo, "1.0") == digest
    info = dest.manifest(dest_repo, "1.0")
    assert info.digest == digest and info.media_type == OCI_INDEX
    assert dict(info.labels).items() >= images[0].labels.items()   # the amd64 child's
    for child in children:
        assert dest.manifest_digest(dest_repo, child["digest"]) == child["digest"]


def test_blob_downloads_follow_redirects(registry, fault_proxy, tls_registry, images):
    fault_proxy.redirect_blobs = True
    session, seen = recording()
    source = RegistryClient(fault_proxy.host, RegistryOptions(insecure=True), session=session)
    image = images[0]
    info = source.manifest(image.repo, image.tag)       # its config blob is redirected
    assert dict(info.labels).items() >= image.labels.items()
    repo = unique("redirected")
    assert copy_image(source, image.repo, image.tag, tls_client(tls_registry), repo,
                      "1.0") == image.digest
    hops = [(method, path) for method, path in seen if "/blobs/sha256:" in path]
    assert len(hops) >= 4 and len(hops) % 2 == 0      # each GET: a 307, then the upstream
    assert source.requests_made == len(seen)


# -- faults ----------------------------------------------------------------------------

def test_5xx_during_a_copy_is_retried(registry, fault_proxy, images):
    source = plain_client(registry)
    dest = RegistryClient(fault_proxy.host, RegistryOptions(insecure=True, retries=3, **FAST))
    fault_proxy.pass_uploads, fault_proxy.fail_uploads = 1, 2
    image, repo = images[2], unique("retried")
    assert copy_image(source, image.repo, image.tag, dest, repo, "1.0") == image.digest
    assert fault_proxy.failed == 2
    assert dest.manifest(repo, "1.0").labels == source.manifest(image.repo, image.tag).labels


def test_5xx_beyond_the_retries_fails_naming_the_image_and_leaves_no_tag(registry,
                                                                         fault_proxy, images):
    source = plain_client(registry)
    dest = RegistryClient(fault_proxy.host, RegistryOptions(insecure=True, retries=2, **FAST))
    fault_proxy.pass_uploads, fault_proxy.fail_uploads = 1, 100
    image, repo = images[2], unique("failed")
    with pytest.raises(RegistryError) as caught:
        copy_image(source, image.repo, image.tag, dest, repo, "1.0")
    message = str(caught.value)
    assert f"{registry.host}/{image.repo}:{image.tag}" in message
    assert "blob" in message and "500" in message and "3 attempts" in message
    assert fault_proxy.failed == 3
    assert not [path for method, path in fault_proxy.seen
                if method == "PUT" and "/manifests/" in path]
    assert dest.manifest(repo, "1.0") is None
    assert dest.list_tags(repo) == []


def test_a_cancelled_copy_stops_within_its_upload_and_writes_no_tag(registry, tls_registry,
                                                                     images):
    cancel = threading.Event()
    session, seen = recording()
    # Cancelled as soon as the first upload is started: its body is never sent.
    session.hooks["response"].append(
        lambda response, *a, **k: cancel.set() if response.request.method == "POST" else None)
    source, dest = plain_client(registry), tls_client(tls_registry, session=session)
    image, repo = images[0], unique("cancelled")
    with pytest.raises(Cancelled) as caught:
        copy_image(source, image.repo, image.tag, dest, repo, "1.0", cancel)
    assert str(caught.value) == (
        f"interrupted while uploading blob {_short(image, source)} from "
        f"{registry.host}/{image.repo}:{image.tag}; {tls_registry.host}/{repo}:1.0 was not "
        f"written")
    assert [method for method, path in blob_requests(seen) if method != "HEAD"] == ["POST"]
    assert not [path for method, path in seen if method == "PUT"]
    assert dest.manifest(repo, "1.0") is None and dest.list_tags(repo) == []

    # set before the copy: not one blob is looked at
    session, seen = recording()
    dest = tls_client(tls_registry, session=session)
    with pytest.raises(Cancelled, match="interrupted before every blob was copied from"):
        copy_image(source, image.repo, image.tag, dest, repo, "1.0", cancel)
    assert blob_requests(seen) == []

    cancel.clear()
    assert copy_image(source, image.repo, image.tag, dest, repo, "1.0", cancel) == image.digest


def _short(image, source) -> str:
    """The short digest of an image's config blob (the first blob a copy uploads)."""
    config = source.manifest(image.repo, image.tag).config_digest
    return config[:len("sha256:") + 12]


def test_missing_image(registry, tls_registry):
    source, dest = plain_client(registry), tls_client(tls_registry)
    repo = unique("absent")
    assert source.manifest(repo, "1.0") is None
    assert source.manifest_digest(repo, "1.0") is None
    with pytest.raises(RegistryError, match=f"image {registry.host}/{repo}:1.0 not found"):
        copy_image(source, repo, "1.0", dest, repo, "1.0")
    assert dest.list_tags(repo) == []


def test_wrong_password_is_an_authentication_error_without_the_password(tls_registry):
    wrong = "not-the-" + PASSWORD
    with pytest.raises(RegistryError) as caught:
        tls_client(tls_registry, password=wrong).ping()
    text = str(caught.value)
    assert "authentication" in text and USERNAME in text
    assert wrong not in text and PASSWORD not in text
    assert wrong not in repr(Credentials(USERNAME, wrong))

    with pytest.raises(RegistryError, match="requires authentication"):
        RegistryClient(tls_registry.host, RegistryOptions(ca_cert=tls_registry.ca_cert)).ping()


def test_tls_problems_suggest_the_right_option(registry, tls_registry):
    with pytest.raises(RegistryError) as caught:
        tls_client(tls_registry, ca_cert=None).ping()
    assert "certificate verify failed" in str(caught.value)
    assert "--ca-cert" in str(caught.value)

    with pytest.raises(RegistryError, match="drop --insecure"):
        tls_client(tls_registry, ca_cert=None, insecure=True).ping()

    with pytest.raises(RegistryError, match="use --insecure"):
        RegistryClient(registry.host, RegistryOptions(**FAST)).ping()


# -- authentication ----------------------------------------------------------------

def test_credentials_from_docker_config(tls_registry, tmp_path, monkeypatch):
    auth = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    (tmp_path / "config.json").write_text(json.dumps(
        {"auths": {f"https://{tls_registry.host}": {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    RegistryClient(tls_registry.host, RegistryOptions(ca_cert=tls_registry.ca_cert)).ping()

    # A credential helper the config names.
    helper = tmp_path / "bin" / "docker-credential-kilntest"
    helper.parent.mkdir()
    helper.write_text("#!/bin/sh\nread server\n"
                      f"echo '{{\"ServerURL\": \"'$server'\", \"Username\": \"{USERNAME}\", "
                      f"\"Secret\": \"{PASSWORD}\"}}'\n")
    helper.chmod(0o755)
    (tmp_path / "config.json").write_text(json.dumps(
        {"auths": {}, "credHelpers": {tls_registry.host: "kilntest"}}))
    monkeypatch.setenv("PATH", f"{helper.parent}{os.pathsep}{os.environ['PATH']}")
    RegistryClient(tls_registry.host, RegistryOptions(ca_cert=tls_registry.ca_cert)).ping()


def test_bearer_tokens_are_fetched_once_per_scope(registry, token_registry, images):
    service = token_registry.token_service
    source = plain_client(registry)
    session, seen = recording()
    dest = token_client(token_registry, session=session)
    repos = {image: unique(f"token{number}") for number, image in enumerate(images)}
    for image, repo in repos.items():
        assert copy_image(source, image.repo, image.tag, dest, repo, "1.0") == image.digest
    for image, repo in repos.items():
        assert dest.manifest(repo, "1.0").labels == source.manifest(image.repo,
                                                                     image.tag).labels
        assert dest.list_tags(repo) == ["1.0"]
    scopes = [" ".join(sorted(request)) for request in service.requests]
    assert len(scopes) == len(set(scopes)), "a token was fetched twice for one scope"

    # Unchanged: a new client needs one token per repository and one HEAD per image.
    before = len(service.requests)
    session, seen = recording()
    again = token_client(token_registry, session=session)
    for image, repo in repos.items():
        copy_image(source, image.repo, image.tag, again, repo, "1.0")
    assert len(service.requests) - before == N_IMAGES
    assert len(seen) <= 1 + 2 * N_IMAGES   # one 401 challenge, then token + HEAD per image


def test_bearer_auth_failures(token_registry):
    wrong = "not-the-" + PASSWORD
    with pytest.raises(RegistryError) as caught:
        token_client(token_registry, credentials=Credentials(USERNAME, wrong)).list_tags(
            unique("x"))
    text = str(caught.value)
    assert "authentication" in text and "token service refused user" in text
    assert wrong not in text

    anonymous = RegistryClient(token_registry.host, RegistryOptions(insecure=True, **FAST))
    with pytest.raises(RegistryError, match="refused anonymous access"):
        anonymous.list_tags(unique("x"))


