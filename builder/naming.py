"""How kiln names the images of a set: ``<registry>/<namespace>/<prefix><name>:<tag>``."""

from __future__ import annotations

from dataclasses import dataclass

from builder.errors import ConfigError
from builder.reference import COMPONENT, REGISTRY, TAG


@dataclass(frozen=True)
class ImageNaming:
    registry: str = ""
    namespace: str = "kiln"
    prefix: str = ""
    tag: str = "latest"

    def repository(self, name: str, *, with_registry: bool = True) -> str:
        parts = []
        if self.registry and with_registry:
            parts.append(self.registry)
        if self.namespace:
            parts.append(self.namespace)
        parts.append(f"{self.prefix}{name}")
        return "/".join(parts)

    def ref(self, name: str, *, with_registry: bool = True) -> str:
        return f"{self.repository(name, with_registry=with_registry)}:{self.tag}"

    def set_member(self, ref: str) -> str | None:
        """The image name a reference would have if it belonged to this set.

        Returns None for references that cannot be ours (other tag, other
        namespace/prefix, or a digest); used to tell an unknown in-set name
        from an external base image.
        """
        if "@" in ref or (not self.namespace and not self.prefix):
            return None
        repo, sep, tag = ref.rpartition(":")
        if not sep or "/" in tag or tag != self.tag:
            return None
        for with_registry in (True, False):
            stem = self.repository("", with_registry=with_registry)
            if repo.startswith(stem) and "/" not in repo[len(stem):]:
                return repo[len(stem):] or None
        return None

    def validate(self) -> None:
        if self.registry and not REGISTRY.fullmatch(self.registry):
            raise ConfigError(f"--registry {self.registry!r} is not a "
                              f"registry host[:port]")
        for part in filter(None, self.namespace.split("/")):
            if not COMPONENT.fullmatch(part):
                raise ConfigError(
                    f"--namespace {self.namespace!r} is not a valid image "
                    f"namespace (lower-case letters, digits, '.', '_', '-')")
        if not TAG.fullmatch(self.tag):
            raise ConfigError(f"--tag {self.tag!r} is not a valid image tag")
        if self.prefix and not COMPONENT.fullmatch(self.prefix + "x"):
            raise ConfigError(f"--image-name-prefix {self.prefix!r} is not "
                              f"valid in an image name")

    def validate_name(self, name: str) -> bool:
        return bool(COMPONENT.fullmatch(f"{self.prefix}{name}"))
