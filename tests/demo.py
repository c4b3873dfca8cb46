#!/usr/bin/env python3
"""`make demo`: a Courier server, a Courier client and a stock grpcio client.

Starts `courier-test-server` (Rust), runs `courier-test-client --case demo`
against it, makes one call with stock grpcio, prints a transcript, stops the
server, and exits 0 only if everything worked.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR") or Path.home() / ".cache" / "courier" / "target").expanduser()
BIN = TARGET / "debug"


def grpcio_call(target: str) -> str:
    """One stock-grpcio call, with code generated from test.proto on the fly."""
    import grpc

    with tempfile.TemporaryDirectory() as gen:
        subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{REPO / 'tests/protos/courier/test'}",
             f"--python_out={gen}", f"--grpc_python_out={gen}", "test.proto"],
            check=True, timeout=60,
        )
        sys.path.insert(0, gen)
        pb, pb_grpc = importlib.import_module("test_pb2"), importlib.import_module("test_pb2_grpc")
    with grpc.insecure_channel(target) as ch:
        stub = pb_grpc.TestStub(ch)
        req = pb.TestRequest(s="hello from grpcio", echo_header="x-demo", report_deadline=True)
        resp, call = stub.UnaryUnary.with_call(req, metadata=(("x-demo", "demo-metadata"),), timeout=2)
        header = dict(call.initial_metadata()).get("x-echo-header")
        return (f"  UnaryUnary   s={req.s!r}  ->  s={resp.s!r}, deadline seen {resp.deadline_ms} ms, "
                f"x-echo-header={header!r}, request_id={resp.request_id}")


def main() -> int:
    for name in ("courier-test-server", "courier-test-client"):
        if not (BIN / name).is_file():
            print(f"demo: {BIN / name} is missing; run `cargo build -p courier-testpeer`", file=sys.stderr)
            return 1
    server = subprocess.Popen([str(BIN / "courier-test-server"), "--listen", "127.0.0.1:0"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ok = False
    try:
        assert server.stdout is not None
        line = server.stdout.readline().strip()
        if not line.startswith("PORT "):
            print(f"demo: the server said {line!r}, expected 'PORT <n>'", file=sys.stderr)
            return 1
        target = f"127.0.0.1:{line.split()[1]}"
        print(f"== Courier server (Rust) listening on {target}\n")
        print("== Courier client (Rust): courier-test-client --case demo")
        r = subprocess.run([str(BIN / "courier-test-client"), "--target", target, "--case", "demo"],
                           capture_output=True, text=True, timeout=60)
        print(r.stdout + r.stderr, end="")
        if r.returncode != 0:
            print(f"demo: courier-test-client exited {r.returncode}", file=sys.stderr)
            return 1
        print("\n== stock grpcio client (Python)")
        print(grpcio_call(target))
        ok = True
    finally:
        # communicate() closes stdin: the server shuts down gracefully at stdin EOF.
        try:
            _, err = server.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
            _, err = server.communicate()
        rc = server.returncode
        print(f"\n== server stopped (exit code {rc})")
        if rc != 0:
            print(err, end="", file=sys.stderr)
    return 0 if ok and rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
