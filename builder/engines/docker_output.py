"""What the Docker daemon says, as kiln reads it: build and push streams, SDK errors.

A build's output stream in lines, the container of its running step (to stop
it on cancel), a push's progress in compact lines, and any SDK or transport
error as one sentence.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable, Iterator

import docker
import docker.errors
import requests
import urllib3.exceptions

from builder.engines.base import PushError

TAIL_LINES = 20
RUN_STDERR_LINES = 10

# Errors the SDK lets through from its transport (requests/urllib3) besides its own.
TRANSPORT_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, OSError)
SDK_ERRORS = (docker.errors.DockerException, *TRANSPORT_ERRORS)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
SUCCESSFULLY_BUILT = re.compile(r"^Successfully built ([0-9a-f]+)$")
_RUNNING_IN = re.compile(r"^ ---> Running in ([0-9a-f]{12,64})$")
_CANCEL_POLL = 0.25  # seconds between looks at the cancel flag during a build


class StepContainer:
    """Stops a cancelled build: kills the container of the RUN step in progress.

    The classic builder runs each RUN in a container it names in its output
    (" ---> Running in <id>"); killing it ends that step, and so the build,
    even while the step prints nothing.
    """

    def __init__(self, api, cancel: threading.Event | None):
        self._api = api
        self._cancel = cancel
        self._container: str | None = None
        self._finished = threading.Event()
        self.cancelled = False
        if cancel is not None:
            threading.Thread(target=self._watch, name="kiln-build-cancel",
                             daemon=True).start()

    def notice(self, line: str) -> None:
        match = _RUNNING_IN.match(line)
        if match:
            self._container = match.group(1)

    def stop(self) -> None:
        self._finished.set()

    def _watch(self) -> None:
        while not self._finished.is_set():
            if self._cancel.wait(_CANCEL_POLL):
                self.cancelled = True
                container = self._container
                if container:
                    try:
                        self._api.kill(container)
                    except SDK_ERRORS:
                        pass  # the step ended by itself meanwhile
                return


def split_reference(ref: str) -> tuple[str, str | None, str | None]:
    """``[host[:port]/]path[:tag][@digest]`` -> (repository, tag, digest).

    The tag is the part after the last ':' of the last path component, so a
    registry port (``127.0.0.1:5000/kiln/base``) is never taken for a tag.
    """
    name, _, digest = ref.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1:], digest or None
    return name, None, digest or None


def reason_of(exc: BaseException) -> str:
    """A short, lower-case reason for an SDK or transport error."""
    os_error = find_os_error(exc, set())
    if os_error is not None:
        return os.strerror(os_error.errno).lower()
    if isinstance(exc, docker.errors.APIError) and exc.explanation:
        text = exc.explanation
    else:
        text = str(exc)
    text = text.removeprefix("Error while fetching server API version: ")
    return " ".join(text.split()) or type(exc).__name__


def find_os_error(exc: object, seen: set[int]) -> OSError | None:
    """The system error (errno set) buried in requests' and urllib3's wrappers."""
    if not isinstance(exc, BaseException) or id(exc) in seen:
        return None
    seen.add(id(exc))
    if isinstance(exc, OSError) and isinstance(exc.errno, int) and exc.errno > 0:
        return exc
    inner = [*exc.args, getattr(exc, "reason", None), exc.__cause__, exc.__context__]
    for candidate in inner:
        found = find_os_error(candidate, seen)
        if found is not None:
            return found
    return None


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, docker.errors.NotFound) or (
        isinstance(exc, docker.errors.APIError) and exc.status_code == 404)


def _clean(line: str) -> str:
    return _ANSI.sub("", line).rstrip()


class Lines:
    """Joins streamed text fragments into whole lines."""

    def __init__(self):
        self._partial = ""

    def feed(self, text: str) -> Iterator[str]:
        parts = (self._partial + text).split("\n")
        self._partial = parts.pop()
        for part in parts:
            yield _clean(part)

    def flush(self) -> Iterator[str]:
        if self._partial.strip():
            yield _clean(self._partial)
        self._partial = ""


def push_lines(stream: Iterable[dict], ref: str, doing: str = "pushing",
                error: type[Exception] = PushError) -> Iterator[str]:
    """Compact progress lines from the daemon's push (or pull) stream; PushError
    (``error``) on an error chunk.

    A layer's repeated updates with the same status (e.g. every "Pushing" byte
    count) give one line: the first.
    """
    last_status: dict[str, str] = {}
    for chunk in stream:
        if "error" in chunk or "errorDetail" in chunk:
            detail = chunk.get("errorDetail") or {}
            message = detail.get("message") or chunk.get("error") or "unknown error"
            raise error(f"{doing} {ref} failed: {' '.join(str(message).split())}")
        status = chunk.get("status")
        if not status:
            continue
        layer = chunk.get("id")
        if layer:
            if last_status.get(layer) == status:
                continue
            last_status[layer] = status
            yield f"{layer}: {status} {progress_size(chunk.get('progress') or '')}".rstrip()
        else:
            yield _clean(status)


def progress_size(progress: str) -> str:
    """ "[==>   ]  1.2MB/3MB" -> "3MB": the total, without the bar or the count so far."""
    text = _ANSI.sub("", progress).rpartition("]")[2].strip()
    return text.rpartition("/")[2]
