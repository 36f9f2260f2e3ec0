"""The engine interface: plain requests in, progress lines and results out."""

from __future__ import annotations

import abc
import re
import tempfile
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import BuildError, KilnError


class EngineError(KilnError):
    """The engine cannot be reached or refused an operation."""


class MissingExecutable(EngineError):
    """The program a container was to run is not in its image (e.g. no /bin/sh)."""


class PushError(KilnError):
    """Pushing an image to a registry failed."""

    exit_code = 1


@dataclass(frozen=True)
class EngineOptions:
    """Engine-independent settings given to every backend."""

    timeout: int = 600              # seconds for one API call
    base_url: str | None = None     # e.g. unix:///run/podman/podman.sock; None: default


@dataclass(frozen=True)
class BuildRequest:
    """Everything an engine needs to build one rendered image context."""

    image: str                          # kiln's image name (for messages)
    context_dir: Path                   # holds the Dockerfile
    tags: tuple[str, ...]               # full references to tag the result with; () untagged
    labels: Mapping[str, str] = field(default_factory=dict)
    build_args: Mapping[str, str] = field(default_factory=dict)
    network_mode: str | None = None     # e.g. "host"; None: engine default
    pull: bool = False                  # always try to pull newer external bases
    no_cache: bool = False              # do not use the engine's layer cache
    dockerfile: str = "Dockerfile"      # relative to context_dir


@dataclass(frozen=True)
class ImageInfo:
    id: str                             # "sha256:..."
    tags: tuple[str, ...]
    labels: Mapping[str, str]
    repo_digests: tuple[str, ...] = ()  # "repo@sha256:..." once pushed or pulled
    created: str = ""


class Engine(abc.ABC):
    """One container engine. Implementations must be safe to call from several threads."""

    name: str = ""

    def __init__(self, options: EngineOptions):
        self.options = options

    @abc.abstractmethod
    def ping(self) -> None:
        """Raise EngineError (one clear sentence) if the engine cannot be used."""

    @abc.abstractmethod
    def build(self, request: BuildRequest,
              cancel: threading.Event | None = None) -> Generator[str, None, str]:
        """Build and tag; yield output lines as they come; return the image's id.

        The generator's return value (see :func:`drain`) is the built image's
        id (``sha256:...``); with no ``request.tags`` the image is left
        untagged. Raises builder.errors.BuildError on failure, with the
        last lines of output in its message; a failed build tags nothing.
        When ``cancel`` is set the backend stops the build as soon as it can
        (even during a silent RUN step) and raises BuildError.
        """

    def stamp(self, image: str, labels: Mapping[str, str], ref: str,
              name: str | None = None) -> str:
        """Make ``image`` (a reference or id) with ``labels`` added and tag it ``ref``.

        Returns the new image's id. The new image has the same filesystem
        layers and configuration as ``image`` (a label adds no layer); its
        labels override the image's. ``ref`` is given to it in the last step,
        so until this returns ``ref`` names whatever it named before, and a
        failure leaves it so. ``name`` is kiln's image name, for messages.

        This default builds ``FROM image`` with the labels, untagged, then
        tags the result; a backend may do the same in fewer calls. Raises
        EngineError.
        """
        with tempfile.TemporaryDirectory(prefix="kiln-stamp-") as scratch:
            context = Path(scratch)
            (context / "Dockerfile").write_text(f"FROM {image}\n", encoding="utf-8")
            try:
                new_id = drain(self.build(BuildRequest(
                    image=name or ref, context_dir=context, tags=(), labels=dict(labels))))
            except BuildError as exc:
                reason = exc.message.partition(" failed to build: ")[2] or exc.message
                raise EngineError(f"stamping {ref} failed: {reason}") from exc
        if not new_id:
            raise EngineError(f"stamping {ref} failed: the engine did not report the "
                              f"id of the new image")
        self.tag(new_id, ref)
        return new_id

    @abc.abstractmethod
    def inspect(self, ref: str) -> ImageInfo | None:
        """The local image a reference or id names, or None if there is none."""

    @abc.abstractmethod
    def images_with_label(self, key: str) -> list[ImageInfo]:
        """Every local image carrying label ``key`` (any value), in one engine call."""

    @abc.abstractmethod
    def tag(self, ref: str, new_ref: str) -> None:
        """Give an existing local image (ref or id) another reference."""

    @abc.abstractmethod
    def push(self, ref: str) -> Iterator[str]:
        """Push a local reference to its registry, yielding progress lines; raise PushError."""

    @abc.abstractmethod
    def remove(self, ref: str, force: bool = False) -> None:
        """Remove a local reference (missing is not an error)."""

    @abc.abstractmethod
    def run(self, ref: str, command: Sequence[str], timeout: int = 300,
            entrypoint: Sequence[str] | None = None, network: str | None = None) -> str:
        """Run a command in a new, removed-after container; return its stdout.

        ``entrypoint`` replaces the image's entrypoint when given ([] clears it).
        ``network``: the container's network, e.g. ``"none"`` (only a
        loopback interface) or ``"host"``; None: the engine's default.

        Raises EngineError if the command exits non-zero, MissingExecutable
        if the program to run is not in the image.
        """


def drain(lines: Iterable[str], each: Callable[[str], None] | None = None) -> str | None:
    """Consume an engine's output generator (``each`` sees every line); return its value.

    :meth:`Engine.build` returns the built image's id this way.
    """
    iterator = iter(lines)
    while True:
        try:
            line = next(iterator)
        except StopIteration as stop:
            return stop.value
        if each is not None:
            each(line)


# How runc and crun say that the program to start is not in the container
# ("exec: "/bin/sh": stat /bin/sh: no such file or directory"; "exec: "x":
# executable file not found in $PATH"; "executable file `/bin/sh` not found").
_MISSING_EXECUTABLE = re.compile(
    r'exec: "(?P<runc>[^"]+)": (?:stat [^:]*: no such file or directory'
    r'|executable file not found in \$PATH)'
    r'|executable file `(?P<crun>[^`]+)` not found')


def missing_executable(text: str) -> str | None:
    """The program an OCI runtime's error says it could not find, or None."""
    match = _MISSING_EXECUTABLE.search(text.replace('\\"', '"'))
    if match is None:
        return None
    return match.group("runc") or match.group("crun")
