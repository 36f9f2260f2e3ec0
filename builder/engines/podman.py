"""The podman engine, through the ``podman`` command.

Every operation is one ``podman`` command (see :mod:`builder.engines.tool` for
how they are run, streamed and stopped). Images live in podman's own store
(containers-storage, shared with buildah), not in Docker's. With
``EngineOptions.base_url`` (e.g. ``unix:///run/podman/podman.sock``) every
command goes to that podman service (``podman --url``); a cancelled build is
then stopped by ending the client only. Registry credentials are podman's
(``podman login``, falling back to the Docker config); nothing here prints
them.

``podman run`` gives a container nofile and nproc limits of 1048576 unless
``/etc/containers/containers.conf`` says otherwise; where root lacks
CAP_SYS_RESOURCE (in a container, say) the runtime cannot raise them and every
run fails with "error setting rlimit". ``default_ulimits = []`` there makes
containers inherit podman's own limits (``.ci/setup.sh`` writes it). Builds
are not affected: their RUN steps inherit the limits already.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

from builder.engines.base import EngineError, ImageInfo, MissingExecutable, missing_executable
from builder.engines.process import (
    Completed,
    Tool,
    last_lines,
)
from builder.engines.tool import (
    ImageToolEngine,
    familiar,
    full_id,
    network_args,
    not_known,
)

RUN_STDERR_LINES = 10
_RLIMIT_HINT = ("the host refuses the container's ulimits: set default_ulimits = [] in "
                "/etc/containers/containers.conf so that containers inherit podman's")


class PodmanEngine(ImageToolEngine):
    """Builds, tags, pushes and runs images with podman."""

    name = "podman"
    package = "podman"

    def _make_tool(self) -> Tool:
        url = self.options.base_url
        return Tool(self.name, self.package, ("--url", url) if url else ())

    def ping(self) -> None:
        """``podman info``: the program runs and its image store and runtime are usable."""
        done = self._command(["info", "--format", "{{.Store.GraphRoot}}"], "podman info")
        if done.returncode == 0:
            return
        url = self.options.base_url
        if url:
            reason = done.error.rpartition("connect: ")[2] or done.error
            raise EngineError(f"cannot reach podman at {url}: {reason}",
                              hint="is the podman service running? "
                                   "start it with podman system service")
        raise EngineError(f"podman cannot be used: {done.error}")

    def inspect(self, ref: str) -> ImageInfo | None:
        done = self._command(["image", "inspect", ref], f"inspecting {ref}")
        if not_known(done):
            return None
        if done.returncode != 0:
            raise EngineError(f"inspecting {ref} failed: {done.error}")
        try:
            data = json.loads(done.stdout)[0]
            image_id = data["Id"]
        except (ValueError, LookupError, TypeError) as exc:
            raise EngineError(f"inspecting {ref} failed: podman printed no image") from exc
        config = data.get("Config") or {}
        return ImageInfo(
            id=full_id(image_id),
            tags=tuple(familiar(tag) for tag in data.get("RepoTags") or ()),
            labels=dict(config.get("Labels") or data.get("Labels") or {}),
            repo_digests=tuple(dict.fromkeys(familiar(d) for d in data.get("RepoDigests") or ())),
            created=data.get("Created") or "",
        )

    def _layer_directories(self, image_id: str
                           ) -> tuple[list[str], list[str] | None, int] | None:
        """From ``podman image inspect``: its GraphDriver's overlay directories."""
        done = self._command(["image", "inspect", image_id], f"inspecting {image_id}")
        if done.returncode != 0:
            return None
        data = json.loads(done.stdout)[0]
        driver = data.get("GraphDriver") or {}
        paths = driver.get("Data") or {}
        if driver.get("Name") != "overlay" or not paths.get("UpperDir"):
            return None
        return ([paths["UpperDir"], *(paths.get("LowerDir") or "").split(":")],
                (data.get("Config") or {}).get("Env"),
                len((data.get("RootFS") or {}).get("Layers") or ()))

    def images_with_label(self, key: str) -> list[ImageInfo]:
        """``podman images --filter label=KEY``: named and dangling images, not the
        layer cache's intermediate ones, as Docker lists them."""
        doing = f"listing images labelled {key}"
        done = self._command(["images", "--format", "json", "--filter", f"label={key}"], doing)
        if done.returncode != 0:
            raise EngineError(f"{doing} failed: {done.error}")
        try:
            listed = json.loads(done.stdout or "[]") or []
            found: dict[str, ImageInfo] = {}
            for entry in listed:                # one entry per name: the same image again
                image_id = entry["Id"]
                found.setdefault(image_id, ImageInfo(
                    id=full_id(image_id),
                    tags=tuple(familiar(n) for n in entry.get("Names") or ()),
                    labels=dict(entry.get("Labels") or {}),
                    repo_digests=tuple(dict.fromkeys(
                        familiar(d) for d in entry.get("RepoDigests") or ())),
                    created=entry.get("CreatedAt") or ""))
        except (ValueError, LookupError, TypeError, AttributeError) as exc:
            raise EngineError(f"{doing} failed: podman printed no image list") from exc
        return list(found.values())

    def run(self, ref: str, command: Sequence[str], timeout: int = 300,
            entrypoint: Sequence[str] | None = None, network: str | None = None) -> str:
        """``podman run --rm [--entrypoint] [--network] ref command``; nothing is pulled."""
        shown = " ".join(command)
        doing = f"running {shown!r} in {ref}"
        name = f"kiln-run-{uuid.uuid4().hex[:12]}"

        def remove_container() -> None:
            # The container runs under conmon, not under the podman client.
            try:
                self._command(["rm", "--force", "--time", "0", name], f"removing {name}")
            except EngineError:
                pass

        args = ["run", "--rm", "--pull=never", "--name", name, *network_args(network)]
        if entrypoint is not None:
            args += ["--entrypoint", json.dumps(list(entrypoint))]   # "[]" clears it
        done = self._tool.run([*args, ref, *command], doing=doing, timeout=timeout,
                              on_timeout=remove_container)
        if done.returncode == 0:
            return done.stdout
        if not_known(done):
            raise EngineError(f"{doing} failed: there is no local image {ref}")
        missing = missing_executable(done.stderr) if done.returncode == 127 else None
        if missing is not None:             # podman's code for "command not found"
            raise MissingExecutable(f"{doing} failed: the image has no {missing}")
        hint = _RLIMIT_HINT if "error setting rlimit" in done.stderr else None
        if done.returncode == 125:          # podman's own failure, not the command's
            raise EngineError(f"{doing} failed: {done.error}", hint=hint)
        raise EngineError(f"{doing} exited with code {done.returncode}{_detail(done)}",
                          hint=hint)


def _detail(done: Completed) -> str:
    last = last_lines(done.stderr, RUN_STDERR_LINES)
    return f": {' / '.join(last)}" if last else ""
