"""A client for container registries: the OCI distribution / Docker Registry HTTP API v2.

It reads tags, manifests and image config blobs (for labels) without pulling
layers, copies images between registries with their digests preserved, and
puts tags. It is a thin layer over ``requests``: python-dxf, oras-py and
skopeo were tried against Debian's ``docker-registry`` and each lacked
something kiln relies on (retries with backoff at the level of a blob
transfer, byte-exact manifest uploads, cross-repository mounts, a count of
the HTTP requests made); see the README.

Every failure leaves this module as a :class:`RegistryError` whose message is
one sentence naming the registry, the repository and what failed. No message
contains a password or a token.

Authentication follows the registry's ``WWW-Authenticate`` challenge:
``Basic`` sends the credentials with every request; ``Bearer`` fetches a token
from the realm (with the credentials, or anonymously) for each scope and keeps
it until it expires. Credentials come from :class:`RegistryOptions` or else
from the user's Docker ``config.json`` (``auths`` entries, or a credential
helper it names).

Answers 5xx and 429 and broken connections are retried with exponential
backoff; a blob transfer is retried as a whole (source download and
destination upload together), since its body is streamed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlencode, urljoin, urlsplit

import requests
import requests.adapters
import requests.auth

from builder.errors import Cancelled, CatalogUnavailable, ConfigError, RegistryError

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v1+prettyjws")
IMAGE_MANIFESTS = (DOCKER_MANIFEST, OCI_MANIFEST)
INDEXES = (DOCKER_MANIFEST_LIST, OCI_INDEX)
MANIFEST_ACCEPT = ", ".join((OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
IMAGE_CONFIGS = ("application/vnd.docker.container.image.v1+json",
                 "application/vnd.oci.image.config.v1+json")
# Layers that registries do not hold (Windows base layers fetched from their ``urls``).
FOREIGN_LAYERS = ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                  "application/vnd.oci.image.layer.nondistributable.v1.tar",
                  "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                  "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd")

DOCKER_HUB = "registry-1.docker.io"
DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
MAX_MANIFEST_BYTES = 4 << 20     # registries refuse larger manifests
MAX_CONFIG_BYTES = 32 << 20      # an image config is JSON, normally a few KiB
MAX_BACKOFF = 30.0               # seconds, the longest pause between two tries
MAX_TAG_PAGES = 10_000
CATALOG_PAGE = 1000
MAX_CATALOG_PAGES = 10_000
MAX_INDEX_DEPTH = 4
MAX_REDIRECTS = 5
TOKEN_LIFETIME = 60              # seconds, when the token service does not say
CHUNK = 1 << 20
LOGIN_HINT = "give credentials with --username and --password-stdin, or run docker login"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})")
REPOSITORY_PATTERN, TAG_PATTERN = _REPOSITORY, _TAG     # for checking references
_HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*")
_HOST_IPV6 = re.compile(r"\[[0-9A-Fa-f:.]+\]")
_CHALLENGE_PARAM = re.compile(r'([A-Za-z_][\w-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)')

T = TypeVar("T")


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class RegistryOptions:
    """How to talk to one registry."""

    insecure: bool = False                  # plain HTTP instead of HTTPS
    ca_cert: Path | None = None             # PEM CA bundle trusted for this registry's host
    credentials: Credentials | None = None  # None: from the Docker config.json, if any
    timeout: float = 30                     # seconds to connect, and between bytes read
    retries: int = 3                        # further tries after a 5xx or broken connection
    backoff: float = 0.5                    # seconds before the first retry; doubles each time


@dataclass(frozen=True)
class ManifestInfo:
    """What a registry holds under a tag or digest, read without pulling layers."""

    digest: str                     # of the manifest (of the index, for a multi-platform image)
    media_type: str
    config_digest: str | None       # for an index: of the linux/amd64 (else first) image
    labels: Mapping[str, str]
    created: str | None
    size: int                       # bytes of the manifest


@dataclass(frozen=True)
class _Manifest:
    digest: str
    media_type: str
    data: bytes
    document: dict


class _Transient(Exception):
    """A failure worth another try: an answer 5xx or 429, or a broken connection."""

    def __init__(self, reason: str, *, connection: bool = False,
                 retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.connection = connection
        self.retry_after = retry_after


class _SourceReadError(Exception):
    """Reading a blob from the source failed while it was being uploaded."""


class _NoAuth(requests.auth.AuthBase):
    """Keeps requests from adding ~/.netrc credentials: this module sets Authorization itself."""

    def __call__(self, request):
        return request


_NO_AUTH = _NoAuth()


# -- references ----------------------------------------------------------------

def is_digest(reference: str) -> bool:
    return _DIGEST.fullmatch(reference) is not None


def host_problem(host: str) -> str | None:
    """What is wrong with a registry ``host[:port]`` as a clause naming it, or None."""
    if not host:
        return "the registry host name is empty"
    name, colon, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
    if not colon:
        name = host
    elif not port:
        return f"registry {host!r} has an empty port"
    elif not (port.isascii() and port.isdigit()):
        return f"port {port!r} of registry {host!r} is not a number"
    elif not 1 <= int(port) <= 65535:
        return f"port {int(port)} of registry {host} is not between 1 and 65535"
    if not (_HOST_NAME.fullmatch(name) or _HOST_IPV6.fullmatch(name)):
        return f"{name!r} is not a valid registry host name"
    return None


def _check_repository(registry: str, repository: str) -> None:
    if not _REPOSITORY.fullmatch(repository):
        raise RegistryError(f"{repository!r} is not a valid repository name for registry "
                            f"{registry} (lower-case components separated by '/')",
                            registry=registry, repository=repository)


def _check_reference(registry: str, repository: str, reference: str) -> None:
    if not (_TAG.fullmatch(reference) or is_digest(reference)):
        raise RegistryError(f"{reference!r} is not a valid tag or sha256/sha512 digest "
                            f"(repository {repository} on registry {registry})",
                            registry=registry, repository=repository)


def _digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def _short(digest: str) -> str:
    algorithm, _, value = digest.partition(":")
    return f"{algorithm}:{value[:12]}"


# -- credentials -----------------------------------------------------------------

def docker_config_path() -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    directory = os.environ.get("DOCKER_CONFIG")
    base = Path(directory) if directory else Path.home() / ".docker"
    return base / "config.json"


def _config_key_host(key: str) -> str:
    """``https://host:port/v1/`` -> ``host:port``."""
    if "://" in key:
        key = urlsplit(key).netloc
    return key.split("/", 1)[0]


def docker_credentials(host: str, path: Path | None = None) -> Credentials | None:
    """The credentials ``docker login`` stored for a registry host, or None.

    Reads the inline ``auths`` entries and runs the credential helper the
    config names (``credHelpers`` for the host, else ``credsStore``).
    Identity tokens (OAuth refresh tokens) are not supported.
    """
    path = path or docker_config_path()
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"cannot read the Docker config: {exc}", path=str(path)) from exc
    if not isinstance(config, dict):
        raise ConfigError("the Docker config is not a JSON object", path=str(path))
    wanted = {host, DOCKER_HUB_CONFIG_KEY} if host in (DOCKER_HUB, "docker.io") else {host}
    wanted = {_config_key_host(key) for key in wanted}
    server = None
    for key, entry in (config.get("auths") or {}).items():
        if _config_key_host(key) not in wanted or not isinstance(entry, dict):
            continue
        server = key
        if entry.get("auth"):
            try:
                decoded = base64.b64decode(entry["auth"], validate=True).decode("utf-8")
            except (ValueError, UnicodeDecodeError) as exc:
                raise ConfigError(f"the stored login for {key} is not valid base64",
                                  path=str(path)) from exc
            username, sep, password = decoded.partition(":")
            if sep:
                return Credentials(username, password)
        if entry.get("username") and entry.get("password"):
            return Credentials(entry["username"], entry["password"])
    helpers = config.get("credHelpers") or {}
    helper = next((name for key, name in helpers.items()
                   if _config_key_host(key) in wanted), None) or config.get("credsStore")
    if helper:
        return _helper_credentials(str(helper), server or host)
    return None


def _helper_credentials(helper: str, server: str) -> Credentials | None:
    try:
        result = subprocess.run([f"docker-credential-{helper}", "get"], input=server,
                                capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None  # the helper holds nothing for this server
    try:
        answer = json.loads(result.stdout)
    except ValueError:
        return None
    username, secret = answer.get("Username"), answer.get("Secret")
    if not username or not secret or username == "<token>":
        return None
    return Credentials(username, secret)


def _basic(credentials: Credentials) -> str:
    pair = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="...",scope="..."`` -> ("bearer", {...})."""
    header = header.strip()
    lower = header.lower()
    position = lower.find("bearer ")
    if position < 0 and lower.startswith("basic"):
        return "basic", {}
    if position < 0:
        return header.split(" ", 1)[0].lower(), {}
    params = {}
    for key, value in _CHALLENGE_PARAM.findall(header[position + len("bearer "):]):
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[key.lower()] = value
    return "bearer", params


# -- errors ----------------------------------------------------------------------

def _connection_reason(exc: BaseException, timeout: float) -> str:
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


# -- the client --------------------------------------------------------------------

class RegistryClient:
    """One registry. Safe to share between threads.

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

    def __repr__(self) -> str:
        return f"RegistryClient({self.base_url!r})"

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()

    @property
    def requests_made(self) -> int:
        with self._lock:
            return self._requests

    def reference(self, repository: str, reference: str) -> str:
        """``host/repository:tag`` or ``host/repository@digest``, for messages."""
        separator = "@" if is_digest(reference) else ":"
        return f"{self.host}/{repository}{separator}{reference}"

    # -- public operations -------------------------------------------------------

    def ping(self) -> None:
        """Check the registry answers the v2 API, over TLS if not insecure, with the credentials."""
        doing = f"reaching registry {self.host}"
        with self._request("GET", "/v2/", "", doing) as response:
            if response.status_code == 200:
                return
            if response.status_code == 404:
                raise RegistryError(f"{self.base_url}/v2/ does not answer as a container "
                                    f"registry (HTTP 404)", registry=self.host)
            raise self._unexpected(response, doing)

    def list_tags(self, repository: str, page_size: int | None = None) -> list[str]:
        """Every tag of a repository, in the registry's order; [] if the repository is unknown."""
        _check_repository(self.host, repository)
        url = f"{self.base_url}/v2/{repository}/tags/list"
        if page_size:
            url += f"?n={int(page_size)}"
        doing = f"listing the tags of {self.host}/{repository}"
        tags: list[str] = []
        seen = {url}
        for _ in range(MAX_TAG_PAGES):
            with self._request("GET", url, _pull(repository), doing, repository) as response:
                if response.status_code == 404:
                    return tags
                if response.status_code != 200:
                    raise self._unexpected(response, doing, repository)
                body = self._json(response, doing, repository)
                page = body.get("tags") if isinstance(body, dict) else None
                tags.extend(str(tag) for tag in page or [])
                following = response.links.get("next", {}).get("url")
            if not following:
                return tags
            url = urljoin(url, following)
            if url in seen:
                return tags
            seen.add(url)
        raise RegistryError(f"{doing} failed: more than {MAX_TAG_PAGES} pages",
                            registry=self.host, repository=repository)

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        """The digest a tag names (one HEAD request), or None if there is no such manifest."""
        return self._head_manifest(repository, reference, _pull(repository))

    def manifest(self, repository: str, reference: str,
                 labels: bool = True) -> ManifestInfo | None:
        """The manifest a tag or digest names, with the labels of its image config; None if absent.

        For an index (multi-platform image) the labels are those of its
        linux/amd64 image, else of its first image. ``labels=False`` skips
        the config blob (one request less): digests only.
        """
        top = self._get_manifest(repository, reference, _pull(repository))
        if top is None:
            return None
        image = top
        if top.media_type in INDEXES:
            child = _pick_platform(top.document)
            if child is None:
                return ManifestInfo(top.digest, top.media_type, None, {}, None, len(top.data))
            image = self._get_manifest(repository, child, _pull(repository))
            if image is None:
                raise RegistryError(
                    f"the index {self.reference(repository, reference)} lists manifest "
                    f"{_short(child)}, which the registry does not have",
                    registry=self.host, repository=repository)
        config_digest, found_labels, created = None, {}, None
        if image.media_type in IMAGE_MANIFESTS:
            descriptor = image.document.get("config") or {}
            config_digest = descriptor.get("digest")
            if (labels and config_digest
                    and descriptor.get("mediaType", IMAGE_CONFIGS[0]) in IMAGE_CONFIGS):
                found_labels, created = self._read_config(repository, reference, config_digest)
        return ManifestInfo(digest=top.digest, media_type=top.media_type,
                            config_digest=config_digest, labels=found_labels, created=created,
                            size=len(top.data))

    def list_repositories(self) -> list[str]:
        """Every repository the registry lists in its catalog (``/v2/_catalog``, paginated).

        Raises CatalogUnavailable where the registry keeps its catalog to itself.
        """
        url = f"{self.base_url}/v2/_catalog?n={CATALOG_PAGE}"
        doing = f"listing the repositories of registry {self.host}"
        repositories: list[str] = []
        seen = {url}
        for _ in range(MAX_CATALOG_PAGES):
            with self._request("GET", url, "registry:catalog:*", doing) as response:
                if response.status_code in (401, 403, 404, 405):
                    raise CatalogUnavailable(
                        f"registry {self.host} does not list its repositories "
                        f"(/v2/_catalog answered HTTP {response.status_code})",
                        registry=self.host)
                if response.status_code != 200:
                    raise self._unexpected(response, doing)
                body = self._json(response, doing, None)
                page = body.get("repositories") if isinstance(body, dict) else None
                repositories.extend(str(r) for r in page or [])
                following = response.links.get("next", {}).get("url")
            if not following:
                break
            url = urljoin(url, following)
            if url in seen:
                break
            seen.add(url)
        return sorted(set(repositories))

    def put_manifest(self, repository: str, reference: str, data: bytes,
                     media_type: str) -> str:
        """Upload manifest bytes as they are under a tag or digest; return their digest."""
        return self._put_manifest(repository, reference, data, media_type)

    def put_tag(self, repository: str, source_reference: str, tag: str) -> str:
        """Give the manifest a tag or digest names another tag (same bytes, same digest)."""
        _check_reference(self.host, repository, tag)
        if is_digest(tag):
            raise RegistryError(f"{tag!r} is a digest, not a tag", registry=self.host,
                                repository=repository)
        found = self._get_manifest(repository, source_reference, _push(repository))
        if found is None:
            raise RegistryError(f"cannot tag {self.reference(repository, source_reference)} "
                                f"as {tag!r}: no such image", registry=self.host,
                                repository=repository)
        return self._put_manifest(repository, tag, found.data, found.media_type)

    def blob_exists(self, repository: str, digest: str) -> bool:
        """Whether the repository holds a blob (one HEAD request)."""
        _check_repository(self.host, repository)
        if not is_digest(digest):
            raise RegistryError(f"{digest!r} is not a sha256/sha512 digest",
                                registry=self.host, repository=repository)
        return self._blob_exists(repository, digest, _pull(repository))

    # -- manifests and blobs -------------------------------------------------------

    def _manifest_url(self, repository: str, reference: str) -> str:
        _check_repository(self.host, repository)
        _check_reference(self.host, repository, reference)
        return f"{self.base_url}/v2/{repository}/manifests/{reference}"

    def _head_manifest(self, repository: str, reference: str, scope: str) -> str | None:
        url = self._manifest_url(repository, reference)
        doing = f"looking up {self.reference(repository, reference)}"
        with self._request("HEAD", url, scope, doing, repository,
                           headers={"Accept": MANIFEST_ACCEPT}) as response:
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise self._unexpected(response, doing, repository)
            digest = response.headers.get("Docker-Content-Digest")
        if is_digest(reference):
            return reference
        if digest and is_digest(digest):
            return digest
        found = self._get_manifest(repository, reference, scope)  # no digest header: read it
        return found.digest if found else None

    def _get_manifest(self, repository: str, reference: str, scope: str) -> _Manifest | None:
        url = self._manifest_url(repository, reference)
        ref = self.reference(repository, reference)
        doing = f"reading the manifest of {ref}"
        with self._request("GET", url, scope, doing, repository,
                           headers={"Accept": MANIFEST_ACCEPT}) as response:
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise self._unexpected(response, doing, repository)
            data = self._read_limited(response, MAX_MANIFEST_BYTES, doing, repository)
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        algorithm = reference.partition(":")[0] if is_digest(reference) else "sha256"
        digest = _digest_of(data, algorithm)
        if is_digest(reference) and digest != reference:
            raise RegistryError(f"{doing} failed: the manifest sent does not match its digest",
                                registry=self.host, repository=repository)
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise RegistryError(f"{doing} failed: the manifest is not JSON",
                                registry=self.host, repository=repository) from exc
        if not isinstance(document, dict):
            raise RegistryError(f"{doing} failed: the manifest is not a JSON object",
                                registry=self.host, repository=repository)
        return _Manifest(digest, _media_type(content_type, document), data, document)

    def _put_manifest(self, repository: str, reference: str, data: bytes,
                      media_type: str) -> str:
        url = self._manifest_url(repository, reference)
        doing = f"putting the manifest {self.reference(repository, reference)}"
        algorithm = reference.partition(":")[0] if is_digest(reference) else "sha256"
        digest = _digest_of(data, algorithm)
        with self._request("PUT", url, _push(repository), doing, repository,
                           headers={"Content-Type": media_type}, data=data) as response:
            if response.status_code not in (200, 201, 202, 204):
                raise self._unexpected(response, doing, repository)
            answered = response.headers.get("Docker-Content-Digest")
        if answered and answered.partition(":")[0] == algorithm and answered != digest:
            raise RegistryError(f"{doing} failed: the registry stored it under digest "
                                f"{_short(answered)} instead of {_short(digest)}",
                                registry=self.host, repository=repository)
        return digest

    def _read_config(self, repository: str, reference: str,
                     digest: str) -> tuple[dict[str, str], str | None]:
        url = f"{self.base_url}/v2/{repository}/blobs/{digest}"
        doing = f"reading the image config of {self.reference(repository, reference)}"
        with self._request("GET", url, _pull(repository), doing, repository,
                           stream=True) as response:
            if response.status_code == 404:
                raise RegistryError(f"{doing} failed: its config blob {_short(digest)} is "
                                    f"missing", registry=self.host, repository=repository)
            if response.status_code != 200:
                raise self._unexpected(response, doing, repository)
            data = self._read_limited(response, MAX_CONFIG_BYTES, doing, repository)
        if _digest_of(data, digest.partition(":")[0]) != digest:
            raise RegistryError(f"{doing} failed: the config blob does not match its digest",
                                registry=self.host, repository=repository)
        try:
            config = json.loads(data)
        except ValueError as exc:
            raise RegistryError(f"{doing} failed: the config blob is not JSON",
                                registry=self.host, repository=repository) from exc
        inner = config.get("config") if isinstance(config, dict) else None
        labels = (inner or {}).get("Labels") if isinstance(inner, dict) else None
        created = config.get("created") if isinstance(config, dict) else None
        return ({str(k): str(v) for k, v in (labels or {}).items()},
                str(created) if created else None)

    def _blob_exists(self, repository: str, digest: str, scope: str) -> bool:
        url = f"{self.base_url}/v2/{repository}/blobs/{digest}"
        doing = f"looking up blob {_short(digest)} in {self.host}/{repository}"
        with self._request("HEAD", url, scope, doing, repository) as response:
            if response.status_code == 200:
                return True
            if response.status_code == 404:
                return False
            raise self._unexpected(response, doing, repository)

    def _mount(self, repository: str, digest: str, from_repository: str) -> str | None:
        """Mount a blob from another repository: None if mounted, else an upload's location."""
        query = urlencode({"mount": digest, "from": from_repository})
        url = f"{self.base_url}/v2/{repository}/blobs/uploads/?{query}"
        scope = f"{_push(repository)} {_pull(from_repository)}"
        doing = f"mounting blob {_short(digest)} from {from_repository} into " \
                f"{self.host}/{repository}"
        with self._request("POST", url, scope, doing, repository) as response:
            if response.status_code == 201:
                return None
            if response.status_code == 202 and response.headers.get("Location"):
                return response.headers["Location"]
            raise self._unexpected(response, doing, repository)

    def _start_upload(self, repository: str) -> str:
        """One try: open a blob upload; its location."""
        url = f"{self.base_url}/v2/{repository}/blobs/uploads/"
        doing = f"starting a blob upload to {self.host}/{repository}"
        with self._exchange("POST", url, _push(repository),
                            headers={"Content-Length": "0"}) as response:
            location = response.headers.get("Location")
            if response.status_code != 202 or not location:
                raise self._unexpected(response, doing, repository)
            return location

    def _open_blob(self, repository: str, digest: str) -> requests.Response:
        """One try: a streamed GET of a blob."""
        url = f"{self.base_url}/v2/{repository}/blobs/{digest}"
        response = self._exchange("GET", url, _pull(repository), stream=True)
        if response.status_code == 200:
            return response
        with response:
            if response.status_code == 404:
                raise RegistryError(f"blob {_short(digest)} is missing from "
                                    f"{self.host}/{repository}", registry=self.host,
                                    repository=repository)
            raise self._unexpected(response, f"reading blob {_short(digest)}", repository)

    def _finish_upload(self, repository: str, location: str, digest: str, body) -> None:
        """One try: send the whole blob to an open upload and close it with its digest."""
        url = urljoin(f"{self.base_url}/v2/{repository}/blobs/uploads/", location)
        parts = urlsplit(url)
        if parts.netloc == self.api_host and parts.scheme != urlsplit(self.base_url).scheme:
            url = urlsplit(self.base_url).scheme + url[len(parts.scheme):]
        url += ("&" if parts.query else "?") + urlencode({"digest": digest})
        headers = {"Content-Type": "application/octet-stream"}
        with self._exchange("PUT", url, _push(repository), headers=headers, data=body,
                            replayable=False) as response:
            if response.status_code in (201, 204):
                return
            if response.status_code == 404:
                raise _Transient(f"registry {self.host} forgot the upload")
            raise self._unexpected(response, f"uploading blob {_short(digest)}", repository)

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
        last: _Transient | None = None
        for number in range(tries):
            try:
                return attempt()
            except _Transient as exc:
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
        """One request, answering one authentication challenge; _Transient on 5xx/429."""
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
                raise _Transient(f"registry {self.host} asked to authenticate again")
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
            retry_after = _retry_after(response.headers.get("Retry-After"))
            response.close()
            raise _Transient(reason, retry_after=retry_after)
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
            reason = _connection_reason(exc, self.options.timeout)
            raise _Transient(f"cannot reach {netloc}: {reason}", connection=True) from exc
        except requests.RequestException as exc:
            raise RegistryError(f"a request to registry {self.host} failed: "
                                f"{type(exc).__name__}", registry=self.host) from exc

    def _authorization(self, scope: str) -> str | None:
        with self._lock:
            scheme = self._scheme
        if scheme == "basic":
            credentials = self._load_credentials()
            return _basic(credentials) if credentials else None
        if scheme == "bearer":
            return "Bearer " + self._token(scope)
        return None

    def _answer(self, challenge: str, scope: str, sent: str | None) -> str:
        """The Authorization header that answers a 401's challenge."""
        kind, params = _parse_challenge(challenge)
        if kind == "basic":
            credentials = self._load_credentials()
            if credentials is None:
                raise RegistryError(f"registry {self.host} requires authentication and no "
                                    f"credentials were given", registry=self.host,
                                    hint=LOGIN_HINT)
            if sent and sent.startswith("Basic "):
                raise self._auth_failed(scope, refused_by="registry")
            with self._lock:
                self._scheme = "basic"
            return _basic(credentials)
        if kind == "bearer":
            if not params.get("realm"):
                raise RegistryError(f"registry {self.host} asked for a token without saying "
                                    f"where to get it (no realm)", registry=self.host)
            with self._lock:
                self._scheme = "bearer"
                self._realm = params["realm"]
                self._service = params.get("service")
            if sent and sent.startswith("Bearer "):
                # Our token expired or is too narrow: ask for what the registry named too.
                self._forget(scope)
                wanted = " ".join(dict.fromkeys((scope + " " + params.get("scope", "")).split()))
                return "Bearer " + self._token(scope, wanted)
            return "Bearer " + self._token(scope)
        raise RegistryError(f"registry {self.host} asks for {kind!r} authentication, which "
                            f"kiln does not support", registry=self.host)

    def _token(self, scope: str, wanted: str | None = None) -> str:
        """A bearer token for a scope: cached, else fetched from the realm."""
        now = time.monotonic()
        with self._lock:
            for key in (scope, scope + ",push" if scope.endswith(":pull") else None):
                cached = self._tokens.get(key) if key else None
                if cached and cached[1] > now:
                    return cached[0]
            realm, service = self._realm, self._service
        params = [("service", service)] if service else []
        params += [("scope", part) for part in (wanted or scope).split()]
        url = realm + ("&" if "?" in realm else "?") + urlencode(params) if params else realm
        headers = {}
        credentials = self._load_credentials()
        if credentials:
            headers["Authorization"] = _basic(credentials)
        response = self._raw("GET", url, headers=headers)
        with response:
            if response.status_code in (401, 403):
                raise self._auth_failed(scope, refused_by="token service")
            if response.status_code >= 500 or response.status_code == 429:
                raise _Transient(f"the token service of registry {self.host} answered "
                                 f"HTTP {response.status_code}",
                                 retry_after=_retry_after(response.headers.get("Retry-After")))
            try:
                answer = response.json() if response.status_code == 200 else None
            except ValueError:
                answer = None
        token = (answer or {}).get("token") or (answer or {}).get("access_token")
        if not isinstance(token, str) or not token:
            raise RegistryError(f"the token service of registry {self.host} did not give a "
                                f"token (HTTP {response.status_code})", registry=self.host)
        try:
            lifetime = float(answer.get("expires_in") or TOKEN_LIFETIME)
        except (TypeError, ValueError):
            lifetime = TOKEN_LIFETIME
        with self._lock:
            self._tokens[scope] = (token, now + max(lifetime - 10, lifetime / 2))
        return token

    def _forget(self, scope: str) -> None:
        with self._lock:
            self._tokens.pop(scope, None)
            if scope.endswith(":pull"):
                self._tokens.pop(scope + ",push", None)

    def _load_credentials(self) -> Credentials | None:
        with self._lock:
            if self._credentials_loaded:
                return self._credentials
        path = docker_config_path()
        found = docker_credentials(self.host, path)
        with self._lock:
            if not self._credentials_loaded:
                self._credentials = found
                self._credentials_source = f"the login stored in {path}" if found else None
                self._credentials_loaded = True
            return self._credentials

    # -- messages ------------------------------------------------------------------

    def _auth_failed(self, scope: str, refused_by: str) -> RegistryError:
        with self._lock:
            credentials, source = self._credentials, self._credentials_source
        repositories = [part.split(":")[1] for part in scope.split() if part.count(":") >= 2]
        where = f" for repository {repositories[0]}" if repositories else ""
        if credentials is None:
            return RegistryError(f"authentication to registry {self.host} failed{where}: "
                                 f"the {refused_by} refused anonymous access",
                                 registry=self.host, hint=LOGIN_HINT + "; or the repository "
                                 "does not exist")
        return RegistryError(f"authentication to registry {self.host} failed{where}: the "
                             f"{refused_by} refused user {credentials.username!r} "
                             f"({source})", registry=self.host,
                             hint="check the user name and password, and the user's rights")

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
                                f"{_connection_reason(exc, self.options.timeout)}",
                                registry=self.host, repository=repository) from exc
        return bytes(data)


def _pull(repository: str) -> str:
    return f"repository:{repository}:pull"


def _push(repository: str) -> str:
    return f"repository:{repository}:pull,push"


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None  # an HTTP date: use our own backoff


def _check_ca(path: Path) -> None:
    try:
        ssl.create_default_context(cafile=str(path))
    except FileNotFoundError as exc:
        raise ConfigError(f"the CA certificate {path} does not exist") from exc
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"the CA certificate {path} cannot be read as PEM: {exc}") from exc


def _media_type(content_type: str, document: dict) -> str:
    known = (*IMAGE_MANIFESTS, *INDEXES, *DOCKER_SCHEMA1)
    if content_type in known:
        return content_type
    declared = document.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if document.get("schemaVersion") == 1:
        return DOCKER_SCHEMA1[1]
    if "manifests" in document:
        return OCI_INDEX
    return OCI_MANIFEST if "config" in document else (content_type or OCI_MANIFEST)


def _pick_platform(index: dict) -> str | None:
    """The digest of an index's linux/amd64 image, else of its first real platform."""
    entries = [entry for entry in index.get("manifests") or []
               if isinstance(entry, dict) and is_digest(str(entry.get("digest", "")))]
    for entry in entries:
        platform = entry.get("platform") or {}
        if platform.get("os") == "linux" and platform.get("architecture") == "amd64":
            return entry["digest"]
    for entry in entries:
        if (entry.get("platform") or {}).get("os") != "unknown":  # skip attestations
            return entry["digest"]
    return entries[0]["digest"] if entries else None


# -- copying -------------------------------------------------------------------------

class _BlobBody:
    """A source blob read as an upload body: sized, hashed as it goes, never held whole."""

    def __init__(self, response: requests.Response, digest: str, size: int, source: str,
                 cancel: threading.Event | None = None):
        self._raw = response.raw
        self._cancel = cancel
        self._digest = digest
        self._hash = hashlib.new(digest.partition(":")[0])
        self._size = size
        self._read = 0
        self._source = source

    def __len__(self) -> int:
        return self._size

    def __iter__(self):
        while chunk := self.read(CHUNK):
            yield chunk

    def read(self, amount: int = -1) -> bytes:
        amount = CHUNK if amount is None or amount < 0 else min(amount, CHUNK)
        if self._cancel is not None and self._cancel.is_set():
            raise Cancelled(f"while uploading blob {_short(self._digest)}")
        try:
            chunk = self._raw.read(amount, decode_content=True)
        except Exception as exc:  # anything the source connection raises, mid-upload
            raise _SourceReadError(f"reading it from {self._source} broke off: "
                                   f"{_connection_reason(exc, 0)}") from exc
        if chunk:
            self._read += len(chunk)
            if self._read > self._size:
                raise _SourceReadError(f"{self._source} sent more than its {self._size} bytes")
            self._hash.update(chunk)
            return chunk
        if self._read != self._size:
            raise _SourceReadError(f"{self._source} sent {self._read} of its "
                                   f"{self._size} bytes")
        actual = f"{self._digest.partition(':')[0]}:{self._hash.hexdigest()}"
        if actual != self._digest:
            raise _SourceReadError(f"what {self._source} sent does not match its digest")
        return b""


class _Copier:
    def __init__(self, source: RegistryClient, source_repo: str, dest: RegistryClient,
                 dest_repo: str, source_ref: str, cancel: threading.Event | None = None):
        self.cancel = cancel
        self.source, self.source_repo = source, source_repo
        self.dest, self.dest_repo = dest, dest_repo
        self.source_ref = source_ref
        self.same_registry = source.base_url == dest.base_url
        self.present: set[str] = set()

    def content(self, manifest: _Manifest, depth: int = 0) -> None:
        """Make every blob (and, for an index, every child manifest) present at the destination."""
        if manifest.media_type in INDEXES:
            if depth >= MAX_INDEX_DEPTH:
                raise RegistryError(f"{self.source_ref} nests indexes too deeply")
            for entry in manifest.document.get("manifests") or []:
                digest = str(entry.get("digest", "")) if isinstance(entry, dict) else ""
                if not is_digest(digest):
                    raise RegistryError(f"the index of {self.source_ref} lists an entry "
                                        f"without a valid digest")
                self.child(digest, depth)
        elif manifest.media_type in IMAGE_MANIFESTS:
            descriptors = [manifest.document.get("config") or {}]
            descriptors += manifest.document.get("layers") or []
            for descriptor in descriptors:
                if descriptor.get("mediaType") in FOREIGN_LAYERS or descriptor.get("urls"):
                    continue  # not held by registries
                self.blob(descriptor)
        elif manifest.media_type in DOCKER_SCHEMA1:
            raise RegistryError(f"{self.source_ref} is in the deprecated Docker schema 1 "
                                f"format, which cannot be copied with its digest kept")
        else:
            raise RegistryError(f"{self.source_ref} has a manifest of unknown type "
                                f"{manifest.media_type!r}")

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("before every blob was copied")

    def child(self, digest: str, depth: int) -> None:
        if digest in self.present:
            return
        self.check_cancel()
        if self.dest._head_manifest(self.dest_repo, digest, _push(self.dest_repo)) == digest:
            self.present.add(digest)
            return
        found = self.source._get_manifest(self.source_repo, digest, _pull(self.source_repo))
        if found is None:
            raise RegistryError(f"the index of {self.source_ref} lists manifest "
                                f"{_short(digest)}, which the source registry does not have")
        self.content(found, depth + 1)
        self.dest._put_manifest(self.dest_repo, digest, found.data, found.media_type)
        self.present.add(digest)

    def blob(self, descriptor: dict) -> None:
        digest = str(descriptor.get("digest", ""))
        if not is_digest(digest):
            raise RegistryError(f"the manifest of {self.source_ref} lists a blob without a "
                                f"valid digest")
        if digest in self.present:
            return
        self.check_cancel()
        location = None
        if self.same_registry and self.source_repo != self.dest_repo:
            # One request whether or not the destination has it already.
            location = self.dest._mount(self.dest_repo, digest, self.source_repo)
            if location is None:
                self.present.add(digest)
                return
        elif self.dest._blob_exists(self.dest_repo, digest, _push(self.dest_repo)):
            self.present.add(digest)
            return
        self.stream(digest, descriptor.get("size"), location)
        self.present.add(digest)

    def stream(self, digest: str, size: object, location: str | None) -> None:
        """GET from the source and upload to the destination, retried as a whole."""
        source_name = f"{self.source.host}/{self.source_repo}"
        pending = [location] if location else []

        def attempt() -> None:
            response = self.source._open_blob(self.source_repo, digest)
            with response:
                length = size if isinstance(size, int) and size >= 0 else None
                if length is None:
                    header = response.headers.get("Content-Length", "")
                    if not header.isdigit():
                        raise RegistryError(f"the size of blob {_short(digest)} of "
                                            f"{self.source_ref} is unknown")
                    length = int(header)
                upload = pending.pop() if pending else self.dest._start_upload(self.dest_repo)
                body = _BlobBody(response, digest, length, source_name, self.cancel)
                try:
                    self.dest._finish_upload(self.dest_repo, upload, digest, body)
                except _SourceReadError as exc:
                    raise _Transient(str(exc)) from exc

        self.dest._retrying(f"transferring blob {_short(digest)}", attempt, self.dest_repo)


def copy_image(source: RegistryClient, source_repo: str, reference: str,
               dest: RegistryClient, dest_repo: str, tag: str,
               cancel: threading.Event | None = None) -> str:
    """Copy an image (or index) to another repository or registry under a tag; its digest.

    The manifest bytes are copied as they are, so the digest is kept. Blobs
    the destination has are skipped; within one registry they are mounted,
    otherwise streamed. An unchanged image costs two HEAD requests. The
    manifest is put only once every blob and child manifest is present, so a
    failed copy leaves the tag as it was.

    Once ``cancel`` is set, the copy stops before its next blob (or within
    the blob it is streaming) with :class:`Cancelled`, the tag untouched; a
    copy whose blobs are all present is finished.
    """
    source_ref = source.reference(source_repo, reference)
    dest_ref = dest.reference(dest_repo, tag)
    try:
        _check_reference(dest.host, dest_repo, tag)
        if is_digest(tag):
            raise RegistryError(f"{tag!r} is a digest, not a tag")
        current = dest._head_manifest(dest_repo, tag, _push(dest_repo))
        if is_digest(reference):
            wanted = reference
        else:
            wanted = source._head_manifest(source_repo, reference, _pull(source_repo))
        if wanted is None:
            raise RegistryError(f"image {source_ref} not found", registry=source.host,
                                repository=source_repo)
        if current == wanted:
            return wanted
        top = source._get_manifest(source_repo, wanted, _pull(source_repo))
        if top is None:
            raise RegistryError(f"image {source_ref} not found", registry=source.host,
                                repository=source_repo)
        _Copier(source, source_repo, dest, dest_repo, source_ref, cancel).content(top)
        return dest._put_manifest(dest_repo, tag, top.data, top.media_type)
    except Cancelled as exc:
        raise Cancelled(f"interrupted {exc.message} from {source_ref}; {dest_ref} was not "
                        f"written", registry=dest.host, repository=dest_repo) from exc
    except RegistryError as exc:
        raise RegistryError(f"copying {source_ref} to {dest_ref} failed: {exc.message}",
                            registry=exc.registry, repository=exc.repository,
                            hint=exc.hint) from exc
