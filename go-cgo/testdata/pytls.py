#!/usr/bin/env python3
"""Courier's Python binding over mutual TLS, for the Go tests.

`pytls.py client PKI TARGET`: calls UnaryUnary(s="whoami") with ClientTLS
(client cert of PKI/client) and prints the reply's `s`.
`pytls.py server PKI`: serves courier.test.Test with ServerTLS (the
certificate in PKI/py-server, spiffe://example.org/py-server), UnaryUnary(s="whoami")
answering with the client's verified identity as `SPIFFE-ID|name`; prints
`PORT <n>`, serves until stdin closes."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def main() -> int:
    mode, pki = sys.argv[1], sys.argv[2]
    sys.path.insert(0, str(REPO / "py" / "tests"))
    with tempfile.TemporaryDirectory() as gen:
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{REPO / 'tests/protos/courier/test'}",
                        f"--python_out={gen}", "test.proto"], check=True, timeout=60)
        sys.path.insert(0, gen)
        pb = importlib.import_module("test_pb2")
        import courier
        from testservice import SyncTest, handlers, make_service

        class WhoAmI(SyncTest):
            def UnaryUnary(self, ctx: courier.Context, req: Any) -> Any:
                if req.s == "whoami":
                    if ctx.peer_identity is None:
                        return pb.TestResponse(s="unauthenticated")
                    return pb.TestResponse(s=f"{ctx.peer_identity}|{ctx.peer_name}")
                return super().UnaryUnary(ctx, req)

        if mode == "client":
            tls = courier.ClientTLS.from_files(ca=f"{pki}/ca/ca.pem", server_identity="spiffe://example.org/go-server",
                                               cert=f"{pki}/client/cert.pem", key=f"{pki}/client/key.pem")
            ch = courier.Channel(sys.argv[3], tls=tls)
            ctx = courier.Context.background().with_timeout(5)
            print(ch.unary(ctx, make_service(pb).method("UnaryUnary"), pb.TestRequest(s="whoami")).s)
            return 0
        tls = courier.ServerTLS.from_files(cert=f"{pki}/py-server/cert.pem", key=f"{pki}/py-server/key.pem", ca=f"{pki}/ca/ca.pem")
        server = courier.Server(workers=1, max_concurrency=4, tls=tls)
        server.add_handlers(make_service(pb), handlers(WhoAmI(pb)))
        port = server.listen("127.0.0.1:0")
        server.start()
        print(f"PORT {port}", flush=True)
        sys.stdin.read()
        server.stop(1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
