"""Registries for the registry client's tests, all on 127.0.0.1 and stopped afterwards.

- ``tls_registry``: Debian's ``docker-registry`` with htpasswd (Basic) auth and
  TLS, its certificate signed by a CA made here.
- ``token_registry``: the same server with token (Bearer) auth over plain
  HTTP, and a small token service that signs RS256 JWTs with an x5c header.
- ``FaultProxy``: a plain-HTTP proxy in front of a registry that counts
  requests, paginates ``tags/list?n=`` (Debian's docker-registry 2.8 ignores
  ``n``), answers 500 to chosen blob uploads and can redirect blob downloads
  elsewhere, as registries backed by object storage do.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import shutil
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import REGISTRY_CONFIG, free_port, unavailable

USERNAME = "kiln"
PASSWORD = "s3cret-Pa55word"
SERVICE = "kiln-test-registry"
ISSUER = "kiln-test-issuer"




def _crypto():
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        unavailable("the cryptography package is not installed (pip install cryptography)")
    return x509, hashes, serialization, ec, padding, rsa, ExtendedKeyUsageOID, NameOID


# -- certificates --------------------------------------------------------------------

@dataclass
class TestPKI:
    ca_cert: Path
    server_cert: Path
    server_key: Path

    __test__ = False


def make_pki(directory: Path) -> TestPKI:
    """A CA and a server certificate for 127.0.0.1 and localhost, as PEM files."""
    x509, hashes, serialization, ec, _, _, eku, name_oid = _crypto()
    now = datetime.datetime.now(datetime.UTC)

    def name(text):
        return x509.Name([x509.NameAttribute(name_oid.COMMON_NAME, text)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("kiln test CA"))
          .issuer_name(name("kiln test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    server = (x509.CertificateBuilder().subject_name(name("127.0.0.1"))
              .issuer_name(ca.subject).public_key(key.public_key())
              .serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(hours=1))
              .not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName([
                  x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                  x509.DNSName("localhost")]), critical=False)
              .add_extension(x509.ExtendedKeyUsage([eku.SERVER_AUTH]), critical=False)
              .sign(ca_key, hashes.SHA256()))
    pki = TestPKI(directory / "ca.crt", directory / "server.crt", directory / "server.key")
    pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.server_cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    pki.server_key.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))
    return pki


# -- running docker-registry ---------------------------------------------------------

@dataclass
class RunningRegistry:
    host: str                       # "127.0.0.1:PORT"
    url: str
    workdir: Path
    process: subprocess.Popen
    ca_cert: Path | None = None
    token_service: TokenService | None = None

    def log(self) -> str:
        path = self.workdir / "registry.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.token_service is not None:
            self.token_service.stop()


def start_registry(workdir: Path, extra_config: str, *, tls: TestPKI | None = None,
                   token_service: TokenService | None = None) -> RunningRegistry:
    binary = shutil.which("docker-registry")
    if binary is None:
        unavailable("no docker-registry binary on PATH (install docker-registry)")
    storage = workdir / "storage"
    storage.mkdir(parents=True)
    host = f"127.0.0.1:{free_port()}"
    if tls is not None:
        extra_config = (f"  tls:\n    certificate: {tls.server_cert}\n"
                        f"    key: {tls.server_key}\n") + extra_config
    config = workdir / "config.yml"
    config.write_text(REGISTRY_CONFIG.format(storage=storage, host=host, extra=extra_config))
    with open(workdir / "registry.log", "wb") as log:
        process = subprocess.Popen([binary, "serve", str(config)], stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    scheme = "https" if tls else "http"
    reg = RunningRegistry(host=host, url=f"{scheme}://{host}", workdir=workdir,
                          process=process, ca_cert=tls.ca_cert if tls else None,
                          token_service=token_service)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            reg.stop()
            pytest.fail(f"docker-registry exited with code {process.returncode}: {reg.log()}",
                        pytrace=False)
        try:
            # Any HTTP answer (401 included) means it is serving.
            requests.get(f"{reg.url}/v2/", verify=str(reg.ca_cert) if tls else True,
                         timeout=2)
            return reg
        except requests.RequestException:
            time.sleep(0.1)
    reg.stop()
    pytest.fail(f"docker-registry did not answer on {reg.url} within 15 s: {reg.log()}",
                pytrace=False)


def htpasswd_line(username: str, password: str) -> str:
    binary = shutil.which("htpasswd")
    if binary is None:
        unavailable("no htpasswd binary on PATH (install apache2-utils)")
    result = subprocess.run([binary, "-Bbn", username, password], capture_output=True,
                            text=True, check=True, timeout=30)
    return result.stdout.strip() + "\n"


@pytest.fixture(scope="session")
def tls_registry(tmp_path_factory) -> Iterator[RunningRegistry]:
    """docker-registry with htpasswd auth (USERNAME/PASSWORD) and TLS from a test CA."""
    workdir = tmp_path_factory.mktemp("tls-registry")
    pki = make_pki(workdir)
    htpasswd = workdir / "htpasswd"
    htpasswd.write_text(htpasswd_line(USERNAME, PASSWORD))
    auth = f"auth:\n  htpasswd:\n    realm: kiln-test\n    path: {htpasswd}\n"
    reg = start_registry(workdir, auth, tls=pki)
    try:
        yield reg
    finally:
        reg.stop()


# -- a token service -----------------------------------------------------------------

def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class TokenService:
    """Issues registry tokens (RS256 JWT with an x5c header) for USERNAME/PASSWORD.

    Anonymous requests get a token without access; ``requests`` lists the
    scopes asked for.
    """

    def __init__(self, workdir: Path, lifetime: int = 300):
        x509, hashes, serialization, _, padding, rsa, _, name_oid = _crypto()
        now = datetime.datetime.now(datetime.UTC)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        subject = x509.Name([x509.NameAttribute(name_oid.COMMON_NAME, "kiln token signer")])
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(self._key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(self._key, hashes.SHA256()))
        self.cert_path = workdir / "token-signer.crt"
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self._x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        self._padding, self._hashes = padding, hashes
        self.lifetime = lifetime
        self.requests: list[list[str]] = []
        self.refused = 0
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                service._answer(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(handler.path).query)
        scopes = [s for value in query.get("scope", []) for s in value.split()]
        self.requests.append(scopes)
        subject = ""
        header = handler.headers.get("Authorization", "")
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            if (user, password) != (USERNAME, PASSWORD):
                self.refused += 1
                handler.send_response(401)
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return
            subject = user
        access = []
        for scope in scopes if subject else []:
            kind, name, actions = scope.split(":", 2) if scope.count(":") >= 2 else ("", "", "")
            if kind == "repository":
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        body = json.dumps({"token": self._jwt(subject, access), "expires_in": self.lifetime,
                           "issued_at": datetime.datetime.now(datetime.UTC)
                           .isoformat()}).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _jwt(self, subject: str, access: list[dict]) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {"iss": ISSUER, "sub": subject, "aud": SERVICE, "exp": now + self.lifetime,
                  "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        signing_input = (_b64url(json.dumps(header).encode()) + "." +
                         _b64url(json.dumps(claims).encode()))
        signature = self._key.sign(signing_input.encode(), self._padding.PKCS1v15(),
                                   self._hashes.SHA256())
        return signing_input + "." + _b64url(signature)


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory) -> Iterator[RunningRegistry]:
    """docker-registry with token auth over plain HTTP, and its token service."""
    workdir = tmp_path_factory.mktemp("token-registry")
    service = TokenService(workdir)
    auth = (f"auth:\n  token:\n    realm: {service.url}\n    service: {SERVICE}\n"
            f"    issuer: {ISSUER}\n    rootcertbundle: {service.cert_path}\n")
    try:
        reg = start_registry(workdir, auth, token_service=service)
    except BaseException:
        service.stop()
        raise
    try:
        yield reg
    finally:
        reg.stop()


# -- a proxy that counts, paginates and fails ----------------------------------------

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "te", "trailer",
        "upgrade", "proxy-connection"}


@dataclass
class FaultProxy:
    """Plain HTTP on 127.0.0.1 in front of ``upstream`` (a plain-HTTP registry URL)."""

    upstream: str
    fail_uploads: int = 0           # blob upload PUT/PATCHes to answer 500 ...
    pass_uploads: int = 0           # ... after letting this many through
    paginate: bool = True
    redirect_blobs: bool = False    # answer blob GETs with a 307 to the upstream itself
    seen: list[tuple[str, str]] = field(default_factory=list)
    failed: int = 0

    def __post_init__(self):
        self._lock = threading.Lock()
        self._session = requests.Session()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                proxy._forward(self)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._session.close()

    def _should_fail(self, method: str, path: str) -> bool:
        if method not in ("PUT", "PATCH") or "/blobs/uploads/" not in path:
            return False
        with self._lock:
            if self.pass_uploads > 0:
                self.pass_uploads -= 1
                return False
            if self.fail_uploads > 0:
                self.fail_uploads -= 1
                self.failed += 1
                return True
        return False

    def _forward(self, handler: BaseHTTPRequestHandler) -> None:
        method, path = handler.command, handler.path
        with self._lock:
            self.seen.append((method, path))
        body = _read_body(handler)
        if self._should_fail(method, path):
            _send(handler, 500, {"Content-Type": "application/json"},
                  b'{"errors":[{"code":"UNKNOWN","message":"injected failure"}]}')
            return
        parts = urllib.parse.urlsplit(path)
        query = urllib.parse.parse_qs(parts.query)
        if self.redirect_blobs and method == "GET" and "/blobs/sha256:" in parts.path:
            _send(handler, 307, {"Location": self.upstream + path}, b"")
            return
        if (self.paginate and method == "GET" and parts.path.endswith("/tags/list")
                and "n" in query):
            self._paginated_tags(handler, parts.path, query)
            return
        headers = {}
        for key, value in handler.headers.items():
            if key.lower() in _HOP:
                continue
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        response = self._session.request(method, self.upstream + path, headers=headers,
                                         data=body, allow_redirects=False, stream=True)
        with response:
            content = b"" if method == "HEAD" else response.raw.read(decode_content=False)
            out = {k: v for k, v in response.headers.items() if k.lower() not in _HOP}
            if method == "HEAD":
                out["Content-Length"] = response.headers.get("Content-Length", "0")
            _send(handler, response.status_code, out, content, head=method == "HEAD")

    def _paginated_tags(self, handler, path: str, query: dict) -> None:
        """tags/list as the distribution spec pages it: n entries after ``last``, Link next."""
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP}
        response = self._session.get(self.upstream + path, headers=headers)
        if response.status_code != 200:
            _send(handler, response.status_code,
                  {"Content-Type": response.headers.get("Content-Type", "text/plain")},
                  response.content)
            return
        document = response.json()
        tags = sorted(document.get("tags") or [])
        size, last = int(query["n"][0]), query.get("last", [""])[0]
        rest = [tag for tag in tags if tag > last]
        page = rest[:size]
        out = {"Content-Type": "application/json"}
        if len(rest) > size:
            following = urllib.parse.urlencode({"n": size, "last": page[-1]})
            out["Link"] = f'<{path}?{following}>; rel="next"'
        _send(handler, 200, out, json.dumps({"name": document.get("name"),
                                             "tags": page}).encode())


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        data = bytearray()
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                handler.rfile.readline()
                return bytes(data)
            data += handler.rfile.read(size)
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


def _send(handler, status: int, headers: dict, body: bytes, head: bool = False) -> None:
    handler.send_response(status)
    for key, value in headers.items():
        handler.send_header(key, value)
    if "Content-Length" not in headers:
        handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if not head and body:
        handler.wfile.write(body)


@pytest.fixture
def fault_proxy(registry) -> Iterator[FaultProxy]:
    """A FaultProxy in front of conftest's plain registry."""
    proxy = FaultProxy(registry.url)
    try:
        yield proxy
    finally:
        proxy.stop()
