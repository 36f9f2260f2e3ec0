"""kiln-registry: compare, publish and inspect images by their version manifest."""

from __future__ import annotations

import sys
from collections.abc import Sequence

USAGE = """\
usage: kiln-registry {sync,promote,list,inspect,diff} ...

Publishes images by their kiln version manifest. Its commands (sync, promote,
list, inspect, diff) are not implemented yet.
"""


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0
    print(USAGE, end="", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
