"""`courier ca`: the development CA (rcgen in the Rust core underneath).

    courier ca init  --trust-domain example.org --out DIR
    courier ca issue --ca DIR --id spiffe://example.org/NAME --out DIR
                     [--dns NAME]... [--ip ADDR]... [--days N] [--rsa]

`init` writes DIR/ca.pem and DIR/ca.key (mode 0600) and refuses to overwrite
a CA key. `issue` writes DIR/cert.pem and DIR/key.pem (ECDSA P-256, or RSA 2048
with --rsa), replacing them atomically, so a running server picks up the new
pair (rotation). DNS and IP SANs beside the SPIFFE ID let stock gRPC clients
that check host names connect. For development and tests only.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from . import _core


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="courier ca", description="Development CA for Courier's mutual TLS.")
    sub = p.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="create a CA for a SPIFFE trust domain (DIR/ca.pem, DIR/ca.key)")
    init.add_argument("--trust-domain", required=True, help="e.g. example.org")
    init.add_argument("--out", required=True, help="directory to write ca.pem and ca.key to")
    init.add_argument("--days", type=int, default=3650, help="validity (default 3650)")
    issue = sub.add_parser("issue", help="issue a certificate with a SPIFFE ID (DIR/cert.pem, DIR/key.pem)")
    issue.add_argument("--ca", required=True, help="directory holding ca.pem and ca.key")
    issue.add_argument("--id", required=True, help="spiffe://<trust-domain>/<name>")
    issue.add_argument("--out", required=True, help="directory to write cert.pem and key.pem to")
    issue.add_argument("--dns", action="append", default=[], metavar="NAME", help="DNS SAN (repeatable)")
    issue.add_argument("--ip", action="append", default=[], metavar="ADDR", help="IP SAN (repeatable)")
    issue.add_argument("--days", type=int, default=365, help="validity (default 365; 0 or less: already expired, for tests)")
    issue.add_argument("--rsa", action="store_true", help="RSA 2048 instead of ECDSA P-256")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "init":
            cert, key = _core.ca_init(args.trust_domain, args.out, args.days)
        else:
            cert, key = _core.ca_issue(args.ca, args.out, args.id, args.dns, args.ip, args.days, args.rsa)
    except (OSError, ValueError) as e:
        print(f"courier ca {args.command}: {e}", file=sys.stderr)
        return 1
    print(f"wrote {cert}\nwrote {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
