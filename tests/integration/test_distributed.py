"""--executor dask on real parts (issue #16): a real ``dask scheduler`` and
``dask worker`` processes on 127.0.0.1; worker w1 builds on the host's Docker
daemon, worker w2 on a second daemon this module starts; a real
``docker-registry`` is the cache through which they hand images over.

- a set of nine images (four levels, one with two in-set parents) is built,
  each exactly once, by both workers; an image whose parent was built on the
  other engine has that parent's id there; the summary names the workers;
- worker w2 is SIGKILLed while it builds: Dask reruns its image on w1, the
  run completes, and every cache tag names a complete image;
- bad input: an unreachable scheduler, no worker with the kiln-build
  resource, a worker whose engine does not answer.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time

import pytest

from builder.build.cache import cache_tag
from builder.build.labels import FINGERPRINT, is_complete
from builder.registry.client import RegistryClient
from builder.registry.http import RegistryOptions
from tests.conftest import error_line, free_port
from tests.integration.dask_cluster import BIN
from tests.integration.dask_fixtures import dask_cluster, second_docker  # noqa: F401

pytestmark = pytest.mark.timeout(600)

LEVEL1 = ("a1", "a2", "a3", "a4")
TEMPLATES = {
    "base": "FROM {{ busybox }}\nRUN echo base > /base.txt\n",
    **{name: f'FROM {{{{ image_ref("base") }}}}\nRUN sleep 2 && echo {name} > /{name}.txt\n'
       for name in LEVEL1},
    "b1": 'FROM {{ image_ref("a1") }}\nRUN sleep 1 && cp /a1.txt /b1.txt\n',
    "b2": 'FROM {{ image_ref("a2") }}\nRUN sleep 1 && cp /a2.txt /b2.txt\n',
    # two in-set parents: a build stage from b1, the final stage on a3
    "multi": ('FROM {{ image_ref("b1") }} AS stage\nRUN cp /b1.txt /staged.txt\n'
              'FROM {{ image_ref("a3") }}\nCOPY --from=stage /staged.txt /b1.txt /\n'),
    "top": 'FROM {{ image_ref("multi") }}\nRUN cat /staged.txt /a3.txt > /top.txt\n',
}
PARENTS = {"base": (), **{name: ("base",) for name in LEVEL1}, "b1": ("a1",), "b2": ("a2",),
           "multi": ("a3", "b1"), "top": ("multi",)}
SLOW = {"base": "FROM {{ busybox }}\nRUN echo base > /base.txt\n",
        **{f"s{i}": f'FROM {{{{ image_ref("base") }}}}\nRUN sleep 6 && echo {i} > /s.txt\n'
           for i in range(1, 5)}}


def templates_dir(tmp_path, templates):
    root = tmp_path / "templates"
    for name, text in templates.items():
        (root / name).mkdir(parents=True)
        (root / name / "Dockerfile.j2").write_text(text)
    return root


@pytest.fixture(autouse=True)
def remove_namespace(build):
    """Afterwards: every image of the test's namespace on the host daemon, also
    those pulled from the cache (known there by digest only), children first."""
    yield
    for _ in range(5):
        listed = subprocess.run(
            ["docker", "images", "--no-trunc", "--format", "{{.ID}}",
             "--filter", f"reference={build.namespace}/*",
             "--filter", f"reference=*/{build.namespace}/*"],
            capture_output=True, text=True, timeout=60).stdout.split()
        if not listed:
            return
        subprocess.run(["docker", "rmi", "--force", *set(listed)], capture_output=True,
                       timeout=120)


def run_dask(build, cluster, registry, templates, *args):
    return build("--executor", "dask", "--dask-scheduler", cluster.address,
                 "--cache-registry", registry.host, "--cache-insecure",
                 "--logs-dir", templates.parent / "logs", *args, templates=templates)


def starts(err: str) -> dict[str, list[str]]:
    """image -> the workers its progress lines say it started building on."""
    found: dict[str, list[str]] = {}
    for line in err.splitlines():
        _, _, text = line.partition(" ")
        name, sep, rest = text.partition(": building (on ")
        if sep:
            found.setdefault(name, []).append(rest.split(")")[0].split(",")[0])
    return found


def cache_tags_complete(registry, namespace, names):
    """Every kiln-* tag of the set's cache repositories names a complete image
    stamped with the fingerprint the tag is named after; returns them."""
    client = RegistryClient(registry.host, RegistryOptions(insecure=True))
    tags = {}
    for name in names:
        status, _, body = registry.get(f"/v2/{namespace}/{name}/tags/list")
        listed = json.loads(body).get("tags") or [] if status == 200 else []
        for tag in listed:
            if not tag.startswith("kiln-"):
                continue
            info = client.manifest(f"{namespace}/{name}", tag)
            fingerprint = info.labels.get(FINGERPRINT, "")
            assert cache_tag(fingerprint) == tag, (name, tag, fingerprint)
            assert is_complete(info.labels, fingerprint), (name, tag)
            tags.setdefault(name, []).append(tag)
    return tags


def test_two_engines_build_one_set(build, dask_cluster, second_docker, registry,  # noqa: F811
                                   tmp_path, docker_engine):
    dask_cluster.add_worker("w1")
    dask_cluster.add_worker("w2", docker_host=second_docker.host)
    templates = templates_dir(tmp_path, TEMPLATES)
    result, summary = run_dask(build, dask_cluster, registry, templates)
    assert result.code == 0, result.err + dask_cluster.logs()
    built = {entry["name"]: entry for entry in summary["built"]}
    assert sorted(built) == sorted(TEMPLATES)
    # each built exactly once, and by both workers
    assert {name: len(workers) for name, workers in starts(result.err).items()} == \
        dict.fromkeys(TEMPLATES, 1)
    assert {entry["worker"] for entry in built.values()} == {"w1", "w2"}
    for name, entry in built.items():
        assert f"{build.namespace}/{name}:latest  " in result.out
        assert f"on {entry['worker']}" in [line for line in result.out.splitlines()
                                           if f"/{name}:latest " in line][0]
        log = (templates.parent / "logs" / f"{name}.log").read_text()
        assert f"kiln: stamped {entry['id']}" in log
    # an image built on one engine over a parent built on the other: the
    # parent was pulled there from the cache, and has the same id
    def on_engine(worker, name):
        """(id, labels) of the image's reference on the worker's engine."""
        ref = f"{build.namespace}/{name}:latest"
        if worker == "w1":
            info = docker_engine.inspect(ref)
            return info.id, info.labels
        return (second_docker.inspect(ref, "{{.Id}}"),
                json.loads(second_docker.inspect(ref, "{{json .Config.Labels}}")))

    crossed = 0
    for name, parents in PARENTS.items():
        worker = built[name]["worker"]
        image_id, labels = on_engine(worker, name)
        assert image_id == built[name]["id"]
        manifest = json.loads(labels["kiln.manifest"])
        recorded = {parent["name"]: parent["id"] for parent in manifest["parents"]}
        assert recorded == {parent: built[parent]["id"] for parent in parents}
        for parent in parents:
            if built[parent]["worker"] != worker:
                crossed += 1
                assert on_engine(worker, parent)[0] == built[parent]["id"]
    assert crossed >= 1
    assert sorted(cache_tags_complete(registry, build.namespace, TEMPLATES)) == \
        sorted(TEMPLATES)


def test_a_worker_killed_while_building(build, dask_cluster, second_docker,  # noqa: F811
                                        registry, tmp_path):
    dask_cluster.add_worker("w1", builds=2)
    dask_cluster.add_worker("w2", docker_host=second_docker.host)
    templates = templates_dir(tmp_path, SLOW)
    outcome = {}
    def run():
        outcome["result"], outcome["summary"] = run_dask(build, dask_cluster, registry,
                                                         templates)

    runner = threading.Thread(target=run)
    runner.start()
    deadline = time.monotonic() + 120
    while not second_docker.running_containers():   # w2 is in a RUN step
        assert runner.is_alive() and time.monotonic() < deadline, \
            "worker w2 never started a build"
        time.sleep(0.2)
    dask_cluster.kill("w2")
    runner.join(300)
    result, summary = outcome["result"], outcome["summary"]
    assert result.code == 0, result.err + dask_cluster.logs()
    assert sorted(entry["name"] for entry in summary["built"]) == sorted(SLOW)
    rerun = [name for name, workers in starts(result.err).items() if workers[-2:] == ["w2", "w1"]]
    assert rerun, result.err
    for name in rerun:
        assert next(e for e in summary["built"] if e["name"] == name)["worker"] == "w1"
    tags = cache_tags_complete(registry, build.namespace, SLOW)
    assert {name: len(found) for name, found in tags.items()} == dict.fromkeys(SLOW, 1)


def test_bad_clusters_are_one_message(build, dask_cluster, registry, tmp_path):  # noqa: F811
    templates = templates_dir(tmp_path, {"base": TEMPLATES["base"]})
    nowhere = f"tcp://127.0.0.1:{free_port()}"
    result, summary = build("--executor", "dask", "--dask-scheduler", nowhere,
                            "--cache-registry", registry.host, "--cache-insecure",
                            templates=templates)
    assert result.code == 2 and summary is None
    assert f"cannot reach the Dask scheduler at {nowhere}" in error_line(result)

    dask_cluster.add_worker("plain", builds=None)
    result, _ = run_dask(build, dask_cluster, registry, templates)
    assert result.code == 2
    assert (f"no worker of the Dask scheduler at {dask_cluster.address} has the kiln-build "
            f"resource (workers: plain (tcp://") in error_line(result)

    dask_cluster.add_worker("broken", docker_host=f"unix://{tmp_path}/no-such.sock")
    result, _ = run_dask(build, dask_cluster, registry, templates)
    assert result.code == 2
    assert "can build: worker broken (tcp://" in error_line(result)
    assert "its docker engine does not answer" in error_line(result)

    dask_cluster.add_worker("w1")
    result, summary = run_dask(build, dask_cluster, registry, templates)
    assert result.code == 0, result.err
    assert [entry["worker"] for entry in summary["built"]] == ["w1"]
    left_out, = summary["workers_not_used"]
    assert left_out["worker"].startswith("broken (tcp://")
    assert "its docker engine does not answer" in left_out["reason"]
    assert "worker broken (tcp://" in result.out


def test_ctrl_c_cancels_the_cluster_s_builds(build, dask_cluster, registry,  # noqa: F811
                                             busybox_base, tmp_path):
    dask_cluster.add_worker("w1", builds=2)
    templates = templates_dir(tmp_path, {
        "base": TEMPLATES["base"],
        **{name: f'FROM {{{{ image_ref("base") }}}}\nRUN sleep 300 && echo {name} > /x\n'
           for name in ("long1", "long2", "long3")}})
    summary_file = tmp_path / "summary.json"
    process = subprocess.Popen(
        [str(BIN / "kiln-build"), "--templates-dir", templates, "--namespace", build.namespace,
         "--template-var", f"busybox={busybox_base}", "--work-dir", tmp_path / "work",
         "--network-mode", "host", "--executor", "dask", "--dask-scheduler",
         dask_cluster.address, "--cache-registry", registry.host, "--cache-insecure",
         "--summary-json-file", summary_file],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        building = set()
        for line in process.stderr:
            if ": building (on w1)" in line:
                building.add(line.split()[1].rstrip(":"))
            if {"long1", "long2"} <= building:
                break
        # both in their RUN step on the host daemon
        while len(sleeping(build.namespace)) < 2:
            assert process.poll() is None, process.stderr.read()
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    summary = json.loads(summary_file.read_text())
    cancelled = {entry["name"]: entry["reason"] for entry in summary["cancelled"]}
    assert cancelled == {"long1": "interrupted while building",
                         "long2": "interrupted while building",
                         "long3": "not started: interrupted"}
    assert [entry["name"] for entry in summary["built"]] == ["base"]
    # the worker was told to stop: its builds' containers go away (well before 300 s)
    deadline = time.monotonic() + 120
    while sleeping(build.namespace):
        assert time.monotonic() < deadline, "the interrupted builds kept running"
        time.sleep(0.5)


def sleeping(namespace):
    """The host daemon's running containers of builds of this namespace's images."""
    listed = subprocess.run(["docker", "ps", "--no-trunc", "--format", "{{.Command}}"],
                            capture_output=True, text=True, timeout=30).stdout
    return [line for line in listed.splitlines() if "sleep 300" in line]


def test_push_from_the_workers(build, dask_cluster, registry, tmp_path):  # noqa: F811
    """--push: a built image is pushed by the worker that built it; one found
    in the cache by a worker that pulls it from there."""
    dask_cluster.add_worker("w1")
    templates = templates_dir(tmp_path, {"base": TEMPLATES["base"]})
    client = RegistryClient(registry.host, RegistryOptions(insecure=True))
    for expected in ("built", "cached"):
        result, summary = run_dask(build, dask_cluster, registry, templates, "--push",
                                   "--registry", registry.host)
        assert result.code == 0, result.err
        entry, = summary["built"]
        assert (entry["status"], entry["worker"]) == ("pushed", "w1")
        assert f"base: {expected}" in result.err
        pushed = client.manifest(f"{build.namespace}/base", "latest")
        assert pushed is not None and pushed.config_digest == entry["id"]
        assert is_complete(pushed.labels, pushed.labels[FINGERPRINT])
