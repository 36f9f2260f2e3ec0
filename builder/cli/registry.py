"""kiln-registry: its argument parser, the dispatch of its commands, inspect and diff.

The sync, promote and list commands are in ``cli/publishing.py``, their text in
``output/registry.py``; a new command adds a subparser and an entry in ``COMMANDS``.

Commands:

- ``sync``: publish the set's images from the local engine or a registry to a
  registry as tag revisions ``T-1``, ``T-2``, ... with ``T`` following the
  newest; unchanged images (same ``kiln.fingerprint``) are not pushed.
- ``promote``: ``T-deployed`` -> ``T-old``, a chosen revision -> ``T-deployed``.
- ``list``: each image's tags and revisions with fingerprint and created date.
- ``inspect``, ``diff``: an image's version manifest, and what differs between
  two images, local (``ns/name:tag``) or in a registry (``host/ns/name:tag``).
- ``find``: the images whose ``kiln.packages`` hold a package in a version
  range (exit 0 if any does, 1 if none); ``sbom``: an image's CycloneDX or
  SPDX document. Both are in ``cli/security.py`` and :mod:`builder.security`,
  imported when used.

Ctrl-C during ``sync`` stops it cleanly: no image is started any more, an
image being copied from a registry stops before its revision is written, an
image whose revision is complete gets ``T`` moved to it; the report and
``--output`` then list exactly what was published, and the exit code is 130.
A second Ctrl-C ends the process at once (``T`` still never names an
incomplete revision; a rerun finishes the job).

Test hook: with ``KILN_SYNC_STOP_AFTER=revision`` in the environment, ``sync``
ends the process abruptly (``os._exit(75)``) right after the first revision
is complete and before ``T`` moves, to test interrupted runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from builder import __version__
from builder.build.labels import read_labels
from builder.cli.common import run
from builder.cli.publishing import PROG, _list, _promote, _sync, registry_options
from builder.engines import load_engine
from builder.errors import (
    EXIT_OK,
    EXIT_USAGE,
    KilnError,
)
from builder.output.registry import (
    format_inspect,
)
from builder.publish.compare import diff_images, format_diff
from builder.publish.revisions import (
    DEFAULT_RELEASE_PATTERN,
)
from builder.reference import check_reference, parse_registry_reference
from builder.registry.client import RegistryClient


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Read, compare and publish images by their kiln version "
                               "manifest (LABELs stamped by kiln-build).")
    parser.add_argument("--debug", "-d", action="store_true", help="tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def output_format(sub):
        sub.add_argument("--format", choices=["text", "json"], default="text")

    def engine(sub):
        sub.add_argument("--engine", default="docker",
                         help="engine holding local images (default: docker)")

    def registry(sub, what="the registry"):
        group = sub.add_argument_group(f"talking to {what}")
        group.add_argument("--username", help="user name (else the login docker login stored)")
        group.add_argument("--password-stdin", action="store_true",
                           help="read the password from standard input")
        group.add_argument("--ca-cert", type=Path, metavar="PEM",
                           help="CA certificate(s) its TLS certificate is checked against")
        group.add_argument("--insecure", action="store_true", help="plain HTTP, no TLS")
        group.add_argument("--retries", type=_count(0), default=3, metavar="N",
                           help="further tries after a 5xx or a broken connection, with "
                                "exponential backoff (default: 3; every registry)")
        group.add_argument("--timeout", type=float, default=30, metavar="SECONDS",
                           help="to connect, and between bytes read (default: 30; every "
                                "registry)")

    def image_set(sub, tag_default: str | None = "latest"):
        sub.add_argument("regex", nargs="*",
                         help="images whose name matches (re.search, as kiln-build "
                              "selects); none: every image of the set")
        sub.add_argument("--namespace", default="kiln",
                         help="images are <namespace>/<prefix><name> (default: kiln)")
        sub.add_argument("--image-name-prefix", default="", metavar="PREFIX")
        sub.add_argument("--tag", default=tag_default,
                         help=f"the tag T (default: {tag_default or 'every tag'})")
        sub.add_argument("--image", action="append", default=[], dest="names",
                         metavar="NAME", help="only this image (repeat it); with a "
                         "registry, instead of reading its catalog (Docker Hub has none)")

    def threads(sub):
        sub.add_argument("--threads", type=_count(1), default=4, metavar="N",
                         help="images handled at once (default: 4)")

    sync_cmd = commands.add_parser(
        "sync", help="publish images as tag revisions T-N, T following the newest",
        description="Publish the set's images tagged T to a registry: an image whose "
                    "kiln.fingerprint differs from the destination's newest revision T-N "
                    "is pushed as T-(N+1), then T moves to it. Release tags (see "
                    "--release-pattern) are written once. Ctrl-C starts no further image, "
                    "lets those in progress finish or roll back (T never names an incomplete "
                    "revision), reports and writes --output for what was published, and "
                    "exits 130.")
    image_set(sync_cmd)
    sync_cmd.add_argument("--source", default="engine", metavar="engine|REGISTRY",
                          help="the local engine (default) or a registry host[:port]")
    sync_cmd.add_argument("--destination", required=True, metavar="REGISTRY",
                          help="registry host[:port] to publish to")
    sync_cmd.add_argument("--destination-namespace", metavar="NAMESPACE",
                          help="namespace at the destination (default: --namespace)")
    sync_cmd.add_argument("--dry-run", action="store_true", help="say what would be done")
    sync_cmd.add_argument("--output", type=Path, metavar="FILE",
                          help="write each image's published revision reference and "
                               "digest (.json, .yaml or .yml)")
    sync_cmd.add_argument("--force", action="store_true",
                          help="replace a release tag's image; publish over destination "
                               "tags that are not kiln revisions")
    sync_cmd.add_argument("--release-pattern", default=DEFAULT_RELEASE_PATTERN,
                          metavar="REGEX", help="tags matching it are immutable releases "
                          f"(default: {DEFAULT_RELEASE_PATTERN})")
    threads(sync_cmd)
    engine(sync_cmd)
    output_format(sync_cmd)
    registry(sync_cmd, "the destination")
    source = sync_cmd.add_argument_group("talking to a source registry (credentials: "
                                         "docker login)")
    source.add_argument("--source-insecure", action="store_true",
                        help="plain HTTP to the source registry")
    source.add_argument("--source-ca-cert", type=Path, metavar="PEM")

    promote_cmd = commands.add_parser(
        "promote", help="T-deployed -> T-old, a revision -> T-deployed",
        description="The upgrade flow: retag T-deployed as T-old and the candidate (T-N "
                    "with --revision, else what T names) as T-deployed.")
    image_set(promote_cmd)
    promote_cmd.add_argument("--registry", required=True, metavar="REGISTRY")
    promote_cmd.add_argument("--revision", type=_count(1), metavar="N",
                             help="promote T-N (default: what T names)")
    promote_cmd.add_argument("--check", action="store_true",
                             help="first print what differs between the deployed image and "
                                  "the candidate")
    promote_cmd.add_argument("--dry-run", action="store_true", help="change nothing")
    threads(promote_cmd)
    output_format(promote_cmd)
    registry(promote_cmd)

    list_cmd = commands.add_parser("list", help="tags and revisions of each image")
    image_set(list_cmd, tag_default=None)
    list_cmd.add_argument("--registry", required=True, metavar="REGISTRY")
    threads(list_cmd)
    output_format(list_cmd)
    registry(list_cmd)

    for name, text in (("inspect", "print an image's version manifest"),
                       ("diff", "what differs between two images")):
        sub = commands.add_parser(
            name, help=text, description=f"{text[0].upper()}{text[1:]}. A reference whose "
            "first component is a registry host (has '.' or ':', or is localhost) is read "
            "from that registry (labels from the image config, no layers pulled); any "
            "other from the local engine.")
        if name == "inspect":
            sub.add_argument("ref", help="image reference")
        else:
            sub.add_argument("ref_a")
            sub.add_argument("ref_b")
        sub.add_argument("--local", action="store_true",
                         help="read every reference from the local engine")
        engine(sub)
        output_format(sub)
        registry(sub)

    find_cmd = commands.add_parser(
        "find", help="images holding a package, in a version range",
        description="List the images whose kiln.packages label holds PACKAGE in a version "
                    "matching OP VERSION (any version without OP), compared by the package "
                    "kind's rules (dpkg, rpm, apk, PEP 440). Labels only, no layer pulled. "
                    "Images whose package list is unknown are listed apart. Exit 0 if an "
                    "image matches, 1 if none does, 2 on bad input.")
    find_cmd.add_argument("constraint", metavar="[KIND:]PACKAGE[OP VERSION]",
                          help="such as 'openssl<3.0.15-1~deb12u1' or 'pypi:requests>=2.32'; "
                               "OP one of < <= = >= >; KIND one of deb rpm apk pypi; "
                               "'*' and '?' in PACKAGE match any characters")
    find_cmd.add_argument("regex", nargs="*", help="images whose name matches (re.search)")
    where = find_cmd.add_mutually_exclusive_group(required=True)
    where.add_argument("--registry", metavar="REGISTRY",
                       help="search the set's images at the newest revision of --tag")
    where.add_argument("--local", action="store_true",
                       help="search the local images stamped by kiln-build")
    find_cmd.add_argument("--namespace", help="images are <namespace>/<prefix><name> "
                          "(default: kiln with --registry, any image with --local)")
    find_cmd.add_argument("--image-name-prefix", default="", metavar="PREFIX")
    find_cmd.add_argument("--tag", help="the tag T (default: latest with --registry, any "
                                        "tag with --local)")
    find_cmd.add_argument("--image", action="append", default=[], dest="names",
                          metavar="NAME", help="with --registry: only this image (repeat "
                          "it), instead of reading the catalog")
    threads(find_cmd)
    engine(find_cmd)
    output_format(find_cmd)
    registry(find_cmd)

    sbom_cmd = commands.add_parser(
        "sbom", help="an image's SBOM: CycloneDX or SPDX JSON",
        description="Write an image's packages (with package URLs), sources and base "
                    "image, from its kiln labels, as CycloneDX 1.6 or SPDX 2.3 JSON. A "
                    "reference whose first component is a registry host is read from that "
                    "registry (no layers pulled); any other from the local engine.")
    sbom_cmd.add_argument("ref", help="image reference")
    sbom_cmd.add_argument("--format", choices=["cyclonedx", "spdx"], default="cyclonedx")
    sbom_cmd.add_argument("--output", type=Path, metavar="FILE",
                          help="write it there (default: standard output)")
    sbom_cmd.add_argument("--local", action="store_true",
                          help="read the reference from the local engine")
    engine(sbom_cmd)
    registry(sbom_cmd)
    return parser


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return value
    return parse


def main(argv: Sequence[str] | None = None) -> int:
    return run(PROG, _main, argv)


def _main(argv: list[str]) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else EXIT_OK
    return COMMANDS[args.command](args)


# -- inspect and diff -----------------------------------------------------------------------

def _inspect(args) -> int:
    check_reference(args.ref)
    labels = _read(args, args.ref)
    print(json.dumps(labels, indent=2, sort_keys=True) if args.format == "json"
          else format_inspect(args.ref, labels))
    return EXIT_OK


def _diff(args) -> int:
    check_reference(args.ref_a)
    check_reference(args.ref_b)
    a, b = _read(args, args.ref_a), _read(args, args.ref_b)
    diff = diff_images(a, b)
    print(json.dumps(diff, indent=2, sort_keys=True) if args.format == "json"
          else format_diff(diff, args.ref_a, args.ref_b))
    return EXIT_OK


def lookup(args, ref: str) -> tuple[Mapping[str, str], str | None, str | None]:
    """An image's raw labels, id and (in a registry) manifest digest."""
    parsed = None if args.local else parse_registry_reference(ref)
    if parsed is None:
        if not hasattr(args, "_engine"):
            args._engine = load_engine(args.engine)
        engine = args._engine
        info = engine.inspect(ref)
        if info is None:
            raise KilnError(f"no image {ref} in the local {engine.name} engine")
        return info.labels, info.id, None
    host, repository, reference = parsed
    with RegistryClient(host, registry_options(args)) as client:
        found = client.manifest(repository, reference)
    if found is None:
        raise KilnError(f"no image {ref} in registry {host}")
    # The config digest is the image id an engine would show.
    return found.labels, found.config_digest, found.digest


def _read(args, ref: str) -> dict:
    raw, image_id, digest = lookup(args, ref)
    labels = read_labels(raw)
    labels["id"] = image_id
    if digest is not None:
        labels["digest"] = digest
    if labels["fingerprint"] is None:
        raise KilnError(f"{ref} carries no kiln.fingerprint label: it was not built by "
                        f"kiln-build (or its build did not finish)")
    return labels


# Each subparser's name -> the function that runs it (it returns the exit code).
COMMANDS = {"sync": _sync, "promote": _promote, "list": _list,
            "inspect": _inspect, "diff": _diff,
            "find": lambda args: _security().find(args),
            "sbom": lambda args: _security().sbom(args, lookup)}


def _security():
    from builder.cli import security  # its libraries only when find or sbom runs
    return security


if __name__ == "__main__":
    sys.exit(main())
