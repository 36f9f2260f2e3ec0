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

import json
from urllib.parse import urlencode, urljoin, urlsplit

import requests
import requests.adapters
import requests.auth

from builder.errors import CatalogUnavailable, RegistryError
from builder.reference import REPOSITORY, TAG, is_digest, short_digest
from builder.registry.http import HttpClient, Transient, pull_scope, push_scope
from builder.registry.media import (
    IMAGE_CONFIGS,
    IMAGE_MANIFESTS,
    INDEXES,
    MANIFEST_ACCEPT,
    MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES,
    Manifest,
    ManifestInfo,
    digest_of,
    media_type,
    pick_platform,
)

MAX_TAG_PAGES = 10_000
CATALOG_PAGE = 1000
MAX_CATALOG_PAGES = 10_000


# -- references ----------------------------------------------------------------

def check_repository(registry: str, repository: str) -> None:
    if not REPOSITORY.fullmatch(repository):
        raise RegistryError(f"{repository!r} is not a valid repository name for registry "
                            f"{registry} (lower-case components separated by '/')",
                            registry=registry, repository=repository)


def check_tag_or_digest(registry: str, repository: str, reference: str) -> None:
    if not (TAG.fullmatch(reference) or is_digest(reference)):
        raise RegistryError(f"{reference!r} is not a valid tag or sha256/sha512 digest "
                            f"(repository {repository} on registry {registry})",
                            registry=registry, repository=repository)


class RegistryClient(HttpClient):
    """One registry's images: tags, manifests, blobs. Safe to share between threads."""

    def __repr__(self) -> str:
        return f"RegistryClient({self.base_url!r})"

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
        check_repository(self.host, repository)
        url = f"{self.base_url}/v2/{repository}/tags/list"
        if page_size:
            url += f"?n={int(page_size)}"
        doing = f"listing the tags of {self.host}/{repository}"
        tags: list[str] = []
        seen = {url}
        for _ in range(MAX_TAG_PAGES):
            with self._request("GET", url, pull_scope(repository), doing, repository) as response:
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
        return self._head_manifest(repository, reference, pull_scope(repository))

    def manifest(self, repository: str, reference: str,
                 labels: bool = True) -> ManifestInfo | None:
        """The manifest a tag or digest names, with the labels of its image config; None if absent.

        For an index (multi-platform image) the labels are those of its
        linux/amd64 image, else of its first image. ``labels=False`` skips
        the config blob (one request less): digests only.
        """
        top = self._get_manifest(repository, reference, pull_scope(repository))
        if top is None:
            return None
        image = top
        if top.media_type in INDEXES:
            child = pick_platform(top.document)
            if child is None:
                return ManifestInfo(top.digest, top.media_type, None, {}, None, len(top.data))
            image = self._get_manifest(repository, child, pull_scope(repository))
            if image is None:
                raise RegistryError(
                    f"the index {self.reference(repository, reference)} lists manifest "
                    f"{short_digest(child)}, which the registry does not have",
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

    def put_tag(self, repository: str, source_reference: str, tag: str) -> str:
        """Give the manifest a tag or digest names another tag (same bytes, same digest)."""
        check_tag_or_digest(self.host, repository, tag)
        if is_digest(tag):
            raise RegistryError(f"{tag!r} is a digest, not a tag", registry=self.host,
                                repository=repository)
        found = self._get_manifest(repository, source_reference, push_scope(repository))
        if found is None:
            raise RegistryError(f"cannot tag {self.reference(repository, source_reference)} "
                                f"as {tag!r}: no such image", registry=self.host,
                                repository=repository)
        return self._put_manifest(repository, tag, found.data, found.media_type)

    # -- manifests and blobs -------------------------------------------------------

    def _manifest_url(self, repository: str, reference: str) -> str:
        check_repository(self.host, repository)
        check_tag_or_digest(self.host, repository, reference)
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

    def _get_manifest(self, repository: str, reference: str, scope: str) -> Manifest | None:
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
        digest = digest_of(data, algorithm)
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
        return Manifest(digest, media_type(content_type, document), data, document)

    def _put_manifest(self, repository: str, reference: str, data: bytes,
                      media_type: str) -> str:
        url = self._manifest_url(repository, reference)
        doing = f"putting the manifest {self.reference(repository, reference)}"
        algorithm = reference.partition(":")[0] if is_digest(reference) else "sha256"
        digest = digest_of(data, algorithm)
        with self._request("PUT", url, push_scope(repository), doing, repository,
                           headers={"Content-Type": media_type}, data=data) as response:
            if response.status_code not in (200, 201, 202, 204):
                raise self._unexpected(response, doing, repository)
            answered = response.headers.get("Docker-Content-Digest")
        if answered and answered.partition(":")[0] == algorithm and answered != digest:
            raise RegistryError(f"{doing} failed: the registry stored it under digest "
                                f"{short_digest(answered)} instead of {short_digest(digest)}",
                                registry=self.host, repository=repository)
        return digest

    def _read_config(self, repository: str, reference: str,
                     digest: str) -> tuple[dict[str, str], str | None]:
        url = f"{self.base_url}/v2/{repository}/blobs/{digest}"
        doing = f"reading the image config of {self.reference(repository, reference)}"
        with self._request("GET", url, pull_scope(repository), doing, repository,
                           stream=True) as response:
            if response.status_code == 404:
                raise RegistryError(f"{doing} failed: its config blob {short_digest(digest)} is "
                                    f"missing", registry=self.host, repository=repository)
            if response.status_code != 200:
                raise self._unexpected(response, doing, repository)
            data = self._read_limited(response, MAX_CONFIG_BYTES, doing, repository)
        if digest_of(data, digest.partition(":")[0]) != digest:
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
        doing = f"looking up blob {short_digest(digest)} in {self.host}/{repository}"
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
        scope = f"{push_scope(repository)} {pull_scope(from_repository)}"
        doing = f"mounting blob {short_digest(digest)} from {from_repository} into " \
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
        with self._exchange("POST", url, push_scope(repository),
                            headers={"Content-Length": "0"}) as response:
            location = response.headers.get("Location")
            if response.status_code != 202 or not location:
                raise self._unexpected(response, doing, repository)
            return location

    def _open_blob(self, repository: str, digest: str) -> requests.Response:
        """One try: a streamed GET of a blob."""
        url = f"{self.base_url}/v2/{repository}/blobs/{digest}"
        response = self._exchange("GET", url, pull_scope(repository), stream=True)
        if response.status_code == 200:
            return response
        with response:
            if response.status_code == 404:
                raise RegistryError(f"blob {short_digest(digest)} is missing from "
                                    f"{self.host}/{repository}", registry=self.host,
                                    repository=repository)
            raise self._unexpected(response, f"reading blob {short_digest(digest)}", repository)

    def _finish_upload(self, repository: str, location: str, digest: str, body) -> None:
        """One try: send the whole blob to an open upload and close it with its digest."""
        url = urljoin(f"{self.base_url}/v2/{repository}/blobs/uploads/", location)
        parts = urlsplit(url)
        if parts.netloc == self.api_host and parts.scheme != urlsplit(self.base_url).scheme:
            url = urlsplit(self.base_url).scheme + url[len(parts.scheme):]
        url += ("&" if parts.query else "?") + urlencode({"digest": digest})
        headers = {"Content-Type": "application/octet-stream"}
        with self._exchange("PUT", url, push_scope(repository), headers=headers, data=body,
                            replayable=False) as response:
            if response.status_code in (201, 204):
                return
            if response.status_code == 404:
                raise Transient(f"registry {self.host} forgot the upload")
            raise self._unexpected(response, f"uploading blob {short_digest(digest)}", repository)
