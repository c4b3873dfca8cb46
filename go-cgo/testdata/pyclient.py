#!/usr/bin/env python3
"""Courier's Python client against a server of courier.test.Test (the Go
interop tests run it against a Go server): every call kind, a deadline, a
status, an app error, metadata. Exits 0, or 1 naming the first mismatch."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def check(what: str, got: Any, want: Any) -> None:
    if got != want:
        raise SystemExit(f"pyclient: {what}: expected {want!r}, got {got!r}")


def run(pb: Any, target: str) -> None:
    import courier
    from testservice import make_service

    svc = make_service(pb)
    ch = courier.Channel(target)
    ctx = courier.Context.background().with_timeout(5)
    r = ch.unary(ctx, svc.method("UnaryUnary"), pb.TestRequest(s="hello", payload=b"\x00\x01", report_deadline=True))
    check("unary s", r.s, "hello")
    check("unary payload", r.payload, b"\x00\x01")
    if not 0 < r.deadline_ms <= 5000:
        raise SystemExit(f"pyclient: deadline seen by the server: {r.deadline_ms} ms")
    check("request id", len(r.request_id) > 0, True)
    got = [x.index for x in ch.server_streaming(ctx, svc.method("UnaryStream"), pb.TestRequest(count=4))]
    check("server streaming", got, [0, 1, 2, 3])
    r = ch.client_streaming(ctx, svc.method("StreamUnary"), (pb.TestRequest(s=c) for c in "abc"))
    check("client streaming", r.s, "abc")
    got2 = [x.s for x in ch.bidi_streaming(ctx, svc.method("StreamStream"), [pb.TestRequest(s=c) for c in "xyz"])]
    check("bidi", got2, ["x", "y", "z"])
    t0 = time.monotonic()
    try:
        ch.unary(courier.Context.background().with_timeout(0.2), svc.method("UnaryUnary"), pb.TestRequest(sleep_ms=5000))
        raise SystemExit("pyclient: the deadline was not enforced")
    except courier.RpcError as e:
        check("deadline code", e.code, courier.StatusCode.DEADLINE_EXCEEDED)
        if time.monotonic() - t0 > 2:
            raise SystemExit("pyclient: the deadline took too long")
    try:
        ch.unary(ctx, svc.method("UnaryUnary"), pb.TestRequest(fail_code=5, fail_message="nope"))
        raise SystemExit("pyclient: no error")
    except courier.RpcError as e:
        check("status", (e.code, e.details), (courier.StatusCode.NOT_FOUND, "nope"))
    try:
        ch.unary(ctx, svc.method("UnaryUnary"), pb.TestRequest(app_error=2))
        raise SystemExit("pyclient: no app error")
    except courier.RpcError as e:
        check("app error", (e.code, e.app_error_enum, e.app_error),
              (courier.StatusCode.FAILED_PRECONDITION, "courier.test.TestError", 2))
    try:
        ch.unary(ctx, svc.method("UnaryUnary"), pb.TestRequest(s="panic"))
        raise SystemExit("pyclient: no error from a panicking handler")
    except courier.RpcError as e:
        check("panic", e.code, courier.StatusCode.INTERNAL)
    r = ch.unary(ctx, svc.method("UnaryUnary"), pb.TestRequest(echo_header="x-py"), metadata=[("x-py", "from-python")])
    check("metadata", r.metadata_value, "from-python")
    print("pyclient: ok")


def main() -> int:
    sys.path.insert(0, str(REPO / "py" / "tests"))
    with tempfile.TemporaryDirectory() as gen:
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{REPO / 'tests/protos/courier/test'}",
                        f"--python_out={gen}", "test.proto"], check=True, timeout=60)
        sys.path.insert(0, gen)
        run(importlib.import_module("test_pb2"), sys.argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
