"""kiln-registry: read, compare and publish images by their version manifest.

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
  SPDX document. Both live in :mod:`builder.security`, imported when used.

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
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from builder import __version__
from builder.cli import run
from builder.compare import diff_images, format_diff
from builder.engine import load_engine
from builder.exceptions import EXIT_INTERRUPTED, EXIT_OK, ConfigError, KilnError
from builder.manifest import read_labels
from builder.registry import Credentials, RegistryClient, RegistryOptions
from builder.selection import compile_pattern
from builder.sync import (
    DEFAULT_RELEASE_PATTERN,
    Action,
    EngineSource,
    PromoteResult,
    RegistrySource,
    SetNaming,
    Status,
    SyncResult,
    SyncSettings,
    check_reference,
    deployed_tag,
    list_image,
    old_tag,
    output_document,
    parse_registry_reference,
    plan_promote,
    promote,
    promote_labels,
    run_parallel,
    select_names,
    set_repositories,
    sync,
    to_yaml,
)

PROG = "kiln-registry"
LOG = logging.getLogger("builder")
EXIT_FAILED = 1
STOP_AFTER_ENV = "KILN_SYNC_STOP_AFTER"
EXIT_STOPPED = 75
OUTPUT_FORMATS = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}


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
        return 2 if exc.code else 0
    command = {"sync": _sync, "promote": _promote, "list": _list,
               "inspect": _inspect, "diff": _diff, "find": _find,
               "sbom": _sbom}[args.command]
    return command(args)


# -- registries ---------------------------------------------------------------------------

def _credentials(args) -> Credentials | None:
    if args.password_stdin and not args.username:
        raise ConfigError("--password-stdin needs --username")
    if not args.username:
        return None
    if not args.password_stdin:
        raise ConfigError("--username needs --password-stdin (the password is read from "
                          "standard input, never from the command line)")
    password = sys.stdin.read().rstrip("\r\n")
    if not password:
        raise ConfigError("--password-stdin: standard input held no password")
    return Credentials(args.username, password)


def _options(args, *, source: bool = False) -> RegistryOptions:
    if source:
        return RegistryOptions(insecure=args.source_insecure, ca_cert=args.source_ca_cert,
                               timeout=args.timeout, retries=args.retries)
    if not hasattr(args, "_credentials"):
        args._credentials = _credentials(args)      # standard input is read once
    return RegistryOptions(insecure=args.insecure, ca_cert=args.ca_cert,
                           credentials=args._credentials, timeout=args.timeout,
                           retries=args.retries)


def _naming(args, namespace: str | None = None, tag: str | None = None) -> SetNaming:
    return SetNaming(namespace=(namespace if namespace is not None else args.namespace)
                     .strip("/"), prefix=args.image_name_prefix,
                     tag=tag if tag is not None else args.tag)


# -- sync ---------------------------------------------------------------------------------

def _sync(args) -> int:
    compile_pattern(args.release_pattern, "--release-pattern")
    output_kind = _output_kind(args.output)
    destination_namespace = (args.destination_namespace if args.destination_namespace
                             is not None else args.namespace)
    settings = SyncSettings(source=_naming(args),
                            destination=_naming(args, destination_namespace),
                            release_pattern=args.release_pattern, force=args.force,
                            dry_run=args.dry_run, threads=args.threads)
    cancel = threading.Event()
    # Until --output is written: a Ctrl-C never loses the report of what was published.
    with _stop_on_interrupt(cancel, settings.tag):
        with RegistryClient(args.destination, _options(args)) as dest:
            if args.source == "engine":
                if args.username:
                    LOG.warning("the engine pushes the layers with its own login (docker "
                                "login %s); --username is used for the tags only", dest.host)
                results = sync(EngineSource(load_engine(args.engine), args.names), dest,
                               args.regex, settings, _stop_hook(), cancel)
            else:
                with RegistryClient(args.source, _options(args, source=True)) as client:
                    client.ping()
                    results = sync(RegistrySource(client, args.names), dest, args.regex,
                                   settings, _stop_hook(), cancel)
        if args.format == "json":
            print(json.dumps(_sync_json(results, settings, cancel.is_set()), indent=2))
        else:
            print(format_sync(results, settings))
        sys.stdout.flush()
        if args.output is not None and not args.dry_run:
            document = output_document(results, dest.host, settings)
            _write(args.output, json.dumps(document, indent=2) + "\n"
                   if output_kind == "json" else to_yaml(document))
    interrupted = cancel.is_set()
    if interrupted:
        stopped = sum(r.status is Status.STOPPED for r in results)
        print(f"{PROG}: interrupted: {stopped} of {len(results)} image"
              f"{'s' if len(results) != 1 else ''} not synced; the others are as reported"
              + (f" (and in {args.output})" if args.output and not args.dry_run else "")
              + "; a rerun syncs the rest", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_FAILED if any(r.status is Status.FAILED for r in results) else EXIT_OK


@contextlib.contextmanager
def _stop_on_interrupt(cancel: threading.Event, tag: str) -> Iterator[None]:
    """While syncing, the first SIGINT sets ``cancel``; a second one ends the process."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupted(signum, frame):
        # os.write: this may run while the main thread is inside a print().
        if cancel.is_set():
            os.write(2, f"{PROG}: interrupted again: stopping now; no {tag} names an "
                        f"incomplete revision, and a rerun finishes the job\n".encode())
            os._exit(EXIT_INTERRUPTED)
        cancel.set()
        os.write(2, f"{PROG}: interrupted: starting no further image, finishing or "
                    f"rolling back those in progress (Ctrl-C again to stop at once)\n"
                 .encode())

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop_hook():
    """The test hook: end the process between a revision's push and T's move."""
    if os.environ.get(STOP_AFTER_ENV) != "revision":
        return None

    def stop(plan):
        sys.stdout.flush()
        sys.stderr.write(f"{PROG}: {STOP_AFTER_ENV}=revision: stopping after "
                         f"{plan.repository}:{plan.target}, before moving the tag\n")
        sys.stderr.flush()
        os._exit(EXIT_STOPPED)

    return stop


def _output_kind(path: Path | None) -> str | None:
    if path is None:
        return None
    kind = OUTPUT_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ConfigError(f"--output {path}: the name must end in .json, .yaml or .yml")
    if not path.parent.is_dir():
        raise ConfigError(f"--output {path}: directory {path.parent} does not exist")
    return kind


def _write(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    except OSError as exc:
        raise KilnError(f"cannot write --output {path}: {exc.strerror or exc}") from exc


_LABELS = {Status.PUSHED: "pushed", Status.MOVED: "moved", Status.UNCHANGED: "unchanged",
           Status.SKIPPED: "skipped", Status.FAILED: "failed", Status.STOPPED: "stopped"}
_PLANNED = {Action.PUSH: "would push", Action.MOVE: "would move",
            Action.UNCHANGED: "unchanged", Action.SKIP: "skipped"}


def format_sync(results: Sequence[SyncResult], settings: SyncSettings) -> str:
    tag = settings.tag
    width = max((len(r.image) for r in results), default=0)
    lines = []
    for r in results:
        plan = r.plan
        label = (_PLANNED[plan.action] if r.status is Status.PLANNED and plan
                 else _LABELS[r.status])
        if r.status in (Status.FAILED, Status.STOPPED):
            detail = r.error or ""
        elif plan is None or plan.action is Action.SKIP:
            detail = plan.note if plan else ""
        elif plan.action is Action.PUSH:
            detail = r.reference or ""
            if plan.target != tag:
                detail += f", then {tag} moves to it" if r.status is Status.PLANNED \
                    else f", {tag} moved to it"
            if plan.note:
                detail += f" ({plan.note})"
        elif plan.action is Action.MOVE:
            detail = f"{tag} -> {r.reference} ({plan.note})"
        else:
            detail = r.reference or ""
        lines.append(f"{label:10s} {r.image:{width}s}  {detail}".rstrip())
    counts = _counts(results)
    lines.append(f"{len(results)} image{'s' if len(results) != 1 else ''}: " +
                 ", ".join(f"{n} {what}" for what, n in counts.items() if n or what in
                           ("pushed", "unchanged", "failed")) +
                 (" (dry run: nothing changed)" if settings.dry_run else ""))
    return "\n".join(lines)


def _counts(results: Sequence[SyncResult]) -> dict[str, int]:
    counts = dict.fromkeys(("pushed", "moved", "unchanged", "skipped", "failed",
                            "stopped"), 0)
    for r in results:
        if r.status is Status.PLANNED and r.plan is not None:
            key = {Action.PUSH: "pushed", Action.MOVE: "moved", Action.UNCHANGED:
                   "unchanged", Action.SKIP: "skipped"}[r.plan.action]
        else:
            key = r.status.value
        counts[key] += 1
    return counts


def _sync_json(results: Sequence[SyncResult], settings: SyncSettings,
               interrupted: bool = False) -> dict:
    return {
        "tag": settings.tag, "dry_run": settings.dry_run, "interrupted": interrupted,
        "counts": _counts(results),
        "results": [{"image": r.image, "status": r.status.value,
                     "action": r.plan.action.value if r.plan else None,
                     "source": r.plan.source if r.plan else None,
                     "reference": r.reference, "tag": r.plan.target if r.plan else None,
                     "digest": r.digest, "revisions": list(r.plan.revisions) if r.plan
                     else [], "note": r.plan.note if r.plan else "", "error": r.error}
                    for r in results]}


# -- promote ------------------------------------------------------------------------------

def _promote(args) -> int:
    naming = _naming(args)
    with RegistryClient(args.registry, _options(args)) as client:
        client.ping()
        repositories = set_repositories(client, naming, args.names)
        names = select_names(repositories, args.regex, f"registry {client.host} under "
                             f"{naming.repository('*')}")

        def plan(name: str) -> PromoteResult:
            try:
                found = plan_promote(client, name, repositories[name], args.tag,
                                     args.revision)
            except KilnError as exc:
                return PromoteResult(name, "failed", error=str(exc))
            if found is None:
                return PromoteResult(name, "skipped")
            return PromoteResult(name, "current" if found.current else "planned", found)

        def execute(planned: PromoteResult) -> PromoteResult:
            if planned.status != "planned" or args.dry_run:
                return planned
            try:
                promote(client, planned.plan, args.tag)
            except KilnError as exc:
                return PromoteResult(planned.image, "failed", planned.plan, str(exc))
            return PromoteResult(planned.image, "promoted", planned.plan)

        plans = run_parallel(plan, names, args.threads)
        checks = {}
        if args.check:
            for planned in plans:
                if planned.status == "planned":
                    checks[planned.image] = _check(client, planned.plan, args.tag,
                                                   args.format)
            if args.format == "text":
                for name, text in checks.items():
                    print(f"== {name}\n{text}")
        by_name = {p.image: p for p in plans}
        results = run_parallel(lambda name: execute(by_name[name]), names, args.threads)
    if args.format == "json":
        print(json.dumps({"results": [_promote_json(r, client, args.tag) for r in results],
                          "checks": checks if args.check else None}, indent=2))
    else:
        print(format_promote(results, args.tag, args.dry_run))
    return EXIT_FAILED if any(r.status == "failed" for r in results) else EXIT_OK


def _check(client: RegistryClient, plan, tag: str, output: str):
    """What differs between the deployed image and the candidate: text, or a dict for JSON."""
    deployed, candidate = promote_labels(client, plan)
    candidate_ref = client.reference(plan.repository, plan.candidate_revision or
                                     plan.candidate)
    if deployed is None:
        missing = client.reference(plan.repository, deployed_tag(tag))
        text = f"nothing is deployed yet ({missing} does not exist); the candidate is " \
               f"{candidate_ref}"
        return text if output == "text" else {"deployed": None, "candidate": candidate_ref}
    deployed_ref = client.reference(plan.repository, plan.deployed_revision or
                                    deployed_tag(tag))
    diff = diff_images(read_labels(deployed), read_labels(candidate))
    if output == "text":
        return format_diff(diff, deployed_ref, candidate_ref)
    return {"deployed": deployed_ref, "candidate": candidate_ref, "diff": diff}


def format_promote(results: Sequence[PromoteResult], tag: str, dry_run: bool) -> str:
    lines = []
    width = max((len(r.image) for r in results), default=0)
    for r in results:
        plan = r.plan
        if r.status == "failed":
            detail = r.error or ""
        elif plan is None:
            detail = f"no tag {tag}"
        else:
            candidate = plan.candidate_revision or plan.candidate
            if plan.current:
                detail = f"{deployed_tag(tag)} is already {candidate}"
            else:
                detail = f"{deployed_tag(tag)} -> {candidate}"
                if plan.deployed_digest:
                    detail += f", {old_tag(tag)} -> " \
                              f"{plan.deployed_revision or 'the image deployed before'}"
        label = {"planned": "would promote", "current": "unchanged"}.get(r.status, r.status)
        lines.append(f"{label:13s} {r.image:{width}s}  {detail}".rstrip())
    if dry_run:
        lines.append("dry run: nothing changed")
    return "\n".join(lines)


def _promote_json(r: PromoteResult, client: RegistryClient, tag: str) -> dict:
    plan = r.plan
    return {"image": r.image, "status": r.status, "error": r.error,
            "repository": f"{client.host}/{plan.repository}" if plan else None,
            "candidate": plan.candidate_revision or plan.candidate if plan else None,
            "candidate_digest": plan.candidate_digest if plan else None,
            "deployed_before": plan.deployed_revision if plan else None,
            "deployed_digest_before": plan.deployed_digest if plan else None}


# -- list -------------------------------------------------------------------------------------

def _list(args) -> int:
    naming = _naming(args, tag=args.tag or "latest")
    with RegistryClient(args.registry, _options(args)) as client:
        client.ping()
        repositories = set_repositories(client, naming, args.names)
        names = select_names(repositories, args.regex, f"registry {client.host} under "
                             f"{naming.repository('*')}")
        listed = run_parallel(lambda name: list_image(client, repositories[name], args.tag),
                              names, args.threads)
    images = {name: {"repository": f"{client.host}/{repositories[name]}", "tags": tags}
              for name, tags in zip(names, listed, strict=True)}
    if args.format == "json":
        print(json.dumps({"registry": client.host, "images": {
            name: {"repository": entry["repository"],
                   "tags": [vars(t) for t in entry["tags"]]}
            for name, entry in images.items()}}, indent=2))
    else:
        print(format_list(images, args.tag))
    return EXIT_OK


def format_list(images: dict, tag: str | None = None) -> str:
    lines = []
    for entry in images.values():
        lines.append(entry["repository"])
        groups: dict[str, list] = {}
        for info in entry["tags"]:
            groups.setdefault(info.digest, []).append(info)
        if not groups:
            lines.append(f"  (no {tag} tags)" if tag else "  (no tags)")
        width = max((len(_leader(g).tag) for g in groups.values()), default=0)
        for group in groups.values():
            leader = _leader(group)
            others = [i.tag for i in group if i is not leader]
            also = f" ({', '.join(others)})" if others else ""
            lines.append(f"  {leader.tag:{width}s}  fingerprint {_short(leader.fingerprint)}  "
                         f"created {leader.created or '?'}  digest {_short(leader.digest)}"
                         f"{also}")
    return "\n".join(lines)


def _leader(group: list):
    """The revision tag naming an image, else its first tag."""
    return next((i for i in group if i.revision is not None), group[0])


def _short(value: str | None) -> str:
    if not value:
        return "(none)"
    algorithm, _, hexa = value.partition(":")
    return f"{algorithm}:{hexa[:12]}" if hexa else value


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


def _lookup(args, ref: str) -> tuple[Mapping[str, str], str | None, str | None]:
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
    with RegistryClient(host, _options(args)) as client:
        found = client.manifest(repository, reference)
    if found is None:
        raise KilnError(f"no image {ref} in registry {host}")
    # The config digest is the image id an engine would show.
    return found.labels, found.config_digest, found.digest


def _read(args, ref: str) -> dict:
    raw, image_id, digest = _lookup(args, ref)
    labels = read_labels(raw)
    labels["id"] = image_id
    if digest is not None:
        labels["digest"] = digest
    if labels["fingerprint"] is None:
        raise KilnError(f"{ref} carries no kiln.fingerprint label: it was not built by "
                        f"kiln-build (or its build did not finish)")
    return labels


def format_inspect(ref: str, labels: dict) -> str:
    manifest, oci = labels["manifest"], labels["oci"]
    lines = [f"image:       {ref} ({labels['id']})"]
    if labels.get("digest"):
        lines.append(f"digest:      {labels['digest']}")
    lines += [f"fingerprint: {labels['fingerprint']}",
              f"created:     {oci.get('created', '?')}",
              f"built by:    kiln {manifest.get('kiln', '?')}"]
    for key in ("base.name", "base.digest", "revision", "source", "vendor", "licenses"):
        if key in oci:
            lines.append(f"{key + ':':12s} {oci[key]}")
    lines.append("templates:")
    for layer in manifest.get("layers", []):
        state = ("" if layer.get("commit") is None else
                 f" git {layer['commit'][:12]}{' (dirty)' if layer.get('dirty') else ''}")
        lines.append(f"  {layer['label']}: {layer['path']}{state}")
    for path, digest in manifest.get("templates", {}).items():
        lines.append(f"  {path} {digest}")
    if manifest.get("sources"):
        lines.append("sources:")
        for s in manifest["sources"]:
            at = f" @ {s['reference']}" if s.get("reference") else ""
            what = s.get("commit") or s.get("content")
            lines.append(f"  {s['name']}: {s['type']} {s['location']}{at} -> {what}")
    if manifest.get("parents"):
        lines.append("parents:")
        for p in manifest["parents"]:
            lines.append(f"  {p['ref']} (fingerprint {p['fingerprint']}, id {p.get('id')})")
    if manifest.get("build_args"):
        lines.append("build args:")
        lines.extend(f"  {k}={v}" for k, v in manifest["build_args"].items())
    packages = labels["packages"]
    total = sum(len(v) for v in packages.values())
    lines.append(f"packages: {total}" + (" (" + ", ".join(
        f"{len(v)} {k}" for k, v in packages.items()) + ")" if packages else ""))
    for kind, items in packages.items():
        lines.extend(f"  {kind} {name} {version}" for name, version in items.items())
    return "\n".join(lines)


# -- find and sbom (builder.security) ------------------------------------------------------

def _find(args) -> int:
    from builder.security.find import ERROR, MATCH, UNKNOWN, find_in_registry, find_local
    from builder.security.versions import parse_constraint
    constraint = parse_constraint(args.constraint)
    if args.local:
        if args.names:
            raise ConfigError("--image names images of a registry; with --local give a REGEX")
        report = find_local(load_engine(args.engine), constraint, args.regex, args.namespace,
                            args.image_name_prefix, args.tag)
    else:
        naming = _naming(args, "kiln" if args.namespace is None else args.namespace,
                         args.tag or "latest")
        with RegistryClient(args.registry, _options(args)) as client:
            report = find_in_registry(client, naming, args.names, args.regex, constraint,
                                      args.threads)
    print(json.dumps(_find_json(report), indent=2) if args.format == "json"
          else format_find(report))
    unsure = len(report.having(UNKNOWN)) + len(report.having(ERROR))
    if unsure:
        LOG.warning("%d image%s could not be checked and may hold %s (listed as %s)", unsure,
                    "s" if unsure != 1 else "", constraint.name,
                    "unknown" if not report.having(ERROR) else "unknown or error")
    return EXIT_OK if report.having(MATCH) else EXIT_FAILED


def format_find(report) -> str:
    from builder.security.find import ERROR, MATCH, UNKNOWN
    matches, unknown, errors = (report.having(s) for s in (MATCH, UNKNOWN, ERROR))
    where = report.where + (f", tag {report.tag}" if report.tag else "")
    count = len(report.results)
    images = f"{count} image{'s' if count != 1 else ''} in {where}"
    lines = [f"{report.constraint}: {len(matches)} of {images} "
             f"match{'es' if len(matches) == 1 else ''}" if matches
             else f"{report.constraint}: none of {images} matches"]
    rows = [(r.image, f"{h.kind} {h.name} {h.version}", r.reference, r.digest or r.image_id
             or "") for r in matches for h in r.hits]
    lines += _columns(rows)
    if unknown:
        lines.append(f"unknown: {len(unknown)} image{'s' if len(unknown) != 1 else ''} "
                     f"whose packages cannot be checked:")
        lines += _columns([(r.image, r.reference, r.digest or r.image_id or "",
                            r.reason or "") for r in unknown])
    if errors:
        lines.append(f"error: {len(errors)} image{'s' if len(errors) != 1 else ''} "
                     f"could not be read:")
        lines += _columns([(r.image, r.reference, r.reason or "") for r in errors])
    if report.missing:
        lines.append(f"not searched (no tag {report.tag} nor a revision of it): "
                     f"{', '.join(report.missing)}")
    return "\n".join(lines)


def _columns(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))] if rows else []
    return ["  " + "  ".join(f"{cell:{width}s}" for cell, width in
                             zip(row, widths, strict=True)).rstrip() for row in rows]


def _find_json(report) -> dict:
    from builder.security.find import ERROR, MATCH, NO_MATCH, UNKNOWN
    c = report.constraint

    def image(r) -> dict:
        return {"image": r.image, "reference": r.reference, "tag": r.tag,
                "digest": r.digest, "id": r.image_id}

    return {
        "constraint": str(c), "package": c.name, "kind": c.kind, "operator": c.op,
        "version": c.version, "where": report.where, "tag": report.tag,
        "checked": len(report.results),
        "matches": [{**image(r), "packages": [vars(h) for h in r.hits], "note": r.reason}
                    for r in report.having(MATCH)],
        "unknown": [{**image(r), "reason": r.reason} for r in report.having(UNKNOWN)],
        "no_match": [image(r) for r in report.having(NO_MATCH)],
        "errors": [{**image(r), "error": r.reason} for r in report.having(ERROR)],
        "missing": list(report.missing)}


def _sbom(args) -> int:
    from builder.security.sbom import document, image_packages
    check_reference(args.ref)
    if args.output is not None and not args.output.parent.is_dir():
        raise ConfigError(f"--output {args.output}: directory {args.output.parent} does "
                          f"not exist")
    labels, image_id, digest = _lookup(args, args.ref)
    image = image_packages(args.ref, labels, image_id, digest)
    text = document(image, args.format)
    if args.output is None:
        sys.stdout.write(text)
        return EXIT_OK
    _write(args.output, text)
    count = sum(len(items) for items in image.packages.values())
    print(f"{args.format} SBOM of {args.ref} ({count} package{'s' if count != 1 else ''}, "
          f"{len(image.sources)} source{'s' if len(image.sources) != 1 else ''}) written to "
          f"{args.output}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
