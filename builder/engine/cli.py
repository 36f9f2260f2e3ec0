"""Running a container engine's command-line tool (podman, buildah).

What the CLI backends share: finding the program (a missing one is an
:class:`EngineError` naming the package to install), running a short command
to completion within a timeout, streaming a long one (a build, a push) line by
line with its standard error merged into its output, and stopping a command
that is cancelled or overruns. Also the few facts about references and error
output that podman and buildah have in common, as both are built on the same
libraries (containers/image, containers/storage, buildah's builder).

Commands are argument lists, never shell text. Each runs in a session of its
own, so a Ctrl-C on kiln's terminal reaches kiln only, and kiln decides what
to stop. Stopping a command (:func:`stop`) first kills the processes it
started (during a build that is the RUN step's container, which as PID 1 of its
namespace ignores SIGTERM), so that the tool fails the step and cleans up its
working container by itself; then SIGTERM; then SIGKILL.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from collections import deque
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from builder.engine.base import (
    BuildRequest,
    Engine,
    EngineError,
    EngineOptions,
    PushError,
)
from builder.errors import BuildError
from builder.imagefiles import ImageFiles, path_of, readable_layers

TAIL_LINES = 20
STOP_GRACE = 5.0      # seconds a tool gets to exit after its step was killed, and after SIGTERM
_CANCEL_POLL = 0.1    # seconds between looks at a cancel flag

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_LOGRUS = re.compile(r'^time="[^"]*" level=(\w+) msg="((?:[^"\\]|\\.)*)"')
_GO_DUMP = re.compile(r" &\w+\.\w+\{.*$")          # a Go struct printed after a message
_SEVERAL = re.compile(r"^\d+ errors? occurred:$")

# What a push error says before its reason: the push (buildah names it again)
# and the blob it was at, e.g. 'pushing image "r" to "docker://r": trying to
# reuse blob sha256:... at destination: pinging container registry ...'.
_PUSH_NOISE = re.compile(r'^(pushing image "[^"]*" to "[^"]*": )?'
                         r'(trying to reuse blob sha256:[0-9a-f]+ at destination: )?')

# Docker's names for the default network; the containers tools call it "private".
_NETWORK_MODES = {"default": None, "bridge": "private"}


def network_args(mode: str | None) -> list[str]:
    """``--network`` for a Docker network mode ("host", "none", "bridge"...); [] for the default."""
    network = _NETWORK_MODES.get(mode, mode)
    return ["--network", network] if network else []


def clean(text: str) -> str:
    """One output line without colour codes, carriage-return redraws or trailing space."""
    return _ANSI.sub("", text).rstrip().rpartition("\r")[2].rstrip()


# -- references ---------------------------------------------------------------

def registry_host(ref: str) -> str | None:
    """The registry host[:port] a reference names, or None (Docker's rule)."""
    first, slash, _ = ref.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


def is_loopback_registry(ref: str) -> bool:
    """True when the reference's registry is on this machine (localhost, 127.0.0.0/8, ::1)."""
    host = registry_host(ref)
    if host is None:
        return False
    if host.startswith("["):
        name = host[1:host.find("]")]
    else:
        name = host.rpartition(":")[0] if host.count(":") == 1 else host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def familiar(name: str) -> str:
    """A stored name as Docker shows it.

    podman and buildah store a reference without a registry under
    ``localhost/`` and one of Docker Hub's under ``docker.io/[library/]``;
    Docker shows both without the prefix, and both spellings name the same
    local image in every one of these engines.
    """
    for prefix in ("localhost/", "docker.io/library/", "docker.io/"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def has_digest(ref: str) -> bool:
    return "@" in ref


def full_id(image_id: str) -> str:
    """An image id in Docker's ``sha256:<hex>`` form (the tools print the bare hex)."""
    return image_id if image_id.startswith("sha256:") else f"sha256:{image_id}"


# -- error output -------------------------------------------------------------

def error_message(lines: Iterable[str]) -> str:
    """The tool's own reason for failing, from its (merged) output; "" if it gave none.

    podman and buildah end with ``Error: <reason>`` (a multi-error as
    ``Error: 2 errors occurred:`` and one ``* reason`` line each); their
    libraries log ``time=... level=error msg="..."`` lines before that.
    """
    lines = list(lines)
    for index in range(len(lines) - 1, -1, -1):
        line = lines[index]
        if line.startswith("Error: "):
            text = line.removeprefix("Error: ").strip()
            if _SEVERAL.match(text):
                items = [rest.strip().removeprefix("* ") for rest in lines[index + 1:]
                         if rest.strip().startswith("* ")]
                text = "; ".join(items) or text
            return _GO_DUMP.sub("", " ".join(text.split()))
    for line in reversed(lines):
        match = _LOGRUS.match(line)
        if match and match.group(1) in ("error", "fatal"):
            return " ".join(match.group(2).replace('\\"', '"').split())
    return ""


def last_lines(text: str, count: int) -> list[str]:
    return [clean(line) for line in text.strip().splitlines()][-count:]


# -- processes ----------------------------------------------------------------

@dataclass(frozen=True)
class Completed:
    """A finished short command."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def error(self) -> str:
        """The tool's reason for failing (or its last line of standard error)."""
        lines = last_lines(self.stderr, TAIL_LINES)
        return error_message(lines) or (lines[-1] if lines else "")


@dataclass(frozen=True)
class Outcome:
    """How a streamed command ended."""

    returncode: int
    cancelled: bool                 # stopped because the cancel flag was set
    tail: tuple[str, ...]           # its last lines of output

    @property
    def error(self) -> str:
        return error_message(self.tail)


class Tool:
    """One command-line program, looked up on PATH each time it is run."""

    def __init__(self, program: str, package: str, global_args: Sequence[str] = ()):
        self.program = program
        self.package = package
        self.global_args = tuple(global_args)

    def argv(self, args: Sequence[str]) -> list[str]:
        path = shutil.which(self.program)
        if path is None:
            raise EngineError(f"{self.program} is not installed: "
                              f"apt-get install {self.package}")
        return [path, *self.global_args, *args]

    def _start(self, args: Sequence[str], doing: str, **kwargs) -> subprocess.Popen:
        argv = self.argv(args)
        try:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                    start_new_session=True, **kwargs)
        except OSError as exc:
            reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            raise EngineError(f"{doing} failed: cannot run {argv[0]}: {reason}") from exc

    def run(self, args: Sequence[str], *, doing: str, timeout: float,
            on_timeout=None) -> Completed:
        """Run to completion and return what it printed; EngineError if it overruns.

        ``on_timeout`` is called first when the command overruns (e.g. to
        remove a container the tool left to a monitor process of its own).
        """
        process = self._start(args, doing, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            if on_timeout is not None:
                on_timeout()
            stop(process)
            process.communicate()
            raise EngineError(f"{doing} did not finish within {timeout:g} s") from None
        except BaseException:
            stop(process)
            raise
        return Completed(process.returncode, stdout.decode("utf-8", "replace"),
                         stderr.decode("utf-8", "replace"))

    def stream(self, args: Sequence[str], *, doing: str,
               cancel: threading.Event | None = None) -> Generator[str, None, Outcome]:
        """Yield the output lines (standard error merged) as they come; return an Outcome.

        Setting ``cancel`` stops the command even while it prints nothing;
        closing the generator stops it too. Neither has a time limit: a RUN
        step may be silent for long.
        """
        if cancel is not None and cancel.is_set():
            return Outcome(returncode=-signal.SIGTERM, cancelled=True, tail=())
        process = self._start(args, doing, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        watcher = _CancelWatcher(process, cancel)
        try:
            for raw in process.stdout:
                line = clean(raw.decode("utf-8", "replace"))
                tail.append(line)
                yield line
            process.wait()
        finally:
            watcher.finish()
            process.stdout.close()
        return Outcome(returncode=process.returncode, cancelled=watcher.cancelled,
                       tail=tuple(tail))


class _CancelWatcher:
    """Stops a streamed command when its cancel flag is set, or when it is abandoned."""

    def __init__(self, process: subprocess.Popen, cancel: threading.Event | None):
        self._process = process
        self._cancel = cancel
        self._finished = threading.Event()
        self._lock = threading.Lock()
        self._stopping = False
        self.cancelled = False
        self._thread = None
        if cancel is not None:
            self._thread = threading.Thread(target=self._watch, name="kiln-cli-cancel",
                                            daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        while not self._finished.is_set():
            if self._cancel.wait(_CANCEL_POLL):
                if not self._finished.is_set() and self._process.poll() is None:
                    self.cancelled = True
                    self._stop_once()
                return

    def _stop_once(self) -> None:
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        stop(self._process)

    def finish(self) -> None:
        """The reader is done: at the end of the output, on an error, or closed early."""
        self._finished.set()
        if self._process.poll() is None:
            self._stop_once()
        if self._thread is not None:
            self._thread.join()
        self._process.wait()


def stop(process: subprocess.Popen, grace: float = STOP_GRACE) -> None:
    """End a command and whatever it started; returns once it has exited.

    The containers under the tool (a RUN step's) are killed first, so that
    the tool fails the step and removes its working container and the
    runtime's state; then the tool gets SIGTERM; then it and everything under
    it get SIGKILL.
    """
    if process.poll() is not None:
        return
    if _kill_descendants(process.pid, containers_only=True) and _exited(process, grace):
        return
    try:
        process.terminate()
    except ProcessLookupError:
        pass
    if _exited(process, grace):
        return
    _kill_descendants(process.pid)
    try:
        process.kill()
    except ProcessLookupError:
        pass
    process.wait()


def _exited(process: subprocess.Popen, timeout: float) -> bool:
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, session id) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses.
    fields = data[data.rfind(b")") + 2:].split()
    return (int(fields[1]), int(fields[3])) if len(fields) > 3 else None


def _parent_of(pid: int) -> int | None:
    stat = _stat(pid)
    return stat[0] if stat else None


def descendants(pid: int) -> list[tuple[int, int]]:
    """Every process under ``pid`` as (pid, session), parents before children (Linux /proc)."""
    children: dict[int, list[tuple[int, int]]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                children.setdefault(stat[0], []).append((int(entry), stat[1]))
    found: list[tuple[int, int]] = []
    queue = [pid]
    while queue:
        for child in children.get(queue.pop(0), ()):
            found.append(child)
            queue.append(child[0])
    return found


def _kill_descendants(pid: int, containers_only: bool = False) -> bool:
    """SIGKILL the processes under ``pid``, leaves first; True if there were any.

    ``containers_only``: only those in another session than the tool's (a
    container's processes: its runtime starts it in a session of its own),
    so that the tool's runtime monitor lives on to clean up after it.
    A process is signalled through a pidfd opened after checking that it is
    still a child of the parent it had, so a recycled pid is never hit.
    """
    try:
        session = os.getsid(pid) if containers_only else None
    except OSError:
        return False                    # the tool has exited
    found = [child for child, child_session in descendants(pid)
             if session is None or child_session != session]
    if not found:
        return False
    parents = {child: _parent_of(child) for child in found}
    for child in reversed(found):
        _kill_child(child, parents[child])
    return True


def _kill_child(pid: int, parent: int | None) -> None:
    try:
        pidfd = os.pidfd_open(pid)
    except (OSError, AttributeError):
        pidfd = None
    try:
        if _parent_of(pid) != parent:
            return                      # gone, or reparented (its parent died): not ours now
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    finally:
        if pidfd is not None:
            os.close(pidfd)


# -- what the podman and buildah backends share -------------------------------

def not_known(done: Completed) -> bool:
    """The command failed because the image or container it names does not exist."""
    return done.returncode != 0 and (
        "image not known" in done.stderr or "no such container" in done.stderr)


def repository(name: str) -> str:
    """``host:port/path:tag`` -> ``host:port/path``."""
    name = name.partition("@")[0]
    slash, colon = name.rfind("/"), name.rfind(":")
    return name[:colon] if colon > slash else name


def repo_digests(names: Iterable[str], digests: Iterable[str]) -> tuple[str, ...]:
    found = (f"{familiar(repository(name))}@{digest}" for name in names for digest in digests)
    return tuple(dict.fromkeys(found))


class ImageToolEngine(Engine):
    """An engine driven by a containers-tools program (podman, buildah).

    Both share one builder and one image store (containers-storage, by default
    ``/var/lib/containers/storage`` for root), so they build, tag, push and
    remove with the same commands and options. Images are built in Docker's
    format (``--format docker``), which keeps HEALTHCHECK, SHELL and
    ONBUILD, and are pushed as Docker schema 2 manifests, as the Docker
    backend's are. A push to a registry on this machine (localhost,
    127.0.0.0/8, ::1) goes without TLS (``--tls-verify=false``), as Docker's
    daemon allows for those; any other registry needs TLS or the tool's own
    ``registries.conf`` entry.
    """

    package = ""             # the Debian package that installs the program

    def __init__(self, options: EngineOptions):
        super().__init__(options)
        self._tool = self._make_tool()

    def _make_tool(self) -> Tool:
        return Tool(self.name, self.package)

    def _command(self, args: Sequence[str], doing: str) -> Completed:
        return self._tool.run(args, doing=doing, timeout=self.options.timeout)

    # -- an image's files ---------------------------------------------------

    @contextlib.contextmanager
    def image_files(self, image_id: str) -> Iterator[ImageFiles | None]:
        """The image's overlay layer directories in containers-storage, if this
        process can read them (see :meth:`_layer_directories`); None otherwise."""
        try:
            found = None if self.options.base_url else self._layer_directories(image_id)
        except (EngineError, OSError, ValueError, LookupError, TypeError, AttributeError):
            found = None
        if found is None:
            yield None
            return
        directories, env, layer_count = found
        layers = readable_layers(directories)
        yield (ImageFiles(layers, path_of(env))
               if layers is not None and len(layers) == layer_count else None)

    def _layer_directories(self, image_id: str
                           ) -> tuple[list[str], list[str] | None, int] | None:
        """(layer directories top first, the image's Env, its number of layers), or None."""
        return None

    # -- building -----------------------------------------------------------

    def build(self, request: BuildRequest,
              cancel: threading.Event | None = None) -> Generator[str, None, str]:
        """Build with the layer cache (``--layers``), streaming the tool's output;
        return the image's id (from ``--iidfile``).

        ``request.pull`` makes the tool pull *every* ``FROM`` image
        (``--pull=always``), local-only ones included, as with Docker;
        otherwise only missing ones are pulled (``--pull=missing``).
        Every tag is applied by the build itself, so a failed build tags nothing;
        with no tags the image is left unnamed.
        """

        def failed(reason: str, tail: Sequence[str] = ()) -> BuildError:
            return BuildError(f"image {request.image!r} failed to build: {reason}",
                              image=request.image, tail=tuple(tail))

        context = Path(request.context_dir)
        dockerfile = context / request.dockerfile
        if not context.is_dir():
            raise failed(f"cannot read the build context {context}: no such directory")
        if not dockerfile.is_file():
            raise failed(f"cannot read the build context {context}: "
                         f"there is no {request.dockerfile}")
        with tempfile.TemporaryDirectory(prefix="kiln-build-") as scratch:
            iidfile = Path(scratch) / "image-id"
            args = self._build_args(request, dockerfile, iidfile)
            outcome = yield from self._tool.stream(
                args, doing=f"building image {request.image!r}", cancel=cancel)
            if outcome.cancelled:
                raise failed("interrupted", outcome.tail)
            if outcome.returncode != 0:
                reason = outcome.error or f"{self.name} exited with code {outcome.returncode}"
                raise failed(reason, outcome.tail)
            image_id = iidfile.read_text().strip() if iidfile.exists() else ""
        if not image_id:
            raise failed("the engine did not report the id of the built image", outcome.tail)
        return full_id(image_id)

    def _build_args(self, request: BuildRequest, dockerfile: Path,
                    iidfile: Path) -> list[str]:
        args = ["build", "--layers", "--force-rm", "--format", "docker",
                "--pull=always" if request.pull else "--pull=missing",
                "--file", str(dockerfile), "--iidfile", str(iidfile)]
        for tag in request.tags:
            args += ["--tag", tag]
        for key, value in sorted(request.labels.items()):
            args += ["--label", f"{key}={value}"]
        for key, value in sorted(request.build_args.items()):
            args += ["--build-arg", f"{key}={value}"]
        args += network_args(request.network_mode)
        if request.no_cache:
            args.append("--no-cache")
        args.append(str(request.context_dir))
        return args

    # -- references ---------------------------------------------------------

    def tag(self, ref: str, new_ref: str) -> None:
        if has_digest(new_ref):
            raise EngineError(f"cannot tag {ref} as {new_ref}: a digest reference "
                              f"cannot be given to an image")
        done = self._command(["tag", ref, new_ref], f"tagging {ref} as {new_ref}")
        if not_known(done):
            raise EngineError(f"cannot tag {ref} as {new_ref}: there is no local image {ref}")
        if done.returncode != 0:
            raise EngineError(f"tagging {ref} as {new_ref} failed: {done.error}")

    def push(self, ref: str) -> Iterator[str]:
        """Push with the tool's own progress lines, then ``<tag>: digest: sha256:...``."""
        if has_digest(ref):
            raise PushError(f"pushing {ref} failed: a digest reference cannot be pushed, "
                            f"push a tag")
        with tempfile.TemporaryDirectory(prefix="kiln-push-") as scratch:
            digestfile = Path(scratch) / "digest"
            args = ["push", "--digestfile", str(digestfile)]
            if is_loopback_registry(ref):
                args.append("--tls-verify=false")
            args.append(ref)
            outcome = yield from self._tool.stream(args, doing=f"pushing {ref}")
            if outcome.returncode != 0:
                reason = _PUSH_NOISE.sub("", outcome.error) or (
                    f"{self.name} exited with code {outcome.returncode}")
                if "image not known" in reason:
                    reason = f"there is no local image {ref}"
                raise PushError(f"pushing {ref} failed: {reason}")
            digest = digestfile.read_text().strip() if digestfile.exists() else ""
        if digest:
            name = ref.rpartition("/")[2]
            tag = name.rpartition(":")[2] if ":" in name else "latest"
            yield f"{tag}: digest: {digest}"

    def remove(self, ref: str, force: bool = False) -> None:
        """Untag ``ref``, or delete the image if it was its last name (``--force``:
        also with containers that use it)."""
        args = ["rmi", *(["--force"] if force else []), ref]
        done = self._command(args, f"removing {ref}")
        if done.returncode == 0 or not_known(done):
            return
        raise EngineError(f"removing {ref} failed: {done.error}")
