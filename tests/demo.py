#!/usr/bin/env python3
"""`make demo`: a Courier service written in Python, called from four clients.

Starts a Courier server with synchronous Python handlers for
`courier.test.Test` (tests/protos/courier/test/test.proto), then calls it with
the Courier Python client (every call kind, a deadline, an app error), the
Courier Rust client (`courier-test-client --case demo`), the Courier Go
client (go-cgo/examples/democlient, built by `make demo`) and a stock grpcio
client, prints a transcript, stops the server gracefully, and exits 0 only if
everything worked.

Everything runs over mutual TLS with identities from a dev CA made for the
occasion in a temp dir (`courier ca init` / `courier ca issue`): the server
checks each client's SPIFFE ID, the Courier clients check the server's.
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


TRUST_DOMAIN = "demo.example"
SERVER_ID = f"spiffe://{TRUST_DOMAIN}/demo-server"


def make_pki(root: Path) -> Path:
    """A dev CA and one identity per party, with the `courier ca` command."""
    def ca(*args: str) -> None:
        subprocess.run([sys.executable, "-m", "courier", "ca", *args], check=True, timeout=60, stdout=subprocess.DEVNULL)

    ca("init", "--trust-domain", TRUST_DOMAIN, "--out", str(root / "ca"))
    for name in ("demo-server", "python-client", "rust-client", "go-client", "grpcio-client"):
        # IP and DNS SANs too: grpcio checks the host name it dialled.
        ca("issue", "--ca", str(root / "ca"), "--id", f"spiffe://{TRUST_DOMAIN}/{name}", "--out", str(root / name),
           "--ip", "127.0.0.1", "--dns", "localhost")
    return root


def client_tls(pki: Path, name: str) -> Any:
    import courier

    d = pki / name
    return courier.ClientTLS.from_files(cert=d / "cert.pem", key=d / "key.pem", ca=pki / "ca" / "ca.pem", server_identity=SERVER_ID)


def python_client(pb: Any, target: str, pki: Path) -> None:
    import courier
    from testservice import make_service

    svc = make_service(pb)
    ch = courier.Channel(target, tls=client_tls(pki, "python-client"))
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


def grpcio_client(pb: Any, pb_grpc: Any, target: str, pki: Path) -> None:
    import grpc

    d = pki / "grpcio-client"
    creds = grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca" / "ca.pem").read_bytes(),
        private_key=(d / "key.pem").read_bytes(),
        certificate_chain=(d / "cert.pem").read_bytes(),
    )
    with grpc.secure_channel(target, creds) as ch:
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
        import courier
        from testservice import start_sync_server

        pki = make_pki(Path(gen) / "pki")
        d = pki / "demo-server"
        tls = courier.ServerTLS.from_files(cert=d / "cert.pem", key=d / "key.pem", ca=pki / "ca" / "ca.pem")
        server, port, _ = start_sync_server(pb, max_concurrency=8, tls=tls)
        target = f"127.0.0.1:{port}"
        try:
            print(f"== Courier server, Python handlers (courier.Server), on {target}")
            print(f"   mutual TLS as {tls.identity}; dev CA for spiffe://{TRUST_DOMAIN} in a temp dir\n")
            print("== Courier client (Python)")
            python_client(pb, target, pki)
            print("\n== Courier client (Rust): courier-test-client --case demo")
            rust = pki / "rust-client"
            r = subprocess.run([str(client), "--target", target, "--case", "demo", "--tls-ca", str(pki / "ca" / "ca.pem"),
                                "--tls-cert", str(rust / "cert.pem"), "--tls-key", str(rust / "key.pem"),
                                "--server-identity", SERVER_ID], capture_output=True, text=True, timeout=60)
            print(r.stdout + r.stderr, end="")
            if r.returncode != 0:
                print(f"demo: courier-test-client exited {r.returncode}", file=sys.stderr)
                return 1
            print("\n== Courier client (Go): go-cgo/examples/democlient")
            go_client = os.environ.get("COURIER_GO_DEMO", "")
            if not Path(go_client).is_file():
                print("demo: the Go client is missing: run the demo with `make demo`", file=sys.stderr)
                return 1
            gd = pki / "go-client"
            r = subprocess.run([go_client, "-target", target, "-tls-ca", str(pki / "ca" / "ca.pem"),
                                "-tls-cert", str(gd / "cert.pem"), "-tls-key", str(gd / "key.pem"),
                                "-server-identity", SERVER_ID], capture_output=True, text=True, timeout=60)
            print(r.stdout + r.stderr, end="")
            if r.returncode != 0:
                print(f"demo: the Go client exited {r.returncode}", file=sys.stderr)
                return 1
            print("\n== stock grpcio client (Python)")
            grpcio_client(pb, pb_grpc, target, pki)
            print("\n== client identities the server verified (TLS handshakes)")
            seen = [h for h in courier.tls_stats()["handshakes"] if h["side"] == "server"]
            for h in seen:
                print(f"  {h['peer']}: {h['full']} full, {h['resumed']} resumed")
            # Counted by the server in this process, the Rust client's handshake included.
            if {h["peer"] for h in seen} != {f"spiffe://{TRUST_DOMAIN}/{n}" for n in ("python-client", "rust-client", "go-client", "grpcio-client")}:
                print("demo: the server did not see the four client identities", file=sys.stderr)
                return 1
        finally:
            t0 = time.monotonic()
            server.stop(2.0)
            print(f"\n== server stopped gracefully in {(time.monotonic() - t0) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
