"""The engines driven through a command-line tool (podman, buildah): what they share.

What the CLI backends share: finding the program (a missing one is an
:class:`EngineError` naming the package to install), running a short command
to completion within a timeout, streaming a long one (a build, a push) line by
line with its standard error merged into its output, and stopping a command
that is cancelled or overruns. Also the few facts about references and error
output that podman and buildah have in common, as both are built on the same
libraries (containers/image, containers/storage, buildah's builder).

How a command runs and stops is in :mod:`builder.engines.process`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import tempfile
import threading
from collections.abc import Generator, Iterable, Iterator, Sequence
from pathlib import Path

from builder.build.imagefiles import ImageFiles, path_of, readable_layers
from builder.engines.base import (
    BuildRequest,
    Engine,
    EngineError,
    EngineOptions,
    PushError,
)
from builder.engines.process import (
    Completed,
    Tool,
)
from builder.errors import BuildError

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

    def pull(self, ref: str) -> Iterator[str]:
        """``<tool> pull [--tls-verify=false] ref`` (TLS off for a registry on this machine)."""
        args = ["pull"]
        if is_loopback_registry(ref):
            args.append("--tls-verify=false")
        args.append(ref)
        outcome = yield from self._tool.stream(args, doing=f"pulling {ref}")
        if outcome.returncode != 0:
            reason = outcome.error or f"{self.name} exited with code {outcome.returncode}"
            raise EngineError(f"pulling {ref} failed: {reason}")

    def remove(self, ref: str, force: bool = False) -> None:
        """Untag ``ref``, or delete the image if it was its last name (``--force``:
        also with containers that use it)."""
        args = ["rmi", *(["--force"] if force else []), ref]
        done = self._command(args, f"removing {ref}")
        if done.returncode == 0 or not_known(done):
            return
        raise EngineError(f"removing {ref} failed: {done.error}")
