"""The HTTP layer of the registry client: session, TLS, retries with backoff, errors."""

from __future__ import annotations

import os
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urljoin, urlsplit

import requests
import requests.adapters
import requests.auth

from builder.errors import ConfigError, RegistryError
from builder.reference import host_problem
from builder.registry.auth import (
    DOCKER_HUB,
    Authenticating,
    Credentials,
    Transient,
    parse_retry_after,
)

MAX_BACKOFF = 30.0               # seconds, the longest pause between two tries
MAX_REDIRECTS = 5
CHUNK = 1 << 20

T = TypeVar("T")


@dataclass(frozen=True)
class RegistryOptions:
    """How to talk to one registry."""

    insecure: bool = False                  # plain HTTP instead of HTTPS
    ca_cert: Path | None = None             # PEM CA bundle trusted for this registry's host
    credentials: Credentials | None = None  # None: from the Docker config.json, if any
    timeout: float = 30                     # seconds to connect, and between bytes read
    retries: int = 3                        # further tries after a 5xx or broken connection
    backoff: float = 0.5                    # seconds before the first retry; doubles each time


class _NoAuth(requests.auth.AuthBase):
    """Keeps requests from adding ~/.netrc credentials: this module sets Authorization itself."""

    def __call__(self, request):
        return request


_NO_AUTH = _NoAuth()


# -- errors ----------------------------------------------------------------------

def connection_reason(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, requests.Timeout):
        return f"no answer within {timeout:g} s"
    unresolved = _first(exc, socket.gaierror)
    if unresolved is not None:
        return f"cannot resolve the host name ({unresolved.strerror or 'unknown host'})"
    os_errors = [error for error in _all(exc, OSError) if isinstance(error.errno, int)
                 and error.errno > 0]
    if os_errors:
        return os.strerror(os_errors[0].errno).lower()
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "the connection broke during the answer"
    return "the connection failed"


def _all(exc: BaseException, kind: type) -> list:
    """Every exception of ``kind`` among an exception, its arguments, reason and causes."""
    found, seen, queue = [], set(), [exc]
    while queue:
        item = queue.pop(0)
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, kind):
            found.append(item)
        queue.extend((*item.args, getattr(item, "reason", None), item.__cause__,
                      item.__context__))
    return found


def _first(exc: BaseException, kind: type):
    found = _all(exc, kind)
    return found[0] if found else None


def _ssl_reason(exc: BaseException) -> tuple[str, bool]:
    """(reason, plain_http): why a TLS connection failed; plain_http if the peer is not TLS."""
    verify = _first(exc, ssl.SSLCertVerificationError)
    if verify is not None and verify.verify_message:
        return f"certificate verify failed: {verify.verify_message}", False
    error = _first(exc, ssl.SSLError)
    reason = (getattr(error, "reason", None) or "").lower().replace("_", " ")
    if reason in ("wrong version number", "record layer failure", "http request",
                  "packet length too long", "unknown protocol"):
        return "the server does not speak TLS", True
    return reason or "handshake failed", False


def _error_detail(response: requests.Response) -> str:
    """ "CODE: message" from a registry's JSON error body, else the HTTP reason."""
    try:
        errors = response.json().get("errors") or []
        first = errors[0]
        return f"{first.get('code', 'ERROR')}: {first.get('message', '')}".strip(": ")
    except (ValueError, AttributeError, IndexError, TypeError):
        text = " ".join(response.text[:200].split()) if response.text else ""
        return text or response.reason or ""


class HttpClient(Authenticating):
    """One registry over HTTP(S): a pooled session, retries with backoff, authentication,
    and every failure as one sentence. Safe to share between threads.

    ``requests_made`` counts every HTTP request sent (token requests and
    retries included). A ``session`` may be passed, e.g. with response hooks.
    """

    def __init__(self, host: str, options: RegistryOptions | None = None, *,
                 session: requests.Session | None = None):
        host = host.strip().rstrip("/")
        if not host or "://" in host or "/" in host:
            raise ConfigError(f"registry {host!r} must be given as host or host:port, "
                              f"without a scheme or path (use --insecure for plain HTTP)")
        problem = host_problem(host)
        if problem is not None:
            raise ConfigError(f"{problem} (give a registry as host or host:port)")
        self.host = host
        self.options = options or RegistryOptions()
        if self.options.ca_cert is not None:
            _check_ca(self.options.ca_cert)
        api_host = DOCKER_HUB if host in ("docker.io", "index.docker.io") else host
        self.api_host = api_host
        self.base_url = f"{'http' if self.options.insecure else 'https'}://{api_host}"
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = "kiln-registry (python-requests)"
            adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=16)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        self._session = session
        self._lock = threading.Lock()
        self._requests = 0
        self._scheme: str | None = None         # "basic" or "bearer" once challenged
        self._realm: str | None = None
        self._service: str | None = None
        self._tokens: dict[str, tuple[str, float]] = {}
        self._credentials: Credentials | None = self.options.credentials
        self._credentials_source = "the given credentials" if self._credentials else None
        self._credentials_loaded = self._credentials is not None

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()

    @property
    def requests_made(self) -> int:
        with self._lock:
            return self._requests

    # -- HTTP, authentication and retries ----------------------------------------

    def _request(self, method: str, url: str, scope: str, doing: str,
                 repository: str | None = None, **kwargs) -> requests.Response:
        """An exchange, tried again after transient failures; any status but 401/5xx returned."""
        if url.startswith("/"):
            url = self.base_url + url
        return self._retrying(doing, lambda: self._exchange(method, url, scope, **kwargs),
                              repository)

    def _retrying(self, doing: str, attempt: Callable[[], T],
                  repository: str | None = None) -> T:
        tries = max(0, self.options.retries) + 1
        last: Transient | None = None
        for number in range(tries):
            try:
                return attempt()
            except Transient as exc:
                last = exc
                if number + 1 < tries:
                    time.sleep(self._delay(number, exc.retry_after))
        assert last is not None
        attempts = f"{tries} attempt{'s' if tries > 1 else ''}"
        hint = None
        if last.connection:
            hint = f"is the registry running, and is {self.host} its address?"
        raise RegistryError(f"{doing} failed after {attempts}: {last.reason}",
                            registry=self.host, repository=repository, hint=hint)

    def _delay(self, number: int, retry_after: float | None) -> float:
        delay = min(self.options.backoff * 2 ** number, MAX_BACKOFF)
        delay *= 1 + random.random() / 4
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_BACKOFF))
        return delay

    def _exchange(self, method: str, url: str, scope: str, *, headers=None, data=None,
                  stream: bool = False, replayable: bool = True) -> requests.Response:
        """One request, answering one authentication challenge; Transient on 5xx/429."""
        headers = dict(headers or {})
        sent = self._authorization(scope)
        if sent:
            headers["Authorization"] = sent
        response = self._raw(method, url, headers=headers, data=data, stream=stream)
        if response.status_code == 401:
            challenge = response.headers.get("WWW-Authenticate", "")
            response.close()
            answer = self._answer(challenge, scope, sent)
            if not replayable:  # the streamed body is spent: the caller tries again
                raise Transient(f"registry {self.host} asked to authenticate again")
            headers["Authorization"] = answer
            response = self._raw(method, url, headers=headers, data=data, stream=stream)
            if response.status_code == 401:
                response.close()
                raise self._auth_failed(scope, refused_by="registry")
        if response.status_code >= 500 or response.status_code == 429:
            reason = f"registry {urlsplit(url).netloc} answered HTTP {response.status_code}"
            detail = _error_detail(response) if method != "HEAD" else response.reason
            if detail:
                reason += f" ({detail})"
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            response.close()
            raise Transient(reason, retry_after=retry_after)
        return response

    def _raw(self, method: str, url: str, *, headers, data=None,
             stream: bool = False) -> requests.Response:
        """Send one request, following a GET's or HEAD's redirects (blobs often live elsewhere).

        Redirects are followed here rather than by requests so that each hop
        is counted, gets the CA that fits its host, and loses the
        Authorization header when it leaves the registry's host.
        """
        for _ in range(MAX_REDIRECTS + 1):
            response = self._send(method, url, headers=headers, data=data, stream=stream)
            location = response.headers.get("Location")
            if (method not in ("GET", "HEAD") or not location
                    or response.status_code not in (301, 302, 303, 307, 308)):
                return response
            response.close()
            target = urljoin(url, location)
            if urlsplit(target).netloc != urlsplit(url).netloc:
                headers = {key: value for key, value in headers.items()
                           if key.lower() != "authorization"}
            url = target
        raise RegistryError(f"registry {self.host} redirected a request more than "
                            f"{MAX_REDIRECTS} times", registry=self.host)

    def _send(self, method: str, url: str, *, headers, data=None,
              stream: bool = False) -> requests.Response:
        with self._lock:
            self._requests += 1
        netloc = urlsplit(url).netloc
        verify: bool | str = True
        if netloc == self.api_host and self.options.ca_cert is not None:
            verify = str(self.options.ca_cert)
        try:
            return self._session.request(method, url, headers=headers, data=data,
                                         stream=stream, verify=verify, auth=_NO_AUTH,
                                         timeout=self.options.timeout, allow_redirects=False)
        except requests.exceptions.SSLError as exc:
            raise self._tls_error(netloc, exc) from exc
        except (requests.ConnectionError, requests.Timeout,
                requests.exceptions.ChunkedEncodingError) as exc:
            reason = connection_reason(exc, self.options.timeout)
            raise Transient(f"cannot reach {netloc}: {reason}", connection=True) from exc
        except requests.RequestException as exc:
            raise RegistryError(f"a request to registry {self.host} failed: "
                                f"{type(exc).__name__}", registry=self.host) from exc

    def _tls_error(self, netloc: str, exc: BaseException) -> RegistryError:
        reason, plain_http = _ssl_reason(exc)
        if plain_http:
            hint = "if it is a plain-HTTP registry, use --insecure"
        elif self.options.ca_cert is not None and netloc == self.api_host:
            hint = f"is {self.options.ca_cert} the CA that signed its certificate?"
        else:
            hint = ("if it uses a private CA, give the CA certificate with --ca-cert; "
                    "if it serves plain HTTP, use --insecure")
        return RegistryError(f"TLS connection to {netloc} failed: {reason}",
                             registry=self.host, hint=hint)

    def _unexpected(self, response: requests.Response, doing: str,
                    repository: str | None = None) -> RegistryError:
        status = response.status_code
        detail = _error_detail(response) if response.request.method != "HEAD" else ""
        hint = None
        if status == 400 and "HTTP request to an HTTPS server" in response.text:
            hint = "the registry serves HTTPS: drop --insecure"
        elif status == 403:
            hint = "check that the user may do this"
        text = f"{doing} failed: registry {self.host} answered HTTP {status}"
        if detail:
            text += f" ({detail})"
        return RegistryError(text, registry=self.host, repository=repository, hint=hint)

    def _json(self, response: requests.Response, doing: str, repository: str | None):
        try:
            return response.json()
        except ValueError as exc:
            raise RegistryError(f"{doing} failed: registry {self.host} sent something that is "
                                f"not JSON", registry=self.host, repository=repository) from exc

    def _read_limited(self, response: requests.Response, limit: int, doing: str,
                      repository: str | None) -> bytes:
        length = response.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > limit:
            raise RegistryError(f"{doing} failed: it is larger than {limit >> 20} MiB",
                                registry=self.host, repository=repository)
        data = bytearray()
        try:
            for chunk in response.iter_content(CHUNK):
                data += chunk
                if len(data) > limit:
                    raise RegistryError(f"{doing} failed: it is larger than {limit >> 20} MiB",
                                        registry=self.host, repository=repository)
        except (requests.ConnectionError, requests.Timeout,
                requests.exceptions.ChunkedEncodingError) as exc:
            raise RegistryError(f"{doing} failed: the connection broke: "
                                f"{connection_reason(exc, self.options.timeout)}",
                                registry=self.host, repository=repository) from exc
        return bytes(data)


def pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


def push_scope(repository: str) -> str:
    return f"repository:{repository}:pull,push"


def _check_ca(path: Path) -> None:
    try:
        ssl.create_default_context(cafile=str(path))
    except FileNotFoundError as exc:
        raise ConfigError(f"the CA certificate {path} does not exist") from exc
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"the CA certificate {path} cannot be read as PEM: {exc}") from exc
