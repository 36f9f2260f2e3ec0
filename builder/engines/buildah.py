"""The buildah engine, through the ``buildah`` command (as TripleO builds).

Every operation is one or a few ``buildah`` commands (see
:mod:`builder.engines.tool` for how they are run, streamed and stopped). Images
live in containers-storage, the store podman uses too. buildah has no daemon
and no remote mode, so ``EngineOptions.base_url`` cannot be used with it.

buildah cannot run an image, only a working container made from one:
:meth:`BuildahEngine.run` makes one (``buildah from``), runs the command in it
after the image's entrypoint (or the one given), as ``docker run`` would
(``buildah run``), and always removes it (``buildah rm``).
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from builder.engines.base import EngineError, ImageInfo, MissingExecutable, missing_executable
from builder.engines.process import (
    last_lines,
)
from builder.engines.tool import (
    ImageToolEngine,
    familiar,
    full_id,
    network_args,
    not_known,
    repo_digests,
)

RUN_STDERR_LINES = 10
_INSPECT_WORKERS = 4
_RUNTIME_EXIT = re.compile(r"^Error: while running runtime: exit status \d+$")


class BuildahEngine(ImageToolEngine):
    """Builds, tags, pushes and runs images with buildah."""

    name = "buildah"
    package = "buildah"

    def ping(self) -> None:
        """``buildah info``: the program runs and its image store is usable."""
        if self.options.base_url:
            raise EngineError(f"buildah works on this machine only: it cannot use the "
                              f"engine at {self.options.base_url}")
        done = self._command(["info"], "buildah info")
        if done.returncode != 0:
            raise EngineError(f"buildah cannot be used: {done.error}")

    def __init__(self, options):
        super().__init__(options)
        self._store_lock = threading.Lock()
        self._store: tuple[str, str] | None = None

    def _graph(self) -> tuple[str, str]:
        """(graph driver, graph root) of buildah's store, from ``buildah info`` once."""
        with self._store_lock:
            if self._store is None:
                done = self._command(["info"], "buildah info")
                if done.returncode != 0:
                    raise EngineError(f"buildah info failed: {done.error}")
                store = json.loads(done.stdout)["store"]
                self._store = (store["GraphDriverName"], store["GraphRoot"])
            return self._store

    def _layer_directories(self, image_id: str
                           ) -> tuple[list[str], list[str] | None, int] | None:
        """The overlay layers of containers-storage, from its own records.

        buildah shows no layer directories: the image's top layer is in the
        store's ``overlay-images/images.json``, each layer's parent in
        ``overlay-layers/layers.json`` (both written whole and renamed into
        place), each layer's files in ``overlay/<layer>/diff``. The image's
        Env and number of layers come from ``buildah inspect``.
        """
        driver, root = self._graph()
        if driver != "overlay":
            return None
        data = self._inspect_image(image_id, f"inspecting {image_id}")
        if data is None:
            return None
        store = Path(root)
        wanted = data["FromImageID"]
        images = json.loads((store / "overlay-images" / "images.json").read_text())
        top = next((image.get("layer") for image in images if image.get("id") == wanted), None)
        parents = {layer["id"]: layer.get("parent")
                   for layer in json.loads((store / "overlay-layers" / "layers.json")
                                           .read_text())}
        directories = []
        while top:
            if top not in parents or len(directories) > len(parents):
                return None
            directories.append(str(store / "overlay" / top / "diff"))
            top = parents[top]
        image = data.get("OCIv1") or {}
        return (directories, (image.get("config") or {}).get("Env"),
                len((image.get("rootfs") or {}).get("diff_ids") or ()))

    def inspect(self, ref: str) -> ImageInfo | None:
        """From ``buildah inspect`` (id, labels, created) and ``buildah images`` (names)."""
        doing = f"inspecting {ref}"
        data = self._inspect_image(ref, doing)
        if data is None:
            return None
        # By id filter with --all: an intermediate image (unnamed, with a child,
        # as an image is once stamped) is not listed by its id alone.
        listed = self._list_images(["--all", "--filter", f"id={data['FromImageID']}"], doing)
        if not listed:
            return None                         # removed meanwhile
        return _image_info(data, listed[0])

    def images_with_label(self, key: str) -> list[ImageInfo]:
        """``buildah images --filter label=KEY`` (named and dangling images, not the
        layer cache's intermediate ones), then each one's labels: buildah lists
        no labels, and inspects one image per call."""
        doing = f"listing images labelled {key}"
        listed = self._list_images(["--filter", f"label={key}"], doing)
        with ThreadPoolExecutor(max_workers=_INSPECT_WORKERS) as pool:
            inspected = list(pool.map(lambda entry: self._inspect_image(entry["id"], doing),
                                      listed))
        return [_image_info(data, entry)
                for data, entry in zip(inspected, listed, strict=True) if data is not None]

    def _inspect_image(self, ref: str, doing: str) -> dict | None:
        """``buildah inspect --type image``'s JSON, or None if there is no such image."""
        done = self._command(["inspect", "--type", "image", ref], doing)
        if not_known(done):
            return None
        if done.returncode != 0:
            raise EngineError(f"{doing} failed: {done.error}")
        try:
            data = json.loads(done.stdout)
            if not isinstance(data["FromImageID"], str):
                raise TypeError
        except (ValueError, LookupError, TypeError) as exc:
            raise EngineError(f"{doing} failed: buildah printed no image") from exc
        return data

    def _list_images(self, selection: Sequence[str], doing: str) -> list[dict]:
        """``buildah images --json`` entries (id, names, digest) of the images selected."""
        done = self._command(["images", "--json", "--no-trunc", *selection], doing)
        if not_known(done):
            return []
        if done.returncode != 0:
            raise EngineError(f"{doing} failed: {done.error}")
        try:
            listed = json.loads(done.stdout or "[]") or []
            found = {entry["id"]: entry for entry in listed}     # one image, one entry
        except (ValueError, LookupError, TypeError) as exc:
            raise EngineError(f"{doing} failed: buildah printed no image list") from exc
        return list(found.values())

    def run(self, ref: str, command: Sequence[str], timeout: int = 300,
            entrypoint: Sequence[str] | None = None, network: str | None = None) -> str:
        """Like ``docker run --rm [--entrypoint] [--network] ref command``; nothing is pulled."""
        shown = " ".join(command)
        doing = f"running {shown!r} in {ref}"
        name = f"kiln-run-{uuid.uuid4().hex[:12]}"
        made = self._command(["from", "--pull=never", "--name", name, ref], doing)
        if not_known(made):
            raise EngineError(f"{doing} failed: there is no local image {ref}")
        if made.returncode != 0:
            raise EngineError(f"{doing} failed: {made.error}")
        try:
            if entrypoint is None:
                # Docker's rule: the image's entrypoint, then the command or the image's CMD.
                image_entrypoint, image_cmd = self._process(name, doing)
                argv = [*image_entrypoint, *(command or image_cmd)]
            else:
                argv = [*entrypoint, *command]
            done = self._tool.run(["run", *network_args(network), name, "--", *argv],
                                  doing=doing, timeout=timeout)
            missing = missing_executable(done.stderr) if done.returncode != 0 else None
            if missing is not None and argv and missing == argv[0]:
                raise MissingExecutable(f"{doing} failed: the image has no {missing}")
            if done.returncode != 0:
                last = [line for line in last_lines(done.stderr, RUN_STDERR_LINES + 1)
                        if not _RUNTIME_EXIT.match(line)][-RUN_STDERR_LINES:]
                detail = f": {' / '.join(last)}" if last else ""
                raise EngineError(f"{doing} exited with code {done.returncode}{detail}")
            return done.stdout
        finally:
            try:
                self._command(["rm", name], f"removing the working container {name}")
            except EngineError:
                pass

    def _process(self, container: str, doing: str) -> tuple[list[str], list[str]]:
        """The working container's entrypoint and command, from its image."""
        done = self._command(["inspect", "--type", "container", container], doing)
        if done.returncode != 0:
            raise EngineError(f"{doing} failed: {done.error}")
        try:
            data = json.loads(done.stdout)
        except ValueError as exc:
            raise EngineError(f"{doing} failed: buildah printed no container") from exc
        config = (data.get("OCIv1") or {}).get("config") or {}
        return list(config.get("Entrypoint") or ()), list(config.get("Cmd") or ())


def _image_info(data: dict, entry: dict) -> ImageInfo:
    """ImageInfo from ``buildah inspect`` (``data``) and ``buildah images`` (``entry``)."""
    image_id = data["FromImageID"]
    image = data.get("OCIv1") or {}
    config = image.get("config") or (data.get("Docker") or {}).get("config") or {}
    names = entry.get("names") or ()
    digest = entry.get("digest") or data.get("FromImageDigest")
    return ImageInfo(
        id=full_id(image_id),
        tags=tuple(familiar(name) for name in names),
        labels=dict(config.get("Labels") or {}),
        repo_digests=repo_digests(names, [digest] if digest else []),
        created=image.get("created") or entry.get("createdatraw") or "",
    )
