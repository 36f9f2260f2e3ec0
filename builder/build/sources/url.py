"""A url source: a tar or a single file downloaded over http(s) or read from file://."""

from __future__ import annotations

import base64
import hashlib
import os
import posixpath
import ssl
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO

import requests
import requests.adapters
import requests.auth
import urllib3.exceptions

from builder.build.sources.archive import (
    CHUNK,
    Entry,
    file_sha256,
    open_tar,
    tar_entries,
    write_archive,
)
from builder.build.sources.spec import SourceSpec, source_error
from builder.errors import SourceError, scrub_url


class _Session(requests.Session):
    """Follows redirects; credentials go along only to the same scheme, host and port,
    and none ever come from ``~/.netrc``."""

    def rebuild_auth(self, prepared_request, response):
        if "Authorization" in prepared_request.headers \
                and _origin(response.request.url) != _origin(prepared_request.url):
            del prepared_request.headers["Authorization"]


class _NoNetrc(requests.auth.AuthBase):
    """Keeps requests from adding ``~/.netrc`` credentials: Authorization is set here."""

    def __call__(self, request):
        return request


class _Trust(requests.adapters.HTTPAdapter):
    """TLS checked against one SSL context (not certifi's bundle): the system's CAs,
    or the ``REQUESTS_CA_BUNDLE`` bundle alone when ``SSL_CERT_FILE`` is not set."""

    def __init__(self, context: ssl.SSLContext):
        self._context = context
        super().__init__()

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host, pool = super().build_connection_pool_key_attributes(request, verify, cert)
        pool.pop("ca_certs", None)
        pool.pop("ca_cert_dir", None)
        pool["ssl_context"] = self._context
        return host, pool

    def cert_verify(self, conn, url, verify, cert):
        super().cert_verify(conn, url, verify, cert)
        conn.ca_certs = conn.ca_cert_dir = None   # the context has the CAs


def _ssl_context() -> ssl.SSLContext:
    ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE")
    if ca_bundle and not os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=ca_bundle)
    return ssl.create_default_context()


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower(), parts.hostname, parts.port


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``https://u:p@host/x`` -> (``https://host/x``, ``u``, ``p``), percent-decoded."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, None, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, has_password, password = userinfo.partition(":")
    clean = urllib.parse.urlunsplit(parts._replace(netloc=hostport))
    return (clean, urllib.parse.unquote(user),
            urllib.parse.unquote(password) if has_password else None)


def prepare_url(spec: SourceSpec, out: Path, cache_dir: Path,
                 timeout: float) -> tuple[None, str]:
    downloads = cache_dir / "downloads"
    downloads.mkdir(exist_ok=True)
    cached = downloads / spec.sha256 if spec.sha256 else None
    if cached is not None and cached.is_file() and file_sha256(cached) == spec.sha256:
        _archive_download(spec, cached, out, cache_dir)
        return None, spec.sha256
    fd, tmp_name = tempfile.mkstemp(dir=downloads, prefix=".download-")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            digest = _download(spec, fh, timeout)
        if spec.sha256 and digest != spec.sha256:
            raise SourceError(f"sha256 mismatch for image {spec.name}: expected {spec.sha256}, "
                              f"got {digest} (from {scrub_url(spec.location)})",
                              image=spec.name, location=spec.location)
        if cached is not None:
            os.replace(tmp, cached)
        _archive_download(spec, cached or tmp, out, cache_dir)
        return None, digest
    finally:
        tmp.unlink(missing_ok=True)


def _archive_download(spec: SourceSpec, path: Path, out: Path, cache_dir: Path) -> None:
    """Repack a downloaded tar, or archive the file as ``<name>/<basename>``."""
    if tarfile.is_tarfile(path):
        with open_tar(spec, path, cache_dir) as tar:
            write_archive(spec, tar_entries(spec, tar), out)
    else:
        entry = Entry("file", open=lambda: open(path, "rb"))
        write_archive(spec, {_url_basename(spec.location): entry}, out)


def _url_basename(url: str) -> str:
    name = posixpath.basename(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    return "download" if name in ("", ".", "..") or "\0" in name else name


def _download(spec: SourceSpec, fh: IO[bytes], timeout: float) -> str:
    """Stream the URL into ``fh``; returns the sha256 of what was received."""
    url, user, password = split_credentials(spec.location)
    if urllib.parse.urlsplit(url).scheme.lower() == "file":
        return _read_file_url(spec, url, fh)
    # The bytes as sent: no content coding, so the sha256 is that of the file.
    headers = {"User-Agent": "kiln", "Accept-Encoding": "identity"}
    if user is not None:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode("ascii")
        headers["Authorization"] = f"Basic {token}"
    digest = hashlib.sha256()
    received = 0
    expected = None
    with _Session() as session:
        session.mount("https://", _Trust(_ssl_context()))
        try:
            with session.get(url, headers=headers, auth=_NoNetrc(), stream=True,
                             timeout=timeout) as response:
                if not 200 <= response.status_code < 300:
                    raise source_error(spec, f"download failed: HTTP {response.status_code} "
                                             f"{response.reason}")
                expected = response.headers.get("Content-Length")
                for chunk in response.raw.stream(CHUNK, decode_content=False):
                    digest.update(chunk)
                    fh.write(chunk)
                    received += len(chunk)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError,
                ValueError) as exc:
            if isinstance(exc, urllib3.exceptions.ProtocolError) and expected \
                    and expected.isdigit() and int(expected) != received:
                raise _truncated(spec, received, expected) from None
            raise source_error(spec, f"download failed: {_reason(exc)}") from None
        if expected and expected.isdigit() and int(expected) != received \
                and not response.headers.get("Content-Encoding"):
            raise _truncated(spec, received, expected)
    return digest.hexdigest()


def _truncated(spec: SourceSpec, received: int, expected: str) -> SourceError:
    return source_error(spec, f"download truncated: got {received} of {expected} bytes")


def _reason(exc: BaseException) -> str:
    """A short reason for a failed download (no URL: it may hold credentials)."""
    if isinstance(exc, (requests.Timeout, urllib3.exceptions.ReadTimeoutError, TimeoutError)):
        return "timed out"
    if isinstance(exc, requests.TooManyRedirects):
        return "too many redirects"
    pending, seen = [exc], set()
    while pending:   # the innermost OS error, e.g. "[Errno 111] Connection refused"
        error = pending.pop(0)
        if id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno is not None:
            return str(error)
        pending.extend(e for e in (*error.args, getattr(error, "reason", None),
                                   error.__cause__, error.__context__)
                       if isinstance(e, BaseException))
    return str(exc) or type(exc).__name__


def _read_file_url(spec: SourceSpec, url: str, fh: IO[bytes]) -> str:
    """Copy a ``file://`` URL's file into ``fh``; returns its sha256."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url) as response:
            for chunk in iter(lambda: response.read(CHUNK), b""):
                digest.update(chunk)
                fh.write(chunk)
    except urllib.error.URLError as exc:
        raise source_error(spec, f"download failed: {exc.reason}") from None
    except (OSError, ValueError) as exc:
        raise source_error(spec, f"download failed: {exc}") from None
    return digest.hexdigest()
