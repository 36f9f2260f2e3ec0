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
import threading
from collections import deque
from collections.abc import Generator, Iterator, Mapping, Sequence

import docker
import docker.errors

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
from builder.engines.docker_output import (
    RUN_STDERR_LINES,
    SDK_ERRORS,
    SUCCESSFULLY_BUILT,
    TAIL_LINES,
    TRANSPORT_ERRORS,
    Lines,
    StepContainer,
    find_os_error,
    is_not_found,
    push_lines,
    reason_of,
    split_reference,
)
from builder.errors import BuildError

DEFAULT_ENDPOINT = "unix:///var/run/docker.sock"
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
        reason = reason_of(exc)
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
                except SDK_ERRORS as exc:
                    raise self._unreachable(exc) from exc
            return self._client.api

    def _engine_error(self, doing: str, exc: BaseException) -> EngineError:
        if isinstance(exc, docker.errors.APIError):
            return EngineError(f"{doing} failed: {reason_of(exc)}")
        if isinstance(exc, TRANSPORT_ERRORS):
            return self._unreachable(exc)
        return EngineError(f"{doing} failed: {reason_of(exc)}")

    # -- Engine -------------------------------------------------------------

    def ping(self) -> None:
        api = self._api()
        try:
            api.ping()
        except SDK_ERRORS as exc:
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
            raise failed(reason_of(exc)) from exc
        except (TypeError, FileNotFoundError) as exc:
            # The SDK checks the context directory and Dockerfile before sending.
            raise failed(f"cannot read the build context {request.context_dir}: "
                         f"{reason_of(exc)}") from exc
        except SDK_ERRORS as exc:
            raise self._engine_error(f"building image {request.image!r}", exc) from exc

        image_id = None
        short_id = None
        lines = Lines()
        step = StepContainer(api, cancel)
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
                    match = SUCCESSFULLY_BUILT.match(line)
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
        except SDK_ERRORS as exc:
            if isinstance(exc, docker.errors.APIError):
                raise failed(reason_of(exc)) from exc
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
                except SDK_ERRORS:
                    pass
            raise failed(exc.message) from exc

    def inspect(self, ref: str) -> ImageInfo | None:
        api = self._api()
        try:
            data = api.inspect_image(ref)
        except SDK_ERRORS as exc:
            if is_not_found(exc):
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
        except SDK_ERRORS:
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
        except SDK_ERRORS as exc:
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
        except SDK_ERRORS as exc:
            if is_not_found(exc):
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
            yield from push_lines(stream, ref)
        except SDK_ERRORS as exc:
            if isinstance(exc, docker.errors.APIError):
                raise PushError(f"pushing {ref} failed: {reason_of(exc)}") from exc
            raise self._engine_error(f"pushing {ref}", exc) from exc

    def pull(self, ref: str) -> Iterator[str]:
        repository, tag, digest = split_reference(ref)
        api = self._api()
        try:
            stream = api.pull(repository, tag=digest or tag or "latest", stream=True,
                              decode=True)
            yield from push_lines(stream, ref, doing="pulling", error=EngineError)
        except SDK_ERRORS as exc:
            if isinstance(exc, docker.errors.APIError):
                raise EngineError(f"pulling {ref} failed: {reason_of(exc)}") from exc
            raise self._engine_error(f"pulling {ref}", exc) from exc

    def remove(self, ref: str, force: bool = False) -> None:
        api = self._api()
        try:
            api.remove_image(ref, force=force)
        except SDK_ERRORS as exc:
            if is_not_found(exc):
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
        except SDK_ERRORS as exc:
            if is_not_found(exc):
                raise EngineError(f"{doing} failed: there is no local image {ref}") from exc
            raise self._engine_error(doing, exc) from exc
        container_id = container["Id"]
        try:
            try:
                api.start(container_id)
            except docker.errors.APIError as exc:
                missing = missing_executable(reason_of(exc))
                if missing is not None:
                    raise MissingExecutable(f"{doing} failed: the image has no "
                                            f"{missing}") from exc
                raise
            try:
                result = api.wait(container_id, timeout=timeout)
            except TRANSPORT_ERRORS as exc:
                if find_os_error(exc, set()) is not None:
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
        except SDK_ERRORS as exc:
            raise self._engine_error(doing, exc) from exc
        finally:
            try:
                api.remove_container(container_id, force=True)
            except SDK_ERRORS:
                pass


def _image_info(data: Mapping, labels: Mapping | None) -> ImageInfo:
    """ImageInfo from an image inspect or an entry of the image list."""
    return ImageInfo(
        id=data["Id"],
        tags=tuple(t for t in data.get("RepoTags") or () if t != "<none>:<none>"),
        labels=dict(labels or {}),
        repo_digests=tuple(d for d in data.get("RepoDigests") or () if d != "<none>@<none>"),
        created=str(data.get("Created") or ""))
