"""Mutual TLS from Python: Courier to Courier (sync and asyncio), a stock
grpcio client against a Courier server and a Courier client against a stock
grpcio mTLS server, all with certificates made by `courier ca` in a tmp dir
(real subprocesses of the CLI; no key is checked in)."""

from __future__ import annotations


import asyncio
import os
import stat
import subprocess
import time
import sys
from concurrent import futures
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple, cast

import grpc
import pytest

import courier
import courier.aio
from courier import ClientTLS, ServerTLS, StatusCode, tls_stats
from testservice import make_service

TD = "example.org"
SERVER_ID = "spiffe://example.org/py-server"
CLIENT_ID = "spiffe://example.org/team/py-client"


def ca_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "courier", "ca", *args], capture_output=True, text=True, timeout=60)


class Pki:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca_dir = root / "ca"
        r = ca_cli("init", "--trust-domain", TD, "--out", str(self.ca_dir))
        assert r.returncode == 0, r.stderr

    @property
    def ca(self) -> Path:
        return self.ca_dir / "ca.pem"

    def issue(self, name: str, spiffe_id: str, *extra: str) -> Path:
        out = self.root / name
        r = ca_cli("issue", "--ca", str(self.ca_dir), "--id", spiffe_id, "--out", str(out), "--ip", "127.0.0.1", "--dns", "localhost", *extra)
        assert r.returncode == 0, r.stderr
        assert f"wrote {out / 'cert.pem'}" in r.stdout
        return out


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server_dir(pki: Pki) -> Path:
    return pki.issue("server", SERVER_ID)


@pytest.fixture(scope="module")
def client_dir(pki: Pki) -> Path:
    return pki.issue("client", CLIENT_ID)


def server_tls(pki: Pki, d: Path, **kw: Any) -> ServerTLS:
    return ServerTLS.from_files(cert=d / "cert.pem", key=d / "key.pem", ca=pki.ca, **kw)


def client_tls(pki: Pki, d: Path | None, server_identity: str = SERVER_ID) -> ClientTLS:
    if d is None:
        return ClientTLS.from_files(ca=pki.ca, server_identity=server_identity)
    return ClientTLS.from_files(cert=d / "cert.pem", key=d / "key.pem", ca=pki.ca, server_identity=server_identity)


class WhoAmI:
    """UnaryUnary answers with what the server ctx knows about its peer."""

    def __init__(self, pb: Any) -> None:
        self.pb = pb

    def UnaryUnary(self, ctx: courier.Context, req: Any) -> Any:
        return self.pb.TestResponse(s=f"{ctx.peer_identity} {ctx.peer_name}")


class AsyncWhoAmI(WhoAmI):
    async def UnaryUnary(self, ctx: courier.Context, req: Any) -> Any:
        await asyncio.sleep(0)
        return self.pb.TestResponse(s=f"{ctx.peer_identity} {ctx.peer_name}")


def handlers(impl: Any) -> Dict[str, Any]:
    def unimplemented(ctx: courier.Context, req: Any) -> Any:
        ctx.abort(StatusCode.UNIMPLEMENTED, "not in this test")

    return {"UnaryUnary": impl.UnaryUnary, "UnaryStream": unimplemented, "StreamUnary": unimplemented, "StreamStream": unimplemented}


def async_handlers(impl: Any) -> Dict[str, Any]:
    async def unimplemented(ctx: courier.Context, req: Any) -> Any:
        ctx.abort(StatusCode.UNIMPLEMENTED, "not in this test")

    return {"UnaryUnary": impl.UnaryUnary, "UnaryStream": unimplemented, "StreamUnary": unimplemented, "StreamStream": unimplemented}


def start(pb: Any, tls: ServerTLS) -> Tuple[courier.Server, int]:
    server = courier.Server(workers=1, max_concurrency=2, tls=tls)
    server.add_handlers(make_service(pb), handlers(WhoAmI(pb)))
    port = server.listen("127.0.0.1:0")
    server.start()
    return server, port


@pytest.fixture
def mtls_server(pb: Any, pki: Pki, server_dir: Path) -> Iterator[int]:
    server, port = start(pb, server_tls(pki, server_dir))
    try:
        yield port
    finally:
        server.stop(1.0)


def errors(side: str, reason: str) -> Tuple[int, str]:
    for e in tls_stats()["errors"]:
        if e["side"] == side and e["reason"] == reason:
            return e["count"], e["last_error"]
    return 0, ""


def errors_after(side: str, reason: str, before: int) -> Tuple[int, str]:
    """The error count once it passed `before`: the server's I/O thread counts a
    refused handshake, and the client may see the refusal first."""
    for _ in range(200):
        count, msg = errors(side, reason)
        if count > before:
            break
        time.sleep(0.01)
    return count, msg


def test_cli_files_and_refusals(pki: Pki, server_dir: Path) -> None:
    assert {p.name for p in pki.ca_dir.iterdir()} == {"ca.pem", "ca.key"}
    assert {p.name for p in server_dir.iterdir()} == {"cert.pem", "key.pem"}
    for key in (pki.ca_dir / "ca.key", server_dir / "key.pem"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    r = ca_cli("init", "--trust-domain", TD, "--out", str(pki.ca_dir))
    assert r.returncode == 1 and "refusing to overwrite a CA key" in r.stderr
    r = ca_cli("issue", "--ca", str(pki.ca_dir), "--id", "spiffe://other.org/x", "--out", str(pki.root / "x"))
    assert r.returncode == 1 and "not in the CA's trust domain spiffe://example.org" in r.stderr, r.stderr
    r = ca_cli("issue", "--ca", str(pki.ca_dir), "--id", "spiffe://example.org/a//b", "--out", str(pki.root / "x"))
    assert r.returncode == 1 and "invalid SPIFFE ID" in r.stderr, r.stderr
    r = ca_cli("issue", "--ca", str(pki.root / "nope"), "--id", "spiffe://example.org/a", "--out", str(pki.root / "x"))
    assert r.returncode == 1 and "cannot read CA file" in r.stderr, r.stderr
    # RSA keys on request; the text form shows what was made.
    rsa = pki.issue("rsa", "spiffe://example.org/rsa", "--rsa", "--days", "30")
    text = subprocess.run(["openssl", "x509", "-in", str(rsa / "cert.pem"), "-noout", "-text"], capture_output=True, text=True).stdout
    assert "rsaEncryption" in text and "2048 bit" in text
    assert "URI:spiffe://example.org/rsa" in text and "IP Address:127.0.0.1" in text and "DNS:localhost" in text
    text = subprocess.run(["openssl", "x509", "-in", str(server_dir / "cert.pem"), "-noout", "-text"], capture_output=True, text=True).stdout
    assert "id-ecPublicKey" in text and "prime256v1" in text


def test_setup_errors(pki: Pki, server_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match="cannot read certificate file .*missing.pem"):
        ServerTLS.from_files(cert=server_dir / "missing.pem", key=server_dir / "key.pem", ca=pki.ca)
    with pytest.raises(ValueError, match="invalid CA file"):
        ServerTLS.from_files(cert=server_dir / "cert.pem", key=server_dir / "key.pem", ca=server_dir / "key.pem")
    with pytest.raises(ValueError, match="invalid SPIFFE ID"):
        ClientTLS.from_files(ca=pki.ca, server_identity="example.org")
    with pytest.raises(ValueError, match="both cert and key"):
        ClientTLS.from_files(ca=pki.ca, server_identity=SERVER_ID, cert=server_dir / "cert.pem")
    t = server_tls(pki, server_dir)
    assert t.identity == SERVER_ID
    assert "require_client_cert=True" in repr(t)


def test_sync_courier_to_courier(pb: Any, pki: Pki, client_dir: Path, mtls_server: int) -> None:
    method = make_service(pb).methods[0]
    for expected in (SERVER_ID, "spiffe://example.org"):
        with courier.Channel(f"127.0.0.1:{mtls_server}", tls=client_tls(pki, client_dir, expected)) as ch:
            for _ in range(3):
                r = ch.unary(courier.Context.background().with_timeout(5), method, pb.TestRequest())
                assert r.s == f"{CLIENT_ID} team/py-client"
    peers = {(h["side"], h["peer"]): h for h in tls_stats()["handshakes"]}
    assert peers[("server", CLIENT_ID)]["full"] >= 2
    assert peers[("client", SERVER_ID)]["full"] >= 2


def test_aio_courier_to_courier(pb: Any, pki: Pki, server_dir: Path, client_dir: Path) -> None:
    async def main() -> None:
        server = courier.aio.Server(workers=1, tls=server_tls(pki, server_dir))
        server.add_handlers(make_service(pb), async_handlers(AsyncWhoAmI(pb)))
        port = server.listen("127.0.0.1:0")
        await server.start()
        try:
            ch = courier.aio.Channel(f"127.0.0.1:{port}", tls=client_tls(pki, client_dir))
            method = make_service(pb).methods[0]
            rs = await asyncio.gather(*(ch.unary(courier.Context.background().with_timeout(5), method, pb.TestRequest()) for _ in range(5)))
            assert {r.s for r in rs} == {f"{CLIENT_ID} team/py-client"}
        finally:
            await server.stop(1.0)

    asyncio.run(main())


def test_unauthenticated_client_when_allowed(pb: Any, pki: Pki, server_dir: Path) -> None:
    server, port = start(pb, server_tls(pki, server_dir, require_client_cert=False))
    try:
        with courier.Channel(f"127.0.0.1:{port}", tls=client_tls(pki, None)) as ch:
            r = ch.unary(courier.Context.background().with_timeout(5), make_service(pb).methods[0], pb.TestRequest())
            assert r.s == "None None"
    finally:
        server.stop(1.0)


def test_wrong_server_identity(pb: Any, pki: Pki, client_dir: Path, mtls_server: int) -> None:
    before, _ = errors("client", "identity_mismatch")
    with courier.Channel(f"127.0.0.1:{mtls_server}", tls=client_tls(pki, client_dir, "spiffe://example.org/billing")) as ch:
        with pytest.raises(courier.RpcError) as e:
            ch.unary(courier.Context.background().with_timeout(5), make_service(pb).methods[0], pb.TestRequest())
    assert e.value.code == StatusCode.UNAVAILABLE
    assert f"server identity mismatch: expected spiffe://example.org/billing, got {SERVER_ID}" in e.value.details
    count, msg = errors("client", "identity_mismatch")
    assert count > before and "expected spiffe://example.org/billing" in msg


def test_stock_grpcio_client_to_courier(pb: Any, pb_grpc: Any, pki: Pki, client_dir: Path, mtls_server: int) -> None:
    creds = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=(client_dir / "key.pem").read_bytes(),
        certificate_chain=(client_dir / "cert.pem").read_bytes(),
    )
    # grpcio checks the host name: the dev-CA certificate has IP and DNS SANs.
    for host in ("127.0.0.1", "localhost"):
        with grpc.secure_channel(f"{host}:{mtls_server}", creds) as ch:
            r = pb_grpc.TestStub(ch).UnaryUnary(pb.TestRequest(), timeout=5)
            assert r.s == f"{CLIENT_ID} team/py-client"
    # Without a client certificate the strict server refuses it.
    before, _ = errors("server", "no_client_cert")
    with grpc.secure_channel(f"127.0.0.1:{mtls_server}", grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())) as ch:
        with pytest.raises(grpc.RpcError) as e:
            pb_grpc.TestStub(ch).UnaryUnary(pb.TestRequest(), timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    count, msg = errors_after("server", "no_client_cert", before)
    assert count > before and msg == "the client sent no certificate and this server requires one"


class GrpcioWhoAmI:
    """A stock grpcio servicer reporting the client's URI SAN it verified."""

    def __init__(self, pb: Any) -> None:
        self.pb = pb

    def UnaryUnary(self, req: Any, context: grpc.ServicerContext) -> Any:
        sans = cast(List[bytes], context.auth_context().get("x509_subject_alternative_name", []))
        uris = sorted(v.decode() for v in sans if v.startswith(b"spiffe://"))
        return self.pb.TestResponse(s=",".join(uris))


def test_courier_client_to_stock_grpcio_mtls_server(pb: Any, pb_grpc: Any, pki: Pki, server_dir: Path, client_dir: Path) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    svc = GrpcioWhoAmI(pb)
    handler = grpc.method_handlers_generic_handler(
        "courier.test.Test",
        {"UnaryUnary": grpc.unary_unary_rpc_method_handler(svc.UnaryUnary, pb.TestRequest.FromString, pb.TestResponse.SerializeToString)},
    )
    server.add_generic_rpc_handlers((handler,))
    creds = grpc.ssl_server_credentials(
        [((server_dir / "key.pem").read_bytes(), (server_dir / "cert.pem").read_bytes())],
        root_certificates=pki.ca.read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    try:
        method = make_service(pb).methods[0]
        with courier.Channel(f"127.0.0.1:{port}", tls=client_tls(pki, client_dir)) as ch:
            r = ch.unary(courier.Context.background().with_timeout(5), method, pb.TestRequest())
            assert r.s == CLIENT_ID
        # The grpcio server is checked by its SPIFFE ID too.
        with courier.Channel(f"127.0.0.1:{port}", tls=client_tls(pki, client_dir, "spiffe://example.org/other")) as ch:
            with pytest.raises(courier.RpcError, match=f"expected spiffe://example.org/other, got {SERVER_ID}"):
                ch.unary(courier.Context.background().with_timeout(5), method, pb.TestRequest())

        async def aio_call() -> str:
            ch = courier.aio.Channel(f"127.0.0.1:{port}", tls=client_tls(pki, client_dir))
            r = await ch.unary(courier.Context.background().with_timeout(5), method, pb.TestRequest())
            return str(r.s)

        assert asyncio.run(aio_call()) == CLIENT_ID
    finally:
        server.stop(None)


def test_expired_and_foreign_client_certificates(pb: Any, pki: Pki, tmp_path: Path, mtls_server: int) -> None:
    method = make_service(pb).methods[0]
    expired = pki.issue("expired", "spiffe://example.org/expired", "--days", "-1")
    other = Pki(tmp_path / "other")
    foreign = other.issue("foreign", "spiffe://example.org/foreign")
    for d, reason, client_says, server_says in (
        (expired, "expired", "our certificate has expired", "certificate expired"),
        (foreign, "unknown_ca", "not from a CA the peer trusts", "UnknownIssuer"),
    ):
        before, _ = errors("server", reason)
        with courier.Channel(f"127.0.0.1:{mtls_server}", tls=client_tls(pki, d)) as ch:
            with pytest.raises(courier.RpcError, match=client_says):
                ch.unary(courier.Context.background().with_timeout(5), method, pb.TestRequest())
        count, msg = errors_after("server", reason, before)
        assert count > before and server_says in msg, msg


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("courier")
    # `pip install` / `maturin develop` (make py-dev) install it next to the interpreter.
    assert script.exists(), f"{script} is missing: the package's console scripts are not installed"
    r = subprocess.run([str(script), "ca", "--help"], capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert r.returncode == 0 and "init" in r.stdout and "issue" in r.stdout
