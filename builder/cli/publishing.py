"""kiln-registry's sync, promote and list commands: registries, Ctrl-C, output, exit code."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator

from builder.build.labels import read_labels
from builder.engines import load_engine
from builder.errors import (
    EXIT_BUILD_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STOPPED,
    ConfigError,
    KilnError,
)
from builder.graph.selection import compile_pattern
from builder.output.registry import (
    format_list,
    format_promote,
    format_sync,
    promote_json,
    sync_json,
)
from builder.publish.compare import diff_images, format_diff
from builder.publish.listing import list_image, set_repositories
from builder.publish.origins import EngineSource, RegistrySource
from builder.publish.output import output_document, output_kind, to_yaml, write_output
from builder.publish.promote import PromoteResult, plan_promote, promote, promote_labels
from builder.publish.revisions import (
    SetNaming,
    deployed_tag,
    select_names,
)
from builder.publish.sync import SyncSettings, SyncStatus, run_parallel, sync
from builder.registry.auth import Credentials
from builder.registry.client import RegistryClient
from builder.registry.http import RegistryOptions

STOP_AFTER_ENV = "KILN_SYNC_STOP_AFTER"

PROG = "kiln-registry"
LOG = logging.getLogger("builder")


# -- sync ---------------------------------------------------------------------------------

def _sync(args) -> int:
    compile_pattern(args.release_pattern, "--release-pattern")
    kind = output_kind(args.output)
    destination_namespace = (args.destination_namespace if args.destination_namespace
                             is not None else args.namespace)
    settings = SyncSettings(source=set_naming(args),
                            destination=set_naming(args, destination_namespace),
                            release_pattern=args.release_pattern, force=args.force,
                            dry_run=args.dry_run, threads=args.threads)
    cancel = threading.Event()
    # Until --output is written: a Ctrl-C never loses the report of what was published.
    with _stop_on_interrupt(cancel, settings.tag):
        with RegistryClient(args.destination, registry_options(args)) as dest:
            if args.source == "engine":
                if args.username:
                    LOG.warning("the engine pushes the layers with its own login (docker "
                                "login %s); --username is used for the tags only", dest.host)
                results = sync(EngineSource(load_engine(args.engine), args.names), dest,
                               args.regex, settings, _stop_hook(), cancel)
            else:
                with RegistryClient(args.source, registry_options(args, source=True)) as client:
                    client.ping()
                    results = sync(RegistrySource(client, args.names), dest, args.regex,
                                   settings, _stop_hook(), cancel)
        if args.format == "json":
            print(json.dumps(sync_json(results, settings, cancel.is_set()), indent=2))
        else:
            print(format_sync(results, settings))
        sys.stdout.flush()
        if args.output is not None and not args.dry_run:
            document = output_document(results, dest.host, settings)
            write_output(args.output, json.dumps(document, indent=2) + "\n"
                   if kind == "json" else to_yaml(document))
    interrupted = cancel.is_set()
    if interrupted:
        stopped = sum(r.status is SyncStatus.STOPPED for r in results)
        print(f"{PROG}: interrupted: {stopped} of {len(results)} image"
              f"{'s' if len(results) != 1 else ''} not synced; the others are as reported"
              + (f" (and in {args.output})" if args.output and not args.dry_run else "")
              + "; a rerun syncs the rest", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_BUILD_FAILED if any(r.status is SyncStatus.FAILED for r in results) else EXIT_OK


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


# -- promote ------------------------------------------------------------------------------

def _promote(args) -> int:
    naming = set_naming(args)
    with RegistryClient(args.registry, registry_options(args)) as client:
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
        print(json.dumps({"results": [promote_json(r, client, args.tag) for r in results],
                          "checks": checks if args.check else None}, indent=2))
    else:
        print(format_promote(results, args.tag, args.dry_run))
    return EXIT_BUILD_FAILED if any(r.status == "failed" for r in results) else EXIT_OK


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


# -- list -------------------------------------------------------------------------------------

def _list(args) -> int:
    naming = set_naming(args, tag=args.tag or "latest")
    with RegistryClient(args.registry, registry_options(args)) as client:
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


# -- registries ---------------------------------------------------------------------------

def read_credentials(args) -> Credentials | None:
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


def registry_options(args, *, source: bool = False) -> RegistryOptions:
    if source:
        return RegistryOptions(insecure=args.source_insecure, ca_cert=args.source_ca_cert,
                               timeout=args.timeout, retries=args.retries)
    if not hasattr(args, "_credentials"):
        args._credentials = read_credentials(args)      # standard input is read once
    return RegistryOptions(insecure=args.insecure, ca_cert=args.ca_cert,
                           credentials=args._credentials, timeout=args.timeout,
                           retries=args.retries)


def set_naming(args, namespace: str | None = None, tag: str | None = None) -> SetNaming:
    return SetNaming(namespace=(namespace if namespace is not None else args.namespace)
                     .strip("/"), prefix=args.image_name_prefix,
                     tag=tag if tag is not None else args.tag)
