"""The engine interface: plain requests in, progress lines and results out."""

from __future__ import annotations

import abc
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import KilnError


class EngineError(KilnError):
    """The engine cannot be reached or refused an operation."""


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
    tags: tuple[str, ...]               # full references to tag the result with
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
              cancel: threading.Event | None = None) -> Iterator[str]:
        """Build and tag; yield output lines as they come.

        Raises builder.errors.BuildError on failure, with the last lines
        of output in its message. When ``cancel`` is set the backend stops
        the build as soon as it can (even during a silent RUN step) and
        raises BuildError.
        """

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
            entrypoint: Sequence[str] | None = None) -> str:
        """Run a command in a new, removed-after container; return its stdout.

        ``entrypoint`` replaces the image's entrypoint when given ([] clears it).

        Raises EngineError if the command exits non-zero.
        """
