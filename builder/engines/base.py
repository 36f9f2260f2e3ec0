"""The engine interface: plain requests in, progress lines and results out."""

from __future__ import annotations

import abc
import contextlib
import re
import tempfile
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from builder.build.imagefiles import ImageFiles
from builder.errors import BuildError, EngineError, MissingExecutable, PushError

__all__ = ["EngineError", "MissingExecutable", "PushError"]     # kept importable from here


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

        This default builds ``FROM image`` and one ``LABEL`` instruction
        holding every label (see :func:`label_instruction`: one build step,
        whatever the number of labels), tagged ``ref`` by the build itself,
        which names nothing unless it succeeds. Raises EngineError.
        """
        instruction, rest = label_instruction(labels)
        with tempfile.TemporaryDirectory(prefix="kiln-stamp-") as scratch:
            context = Path(scratch)
            (context / "Dockerfile").write_text(f"FROM {image}\n{instruction}",
                                                encoding="utf-8")
            try:
                new_id = drain(self.build(BuildRequest(
                    image=name or ref, context_dir=context, tags=(ref,), labels=rest)))
            except BuildError as exc:
                reason = exc.message.partition(" failed to build: ")[2] or exc.message
                raise EngineError(f"stamping {ref} failed: {reason}") from exc
        if not new_id:
            raise EngineError(f"stamping {ref} failed: the engine did not report the "
                              f"id of the new image")
        return new_id

    @contextlib.contextmanager
    def image_files(self, image_id: str) -> Iterator[ImageFiles | None]:
        """A read-only view of a local image's root filesystem, or None.

        None when this engine or host cannot show the image's files without
        starting a container (a remote engine, another storage driver, no
        permission to read its store): the caller then runs a container
        instead. The view is valid until the context ends; its ``path_env`` is
        the image's ``PATH``. This default shows nothing.
        """
        yield None

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
    def pull(self, ref: str) -> Iterator[str]:
        """Pull a reference (tag or digest) from its registry, yielding progress lines;
        raise EngineError. A registry on 127.0.0.0/8 or localhost is plain HTTP."""

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


# -- one LABEL instruction ------------------------------------------------------

# Docker's parser refuses a Dockerfile line longer than 64 KiB, and buildah's
# drops it silently: a long label is written over several physical lines.
LABEL_LINE = 16384
# Characters between which a quoted value may be cut by a line continuation:
# not an escape, not white space, and no "#" to start the next physical line
# (which the parsers would take for a comment).
_CUTTABLE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                      ".,:;_-+=/@{}[]()<>%&*!?'~^|")
_UNWRITABLE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")   # line breaks and other controls


def _quoted(text: str) -> str:
    """A Dockerfile double-quoted word: backslash, quote and ``$`` (expansion) escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def _physical_lines(word: str, width: int) -> list[str] | None:
    """``word`` cut into pieces of at most ``width`` characters, each cut between
    two cuttable characters; None if it cannot be cut so."""
    pieces = []
    while len(word) > width:
        cut = width
        while not (word[cut - 1] in _CUTTABLE and word[cut] in _CUTTABLE):
            cut -= 1
            if cut <= width // 2:
                return None
        pieces.append(word[:cut])
        word = word[cut:]
    pieces.append(word)
    return pieces


def label_instruction(labels: Mapping[str, str], width: int = LABEL_LINE
                      ) -> tuple[str, dict[str, str]]:
    """(one Dockerfile ``LABEL`` instruction for ``labels``, the labels it cannot hold).

    Every key and value is a double-quoted word (``\\``, ``\\"`` and ``\\$``
    escaped, so nothing is expanded); each label starts a physical line, and
    a long one goes on over several, joined by line continuations, so no
    line is longer than ``width``. A label a Dockerfile cannot hold (a line
    break or another control character but tab, ``=`` in its key, a long
    value with nowhere to cut it) is returned, to be given to the build as a
    build label. The text is "" when there is nothing to write.
    """
    lines: list[str] = []
    rest: dict[str, str] = {}
    for key, value in sorted(labels.items()):
        pieces = None
        if not _UNWRITABLE.search(key + value) and "=" not in key:
            pieces = _physical_lines(f"{_quoted(key)}={_quoted(value)}", width)
        if pieces is None:
            rest[key] = value
            continue
        if lines:
            lines[-1] += " \\"
        lines += [piece + "\\" for piece in pieces[:-1]]
        lines.append(pieces[-1])
    if not lines:
        return "", rest
    return "LABEL \\\n" + "\n".join(lines) + "\n", rest
