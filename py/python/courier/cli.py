"""The `courier` command: `courier ca ...` (the development CA of the TLS
layer) and `courier deps URL...` (the merged dependency graph of several
services' debug servers). Subcommands live in their own modules, imported when used."""

from __future__ import annotations

import sys
from typing import List, Optional

_USAGE = """usage: courier <command> [args]

commands:
  deps URL...   merge the /deps of several debug servers into one graph (SVG, DOT or JSON)
  ca ...        development CA: make a CA and SPIFFE certificates for mutual TLS
"""


def main(argv: Optional[List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_USAGE, end="")
        return 0 if args else 2
    cmd, rest = args[0], args[1:]
    if cmd == "deps":
        from ._deps import main as deps_main

        return deps_main(rest)
    if cmd == "ca":
        from ._ca import main as ca_main

        return ca_main(rest)
    print(f"courier: unknown command {cmd!r}\n\n{_USAGE}", file=sys.stderr, end="")
    return 2


if __name__ == "__main__":
    sys.exit(main())
