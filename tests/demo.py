#!/usr/bin/env python3
"""`make demo`: a Courier service written in Python, called from three clients.

Starts a Courier server with synchronous Python handlers for
`courier.test.Test` (tests/protos/courier/test/test.proto), then calls it with
the Courier Python client (every call kind, a deadline, an app error), the
Courier Rust client (`courier-test-client --case demo`) and a stock grpcio
client, prints a transcript, stops the server gracefully, and exits 0 only if
everything worked.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR") or Path.home() / ".cache" / "courier" / "target").expanduser()
BIN = TARGET / "debug"


def generate(out: str) -> tuple[Any, Any]:
    """test_pb2 / test_pb2_grpc for the stock protobuf and grpcio runtimes."""
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{REPO / 'tests/protos/courier/test'}",
         f"--python_out={out}", f"--grpc_python_out={out}", "test.proto"],
        check=True, timeout=60,
    )
    sys.path.insert(0, out)
    return importlib.import_module("test_pb2"), importlib.import_module("test_pb2_grpc")


def python_client(pb: Any, target: str) -> None:
    import courier
    from testservice import make_service

    svc = make_service(pb)
    ch = courier.Channel(target)
    ctx = courier.Context.background().with_timeout(5)
    r = ch.unary(ctx, svc.method("UnaryUnary"), pb.TestRequest(s="hello", report_deadline=True))
    print(f"  UnaryUnary    s='hello' -> s={r.s!r}; the server saw {r.deadline_ms} ms of a 5 s deadline, request id {r.request_id}")
    got = [x.index for x in ch.server_streaming(ctx, svc.method("UnaryStream"), pb.TestRequest(count=3))]
    print(f"  UnaryStream   count=3 -> indexes {got}")
    r = ch.client_streaming(ctx, svc.method("StreamUnary"), (pb.TestRequest(s=c) for c in "abc"))
    print(f"  StreamUnary   'a','b','c' -> {r.s!r}")
    got2 = [x.s for x in ch.bidi_streaming(ctx, svc.method("StreamStream"), [pb.TestRequest(s=c) for c in "xyz"])]
    print(f"  StreamStream  'x','y','z' -> {got2}")
    t0 = time.monotonic()
    try:
        ch.unary(courier.Context.background().with_timeout(0.2), svc.method("UnaryUnary"), pb.TestRequest(sleep_ms=5000))
        raise SystemExit("demo: the 200 ms deadline was not enforced")
    except courier.RpcError as e:
        print(f"  deadline      200 ms vs a 5 s handler -> {e.code.name} after {(time.monotonic() - t0) * 1000:.0f} ms")
    try:
        ch.unary(ctx, svc.method("UnaryUnary"), pb.TestRequest(app_error=2))
        raise SystemExit("demo: the app error was not raised")
    except courier.RpcError as e:
        print(f"  app error     -> {e.code.name}, {e.app_error_enum} value {e.app_error}")


def grpcio_client(pb: Any, pb_grpc: Any, target: str) -> None:
    import grpc

    with grpc.insecure_channel(target) as ch:
        stub = pb_grpc.TestStub(ch)
        req = pb.TestRequest(s="hello from grpcio", echo_header="x-demo", report_deadline=True)
        resp, call = stub.UnaryUnary.with_call(req, metadata=(("x-demo", "demo-metadata"),), timeout=2)
        header = dict(call.initial_metadata()).get("x-echo-header")
        print(f"  UnaryUnary    s={req.s!r} -> s={resp.s!r}, deadline seen {resp.deadline_ms} ms, x-echo-header={header!r}")


def main() -> int:
    client = BIN / "courier-test-client"
    if not client.is_file():
        print(f"demo: {client} is missing; run `cargo build -p courier-testpeer`", file=sys.stderr)
        return 1
    sys.path.insert(0, str(REPO / "py" / "tests"))
    with tempfile.TemporaryDirectory() as gen:
        pb, pb_grpc = generate(gen)
        from testservice import start_sync_server

        server, port, _ = start_sync_server(pb, max_concurrency=8)
        target = f"127.0.0.1:{port}"
        try:
            print(f"== Courier server, Python handlers (courier.Server), on {target}\n")
            print("== Courier client (Python)")
            python_client(pb, target)
            print("\n== Courier client (Rust): courier-test-client --case demo")
            r = subprocess.run([str(client), "--target", target, "--case", "demo"], capture_output=True, text=True, timeout=60)
            print(r.stdout + r.stderr, end="")
            if r.returncode != 0:
                print(f"demo: courier-test-client exited {r.returncode}", file=sys.stderr)
                return 1
            print("\n== stock grpcio client (Python)")
            grpcio_client(pb, pb_grpc, target)
        finally:
            t0 = time.monotonic()
            server.stop(2.0)
            print(f"\n== server stopped gracefully in {(time.monotonic() - t0) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
