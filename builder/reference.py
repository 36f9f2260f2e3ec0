"""The one image-reference grammar: ``[host[:port]/]path[:tag][@digest]``, parsed and checked."""

from __future__ import annotations

import re

from builder.errors import ConfigError

# Docker's grammar (distribution/reference): path components, tags and digests.
COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
REPOSITORY = re.compile(rf"{COMPONENT.pattern}(?:/{COMPONENT.pattern})*")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
DIGEST = re.compile(r"(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})")   # what kiln can verify
_DIGEST_REF = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")  # any algorithm
# --registry: a host name or IP, or [IPv6], with an optional port
REGISTRY = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]+)?|\[[0-9a-fA-F:]+\](?::[0-9]+)?")
_HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*")
_HOST_IPV6 = re.compile(r"\[[0-9A-Fa-f:.]+\]")
MAX_NAME_LENGTH = 255


def is_digest(reference: str) -> bool:
    return DIGEST.fullmatch(reference) is not None


def short_digest(digest: str | None) -> str:
    """``sha256:0123456789ab`` for messages and listings; ``(none)`` for no digest."""
    if not digest:
        return "(none)"
    algorithm, _, value = digest.partition(":")
    return f"{algorithm}:{value[:12]}" if value else digest


def host_problem(host: str) -> str | None:
    """What is wrong with a registry ``host[:port]`` as a clause naming it, or None."""
    if not host:
        return "the registry host name is empty"
    name, colon, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
    if not colon:
        name = host
    elif not port:
        return f"registry {host!r} has an empty port"
    elif not (port.isascii() and port.isdigit()):
        return f"port {port!r} of registry {host!r} is not a number"
    elif not 1 <= int(port) <= 65535:
        return f"port {int(port)} of registry {host} is not between 1 and 65535"
    if not (_HOST_NAME.fullmatch(name) or _HOST_IPV6.fullmatch(name)):
        return f"{name!r} is not a valid registry host name"
    return None


def split_reference(ref: str) -> tuple[str | None, str, str | None]:
    """``[host/]path[:tag]`` -> (host or None, path, tag or None); digests are not split."""
    name = ref.partition("@")[0]
    slash, colon = name.rfind("/"), name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first, rest, tag
    return None, name, tag


def parse_registry_reference(ref: str) -> tuple[str, str, str] | None:
    """``host[:port]/repo[:tag|@digest]`` -> (host, repository, tag or digest); None if
    the reference names no registry (its first component has no '.' or ':' and is not
    ``localhost``)."""
    name, at, digest = ref.partition("@")
    host, repository, tag = split_reference(name)
    if host is None:
        return None
    if host in ("docker.io", "index.docker.io") and "/" not in repository:
        repository = f"library/{repository}"
    return host, repository, (digest if at else tag or "latest")


def reference_problem(ref: str) -> str | None:
    """Why ``ref`` is no image reference ``[host[:port]/]path[:tag][@digest]``, else None.

    The grammar engines and registries share (lower-case path components,
    tags of at most 128 characters, ``algorithm:hex`` digests), checked before
    anything is asked of an engine or a registry.
    """
    if not ref.strip():
        return "it is empty (give one such as kolla/nova:latest, or " \
               "registry.example.com:5000/kolla/nova:latest for a registry)"
    if ref != ref.strip() or any(c.isspace() for c in ref):
        return "it contains white space"
    name, at, digest = ref.partition("@")
    if at and not _DIGEST_REF.fullmatch(digest):
        return f"its digest {digest!r} is not algorithm:hex (such as sha256:<64 hex digits>)"
    host, path, tag = split_reference(name)
    if host is not None and (problem := host_problem(host)) is not None:
        return problem
    if tag is not None and not TAG.fullmatch(tag):
        return (f"its tag {tag!r} is not a valid tag (letters, digits, '_', '.' and '-', "
                f"not starting with '.' or '-', at most 128 characters)" if tag
                else "its tag is empty")
    if not path:
        return "it names no repository"
    if not REPOSITORY.fullmatch(path):
        if REPOSITORY.fullmatch(path.lower()):
            return f"its repository name {path!r} must be lower-case"
        return (f"{path!r} is not a valid repository name (lower-case letters and digits, "
                f"separated by '.', '_', '__' or '-', in components separated by '/')")
    if len(name) - (len(tag) + 1 if tag is not None else 0) > MAX_NAME_LENGTH:
        return f"its name is longer than {MAX_NAME_LENGTH} characters"
    return None


def check_reference(ref: str) -> None:
    """:func:`reference_problem` as a :class:`ConfigError` (exit 2) naming the reference."""
    problem = reference_problem(ref)
    if problem is not None:
        raise ConfigError(f"invalid image reference {ref!r}: {problem}")
