"""The Docker engine, through the Docker SDK for Python.

The client is made on first use (``docker.from_env``, so ``DOCKER_HOST``,
``DOCKER_TLS_VERIFY`` and ``DOCKER_CERT_PATH`` apply; ``EngineOptions.base_url``
replaces ``DOCKER_HOST``) and shared by every worker thread. Registry
credentials come from the user's Docker config, read by the SDK; nothing here
prints them. Every SDK or transport error leaves this module as one of kiln's
errors with a one-sentence message.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections import deque
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence

import docker
import docker.errors
import requests
import urllib3.exceptions

from builder.build.imagefiles import ImageFiles, path_of, readable_layers
from builder.engines.base import (
    BuildRequest,
    Engine,
    EngineError,
    EngineOptions,
    ImageInfo,
    MissingExecutable,
    PushError,
    missing_executable,
)
from builder.errors import BuildError

DEFAULT_ENDPOINT = "unix:///var/run/docker.sock"
TAIL_LINES = 20
RUN_STDERR_LINES = 10

# Errors the SDK lets through from its transport (requests/urllib3) besides its own.
_TRANSPORT_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, OSError)
_SDK_ERRORS = (docker.errors.DockerException, *_TRANSPORT_ERRORS)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SUCCESSFULLY_BUILT = re.compile(r"^Successfully built ([0-9a-f]+)$")
_RUNNING_IN = re.compile(r"^ ---> Running in ([0-9a-f]{12,64})$")
_CANCEL_POLL = 0.25  # seconds between looks at the cancel flag during a build


class _StepContainer:
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
                    except _SDK_ERRORS:
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


def _reason(exc: BaseException) -> str:
    """A short, lower-case reason for an SDK or transport error."""
    os_error = _find_os_error(exc, set())
    if os_error is not None:
        return os.strerror(os_error.errno).lower()
    if isinstance(exc, docker.errors.APIError) and exc.explanation:
        text = exc.explanation
    else:
        text = str(exc)
    text = text.removeprefix("Error while fetching server API version: ")
    return " ".join(text.split()) or type(exc).__name__


def _find_os_error(exc: object, seen: set[int]) -> OSError | None:
    """The system error (errno set) buried in requests' and urllib3's wrappers."""
    if not isinstance(exc, BaseException) or id(exc) in seen:
        return None
    seen.add(id(exc))
    if isinstance(exc, OSError) and isinstance(exc.errno, int) and exc.errno > 0:
        return exc
    inner = [*exc.args, getattr(exc, "reason", None), exc.__cause__, exc.__context__]
    for candidate in inner:
        found = _find_os_error(candidate, seen)
        if found is not None:
            return found
    return None


def _is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, docker.errors.NotFound) or (
        isinstance(exc, docker.errors.APIError) and exc.status_code == 404)


def _clean(line: str) -> str:
    return _ANSI.sub("", line).rstrip()


class _Lines:
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


class DockerEngine(Engine):
    """Builds, tags, pushes and runs images with a Docker daemon."""

    name = "docker"

    def __init__(self, options: EngineOptions):
        super().__init__(options)
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()

    # -- the client ---------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return self.options.base_url or os.environ.get("DOCKER_HOST") or DEFAULT_ENDPOINT

    def _unreachable(self, exc: BaseException) -> EngineError:
        reason = _reason(exc)
        hint = ("is your user allowed to use the Docker socket?"
                if reason == os.strerror(13).lower() else "is dockerd running?")
        return EngineError(f"cannot reach the Docker engine at {self.endpoint}: {reason}",
                           hint=hint)

    def _api(self) -> docker.APIClient:
        """The shared low-level client, made on first use; EngineError if unreachable."""
        with self._lock:
            if self._client is None:
                environment = dict(os.environ)
                if self.options.base_url:
                    environment["DOCKER_HOST"] = self.options.base_url
                try:
                    self._client = docker.from_env(timeout=self.options.timeout,
                                                   max_pool_size=32,
                                                   environment=environment)
                except _SDK_ERRORS as exc:
                    raise self._unreachable(exc) from exc
            return self._client.api

    def _engine_error(self, doing: str, exc: BaseException) -> EngineError:
        if isinstance(exc, docker.errors.APIError):
            return EngineError(f"{doing} failed: {_reason(exc)}")
        if isinstance(exc, _TRANSPORT_ERRORS):
            return self._unreachable(exc)
        return EngineError(f"{doing} failed: {_reason(exc)}")

    # -- Engine -------------------------------------------------------------

    def ping(self) -> None:
        api = self._api()
        try:
            api.ping()
        except _SDK_ERRORS as exc:
            raise self._unreachable(exc) from exc

    def build(self, request: BuildRequest,
              cancel: threading.Event | None = None) -> Generator[str, None, str]:
        """Build with the classic builder, streaming its output; return the image's id.

        The output stream has no read timeout (a RUN step may be silent for
        long). ``request.pull`` makes the daemon pull *every* ``FROM`` image,
        local-only ones included, so it suits only images whose bases come
        from a registry.
        """
        api = self._api()
        tail: deque[str] = deque(maxlen=TAIL_LINES)

        def failed(reason: str) -> BuildError:
            return BuildError(f"image {request.image!r} failed to build: {reason}",
                              image=request.image, tail=tuple(tail))

        try:
            stream = api.build(
                path=str(request.context_dir),
                dockerfile=request.dockerfile,
                tag=request.tags[0] if request.tags else None,
                labels=dict(request.labels) or None,
                buildargs=dict(request.build_args),
                network_mode=request.network_mode,
                pull=request.pull,
                nocache=request.no_cache,
                rm=True,
                forcerm=True,
                decode=True,
            )
        except docker.errors.APIError as exc:
            raise failed(_reason(exc)) from exc
        except (TypeError, FileNotFoundError) as exc:
            # The SDK checks the context directory and Dockerfile before sending.
            raise failed(f"cannot read the build context {request.context_dir}: "
                         f"{_reason(exc)}") from exc
        except _SDK_ERRORS as exc:
            raise self._engine_error(f"building image {request.image!r}", exc) from exc

        image_id = None
        short_id = None
        lines = _Lines()
        step = _StepContainer(api, cancel)
        try:
            for chunk in stream:
                if "error" in chunk or "errorDetail" in chunk:
                    detail = chunk.get("errorDetail") or {}
                    message = detail.get("message") or chunk.get("error") or "unknown error"
                    tail.extend(lines.flush())
                    raise failed(" ".join(str(message).split()))
                aux = chunk.get("aux")
                if isinstance(aux, dict) and aux.get("ID"):
                    image_id = aux["ID"]
                text = chunk.get("stream")
                if not text:
                    continue
                for line in lines.feed(text):
                    match = _SUCCESSFULLY_BUILT.match(line)
                    if match:
                        short_id = match.group(1)
                    step.notice(line)
                    tail.append(line)
                    yield line
                if step.cancelled:
                    raise failed("interrupted")
            for line in lines.flush():
                tail.append(line)
                yield line
        except _SDK_ERRORS as exc:
            if isinstance(exc, docker.errors.APIError):
                raise failed(_reason(exc)) from exc
            raise self._engine_error(f"building image {request.image!r}", exc) from exc
        finally:
            step.stop()
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        if step.cancelled:
            raise failed("interrupted")

        image_id = image_id or self._resolve_id(short_id)
        if image_id is None:
            raise failed("the engine did not report the id of the built image")
        self._tag_all(request, image_id, failed)
        return image_id

    def _resolve_id(self, short_id: str | None) -> str | None:
        if short_id is None:
            return None
        info = self.inspect(short_id)
        return info.id if info else None

    def _tag_all(self, request: BuildRequest, image_id: str, failed) -> None:
        """Apply every tag but the first (the build did that); on failure, remove them all."""
        done = list(request.tags[:1])
        try:
            for ref in request.tags[1:]:
                self.tag(image_id, ref)
                done.append(ref)
        except EngineError as exc:
            for ref in done:
                try:
                    self._api().remove_image(ref, noprune=True)
                except _SDK_ERRORS:
                    pass
            raise failed(exc.message) from exc

    def inspect(self, ref: str) -> ImageInfo | None:
        api = self._api()
        try:
            data = api.inspect_image(ref)
        except _SDK_ERRORS as exc:
            if _is_not_found(exc):
                return None
            raise self._engine_error(f"inspecting {ref}", exc) from exc
        return _image_info(data, (data.get("Config") or {}).get("Labels"))

    @contextlib.contextmanager
    def image_files(self, image_id: str) -> Iterator[ImageFiles | None]:
        """The image's overlay2 layer directories, when the daemon is on this host
        (a unix socket) and this process can read them; None otherwise."""
        yield self._layer_view(image_id)

    def _layer_view(self, image_id: str) -> ImageFiles | None:
        if not self.endpoint.startswith("unix://"):
            return None
        try:
            data = self._api().inspect_image(image_id)
        except _SDK_ERRORS:
            return None
        driver = data.get("GraphDriver") or {}
        paths = driver.get("Data") or {}
        if driver.get("Name") != "overlay2" or not paths.get("UpperDir"):
            return None
        layers = readable_layers([paths["UpperDir"],
                                  *(paths.get("LowerDir") or "").split(":")])
        # one directory per filesystem layer, or these are not this image's files
        if layers is None or len(layers) != len((data.get("RootFS") or {}).get("Layers") or ()):
            return None
        return ImageFiles(layers, path_of((data.get("Config") or {}).get("Env")))

    def images_with_label(self, key: str) -> list[ImageInfo]:
        api = self._api()
        try:
            found = api.images(filters={"label": key})
        except _SDK_ERRORS as exc:
            raise self._engine_error(f"listing images labelled {key}", exc) from exc
        return [_image_info(image, image.get("Labels")) for image in found]

    def tag(self, ref: str, new_ref: str) -> None:
        repository, tag, digest = split_reference(new_ref)
        if digest is not None:
            raise EngineError(f"cannot tag {ref} as {new_ref}: a digest reference "
                              f"cannot be given to an image")
        api = self._api()
        try:
            api.tag(ref, repository, tag or "latest")
        except _SDK_ERRORS as exc:
            if _is_not_found(exc):
                raise EngineError(f"cannot tag {ref} as {new_ref}: "
                                  f"there is no local image {ref}") from exc
            raise self._engine_error(f"tagging {ref} as {new_ref}", exc) from exc

    def push(self, ref: str) -> Iterator[str]:
        repository, tag, digest = split_reference(ref)
        if digest is not None:
            raise PushError(f"pushing {ref} failed: a digest reference cannot be pushed, "
                            f"push a tag")
        api = self._api()
        try:
            stream = api.push(repository, tag=tag or "latest", stream=True, decode=True)
            yield from _push_lines(stream, ref)
        except _SDK_ERRORS as exc:
            if isinstance(exc, docker.errors.APIError):
                raise PushError(f"pushing {ref} failed: {_reason(exc)}") from exc
            raise self._engine_error(f"pushing {ref}", exc) from exc

    def pull(self, ref: str) -> Iterator[str]:
        repository, tag, digest = split_reference(ref)
        api = self._api()
        try:
            stream = api.pull(repository, tag=digest or tag or "latest", stream=True,
                              decode=True)
            yield from _push_lines(stream, ref, doing="pulling", error=EngineError)
        except _SDK_ERRORS as exc:
            if isinstance(exc, docker.errors.APIError):
                raise EngineError(f"pulling {ref} failed: {_reason(exc)}") from exc
            raise self._engine_error(f"pulling {ref}", exc) from exc

    def remove(self, ref: str, force: bool = False) -> None:
        api = self._api()
        try:
            api.remove_image(ref, force=force)
        except _SDK_ERRORS as exc:
            if _is_not_found(exc):
                return
            raise self._engine_error(f"removing {ref}", exc) from exc

    def run(self, ref: str, command: Sequence[str], timeout: int = 300,
            entrypoint: Sequence[str] | None = None, network: str | None = None) -> str:
        """Run like ``docker run --rm [--entrypoint] [--network] ref command``."""
        api = self._api()
        shown = " ".join(command)
        doing = f"running {shown!r} in {ref}"
        try:
            container = api.create_container(
                ref, command=list(command),
                entrypoint=list(entrypoint) if entrypoint is not None else None,
                host_config=api.create_host_config(network_mode=network) if network else None)
        except _SDK_ERRORS as exc:
            if _is_not_found(exc):
                raise EngineError(f"{doing} failed: there is no local image {ref}") from exc
            raise self._engine_error(doing, exc) from exc
        container_id = container["Id"]
        try:
            try:
                api.start(container_id)
            except docker.errors.APIError as exc:
                missing = missing_executable(_reason(exc))
                if missing is not None:
                    raise MissingExecutable(f"{doing} failed: the image has no "
                                            f"{missing}") from exc
                raise
            try:
                result = api.wait(container_id, timeout=timeout)
            except _TRANSPORT_ERRORS as exc:
                if _find_os_error(exc, set()) is not None:
                    raise
                raise EngineError(f"{doing} did not finish within {timeout} s") from exc
            code = result.get("StatusCode")
            stdout = api.logs(container_id, stdout=True, stderr=False)
            if code != 0:
                stderr = api.logs(container_id, stdout=False, stderr=True)
                last = stderr.decode("utf-8", "replace").strip().splitlines()
                last = last[-RUN_STDERR_LINES:]
                detail = f": {' / '.join(last)}" if last else ""
                error = (result.get("Error") or {}).get("Message")
                if error:
                    detail += f" ({error})"
                raise EngineError(f"{doing} exited with code {code}{detail}")
            return stdout.decode("utf-8", "replace")
        except _SDK_ERRORS as exc:
            raise self._engine_error(doing, exc) from exc
        finally:
            try:
                api.remove_container(container_id, force=True)
            except _SDK_ERRORS:
                pass


def _push_lines(stream: Iterable[dict], ref: str, doing: str = "pushing",
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
            yield f"{layer}: {status} {_size(chunk.get('progress') or '')}".rstrip()
        else:
            yield _clean(status)


def _size(progress: str) -> str:
    """ "[==>   ]  1.2MB/3MB" -> "3MB": the total, without the bar or the count so far."""
    text = _ANSI.sub("", progress).rpartition("]")[2].strip()
    return text.rpartition("/")[2]


def _image_info(data: Mapping, labels: Mapping | None) -> ImageInfo:
    """ImageInfo from an image inspect or an entry of the image list."""
    return ImageInfo(
        id=data["Id"],
        tags=tuple(t for t in data.get("RepoTags") or () if t != "<none>:<none>"),
        labels=dict(labels or {}),
        repo_digests=tuple(d for d in data.get("RepoDigests") or () if d != "<none>@<none>"),
        created=str(data.get("Created") or ""))
