"""Version manifests: what went into an image, as LABELs.

- ``kiln.fingerprint``: sha256 over a canonical description of every input
  of the image (its build context by file digest, source identities, in-set
  parents' fingerprints, external bases with their local ids, non-secret build
  args, the static labels). Nothing time-dependent: the same inputs always
  give the same fingerprint, and a change to a parent changes every
  descendant's fingerprint. The one exception is a refresh
  (``kiln-build --refresh``): its date is counted too, so a refreshed image
  and its descendants get new fingerprints (see builder.build.refresh).
- ``kiln.manifest``: compact JSON for people and ``kiln-registry``: kiln's
  version, template layers (git commit, dirty), digests of the template and
  override files, sources, parents, bases, build args.
- ``kiln.packages``: installed package versions found in the built image.
- ``kiln.packages.scan``: how they were found: ``scanned`` (the package
  databases were read, from the image's files or by the scan run in a
  container of it; ``{}`` then means no package manager knows of any
  package) or ``no-shell`` (they had to be asked in a container, for an rpm
  database or on an engine that cannot show the image's files, and the image
  has no ``/bin/sh`` to run the scan, e.g. ``FROM
  scratch`` and one static binary: ``kiln.packages`` is ``{}`` because nothing
  could be asked, not because nothing is installed).
- the OCI ``org.opencontainers.image.*`` keys.

Every label is stamped onto the image after its build and package scan, in
one ``LABEL`` instruction of the step that tags the target reference, so an
image carrying its own ``kiln.fingerprint`` is complete (the build runs the
image's own steps only: its untagged result carries its parent's labels,
fingerprint included, until it is stamped, and nothing counts an image
without a tag in its own repository). A scan that fails fails the image. An
image stamped before ``kiln.packages.scan`` existed may carry an empty
package list from a scan that failed unnoticed: :func:`is_complete` does not
count it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from builder import __version__
from builder.build.sources.spec import PreparedSource
from builder.errors import scrub_url

SCHEME = 1
FINGERPRINT = "kiln.fingerprint"
MANIFEST = "kiln.manifest"
PACKAGES = "kiln.packages"
PACKAGES_SCAN = "kiln.packages.scan"
SCANNED = "scanned"             # kiln.packages.scan: the scan ran in the image
NO_SHELL = "no-shell"           # kiln.packages.scan: no /bin/sh to run it in
OCI = "org.opencontainers.image."

DEFAULT_SECRET_ARGS = ("*PASSWORD*", "*PASSWD*", "*TOKEN*", "*SECRET*", "*_KEY",
                       "*CREDENTIALS*")
# Proxies change how an image is fetched, not what is in it (Docker leaves
# them out of its cache keys too); they may also hold credentials.
PROXY_ARGS = frozenset(f"{p}{s}" for p in ("HTTP", "HTTPS", "FTP", "NO", "ALL")
                       for s in ("_PROXY", "_proxy")) | frozenset(
    f"{p}_proxy" for p in ("http", "https", "ftp", "no", "all"))


@dataclass(frozen=True)
class LayerInfo:
    label: str                  # "base", "docker-dir 1", ...
    path: str
    commit: str | None = None   # git HEAD of the checkout holding the layer
    dirty: bool | None = None   # uncommitted changes under the layer
    remote: str | None = None   # scrubbed URL of the checkout's origin


@dataclass(frozen=True)
class ImageInputs:
    """Everything that determines one image, gathered before it is built."""

    name: str
    context_digests: Mapping[str, str]          # relpath -> "mode:sha256" of every context file
    sources: Sequence[PreparedSource] = ()
    parents: Mapping[str, str] = field(default_factory=dict)       # in-set name -> fingerprint
    bases: Mapping[str, str | None] = field(default_factory=dict)  # external ref -> local id
    build_args: Mapping[str, str] = field(default_factory=dict)    # non-secret only
    static_labels: Mapping[str, str] = field(default_factory=dict)
    refreshed: str | None = None     # the date of the refresh its packages come from


def canonical(data) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def source_identity(source: PreparedSource, *, for_fingerprint: bool = False) -> dict:
    """A source as the manifest records it; a speculative one (a sibling
    checkout, --source-root) adds ``dirty`` and ``speculative``, and counts in
    a fingerprint by its tree's content only (not its commit), so jobs with
    the same checkout share fingerprints."""
    identity = {"name": source.name, "type": source.type,
                "location": scrub_url(source.location), "reference": source.reference,
                "commit": source.commit, "content": source.content_digest}
    if source.speculative:
        identity.update(dirty=source.dirty, speculative=True)
        if for_fingerprint:
            identity.update(commit=None, dirty=None)
    return identity


def fingerprint(inputs: ImageInputs) -> str:
    description = {
        "scheme": SCHEME,
        "name": inputs.name,
        "context": dict(inputs.context_digests),
        "sources": sorted((source_identity(s, for_fingerprint=True) for s in inputs.sources),
                          key=lambda s: s["name"]),
        "parents": dict(inputs.parents),
        "bases": dict(inputs.bases),
        "build_args": dict(inputs.build_args),
        "labels": dict(inputs.static_labels),
    }
    if inputs.refreshed is not None:    # counted only when set: older fingerprints stay valid
        description["refreshed"] = inputs.refreshed
    return "sha256:" + hashlib.sha256(canonical(description).encode()).hexdigest()


def digest_tree(root: Path) -> dict[str, str]:
    """``relpath -> "<mode>:<sha256>"`` for every file under root (symlinks by target)."""
    result = {}
    for current, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for filename in filenames:
            path = Path(current) / filename
            relpath = path.relative_to(root).as_posix()
            if path.is_symlink():
                result[relpath] = "link:" + os.readlink(path)
                continue
            mode = "755" if os.stat(path).st_mode & 0o111 else "644"
            result[relpath] = f"{mode}:{file_sha256(path)}"
    return dict(sorted(result.items()))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def public_build_args(args: Mapping[str, str], secret_patterns: Iterable[str]
                      ) -> dict[str, str]:
    """Build args that may appear in labels and fingerprints."""
    patterns = [p.upper() for p in secret_patterns]
    return {name: scrub_url(value) for name, value in sorted(args.items())
            if name not in PROXY_ARGS
            and not any(fnmatch.fnmatchcase(name.upper(), p) for p in patterns)}


def oci_labels(*, title: str, version: str, created: str, base_name: str | None,
               base_digest: str | None, revision: str | None, source: str | None,
               static: Mapping[str, str]) -> dict[str, str]:
    labels = {f"{OCI}title": title, f"{OCI}version": version, f"{OCI}created": created}
    if base_name:
        labels[f"{OCI}base.name"] = base_name
    if base_digest:
        labels[f"{OCI}base.digest"] = base_digest
    if revision:
        labels[f"{OCI}revision"] = revision
    if source:
        labels[f"{OCI}source"] = scrub_url(source)
    labels.update(static)
    return labels


def manifest_document(*, name: str, layers: Sequence[LayerInfo],
                      templates: Mapping[str, str], sources: Sequence[PreparedSource],
                      parents: Sequence[Mapping[str, str | None]],
                      bases: Mapping[str, str | None], build_args: Mapping[str, str],
                      refreshed: Mapping[str, str] | None = None) -> dict:
    document = {
        "kiln": __version__,
        "image": name,
        "layers": [{"label": layer.label, "path": layer.path, "commit": layer.commit,
                    "dirty": layer.dirty} for layer in layers],
        "templates": dict(sorted(templates.items())),
        "sources": [source_identity(s) for s in sorted(sources, key=lambda s: s.name)],
        "parents": list(parents),
        "bases": [{"ref": ref, "id": image_id} for ref, image_id in sorted(bases.items())],
        "build_args": dict(build_args),
    }
    if refreshed is not None:           # {"date", "reason"}: see builder.build.refresh
        document["refreshed"] = dict(refreshed)
    return document


def is_complete(labels: Mapping[str, str], fingerprint: str | None = None) -> bool:
    """An image kiln stamped (with ``fingerprint``, if given) after a package scan
    that ran or could not run for want of a shell: one to reuse."""
    stamped = labels.get(FINGERPRINT)
    return bool(stamped) and (fingerprint is None or stamped == fingerprint) and \
        labels.get(PACKAGES_SCAN) in (SCANNED, NO_SHELL)


# Run inside a built image (by /bin/sh, with no network) when its packages
# cannot be read from its files (builder.build.imagefiles): prints
# "<kind> <name> <version>" per package, then SCAN_END: output without it
# comes from a scan that did not run to its end. An rpm version is
# [EPOCH:]VERSION-RELEASE, the epoch written only when the package has one
# (as dnf shows it), so that find compares it by rpm's rules.
SCAN_END = "kiln-package-scan-end"
PACKAGE_SCAN = r"""
if command -v dpkg-query >/dev/null 2>&1; then
  dpkg-query -W -f='deb ${Package} ${Version}\n' 2>/dev/null
fi
if command -v rpm >/dev/null 2>&1; then
  rpm -qa --qf 'rpm %{NAME} %|EPOCH?{%{EPOCH}:}|%{VERSION}-%{RELEASE}\n' 2>/dev/null
fi
if command -v apk >/dev/null 2>&1; then
  apk info -v 2>/dev/null | sed 's/^/apk /'
fi
for py in $(command -v python3) /usr/bin/python3; do
  [ -x "$py" ] || continue
  "$py" -c 'import importlib.metadata as m
for d in m.distributions():
    n = d.metadata["Name"]
    if n: print("pypi", n.lower(), d.version)' 2>/dev/null
done
echo kiln-package-scan-end
"""


def scan_finished(output: str) -> bool:
    """The package scan's output ends with its end marker (the scan ran to its end)."""
    lines = output.strip().splitlines()
    return bool(lines) and lines[-1].strip() == SCAN_END


def parse_packages(output: str) -> dict[str, dict[str, str]]:
    packages: dict[str, dict[str, str]] = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 3:
            kind, name, version = parts
            packages.setdefault(kind, {})[name] = version
        elif len(parts) == 2 and parts[0] == "apk":  # "apk name-1.2-r0"
            name, _, version = parts[1].rpartition("-")
            name, _, release = name.rpartition("-")
            if name:
                packages.setdefault("apk", {})[name] = f"{release}-{version}"
    return {kind: dict(sorted(items.items())) for kind, items in sorted(packages.items())}


def read_labels(labels: Mapping[str, str]) -> dict:
    """Decode an image's kiln labels into one dict (for inspect and diff)."""
    def load(key):
        try:
            return json.loads(labels.get(key) or "null")
        except ValueError:
            return None
    return {
        "fingerprint": labels.get(FINGERPRINT),
        "manifest": load(MANIFEST) or {},
        "packages": load(PACKAGES) or {},
        "oci": {k[len(OCI):]: v for k, v in sorted(labels.items()) if k.startswith(OCI)},
    }
