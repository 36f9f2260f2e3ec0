"""Which images hold a package in a version, read from their kiln.packages label alone.

Images are read where they are published or built, never pulled:

- in a registry: the set's repositories (from the catalog, or the names
  given), each at the newest revision ``T-N`` of the tag ``T`` (what ``T``
  names once a sync finished), else ``T`` itself (a release tag, or an image
  not published by sync). Per image: one tag list, one manifest and one
  image config blob (two manifests for a multi-platform index); no layer.
- in the local engine: every image carrying ``kiln.fingerprint`` (stamped
  by kiln-build), in one engine call, optionally only those named
  ``<namespace>/<prefix><name>:<tag>``.

Each image comes back as an :class:`ImageFinding`: ``match`` (with the
packages found), ``no-match``, ``unknown`` (its package list cannot be
trusted, or a package of that name has a version that cannot be ordered:
the image may hold the package, so it is never silently left out), or
``error`` (the registry failed to answer for it). A package list is
unknown when ``kiln.packages`` is missing, empty, not JSON or not a
``{kind: {name: version}}`` mapping (such as a "packages unknown" marker),
when ``kiln.packages.scan`` says the scan did not run (``no-shell``, or any
value but ``scanned``), and when it is ``{}`` without ``kiln.packages.scan``
(an image stamped before that label existed, whose scan may have failed
unnoticed).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from builder.build.labels import FINGERPRINT, NO_SHELL, PACKAGES, PACKAGES_SCAN, SCANNED
from builder.engines.base import Engine
from builder.errors import ConfigError, KilnError
from builder.graph.selection import compile_pattern
from builder.publish.listing import set_repositories
from builder.publish.revisions import SetNaming, revision_tag, revisions, select_names
from builder.publish.sync import run_parallel
from builder.reference import split_reference
from builder.registry.client import RegistryClient
from builder.security.versions import Constraint, IncomparableVersion

MATCH = "match"
NO_MATCH = "no-match"
UNKNOWN = "unknown"
ERROR = "error"


@dataclass(frozen=True)
class PackageHit:
    kind: str                       # deb, rpm, apk, pypi
    name: str
    version: str


@dataclass(frozen=True)
class ImageFinding:
    image: str                      # the set's name (registry), the repository (local)
    reference: str                  # what was read: host/ns/name:T-N, or the local tags
    digest: str | None              # manifest digest (registry images)
    image_id: str | None            # image config digest: the id an engine shows
    status: str                     # MATCH, NO_MATCH, UNKNOWN or ERROR
    hits: tuple[PackageHit, ...] = ()
    reason: str | None = None       # why UNKNOWN or ERROR; for MATCH, what was not comparable
    tag: str | None = None          # the tag read (registry images)


@dataclass(frozen=True)
class FindReport:
    constraint: Constraint
    where: str                      # "registry HOST" or "the local docker engine"
    results: tuple[ImageFinding, ...]
    tag: str | None = None          # T, in a registry
    missing: tuple[str, ...] = ()   # set images without T or a revision of it

    def having(self, status: str) -> list[ImageFinding]:
        return [r for r in self.results if r.status == status]


def package_list(labels: Mapping[str, str]) -> tuple[dict[str, dict[str, str]] | None, str]:
    """An image's ``{kind: {name: version}}`` if it can be trusted, else None and why not."""
    raw = labels.get(PACKAGES)
    if raw is None:
        return None, "it has no kiln.packages label"
    if not raw.strip():
        return None, "its kiln.packages label is empty (the image was never stamped)"
    try:
        data = json.loads(raw)
    except ValueError:
        return None, "its kiln.packages label is not JSON"
    if not (isinstance(data, dict) and all(
            isinstance(kind, str) and isinstance(items, dict)
            and all(isinstance(n, str) and isinstance(v, str) for n, v in items.items())
            for kind, items in data.items())):
        return None, "its kiln.packages label holds no package list (packages unknown)"
    scan = labels.get(PACKAGES_SCAN)
    if scan == NO_SHELL:
        return None, "it has no shell for kiln's package scan to run in"
    if scan is not None and scan != SCANNED:
        return None, f"its package scan is marked {scan!r}, not {SCANNED!r}"
    if scan is None and not data:
        return None, ("its package list is empty and carries no kiln.packages.scan label "
                      "saying the scan ran")
    return data, ""


def examine(labels: Mapping[str, str], constraint: Constraint
            ) -> tuple[str, tuple[PackageHit, ...], str | None]:
    """(status, packages matching, reason) for one image's labels."""
    packages, why = package_list(labels)
    if packages is None:
        return UNKNOWN, (), why
    hits, problems = [], []
    for kind, items in packages.items():
        for name, version in items.items():
            if not constraint.names(kind, name):
                continue
            try:
                if constraint.matches(kind, version):
                    hits.append(PackageHit(kind, name, version))
            except IncomparableVersion as exc:
                problems.append(f"{kind} {name} {version}: {exc}")
    reason = "; ".join(problems) or None
    if hits:
        return MATCH, tuple(hits), reason
    if problems:
        return UNKNOWN, (), f"cannot compare {reason}"
    return NO_MATCH, (), None


def newest_revision(tags: Sequence[str], tag: str) -> str | None:
    """``T-N`` with the largest N among ``tags``, else ``T`` if present, else None."""
    numbers = revisions(tags, tag)
    if numbers:
        return revision_tag(tag, numbers[-1])
    return tag if tag in tags else None


def find_in_registry(client: RegistryClient, naming: SetNaming, names: Sequence[str],
                     patterns: Sequence[str], constraint: Constraint,
                     threads: int = 4) -> FindReport:
    """Search the set's images in a registry at the newest revision of ``naming.tag``."""
    client.ping()
    repositories = set_repositories(client, naming, names)
    selected = select_names(repositories, patterns, f"registry {client.host} under "
                                                    f"{naming.repository('*')}")

    def one(name: str) -> ImageFinding | None:
        repository = repositories[name]
        reference = client.reference(repository, naming.tag)
        try:
            chosen = newest_revision(client.list_tags(repository), naming.tag)
            if chosen is None:
                return None
            reference = client.reference(repository, chosen)
            info = client.manifest(repository, chosen)
        except KilnError as exc:
            return ImageFinding(name, reference, None, None, ERROR, reason=str(exc))
        if info is None:
            return ImageFinding(name, reference, None, None, ERROR,
                                reason=f"{reference} disappeared while it was read")
        status, hits, reason = examine(info.labels, constraint)
        return ImageFinding(name, reference, info.digest, info.config_digest, status, hits,
                            reason, chosen)

    found = run_parallel(one, selected, threads)
    return FindReport(constraint, f"registry {client.host}",
                      tuple(r for r in found if r is not None), naming.tag,
                      tuple(n for n, r in zip(selected, found, strict=True) if r is None))


def find_local(engine: Engine, constraint: Constraint, patterns: Sequence[str] = (),
               namespace: str | None = None, prefix: str = "",
               tag: str | None = None) -> FindReport:
    """Search the local images kiln-build stamped (``kiln.fingerprint`` set).

    With ``namespace``, only ``[host/]<namespace>/<prefix><name>`` and REGEX
    matches ``name``; otherwise REGEX matches the repository path. With
    ``tag``, only that tag. An image with several matching tags is listed once.
    """
    regexes = [compile_pattern(p, "image regex") for p in patterns]
    naming = (SetNaming(namespace=namespace.strip("/"), prefix=prefix, tag=tag or "latest")
              if namespace is not None else None)
    results = []
    for info in engine.images_with_label(FINGERPRINT):
        if not info.labels.get(FINGERPRINT):
            continue                    # set empty by a build still running: not stamped
        chosen = []
        for ref in info.tags:
            _, path, ref_tag = split_reference(ref)
            if tag is not None and ref_tag != tag:
                continue
            name = naming.member(path) if naming is not None else path
            if name is None or (regexes and not any(r.search(name) for r in regexes)):
                continue
            chosen.append((name, ref))
        if not chosen:
            continue
        chosen.sort()
        status, hits, reason = examine(info.labels, constraint)
        results.append(ImageFinding(chosen[0][0], ", ".join(ref for _, ref in chosen), None,
                                    info.id, status, hits, reason))
    if not results:
        what = [f"named {namespace.strip('/')}/{prefix}*" if namespace is not None else "",
                f"tagged {tag}" if tag else "",
                f"matching {', '.join(map(repr, patterns))}" if patterns else ""]
        raise ConfigError(f"no image stamped by kiln-build is in the local {engine.name} "
                          f"engine" + "".join(f" {w}" for w in what if w))
    results.sort(key=lambda r: (r.image, r.reference))
    return FindReport(constraint, f"the local {engine.name} engine", tuple(results))
