"""kiln-registry's find and sbom commands: arguments to builder.security, output, exit code."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable

from builder.cli.publishing import registry_options, set_naming
from builder.engines import load_engine
from builder.errors import EXIT_BUILD_FAILED, EXIT_OK, ConfigError
from builder.output.security import find_json, format_find
from builder.publish.output import write_output
from builder.reference import check_reference
from builder.registry.client import RegistryClient
from builder.security.find import ERROR, MATCH, UNKNOWN, find_in_registry, find_local
from builder.security.versions import parse_constraint

LOG = logging.getLogger("builder")


def find(args) -> int:
    constraint = parse_constraint(args.constraint)
    if args.local:
        if args.names:
            raise ConfigError("--image names images of a registry; with --local give a REGEX")
        report = find_local(load_engine(args.engine), constraint, args.regex, args.namespace,
                            args.image_name_prefix, args.tag)
    else:
        naming = set_naming(args, "kiln" if args.namespace is None else args.namespace,
                            args.tag or "latest")
        with RegistryClient(args.registry, registry_options(args)) as client:
            report = find_in_registry(client, naming, args.names, args.regex, constraint,
                                      args.threads)
    print(json.dumps(find_json(report), indent=2) if args.format == "json"
          else format_find(report))
    unsure = len(report.having(UNKNOWN)) + len(report.having(ERROR))
    if unsure:
        LOG.warning("%d image%s could not be checked and may hold %s (listed as %s)", unsure,
                    "s" if unsure != 1 else "", constraint.name,
                    "unknown" if not report.having(ERROR) else "unknown or error")
    return EXIT_OK if report.having(MATCH) else EXIT_BUILD_FAILED


def sbom(args, lookup: Callable) -> int:
    from builder.security.sbom import document, image_packages
    check_reference(args.ref)
    if args.output is not None and not args.output.parent.is_dir():
        raise ConfigError(f"--output {args.output}: directory {args.output.parent} does "
                          f"not exist")
    labels, image_id, digest = lookup(args, args.ref)
    image = image_packages(args.ref, labels, image_id, digest)
    text = document(image, args.format)
    if args.output is None:
        sys.stdout.write(text)
        return EXIT_OK
    write_output(args.output, text)
    count = sum(len(items) for items in image.packages.values())
    print(f"{args.format} SBOM of {args.ref} ({count} package{'s' if count != 1 else ''}, "
          f"{len(image.sources)} source{'s' if len(image.sources) != 1 else ''}) written to "
          f"{args.output}")
    return EXIT_OK
