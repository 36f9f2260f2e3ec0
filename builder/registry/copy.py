"""Copying an image between registries: blobs mounted or streamed, manifests last."""

from __future__ import annotations

import hashlib
import threading

import requests
import requests.adapters
import requests.auth

from builder.errors import Cancelled, RegistryError
from builder.reference import is_digest, short_digest
from builder.registry.client import RegistryClient, check_tag_or_digest
from builder.registry.http import CHUNK, Transient, connection_reason, pull_scope, push_scope
from builder.registry.media import (
    DOCKER_SCHEMA1,
    FOREIGN_LAYERS,
    IMAGE_MANIFESTS,
    INDEXES,
    MAX_INDEX_DEPTH,
    Manifest,
)


class _SourceReadError(Exception):
    """Reading a blob from the source failed while it was being uploaded."""


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
            raise Cancelled(f"while uploading blob {short_digest(self._digest)}")
        try:
            chunk = self._raw.read(amount, decode_content=True)
        except Exception as exc:  # anything the source connection raises, mid-upload
            raise _SourceReadError(f"reading it from {self._source} broke off: "
                                   f"{connection_reason(exc, 0)}") from exc
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

    def content(self, manifest: Manifest, depth: int = 0) -> None:
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
        if self.dest._head_manifest(self.dest_repo, digest, push_scope(self.dest_repo)) == digest:
            self.present.add(digest)
            return
        found = self.source._get_manifest(self.source_repo, digest, pull_scope(self.source_repo))
        if found is None:
            raise RegistryError(f"the index of {self.source_ref} lists manifest "
                                f"{short_digest(digest)}, which the source registry does not have")
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
        elif self.dest._blob_exists(self.dest_repo, digest, push_scope(self.dest_repo)):
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
                        raise RegistryError(f"the size of blob {short_digest(digest)} of "
                                            f"{self.source_ref} is unknown")
                    length = int(header)
                upload = pending.pop() if pending else self.dest._start_upload(self.dest_repo)
                body = _BlobBody(response, digest, length, source_name, self.cancel)
                try:
                    self.dest._finish_upload(self.dest_repo, upload, digest, body)
                except _SourceReadError as exc:
                    raise Transient(str(exc)) from exc

        self.dest._retrying(f"transferring blob {short_digest(digest)}", attempt, self.dest_repo)


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
        check_tag_or_digest(dest.host, dest_repo, tag)
        if is_digest(tag):
            raise RegistryError(f"{tag!r} is a digest, not a tag")
        current = dest._head_manifest(dest_repo, tag, push_scope(dest_repo))
        if is_digest(reference):
            wanted = reference
        else:
            wanted = source._head_manifest(source_repo, reference, pull_scope(source_repo))
        if wanted is None:
            raise RegistryError(f"image {source_ref} not found", registry=source.host,
                                repository=source_repo)
        if current == wanted:
            return wanted
        top = source._get_manifest(source_repo, wanted, pull_scope(source_repo))
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
