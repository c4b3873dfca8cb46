#!/usr/bin/env python3
"""courier.test.Test served by Courier's Python binding (py/tests/testservice.py),
for the Go interop tests: prints `PORT <n>`, serves until stdin closes.
`--downstream HOST:PORT` makes `s="hop"` call UnaryUnary there with the ctx."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--downstream")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "py" / "tests"))
    with tempfile.TemporaryDirectory() as gen:
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{REPO / 'tests/protos/courier/test'}",
                        f"--python_out={gen}", "test.proto"], check=True, timeout=60)
        sys.path.insert(0, gen)
        pb = importlib.import_module("test_pb2")
        import courier
        from testservice import make_service, start_sync_server

        server, port, impl = start_sync_server(pb, max_concurrency=8)
        if args.downstream:
            impl.downstream = (courier.Channel(args.downstream), make_service(pb).method("UnaryUnary"))
        print(f"PORT {port}", flush=True)
        sys.stdin.read()
        server.stop(1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
