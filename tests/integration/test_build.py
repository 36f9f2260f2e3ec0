"""kiln-build on the real Docker engine: order, failures, retries, overlap,
sources, push, skip-existing, interrupt, and the summary."""

from __future__ import annotations

import hashlib
import io
import json
import signal
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import git

from tests.integration.conftest import BUILDSET, IMAGES


def by_name(summary, key):
    return {entry["name"]: entry for entry in summary[key]}


def test_depth_multistage_build_args_logs_and_summary(build, docker_engine, tmp_path):
    result, summary = build("^multi$", "--build-args", "GREETING=hello-kiln",
                            "--logs-dir", tmp_path / "logs")
    assert result.code == 0, result.err
    built = by_name(summary, "built")
    assert sorted(built) == ["base", "leaf", "mid", "multi", "other"]
    for name, entry in built.items():
        info = docker_engine.inspect(entry["image"])
        assert info is not None and entry["id"] == info.id
        assert entry["status"] == "built" and entry["duration"] > 0
        assert (tmp_path / "logs" / f"{name}.log").read_text().count("Step ") >= 2
    multi = built["multi"]["image"]
    assert docker_engine.run(multi, ["cat", "/leaf.txt", "/staged.txt"]) == \
        "base built\nmid\nstaged\n"
    assert docker_engine.run(built["leaf"]["image"], ["cat", "/greeting.txt"]) == "hello-kiln\n"
    assert docker_engine.run(built["base"]["image"], ["cat", "/hello.txt"]) == \
        "hello from the base context\n"
    assert sorted(by_name(summary, "not_matched")) == sorted(
        set(IMAGES) - {"base", "leaf", "mid", "multi", "other"})
    assert summary["failed"] == [] and summary["skipped"] == []
    assert "summary: 5 built" in result.out


def test_failure_marks_descendants_and_siblings_still_build(build):
    result, summary = build("broken-child", "^other$")
    assert result.code == 1
    failed = by_name(summary, "failed")
    assert failed["broken"]["status"] == "failed"
    assert "failed to build" in failed["broken"]["reason"]
    log = Path(failed["broken"]["log"]).read_text()
    assert "about to fail on purpose" in log
    assert failed["broken-child"]["status"] == "parent_failed"
    assert failed["broken-child"]["reason"] == "parent 'broken' failed"
    assert sorted(by_name(summary, "built")) == ["base", "other"]
    assert f"log: {failed['broken']['log']}" in result.out

    allowed, summary = build("broken-child", "^other$",
                             "--allowed-to-fail", "broken,broken-child")
    assert allowed.code == 0
    assert all(e["allowed_to_fail"] for e in summary["failed"])


def test_retry_that_succeeds(build, docker_engine):
    result, summary = build("flaky", "--retries", "2")
    assert result.code == 0, result.err
    image = by_name(summary, "built")["flaky"]["image"]
    assert docker_engine.run(image, ["cat", "/flaky.txt"]) == "flaky ok\n"


def test_without_retries_the_flaky_build_fails(build):
    result, summary = build("flaky")
    assert result.code == 1
    assert by_name(summary, "failed")["flaky"]["status"] == "failed"


def test_independent_builds_overlap(build, server):
    # Each build's RUN blocks at a barrier until the other build's RUN arrives:
    # they can only both succeed if they run at the same time.
    result, summary = build("barrier-a", "barrier-b", "--threads", "2")
    assert result.code == 0, result.out
    assert sorted(by_name(summary, "built")) == ["barrier-a", "barrier-b", "base"]
    assert sorted(p for p in server.requests if p.startswith("/barrier")) == [
        "/barrier/a", "/barrier/b"]


def test_one_thread_cannot_meet_the_barrier(build, server):
    server.barrier = threading.Barrier(2, timeout=3)
    result, summary = build("barrier-a", "barrier-b", "--threads", "1")
    assert result.code == 1
    assert {e["status"] for e in summary["failed"]} == {"failed"}


def _make_git_repo(path: Path) -> str:
    repo = git.Repo.init(path)
    (path / "README").write_text("version one\n")
    repo.index.add(["README"])
    repo.index.commit("one")
    repo.create_tag("v1")
    first = repo.head.commit.hexsha
    (path / "README").write_text("version two\n")
    repo.index.add(["README"])
    repo.index.commit("two")
    return first


def _tar(members: dict[str, bytes], evil: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if evil:
            info = tarfile.TarInfo(evil)
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    return buffer.getvalue()


def test_sources_of_every_type(build, docker_engine, server, tmp_path):
    commit = _make_git_repo(tmp_path / "upstream")
    checkout = tmp_path / "sibling-checkout"
    repo = git.Repo.init(checkout)
    (checkout / "setup.py").write_text("committed\n")
    repo.index.add(["setup.py"])
    repo.index.commit("c")
    (checkout / "setup.py").write_text("uncommitted change\n")
    (checkout / "new-file").write_text("untracked\n")
    tarball = _tar({"pkg/module.py": b"print('from url')\n"})
    server.files["pkg.tar.gz"] = tarball
    server.files["evil.tar.gz"] = _tar({"ok.txt": b"fine"}, evil="../../escape.txt")
    digest = hashlib.sha256(tarball).hexdigest()
    config = f"""
[src-git]
type = git
location = {tmp_path / 'upstream'}
reference = v1

[src-url]
type = url
location = http://kiln:s3cr3t-token@127.0.0.1:{server.port}/files/pkg.tar.gz
sha256 = {digest}

[src-local]
type = local
location = {checkout}

[src-evil]
type = url
location = http://127.0.0.1:{server.port}/files/evil.tar.gz
"""
    result, summary = build("^src-", config=config)
    assert result.code == 1  # src-evil must fail
    built = by_name(summary, "built")
    assert sorted(built) == ["base", "src-git", "src-local", "src-url"]
    assert docker_engine.run(built["src-git"]["image"], ["cat", "/src/src-git/README"]) == \
        "version one\n"
    local = built["src-local"]["image"]
    assert docker_engine.run(local, ["cat", "/src/src-local/setup.py",
                                     "/src/src-local/new-file"]) == \
        "uncommitted change\nuntracked\n"
    assert docker_engine.run(local, ["sh", "-c", "test ! -e /src/src-local/.git && echo ok"]) \
        == "ok\n"
    assert docker_engine.run(built["src-url"]["image"],
                             ["cat", "/src/src-url/pkg/module.py"]) == "print('from url')\n"
    evil = by_name(summary, "failed")["src-evil"]
    assert "escape.txt" in evil["reason"]
    git_log = (tmp_path / "work" / "logs" / "src-git.log").read_text()
    assert commit in git_log
    everything = result.out + result.err + json.dumps(summary) + "".join(
        p.read_text() for p in (tmp_path / "work" / "logs").glob("*.log"))
    assert "s3cr3t-token" not in everything

    # A download whose digest is not the declared one is refused (the good
    # file stays cached under its own digest, so serve a different one).
    server.files["pkg.tar.gz"] = tarball + b"tampered"
    result, summary = build("^src-url$", config=config.replace(digest, "0" * 64))
    assert result.code == 1
    assert "sha256 mismatch" in by_name(summary, "failed")["src-url"]["reason"]


def test_push_to_a_real_registry(build, registry, cleanup_images):
    for name in ("base", "mid"):
        cleanup_images.track(f"{registry.host}/{build.namespace}/{name}:latest")
    result, summary = build("^mid$", "--registry", registry.host, "--push",
                            "--push-threads", "2")
    assert result.code == 0, result.err
    assert {e["status"] for e in summary["built"]} == {"pushed"}
    for name in ("base", "mid"):
        status, _, body = registry.get(f"/v2/{build.namespace}/{name}/tags/list")
        assert status == 200 and json.loads(body)["tags"] == ["latest"]


def test_push_to_unreachable_registry_fails_clearly(build, cleanup_images):
    from tests.integration.conftest import free_port
    host = f"127.0.0.1:{free_port()}"
    cleanup_images.track(f"{host}/{build.namespace}/base:latest")
    result, summary = build("^base$", "--registry", host, "--push")
    assert result.code == 1
    entry = by_name(summary, "failed")["base"]
    assert entry["status"] == "push_failed"
    assert f"pushing {host}/{build.namespace}/base:latest failed" in entry["reason"]


def test_skip_existing(build):
    assert build("^mid$")[0].code == 0
    result, summary = build("^(mid|other)$", "--skip-existing")
    assert result.code == 0
    assert sorted(by_name(summary, "skipped")) == ["base", "mid"]
    assert sorted(by_name(summary, "built")) == ["other"]


def test_interrupt_stops_cleanly_and_writes_summary(busybox_base, docker_engine,
                                                    cleanup_images, server, tmp_path):
    summary_file = tmp_path / "summary.json"
    for name in ("base", "slow"):
        cleanup_images.track(f"{cleanup_images.namespace}/{name}:latest")
    process = subprocess.Popen(
        [sys.executable, "-m", "builder.cli.build", "--templates-dir", str(BUILDSET),
         "--namespace", cleanup_images.namespace, "--template-var", f"busybox={busybox_base}",
         "--template-var", f"port={server.port}", "--network-mode", "host",
         "--work-dir", str(tmp_path / "work"), "--summary-json-file", str(summary_file),
         "^slow$"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.started.wait(120), "the slow build never started"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    summary = json.loads(summary_file.read_text())
    assert by_name(summary, "built")["base"]["status"] == "built"
    assert by_name(summary, "cancelled")["slow"]["status"] == "cancelled"
    assert docker_engine.inspect(f"{cleanup_images.namespace}/slow:latest") is None
    assert "Traceback" not in err


