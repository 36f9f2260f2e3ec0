"""Registry credentials (given, or Docker's config.json and helpers) and auth challenges."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from builder.errors import ConfigError, RegistryError

DOCKER_HUB = "registry-1.docker.io"
DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
TOKEN_LIFETIME = 60              # seconds, when the token service does not say
LOGIN_HINT = "give credentials with --username and --password-stdin, or run docker login"

_CHALLENGE_PARAM = re.compile(r'([A-Za-z_][\w-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)')


# -- credentials -----------------------------------------------------------------

@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)


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


def basic_header(credentials: Credentials) -> str:
    pair = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
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


# -- challenges and tokens (the client's auth layer) -------------------------------

class Authenticating:
    """The authentication layer of :class:`RegistryClient`: it answers Basic and Bearer
    challenges and keeps a token per scope. It uses the HTTP layer's ``_raw``, ``host``
    and ``_lock``."""

    def _authorization(self, scope: str) -> str | None:
        with self._lock:
            scheme = self._scheme
        if scheme == "basic":
            credentials = self._load_credentials()
            return basic_header(credentials) if credentials else None
        if scheme == "bearer":
            return "Bearer " + self._token(scope)
        return None

    def _answer(self, challenge: str, scope: str, sent: str | None) -> str:
        """The Authorization header that answers a 401's challenge."""
        kind, params = parse_challenge(challenge)
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
            return basic_header(credentials)
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
            headers["Authorization"] = basic_header(credentials)
        response = self._raw("GET", url, headers=headers)
        with response:
            if response.status_code in (401, 403):
                raise self._auth_failed(scope, refused_by="token service")
            if response.status_code >= 500 or response.status_code == 429:
                raise Transient(f"the token service of registry {self.host} answered "
                                 f"HTTP {response.status_code}",
                                 retry_after=parse_retry_after(response.headers.get("Retry-After")))
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


# -- retries (the HTTP layer's; token requests raise them too) ------------------

class Transient(Exception):
    """A failure worth another try: an answer 5xx or 429, or a broken connection."""

    def __init__(self, reason: str, *, connection: bool = False,
                 retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.connection = connection
        self.retry_after = retry_after


def parse_retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None  # an HTTP date: use our own backoff
