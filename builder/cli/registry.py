"""kiln-registry: read, compare and publish images by their version manifest."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from builder.cli import run
from builder.compare import diff_images, format_diff
from builder.engine import load_engine
from builder.exceptions import EXIT_OK, KilnError
from builder.manifest import read_labels

PROG = "kiln-registry"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Read, compare and publish images by their kiln version "
                               "manifest (LABELs stamped by kiln-build).")
    parser.add_argument("--debug", "-d", action="store_true", help="tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sub):
        sub.add_argument("--engine", default="docker",
                         help="engine holding local images (default: docker)")
        sub.add_argument("--format", choices=["text", "json"], default="text")

    inspect = commands.add_parser("inspect", help="print an image's version manifest")
    inspect.add_argument("ref", help="image reference in the local engine")
    common(inspect)
    diff = commands.add_parser("diff", help="what differs between two images")
    diff.add_argument("ref_a")
    diff.add_argument("ref_b")
    common(diff)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(PROG, _main, argv)


def _main(argv: list[str]) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 2 if exc.code else 0
    engine = load_engine(args.engine)
    if args.command == "inspect":
        labels = _read(engine, args.ref)
        print(json.dumps(labels, indent=2, sort_keys=True) if args.format == "json"
              else format_inspect(args.ref, labels))
        return EXIT_OK
    a, b = _read(engine, args.ref_a), _read(engine, args.ref_b)
    diff = diff_images(a, b)
    print(json.dumps(diff, indent=2, sort_keys=True) if args.format == "json"
          else format_diff(diff, args.ref_a, args.ref_b))
    return EXIT_OK


def _read(engine, ref: str) -> dict:
    info = engine.inspect(ref)
    if info is None:
        raise KilnError(f"no image {ref} in the local {engine.name} engine")
    labels = read_labels(info.labels)
    labels["id"] = info.id
    if labels["fingerprint"] is None:
        raise KilnError(f"{ref} carries no kiln.fingerprint label: it was not built by "
                        f"kiln-build (or its build did not finish)")
    return labels


def format_inspect(ref: str, labels: dict) -> str:
    manifest, oci = labels["manifest"], labels["oci"]
    lines = [f"image:       {ref} ({labels['id']})",
             f"fingerprint: {labels['fingerprint']}",
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


if __name__ == "__main__":
    sys.exit(main())
