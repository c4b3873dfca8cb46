"""gRPC's standard interop cases, run by the OFFICIAL grpc-go interop client
against Courier servers.

What runs: `google.golang.org/grpc/interop/client` at grpc-go v1.85.0 (built
from the Go module proxy into ~/.cache/courier/bin/grpc-go-interop-client by
`make tools`, which `make test-py` runs) against grpc_testing_server.py:
`grpc.testing.TestService` implemented in Python on Courier, from grpc's own
protos (tests/protos/grpc/testing) with stubs made by courier-stubgen into a
pytest tmp dir. Each of the 14 cases below is one test per server:

- the sync server (`courier.Server`, handlers on threads) and the asyncio
  server (`courier.aio.Server`), each over plaintext and over TLS (a
  certificate from `courier ca`; the client checks it against the dev CA with
  `--use_tls --use_test_ca --ca_file --server_host_override localhost`; it has
  no client certificate, so the server admits peers without one,
  `require_client_cert=False`): 4 x 14 = 56 tests.
- A case passes when the client exits 0 and logs its "<Case> done" line
  (it logs.Fatal()s with the reason otherwise); the server must then stop
  cleanly (exit 0) at the end of the module without logging a traceback.

Cases: empty_unary, large_unary, client_streaming, server_streaming,
ping_pong, empty_stream, timeout_on_sleeping_server, cancel_after_begin,
cancel_after_first_response, status_code_and_message, special_status_message,
custom_metadata, unimplemented_method, unimplemented_service.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import grpc_testing_server  # noqa: E402
from grpc_testing_server import ServerProcess  # noqa: E402

pytestmark = pytest.mark.timeout(120)

# Each case and the line the client logs (at INFO) when it passed.
CASES = {
    "empty_unary": "EmptyUnaryCall done",
    "large_unary": "LargeUnaryCall done",
    "client_streaming": "ClientStreaming done",
    "server_streaming": "ServerStreaming done",
    "ping_pong": "Pingpong done",
    "empty_stream": "Emptystream done",
    "timeout_on_sleeping_server": "TimeoutOnSleepingServer done",
    "cancel_after_begin": "CancelAfterBegin done",
    "cancel_after_first_response": "CancelAfterFirstResponse done",
    "status_code_and_message": "StatusCodeAndMessage done",
    "special_status_message": "SpecialStatusMessage done",
    "custom_metadata": "CustomMetadata done",
    "unimplemented_method": "UnimplementedMethod done",
    "unimplemented_service": "UnimplementedService done",
}
SERVER_ID = "spiffe://example.org/grpc-testing-server"


def cache_dir() -> Path:
    return Path(os.environ.get("CACHE") or Path.home() / ".cache" / "courier").expanduser()


@pytest.fixture(scope="session")
def interop_client() -> Path:
    p = Path(os.environ.get("COURIER_GRPC_INTEROP_CLIENT") or cache_dir() / "bin" / "grpc-go-interop-client")
    if not p.is_file():
        pytest.fail(f"{p} not found: `make tools` builds grpc-go's interop client (make test-py does)")
    return p


@pytest.fixture(scope="session")
def gen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """grpc/testing's protobuf modules and Courier stubs, made once per worker."""
    out = tmp_path_factory.mktemp("grpc_testing_gen")
    grpc_testing_server.generate(out)
    return out


def courier_cli(*args: str) -> None:
    r = subprocess.run([sys.executable, "-m", "courier", *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"courier {' '.join(args)} failed: {r.stderr}"


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dev CA (`courier ca init`) and the server's certificate for localhost."""
    root = tmp_path_factory.mktemp("pki")
    courier_cli("ca", "init", "--trust-domain", "example.org", "--out", str(root / "ca"))
    courier_cli("ca", "issue", "--ca", str(root / "ca"), "--id", SERVER_ID, "--out", str(root / "server"),
                "--dns", "localhost", "--ip", "127.0.0.1")
    return root


def server_args(gen: Path, pki: Path, kind: str, transport: str, *extra: str) -> tuple[list[str], list[str]]:
    """(server flags, client flags) for a server of `kind` over `transport`."""
    args = ["--gen", str(gen), *(["--aio"] if kind == "aio" else []), *extra]
    client_flags: list[str] = []
    if transport == "tls":
        args += ["--tls-cert", str(pki / "server" / "cert.pem"), "--tls-key", str(pki / "server" / "key.pem"),
                 "--tls-ca", str(pki / "ca" / "ca.pem")]
        client_flags = ["--use_tls", "--use_test_ca", f"--ca_file={pki / 'ca' / 'ca.pem'}",
                        "--server_host_override=localhost"]
    return args, client_flags


@pytest.fixture(
    scope="module",
    params=[("sync", "plaintext"), ("aio", "plaintext"), ("sync", "tls"), ("aio", "tls")],
    ids=lambda p: "-".join(p),
)
def server(request: pytest.FixtureRequest, gen: Path, pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, list[str]]]:
    """A Courier TestService server process and the client flags that reach it;
    at teardown it must stop cleanly (exit 0) and have logged no traceback."""
    kind, transport = request.param
    args, client_flags = server_args(gen, pki, kind, transport)
    s = ServerProcess(args, stderr=tmp_path_factory.mktemp(f"server-{kind}-{transport}") / "stderr.log")
    try:
        yield s, client_flags
        rc = s.stop()
    finally:
        s.kill()
    assert rc == 0, f"the {kind} server exited with {rc}:\n{s.stderr()}"
    assert "Traceback" not in s.stderr(), f"the {kind} server logged an exception:\n{s.stderr()}"


def run_client(client: Path, port: int, case: str, flags: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    # INFO makes the client log "<Case> done" once a case passed.
    env = dict(os.environ, GRPC_GO_LOG_SEVERITY_LEVEL="info")
    return subprocess.run(
        [str(client), "--server_host=127.0.0.1", f"--server_port={port}", f"--test_case={case}", *flags],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=env,
    )


def check_passed(r: subprocess.CompletedProcess[str], case: str, server: ServerProcess) -> None:
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"{case}: the grpc-go interop client exited {r.returncode}:\n{out}\n--- server stderr:\n{server.stderr()}"
    assert f'Client running with test case "{case}"' in out, out
    assert f"[interop] {CASES[case]}" in out, f"{case}: the client did not log '{CASES[case]}':\n{out}"


@pytest.mark.parametrize("case", list(CASES))
def test_interop_case(interop_client: Path, server: tuple[ServerProcess, list[str]], case: str) -> None:
    srv, flags = server
    check_passed(run_client(interop_client, srv.port, case, flags), case, srv)


def test_client_without_certificate_is_refused_by_default(interop_client: Path, gen: Path, pki: Path, tmp_path: Path) -> None:
    """The cases above can fail: with Courier's default TLS policy (client
    certificates required) the certificate-less interop client is refused,
    exits non-zero and logs no "done" line, and check_passed says so."""
    args, flags = server_args(gen, pki, "sync", "tls", "--require-client-cert")
    s = ServerProcess(args, stderr=tmp_path / "stderr.log")
    try:
        r = run_client(interop_client, s.port, "empty_unary", flags)
        assert s.stop() == 0, s.stderr()
    finally:
        s.kill()
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "EmptyUnaryCall done" not in out, out
    assert "code = Unavailable" in out, out
    with pytest.raises(AssertionError, match="the grpc-go interop client exited"):
        check_passed(r, "empty_unary", s)
