"""Image sources: local trees, git commits and downloads as reproducible tars.

No mocks: git repositories are made with GitPython in tmp_path and downloads
come from an http.server on 127.0.0.1 (which also serves a bare repository over
git's "dumb" HTTP protocol, behind basic auth).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import os
import socket
import tarfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import git
import pytest
from hypothesis import given
from hypothesis import strategies as st

from builder.build.sources.archive import FIXED_MTIME
from builder.build.sources.fetch import prepare_source
from builder.build.sources.spec import PreparedSource, SourceSpec, parse_source
from builder.errors import KilnError, SourceError, scrub_url

SECRET = "s3cr3t-pa55"


# --------------------------------------------------------------------------- helpers


def members(archive: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(archive) as tar:
        return {m.name.rstrip("/"): m for m in tar.getmembers()}


def read(archive: Path, name: str) -> bytes:
    with tarfile.open(archive) as tar:
        data = tar.extractfile(name)
        assert data is not None
        return data.read()


def names(archive: Path) -> list[str]:
    with tarfile.open(archive) as tar:
        return [m.name for m in tar.getmembers()]


def assert_clean(*values: object) -> None:
    for value in values:
        assert SECRET not in repr(value)
        assert SECRET not in str(value)


@pytest.fixture
def dirs(tmp_path):
    dest, cache = tmp_path / "dest", tmp_path / "cache"
    return dest, cache


@pytest.fixture
def prepare(dirs):
    dest, cache = dirs

    def run(name: str, type: str, location: str, **kwargs) -> PreparedSource:
        timeout = kwargs.pop("timeout", 10.0)
        spec = SourceSpec(name=name, type=type, location=str(location), **kwargs)
        return prepare_source(spec, dest, cache, timeout=timeout)

    return run


def make_tar(path: Path, build, compress: bool = False) -> Path:
    """build(add) where add(info, data=None) appends a raw member."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        def add(info: tarfile.TarInfo, data: bytes | None = None) -> None:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
        build(add)
    raw = buffer.getvalue()
    path.write_bytes(gzip.compress(raw, mtime=0) if compress else raw)
    return path


def info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "",
         mode: int = 0o644) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type = kind
    member.linkname = linkname
    member.mode = mode
    return member


def good_tar(path: Path, compress: bool = False) -> Path:
    def build(add):
        add(info("pkg-1.0", tarfile.DIRTYPE, mode=0o700))
        add(info("pkg-1.0/setup.py", mode=0o600), b"setup()\n")
        add(info("pkg-1.0/bin/run", mode=0o700), b"#!/bin/sh\n")
        add(info("pkg-1.0/link", tarfile.SYMTYPE, linkname="setup.py"))
        add(info("pkg-1.0/hard", tarfile.LNKTYPE, linkname="pkg-1.0/setup.py"))
    return make_tar(path, build, compress)


# --------------------------------------------------------------------------- HTTP server


@dataclass
class Server:
    base: str
    routes: dict = field(default_factory=dict)  # path -> (status, headers, body)
    seen: list = field(default_factory=list)  # (path, Authorization header or None)
    auth_paths: dict = field(default_factory=dict)  # path prefix -> (user, password)
    static: dict = field(default_factory=dict)  # path prefix -> directory

    def url(self, path: str, credentials: str = "") -> str:
        host = self.base.removeprefix("http://")
        return f"http://{credentials}{host}{path}"


def _handler(server: Server):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output quiet
            pass

        def do_GET(self):
            path = self.path.split("?", 1)[0]
            self.server_state.seen.append((path, self.headers.get("Authorization")))
            for prefix, (user, password) in self.server_state.auth_paths.items():
                if path.startswith(prefix):
                    token = base64.b64encode(f"{user}:{password}".encode()).decode()
                    if self.headers.get("Authorization") != f"Basic {token}":
                        return self.reply(401, {"WWW-Authenticate": 'Basic realm="kiln"'}, b"")
            for prefix, directory in self.server_state.static.items():
                if path.startswith(prefix):
                    file = Path(directory) / path[len(prefix):].lstrip("/")
                    if file.is_file():
                        return self.reply(200, {}, file.read_bytes())
                    return self.reply(404, {}, b"no such file\n")
            status, headers, body = self.server_state.routes.get(path, (404, {}, b"not found\n"))
            return self.reply(status, headers, body)

        def reply(self, status: int, headers: dict, body: bytes) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    Handler.server_state = server
    return Handler


@pytest.fixture
def serve():
    """serve() -> a Server on 127.0.0.1 (any number of them, stopped at teardown)."""
    running = []

    def start() -> Server:
        state = Server(base="")
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
        state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                  daemon=True)
        thread.start()
        running.append(httpd)
        return state

    yield start
    for httpd in running:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def http(serve):
    return serve()


# --------------------------------------------------------------------------- git repo


@dataclass
class Repo:
    path: Path
    repo: git.Repo
    first: str
    second: str

    def commit(self, files: dict[str, str], message: str) -> str:
        for relpath, text in files.items():
            (self.path / relpath).parent.mkdir(parents=True, exist_ok=True)
            (self.path / relpath).write_text(text)
        self.repo.git.add("-A")
        self.repo.git.commit("-q", "-m", message)
        return self.repo.head.commit.hexsha


@pytest.fixture
def repo(tmp_path) -> Repo:
    """main: first (tag v1, branch stable) -> second; with an executable and a symlink."""
    path = tmp_path / "upstream"
    handle = git.Repo.init(path, initial_branch="main")
    with handle.config_writer() as config:
        config.set_value("user", "name", "Kiln Test")
        config.set_value("user", "email", "kiln@example.org")
        config.set_value("commit", "gpgsign", "false")
        config.set_value("tag", "gpgsign", "false")
    result = Repo(path, handle, "", "")
    (path / "bin").mkdir()
    (path / "bin/run").write_text("#!/bin/sh\n")
    os.chmod(path / "bin/run", 0o755)
    os.symlink("setup.py", path / "link")
    result.first = result.commit({"setup.py": "version = 1\n"}, "first")
    handle.git.tag("-a", "v1", "-m", "release 1")
    handle.git.branch("stable")
    result.second = result.commit({"setup.py": "version = 2\n", "new.txt": "new\n"}, "second")
    return result


# --------------------------------------------------------------------------- scrub_url


@pytest.mark.parametrize("text, expected", [
    ("https://user:pw@git.example.org/openstack/keystone",
     "https://git.example.org/openstack/keystone"),
    ("http://token@example.org:8080/x", "http://example.org:8080/x"),
    ("ssh://git:pw@review.opendev.org:29418/openstack/nova",
     "ssh://review.opendev.org:29418/openstack/nova"),
    ("git+ssh://me:pw@host/repo.git", "git+ssh://host/repo.git"),
    ("fatal: 'https://a:b@h/x' and HTTPS://c:d@h2/y failed",
     "fatal: 'https://h/x' and HTTPS://h2/y failed"),
    ("https://u:p@ss@host/x", "https://host/x"),
    ("https://host/path/user@example", "https://host/path/user@example"),
    ("/srv/checkouts/keystone", "/srv/checkouts/keystone"),
    ("git@github.com:openstack/nova", "git@github.com:openstack/nova"),
])
def test_scrub_url(text, expected):
    assert scrub_url(text) == expected


@given(user=st.text("abcXYZ019-_.~%", min_size=1, max_size=12),
       password=st.text("abcXYZ019-_.~%!$&'()*+,;=:", min_size=8, max_size=20),
       scheme=st.sampled_from(["http", "https", "ssh", "git+ssh"]))
def test_scrub_url_never_keeps_the_password(user, password, scheme):
    text = f"cannot fetch {scheme}://{user}:{password}@host.example/repo.git: refused"
    assert password not in scrub_url(text)
    assert "host.example/repo.git" in scrub_url(text)


# --------------------------------------------------------------------------- parse_source


def test_parse_source_reads_a_section():
    spec = parse_source("keystone-base", {
        "type": "git", "location": "https://git.example.org/openstack/keystone",
        "reference": "stable/2024.1", "enabled": "no"})
    assert spec == SourceSpec("keystone-base", "git", "https://git.example.org/openstack/keystone",
                              reference="stable/2024.1", enabled=False)


@pytest.mark.parametrize("text, expected", [
    ("true", True), ("Yes", True), ("1", True), ("false", False), ("NO", False), ("0", False)])
def test_parse_source_booleans(text, expected):
    spec = parse_source("img", {"type": "local", "location": "/src", "enabled": text})
    assert spec.enabled is expected


def test_parse_source_url_with_sha256():
    digest = "AB" * 32
    spec = parse_source("img", {"type": "url", "location": "https://x.org/a.tar.gz",
                                "sha256": digest})
    assert spec.sha256 == digest.lower()
    assert spec.enabled is True


@pytest.mark.parametrize("values, option", [
    ({"type": "svn", "location": "/x"}, "type"),
    ({"location": "/x"}, "type"),
    ({"type": "git"}, "location"),
    ({"type": "git", "location": "  "}, "location"),
    ({"type": "url", "location": "ftp://x.org/a.tar"}, "location"),
    ({"type": "url", "location": "/srv/a.tar"}, "location"),
    ({"type": "url", "location": "https://x.org/a", "sha256": "abc"}, "sha256"),
    ({"type": "url", "location": "https://x.org/a", "sha256": "g" * 64}, "sha256"),
    ({"type": "git", "location": "/x", "sha256": "a" * 64}, "sha256"),
    ({"type": "local", "location": "/x", "reference": "main"}, "reference"),
    ({"type": "git", "location": "/x", "enabled": "maybe"}, "enabled"),
    ({"type": "git", "location": "/x", "refrence": "main"}, "refrence"),
])
def test_parse_source_rejects(values, option):
    with pytest.raises(SourceError) as caught:
        parse_source("nova-base", values)
    assert "[nova-base]" in str(caught.value)
    assert option in str(caught.value)
    assert caught.value.exit_code == 2
    assert isinstance(caught.value, KilnError)


def test_parse_source_scrubs_its_messages():
    with pytest.raises(SourceError) as caught:
        parse_source("img", {"type": "url", "location": f"ftp://me:{SECRET}@x.org/a"})
    assert_clean(caught.value, caught.value.args)


# --------------------------------------------------------------------------- local


@pytest.fixture
def checkout(repo) -> Path:
    """The upstream checkout with an uncommitted edit, an untracked file and a nested .git."""
    (repo.path / "setup.py").write_text("version = 'dirty'\n")
    (repo.path / "untracked.txt").write_text("untracked\n")
    (repo.path / "vendored").mkdir()
    (repo.path / "vendored/.git").write_text("gitdir: elsewhere\n")
    (repo.path / "vendored/lib.py").write_text("x = 1\n")
    return repo.path


def test_local_takes_the_tree_as_it_is(prepare, checkout, dirs):
    result = prepare("keystone-base", "local", checkout)
    assert result.archive == dirs[0] / "keystone-base-archive"
    assert result.type == "local" and result.commit is None
    found = members(result.archive)
    assert read(result.archive, "keystone-base/setup.py") == b"version = 'dirty'\n"
    assert read(result.archive, "keystone-base/untracked.txt") == b"untracked\n"
    assert "keystone-base/vendored/lib.py" in found
    assert not any(part == ".git" for name in found for part in name.split("/"))
    assert found["keystone-base/bin/run"].mode == 0o755
    assert found["keystone-base/setup.py"].mode == 0o644
    assert found["keystone-base/link"].issym()
    assert found["keystone-base/link"].linkname == "setup.py"
    assert result.sha256 == hashlib.sha256(result.archive.read_bytes()).hexdigest()
    assert len(result.content_digest) == 64


def test_archive_format_is_normalised(prepare, checkout):
    result = prepare("keystone-base", "local", checkout)
    listed = names(result.archive)
    assert listed[0] == "keystone-base"
    assert result.archive.read_bytes()[:15] == b"keystone-base/\0"  # directories end in "/"
    assert all(name.startswith("keystone-base/") for name in listed[1:])
    split = [name.split("/") for name in listed]
    assert split == sorted(split)
    with tarfile.open(result.archive) as tar:
        for member in tar.getmembers():
            assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")
            assert member.mtime == FIXED_MTIME
            assert member.pax_headers == {}
            assert member.mode in (0o644, 0o755, 0o777)
            if member.isdir():
                assert member.mode == 0o755
    assert result.archive.read_bytes()[257:263] == b"ustar "  # GNU magic, not gzip


def test_local_is_reproducible(prepare, checkout, dirs):
    first = prepare("img", "local", checkout)
    first_bytes = first.archive.read_bytes()
    for path in checkout.rglob("*"):
        if not path.is_symlink():
            os.utime(path, (1_700_000_000, 1_700_000_000))
    os.chmod(checkout / "setup.py", 0o600)  # only the executable bit matters
    again = prepare("img", "local", checkout)
    assert again.archive.read_bytes() == first_bytes
    assert (again.sha256, again.content_digest) == (first.sha256, first.content_digest)

    (checkout / "setup.py").write_text("version = 3\n")
    changed = prepare("img", "local", checkout)
    assert changed.sha256 != first.sha256
    assert changed.content_digest != first.content_digest


def test_local_mode_change_changes_the_digest(prepare, checkout):
    before = prepare("img", "local", checkout)
    os.chmod(checkout / "setup.py", 0o755)
    after = prepare("img", "local", checkout)
    assert after.content_digest != before.content_digest


def test_local_symlink_outside_the_tree_is_an_error(prepare, tmp_path, dirs):
    tree = tmp_path / "tree"
    tree.mkdir()
    os.symlink("/etc/passwd", tree / "passwd")
    with pytest.raises(SourceError, match="passwd.*outside"):
        prepare("img", "local", tree)
    assert not any(dirs[0].iterdir())


def test_local_relative_symlink_escaping_is_an_error(prepare, tmp_path):
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    os.symlink("../../outside", tree / "sub/up")
    with pytest.raises(SourceError, match="'sub/up'"):
        prepare("img", "local", tree)


def test_local_absolute_symlink_into_the_tree_becomes_relative(prepare, tmp_path):
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/app.conf").write_text("x\n")
    (tree / "bin").mkdir()
    os.symlink(tree / "etc/app.conf", tree / "bin/app.conf")
    result = prepare("img", "local", tree)
    assert members(result.archive)["img/bin/app.conf"].linkname == "../etc/app.conf"


def test_local_missing_path(prepare, tmp_path):
    with pytest.raises(SourceError) as caught:
        prepare("glance-base", "local", tmp_path / "nowhere")
    assert "glance-base" in str(caught.value)
    assert str(tmp_path / "nowhere") in str(caught.value)


def test_local_single_file(prepare, tmp_path):
    script = tmp_path / "install.sh"
    script.write_text("#!/bin/sh\n")
    os.chmod(script, 0o700)
    result = prepare("img", "local", script)
    assert names(result.archive) == ["img", "img/install.sh"]
    assert members(result.archive)["img/install.sh"].mode == 0o755


@pytest.mark.parametrize("suffix, compress", [(".tar", False), (".tar.gz", True),
                                              (".tgz", True)])
def test_local_tar_is_repacked(prepare, tmp_path, suffix, compress):
    source = good_tar(tmp_path / f"pkg{suffix}", compress)
    result = prepare("img", "local", source)
    found = members(result.archive)
    assert read(result.archive, "img/pkg-1.0/setup.py") == b"setup()\n"
    assert read(result.archive, "img/pkg-1.0/hard") == b"setup()\n"  # hardlink -> copy
    assert found["img/pkg-1.0/hard"].isfile()
    assert found["img/pkg-1.0/bin/run"].mode == 0o755
    assert found["img/pkg-1.0/setup.py"].mode == 0o644
    assert found["img/pkg-1.0"].mode == 0o755
    assert found["img/pkg-1.0/bin"].isdir()  # implied parent made explicit
    assert found["img/pkg-1.0/link"].linkname == "setup.py"


def test_local_tar_gives_the_same_archive_compressed_or_not(prepare, tmp_path):
    plain = prepare("img", "local", good_tar(tmp_path / "a.tar"))
    plain_bytes = plain.archive.read_bytes()
    packed = prepare("img", "local", good_tar(tmp_path / "a.tar.gz", compress=True))
    assert packed.archive.read_bytes() == plain_bytes


# --------------------------------------------------------------------------- malicious tars

MALICIOUS = {
    "absolute": (lambda add: add(info("/etc/cron.d/evil"), b"x"), "/etc/cron.d/evil"),
    "dotdot": (lambda add: add(info("pkg/../../escape"), b"x"), "pkg/../../escape"),
    "symlink-abs": (lambda add: add(info("pkg/passwd", tarfile.SYMTYPE, "/etc/passwd")),
                    "pkg/passwd"),
    "symlink-up": (lambda add: add(info("pkg/up", tarfile.SYMTYPE, "../../etc")), "pkg/up"),
    "hardlink-up": (lambda add: add(info("pkg/h", tarfile.LNKTYPE, "../../etc/passwd")),
                    "pkg/h"),
    "hardlink-abs": (lambda add: add(info("pkg/h", tarfile.LNKTYPE, "/etc/passwd")), "pkg/h"),
    "device": (lambda add: add(info("pkg/null", tarfile.CHRTYPE)), "pkg/null"),
    "fifo": (lambda add: add(info("pkg/pipe", tarfile.FIFOTYPE)), "pkg/pipe"),
    "symlink-chain": (lambda add: (add(info("a", tarfile.SYMTYPE, ".")),
                                   add(info("b", tarfile.SYMTYPE, "a/.."))), "b"),
    "through-symlink": (lambda add: (add(info("d", tarfile.SYMTYPE, "sub")),
                                     add(info("sub", tarfile.DIRTYPE, mode=0o755)),
                                     add(info("d/x"), b"x")), "d/x"),
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_local_tar_is_rejected(prepare, tmp_path, dirs, case):
    build, member = MALICIOUS[case]
    source = make_tar(tmp_path / "evil.tar", build)
    with pytest.raises(SourceError) as caught:
        prepare("evil-img", "local", source)
    message = str(caught.value)
    assert repr(member) in message
    assert "evil-img" in message
    assert not any(dirs[0].iterdir())


@pytest.mark.parametrize("case", ["absolute", "dotdot", "symlink-abs", "hardlink-up"])
def test_malicious_downloaded_tar_is_rejected(prepare, http, tmp_path, dirs, case):
    build, member = MALICIOUS[case]
    http.routes["/evil.tar.gz"] = (200, {}, make_tar(tmp_path / "e.tgz", build, True).read_bytes())
    with pytest.raises(SourceError) as caught:
        prepare("evil-img", "url", http.url("/evil.tar.gz"))
    assert repr(member) in str(caught.value)
    assert not any(dirs[0].iterdir())


def test_a_failed_prepare_removes_a_stale_archive(prepare, tmp_path, dirs):
    ok = prepare("img", "local", good_tar(tmp_path / "ok.tar"))
    assert ok.archive.exists()
    with pytest.raises(SourceError):
        prepare("img", "local", make_tar(tmp_path / "bad.tar", MALICIOUS["dotdot"][0]))
    assert not any(dirs[0].iterdir())


def test_not_a_tar_despite_its_name(prepare, tmp_path):
    fake = tmp_path / "fake.tar.gz"
    fake.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(SourceError, match="fake.tar.gz is not a readable tar"):
        prepare("img", "local", fake)


# --------------------------------------------------------------------------- git


@pytest.mark.parametrize("reference, which, content", [
    (None, "second", b"version = 2\n"),
    ("main", "second", b"version = 2\n"),
    ("stable", "first", b"version = 1\n"),
    ("v1", "first", b"version = 1\n"),
    ("refs/tags/v1", "first", b"version = 1\n"),
    ("FIRST", "first", b"version = 1\n"),
    ("first7", "first", b"version = 1\n"),
])
def test_git_resolves_references(prepare, repo, reference, which, content):
    commit = getattr(repo, which)
    if reference == "FIRST":
        reference = repo.first
    elif reference == "first7":
        reference = repo.first[:7]
    result = prepare("keystone-base", "git", repo.path, reference=reference)
    assert result.commit == commit
    assert result.content_digest == commit
    assert result.reference == reference
    assert read(result.archive, "keystone-base/setup.py") == content
    assert ("keystone-base/new.txt" in members(result.archive)) == (which == "second")


def test_git_exports_the_commit_not_the_working_tree(prepare, repo):
    (repo.path / "setup.py").write_text("uncommitted\n")
    (repo.path / "untracked.txt").write_text("x\n")
    result = prepare("img", "git", repo.path)
    found = members(result.archive)
    assert read(result.archive, "img/setup.py") == b"version = 2\n"
    assert "img/untracked.txt" not in found
    assert found["img/bin/run"].mode == 0o755
    assert found["img/link"].issym() and found["img/link"].linkname == "setup.py"
    assert not any(".git" in name.split("/") for name in found)


def test_git_archives_are_reproducible(prepare, repo, tmp_path):
    first = prepare("img", "git", repo.path, reference="v1")
    first_bytes = first.archive.read_bytes()
    elsewhere = prepare_source(SourceSpec("img", "git", str(repo.path), reference="v1"),
                               tmp_path / "dest2", tmp_path / "cache2")
    assert elsewhere.archive.read_bytes() == first_bytes
    assert elsewhere.sha256 == first.sha256


def test_git_cache_is_reused_and_fetched(prepare, repo, dirs):
    prepare("img", "git", repo.path)
    caches = sorted((dirs[1] / "git").glob("*.git"))
    assert len(caches) == 1
    third = repo.commit({"setup.py": "version = 3\n"}, "third")
    repo.repo.git.branch("-D", "stable")
    result = prepare("img", "git", repo.path)
    assert result.commit == third
    assert sorted((dirs[1] / "git").glob("*.git")) == caches
    assert read(result.archive, "img/setup.py") == b"version = 3\n"
    with pytest.raises(SourceError, match="'stable' not found"):  # pruned from the cache
        prepare("img", "git", repo.path, reference="stable")


def test_git_unknown_reference(prepare, repo):
    with pytest.raises(SourceError) as caught:
        prepare("nova-base", "git", repo.path, reference="stable/1999")
    message = str(caught.value)
    assert "'stable/1999'" in message and "nova-base" in message


def test_git_unreachable_repository(prepare, tmp_path):
    with pytest.raises(SourceError) as caught:
        prepare("nova-base", "git", tmp_path / "no-such-repo")
    message = str(caught.value)
    assert "nova-base" in message and "no-such-repo" in message
    assert "does not appear to be a git repository" in message


def test_git_unreachable_with_credentials_is_scrubbed(prepare):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    location = f"https://kiln:{SECRET}@127.0.0.1:{port}/openstack/nova"
    with pytest.raises(SourceError) as caught:
        prepare("nova-base", "git", location, timeout=5)
    assert f"https://127.0.0.1:{port}/openstack/nova" in str(caught.value)
    assert_clean(caught.value, caught.value.args, caught.value.location,
                 caught.value.__cause__, caught.value.__context__)


def test_git_location_cannot_be_an_option(prepare):
    with pytest.raises(SourceError, match="cannot start with '-'"):
        prepare("img", "git", "--upload-pack=touch /tmp/pwned")


@pytest.fixture
def dumb_http_repo(repo, http, tmp_path):
    """The upstream repo as a bare copy served over dumb HTTP, behind basic auth."""
    bare = tmp_path / "served.git"
    git.Repo.clone_from(str(repo.path), str(bare), bare=True)
    git.Repo(bare).git.update_server_info()
    http.static["/git/nova.git"] = bare
    http.auth_paths["/git/"] = ("kiln", SECRET)
    return http


def test_git_over_http_with_credentials(prepare, repo, dumb_http_repo, dirs):
    location = dumb_http_repo.url("/git/nova.git", f"kiln:{SECRET}@")
    result = prepare("nova-base", "git", location, reference="v1")
    assert result.commit == repo.first
    assert result.location == dumb_http_repo.url("/git/nova.git")
    assert_clean(result)
    assert any(auth for _, auth in dumb_http_repo.seen)
    for path in dirs[1].rglob("*"):  # the cache keeps no credentials
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes()


def test_git_over_http_with_a_wrong_password(prepare, dumb_http_repo):
    location = dumb_http_repo.url("/git/nova.git", "kiln:wrong-password@")
    with pytest.raises(SourceError) as caught:
        prepare("nova-base", "git", location)
    assert "wrong-password" not in str(caught.value)
    assert dumb_http_repo.url("/git/nova.git") in str(caught.value)


# --------------------------------------------------------------------------- url


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_url_file_with_the_right_sha256(prepare, http):
    http.routes["/files/patch.diff"] = (200, {}, b"--- a\n+++ b\n")
    result = prepare("img", "url", http.url("/files/patch.diff"),
                     sha256=sha(b"--- a\n+++ b\n"))
    assert names(result.archive) == ["img", "img/patch.diff"]
    assert read(result.archive, "img/patch.diff") == b"--- a\n+++ b\n"
    assert result.content_digest == sha(b"--- a\n+++ b\n")
    assert result.sha256 == sha(result.archive.read_bytes())
    assert result.commit is None


def test_url_sha256_mismatch_leaves_nothing(prepare, http, dirs):
    http.routes["/a.txt"] = (200, {}, b"tampered")
    expected = sha(b"original")
    with pytest.raises(SourceError) as caught:
        prepare("img", "url", http.url("/a.txt"), sha256=expected)
    assert str(caught.value).startswith(
        f"sha256 mismatch for image img: expected {expected}, got {sha(b'tampered')}")
    assert not any(dirs[0].iterdir())


def test_url_tar_archive_is_repacked(prepare, http, tmp_path):
    body = good_tar(tmp_path / "pkg.tgz", compress=True).read_bytes()
    http.routes["/releases/pkg-1.0.tar.gz"] = (200, {}, body)
    result = prepare("img", "url", http.url("/releases/pkg-1.0.tar.gz"))
    assert read(result.archive, "img/pkg-1.0/setup.py") == b"setup()\n"
    assert result.content_digest == sha(body)
    again = prepare("img", "url", http.url("/releases/pkg-1.0.tar.gz"))
    assert again.sha256 == result.sha256


def test_url_http_error(prepare, http):
    with pytest.raises(SourceError) as caught:
        prepare("img", "url", http.url("/missing.tar.gz"))
    assert "404" in str(caught.value)
    assert http.url("/missing.tar.gz") in str(caught.value)


def test_url_credentials_are_sent_and_never_shown(prepare, http):
    http.routes["/private/a.txt"] = (200, {}, b"private")
    http.auth_paths["/private/"] = ("kiln", SECRET)
    location = http.url("/private/a.txt", f"kiln:{SECRET}@")
    result = prepare("img", "url", location)
    assert read(result.archive, "img/a.txt") == b"private"
    assert result.location == http.url("/private/a.txt")
    assert_clean(result)

    http.routes["/private/b.txt"] = (200, {}, b"other")
    with pytest.raises(SourceError) as caught:
        prepare("img", "url", http.url("/private/b.txt", f"kiln:{SECRET}@"), sha256="0" * 64)
    assert_clean(caught.value, caught.value.args, caught.value.location)

    with pytest.raises(SourceError) as caught:
        prepare("img", "url", http.url("/private/a.txt", f"kiln:{SECRET}x@"))
    assert "401" in str(caught.value)
    assert_clean(caught.value, caught.value.args, caught.value.location)


def test_url_follows_redirects(prepare, http):
    http.routes["/old"] = (302, {"Location": "/new/file.txt"}, b"")
    http.routes["/new/file.txt"] = (200, {}, b"moved")
    result = prepare("img", "url", http.url("/old"))
    assert read(result.archive, "img/old") == b"moved"


def test_url_credentials_do_not_follow_a_redirect_to_another_host(prepare, serve):
    first, other = serve(), serve()
    first.routes["/a.txt"] = (302, {"Location": other.url("/a.txt")}, b"")
    other.routes["/a.txt"] = (200, {}, b"elsewhere")
    prepare("img", "url", first.url("/a.txt", f"kiln:{SECRET}@"))
    assert first.seen[0][1] is not None
    assert other.seen == [("/a.txt", None)]


def test_url_timeout(prepare):
    with socket.socket() as sock:  # accepts connections, never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        with pytest.raises(SourceError, match="timed out"):
            prepare("img", "url", f"http://127.0.0.1:{port}/slow.tar", timeout=0.3)


def test_url_download_is_cached_by_sha256(prepare, http):
    http.routes["/a.txt"] = (200, {}, b"content")
    first = prepare("img", "url", http.url("/a.txt"), sha256=sha(b"content"))
    del http.routes["/a.txt"]
    again = prepare("img", "url", http.url("/a.txt"), sha256=sha(b"content"))
    assert again.sha256 == first.sha256
    assert len(http.seen) == 1


@pytest.fixture
def raw_http():
    """raw_http(response) -> a URL whose server sends ``response`` bytes as they are, once."""
    sockets = []

    def start(response: bytes) -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        sockets.append(sock)

        def answer():
            connection, _ = sock.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(response)

        threading.Thread(target=answer, daemon=True).start()
        return f"http://127.0.0.1:{sock.getsockname()[1]}/file.bin"

    yield start
    for sock in sockets:
        sock.close()


def test_url_truncated_download(prepare, raw_http):
    url = raw_http(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nabc")
    with pytest.raises(SourceError, match="download truncated: got 3 of 10 bytes"):
        prepare("img", "url", url)


def test_url_content_coding_is_not_undone(prepare, raw_http):
    body = gzip.compress(b"plain text")
    url = raw_http(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: "
                   + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
    result = prepare("img", "url", url, sha256=sha(body))   # the bytes as sent
    assert read(result.archive, "img/file.bin") == body


def test_file_url(prepare, tmp_path):
    source = good_tar(tmp_path / "pkg.tar")
    result = prepare("img", "url", source.as_uri())
    assert read(result.archive, "img/pkg-1.0/setup.py") == b"setup()\n"


# --------------------------------------------------------------------------- misc


@pytest.mark.parametrize("name", ["", "..", "a/b"])
def test_unusable_image_names(prepare, tmp_path, name):
    with pytest.raises(SourceError):
        prepare(name, "local", tmp_path)


def test_unknown_type_in_a_spec(prepare, tmp_path):
    with pytest.raises(SourceError, match="unknown source type 'svn'"):
        prepare("img", "svn", tmp_path)
