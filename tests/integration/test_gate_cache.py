"""A gate's buildset on real parts (issue #15): the real Docker engine, a real
``docker-registry`` on 127.0.0.1 as ``--cache-registry`` (behind a proxy
that records every request), and a sibling checkout under ``src/`` taken
with ``--source-root``.

- job A builds ``base -> lib-image`` from a checkout with an uncommitted
  change and pushes both to the cache;
- job B, on an emptied engine, builds ``app-image``: its ancestors come from
  the cache (one lookup each, no blob uploaded), and it shows job A's change;
- job C, with another uncommitted change, rebuilds lib-image and app-image
  and reuses base from the cache;
- a corrupt entry (a fingerprint tag naming another fingerprint's image) is
  ignored with a warning and the image is built.
"""

from __future__ import annotations

import json

import git
import pytest

from builder.build.cache import cache_tag
from builder.build.labels import FINGERPRINT
from builder.registry.client import RegistryClient
from builder.registry.http import RegistryOptions
from tests.integration.registry_fixtures import FaultProxy

pytestmark = pytest.mark.timeout(600)

NAMES = ("base", "lib-image", "app-image")
TEMPLATES = {
    "base": "FROM {{ busybox }}\nRUN echo base > /base.txt\n",
    "lib-image": ('FROM {{ image_ref("base") }}\nCOPY lib-image-archive /src.tar\n'
                  "RUN mkdir /src && tar -xf /src.tar -C /src && rm /src.tar\n"),
    "app-image": ('FROM {{ image_ref("lib-image") }}\n'
                  "RUN cat /src/lib-image/lib.txt > /app.txt\n"),
}
CONFIG = """\
[lib-image]
type = git
location = https://example.org/org/lib.git
"""


@pytest.fixture
def cache_proxy(registry):
    proxy = FaultProxy(upstream=registry.url, paginate=False)
    yield proxy
    proxy.stop()


@pytest.fixture
def gate(build, docker_engine, cleanup_images, tmp_path, cache_proxy):
    templates = tmp_path / "templates"
    for name, text in TEMPLATES.items():
        (templates / name).mkdir(parents=True)
        (templates / name / "Dockerfile.j2").write_text(text)
    src = tmp_path / "src"
    checkout = src / "example.org" / "org" / "lib"
    checkout.mkdir(parents=True)
    repo = git.Repo.init(checkout)
    (checkout / "lib.txt").write_text("merged\n")
    repo.index.add(["lib.txt"])
    repo.index.commit("the change under test",
                      author=git.Actor("t", "t@example.org"),
                      committer=git.Actor("t", "t@example.org"))
    namespace = build.namespace

    def ref(name: str) -> str:
        return f"{namespace}/{name}:latest"

    def job(*args):
        result, summary = build(*args, "--cache-registry", cache_proxy.host,
                                "--cache-insecure", "--source-root", src,
                                config=CONFIG, templates=templates)
        assert summary is not None, result.err
        return result, summary

    def clean_machine():
        """Remove every image of the set (children first), as on a new node."""
        for name in reversed(NAMES):
            info = docker_engine.inspect(ref(name))
            if info is not None:
                docker_engine.remove(info.id, force=True)
            assert docker_engine.inspect(ref(name)) is None

    def requests_since(start: int) -> list[tuple[str, str]]:
        return cache_proxy.seen[start:]

    for name in NAMES:
        cleanup_images.track(ref(name))
    yield type("Gate", (), dict(job=staticmethod(job), ref=staticmethod(ref),
                                clean=staticmethod(clean_machine), checkout=checkout,
                                namespace=namespace, requests=staticmethod(requests_since)))
    clean_machine()


def names(summary, key):
    return sorted(entry["name"] for entry in summary[key])


def lookups(seen, namespace):
    """Per image: the manifest requests for a fingerprint tag (kiln's lookups)."""
    counts: dict[str, int] = {}
    for method, path in seen:
        if method in ("GET", "HEAD") and f"/v2/{namespace}/" in path \
                and "/manifests/kiln-" in path:
            name = path.split(f"/v2/{namespace}/", 1)[1].split("/manifests/")[0]
            counts[name] = counts.get(name, 0) + 1
    return counts


def uploads(seen, namespace):
    return sorted({path.split(f"/v2/{namespace}/", 1)[1].split("/blobs/")[0]
                   for method, path in seen
                   if method == "POST" and "/blobs/uploads/" in path
                   and f"/v2/{namespace}/" in path})


def test_two_jobs_share_images_through_the_cache(gate, docker_engine, cache_proxy,
                                                  registry):
    # Job A: base -> lib-image, from a sibling checkout with an uncommitted change.
    (gate.checkout / "lib.txt").write_text("speculative change A\n")
    start = len(cache_proxy.seen)
    result, summary = gate.job("^lib-image$")
    assert result.code == 0, result.err
    assert names(summary, "built") == ["base", "lib-image"]
    assert summary["cached"] == []
    assert lookups(gate.requests(start), gate.namespace) == {"base": 1, "lib-image": 1}
    assert uploads(gate.requests(start), gate.namespace) == ["base", "lib-image"]
    lib = docker_engine.inspect(gate.ref("lib-image"))
    manifest = json.loads(lib.labels["kiln.manifest"])
    source, = manifest["sources"]
    assert source["speculative"] is True and source["dirty"] is True
    assert source["location"] == "https://example.org/org/lib.git"
    assert source["commit"] == git.Repo(gate.checkout).head.commit.hexsha
    fp_a = lib.labels[FINGERPRINT]
    client = RegistryClient(registry.host, RegistryOptions(insecure=True))
    entry = client.manifest(f"{gate.namespace}/lib-image", cache_tag(fp_a))
    assert entry is not None and entry.labels[FINGERPRINT] == fp_a

    # Job B, on a clean machine: app-image on top of job A's images.
    gate.clean()
    start = len(cache_proxy.seen)
    result, summary = gate.job("^app-image$")
    assert result.code == 0, result.err
    assert names(summary, "cached") == ["base", "lib-image"]
    assert names(summary, "built") == ["app-image"]
    assert "cached (2):" in result.out and "2 cached" in result.out
    seen = gate.requests(start)
    assert lookups(seen, gate.namespace) == {"base": 1, "lib-image": 1, "app-image": 1}
    assert uploads(seen, gate.namespace) == ["app-image"]   # none for the cached images
    assert docker_engine.run(gate.ref("app-image"), ["cat", "/app.txt"]) == \
        "speculative change A\n"
    # lib-image was pulled (app-image is built on it), base was not needed
    assert docker_engine.inspect(gate.ref("lib-image")).labels[FINGERPRINT] == fp_a
    assert docker_engine.inspect(gate.ref("base")) is None

    # Job C: another uncommitted change: lib-image and app-image are rebuilt.
    (gate.checkout / "lib.txt").write_text("speculative change C\n")
    gate.clean()
    result, summary = gate.job("^app-image$")
    assert result.code == 0, result.err
    assert names(summary, "cached") == ["base"]
    assert names(summary, "built") == ["app-image", "lib-image"]
    assert docker_engine.run(gate.ref("app-image"), ["cat", "/app.txt"]) == \
        "speculative change C\n"
    fp_c = docker_engine.inspect(gate.ref("lib-image")).labels[FINGERPRINT]
    assert fp_c != fp_a

    # A corrupt entry: lib-image's tag for fp_c names job A's image (fp_a).
    client.put_tag(f"{gate.namespace}/lib-image", cache_tag(fp_a), cache_tag(fp_c))
    gate.clean()
    result, summary = gate.job("^lib-image$")
    assert result.code == 0, result.err
    assert names(summary, "built") == ["lib-image"]
    assert names(summary, "cached") == ["base"]
    corrupt = f"{cache_proxy.host}/{gate.namespace}/lib-image:{cache_tag(fp_c)}"
    warnings = [line for line in result.err.splitlines() if corrupt in line]
    assert len(warnings) == 1 and "ignored" in warnings[0], result.err
    assert docker_engine.run(gate.ref("lib-image"), ["cat", "/src/lib-image/lib.txt"]) == \
        "speculative change C\n"
    # the rebuilt image replaced the corrupt entry
    assert client.manifest(f"{gate.namespace}/lib-image",
                           cache_tag(fp_c)).labels[FINGERPRINT] == fp_c
    client.close()


def test_an_unreachable_cache_is_one_warning(build, docker_engine, cleanup_images, tmp_path):
    from tests.conftest import free_port

    templates = tmp_path / "templates"
    (templates / "base").mkdir(parents=True)
    (templates / "base" / "Dockerfile.j2").write_text(TEMPLATES["base"])
    cleanup_images.track(f"{build.namespace}/base:latest")
    host = f"127.0.0.1:{free_port()}"
    result, summary = build("--cache-registry", host, "--cache-insecure", templates=templates)
    assert result.code == 0, result.err
    assert names(summary, "built") == ["base"]
    cache_warnings = [line for line in result.err.splitlines() if host in line]
    assert len(cache_warnings) == 1, result.err
    assert "cannot be used" in cache_warnings[0] and "refused" in cache_warnings[0]


def test_bad_source_options_are_errors(build, tmp_path):
    missing = tmp_path / "no-such-dir"
    result, _ = build("--source-root", missing)
    assert result.code == 2 and str(missing) in result.err
    result, _ = build("--source", f"no-such-image={tmp_path}")
    assert result.code == 2 and "no-such-image" in result.err
    result, _ = build("--source", f"base={tmp_path}")   # base has no source section
    assert result.code == 2 and "'base' has no source" in result.err


def test_source_override_takes_a_local_path(build, docker_engine, tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "README").write_text("from --source\n")
    config = "[src-git]\ntype = git\nlocation = https://example.org/never/fetched.git\n"
    result, summary = build("^src-git$", "--source", f"src-git={tree}", config=config)
    assert result.code == 0, result.err
    image = {e["name"]: e for e in summary["built"]}["src-git"]["image"]
    assert docker_engine.run(image, ["cat", "/src/src-git/README"]) == "from --source\n"


@pytest.fixture
def destination(tmp_path_factory):
    """A registry of its own to publish to (not the cache's: no blob mounts between them)."""
    from tests.integration.registry_fixtures import start_registry

    reg = start_registry(tmp_path_factory.mktemp("destination"), "")
    yield reg
    reg.stop()


def test_publish_after_merge_by_digest(gate, docker_engine, registry, destination,
                                       kiln_registry, tmp_path):
    """README "In a gate": the promote job publishes the gate-tested images from the
    cache, as they are (same digests), without building anything."""
    # The gate job: the whole set built from the change under test, into the cache.
    result, summary = gate.job()
    assert result.code == 0, result.err
    assert names(summary, "built") == sorted(NAMES)
    fingerprints = {name: docker_engine.inspect(gate.ref(name)).labels[FINGERPRINT]
                    for name in NAMES}
    cache = RegistryClient(registry.host, RegistryOptions(insecure=True))
    entries = {name: cache.manifest(f"{gate.namespace}/{name}", cache_tag(fp)).digest
               for name, fp in fingerprints.items()}
    cache.close()

    # The promote job, on a new machine: the same kiln-build, reading the cache only.
    gate.clean()
    result, summary = gate.job("--cache-mode", "read")
    assert result.code == 0, result.err
    assert summary["built"] == []       # a rebuild here would fail the promote job
    assert names(summary, "cached") == sorted(NAMES)
    for name in NAMES:       # every image is local, as the cache entry's image
        assert docker_engine.inspect(gate.ref(name)).labels[FINGERPRINT] == fingerprints[name]

    output = tmp_path / "published.json"
    result = kiln_registry("sync", "--namespace", gate.namespace, "--tag", "latest",
                           "--destination", destination.host, "--insecure",
                           "--output", output)
    assert result.code == 0, result.err
    published = json.loads(output.read_text())["images"]
    assert sorted(published) == sorted(NAMES)
    dest = RegistryClient(destination.host, RegistryOptions(insecure=True))
    try:
        for name in NAMES:
            assert published[name]["tag"] == "latest-1"
            assert published[name]["digest"] == entries[name], name
            for tag in ("latest-1", "latest"):
                found = dest.manifest(f"{gate.namespace}/{name}", tag)
                assert found.digest == entries[name], (name, tag)
                assert found.labels[FINGERPRINT] == fingerprints[name]
        result = kiln_registry("promote", "--namespace", gate.namespace, "--tag", "latest",
                               "--registry", destination.host, "--insecure")
        assert result.code == 0, result.err
        for name in NAMES:
            assert dest.manifest(f"{gate.namespace}/{name}",
                                 "latest-deployed").digest == entries[name], name
    finally:
        dest.close()
