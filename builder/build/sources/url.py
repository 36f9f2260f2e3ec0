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
from http.client import HTTPException
from pathlib import Path
from typing import IO

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

# --------------------------------------------------------------------------- url


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follow redirects; credentials go along only to the same scheme, host and port."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        auth = req.unredirected_hdrs.get("Authorization")
        if new is not None and auth and _origin(req.full_url) == _origin(new.full_url):
            new.add_unredirected_header("Authorization", auth)
        return new


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
    request = urllib.request.Request(url, headers={"User-Agent": "kiln"})
    if user is not None:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode("ascii")
        request.add_unredirected_header("Authorization", f"Basic {token}")
    handlers: list[urllib.request.BaseHandler] = [_RedirectHandler()]
    ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE")
    if ca_bundle and not os.environ.get("SSL_CERT_FILE"):
        context = ssl.create_default_context(cafile=ca_bundle)
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    digest = hashlib.sha256()
    received = 0
    try:
        with opener.open(request, timeout=timeout) as response:
            expected = response.headers.get("Content-Length")
            for chunk in iter(lambda: response.read(CHUNK), b""):
                digest.update(chunk)
                fh.write(chunk)
                received += len(chunk)
            if expected and expected.isdigit() and int(expected) != received \
                    and not response.headers.get("Content-Encoding"):
                raise source_error(spec, f"download truncated: got {received} of {expected} bytes")
    except urllib.error.HTTPError as exc:
        raise source_error(spec, f"download failed: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise source_error(spec, f"download failed: {exc.reason}") from None
    except (TimeoutError, HTTPException, OSError, ValueError) as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
        raise source_error(spec, f"download failed: {reason}") from None
    return digest.hexdigest()
