"""The interop matrix: every Courier client language against every server, and
every stock gRPC client against every Courier server, on one case list.

Clients: Courier's Python sync `Channel` and asyncio `Channel` (in this process,
tests/interop/matrix_clients.py), Rust (`courier-test-client`, tests/peer), Go
(`courier-go-testpeer client`, go-cgo/internal/testpeer); stock `grpcio` (in
this process), `grpc-go` (`courier-go-testpeer grpc-client`) and `grpc-java`
(tests/peers/java, `client`).

Servers: Courier Python sync and asyncio (in this process,
tests/interop/courier_service.py), Courier Rust (`courier-test-server`),
Courier Go (`courier-go-testpeer server`); stock `grpcio` (in this process, the
servicer of conftest.py), `grpc-go` (`courier-go-testpeer grpc-server`) and
`grpc-java` (tests/peers/java, `server`). Every server has the semantics of
tests/peer/src/service.rs, including the `courier-app-error` trailer.

Cases (each runner's list, in order): unary, server_streaming,
client_streaming, bidi_streaming (ping-pong, then an error after answers),
deadline_exceeded (a 100 ms client deadline on a 2 s handler, unary and
streaming), deadline_propagated (the server reports 2000..3010 ms of a 3 s
deadline), status_codes (all 16 codes, a message with `%`, non-ASCII and a
newline), app_error (a Courier client gets the typed app error; a stock client
has no notion of app errors, so its case checks the `courier-app-error`
trailer it receives instead: the one documented difference), metadata
(request header echoed in the body, a reply header and a trailer, unary and
streaming), large_message (3 MiB both ways, unary and bidi). The Rust runner
adds oversize_request (5 MiB is RESOURCE_EXHAUSTED and the connection lives).
Stock clients against stock servers are not Courier's to test.

Each cell is one test whose failure lists the cases that failed. Build the
peers with `make test-py` (or `make java-peer go-peer` and `cargo build -p
courier-testpeer`); run one cell with e.g.

    ~/.cache/courier/venv/bin/pytest tests/interop/test_matrix.py -k "go-to-courier-py-aio"
"""

from __future__ import annotations

import json
import os
import subprocess
import types
from concurrent import futures
from pathlib import Path
from typing import Callable, Iterator, Optional

import grpc
import pytest

import courier
import courier.aio
from conftest import PeerServer, make_servicer, peer_binary
from courier_service import AsyncTest, SyncTest, handlers, service
from matrix_clients import CASES, Client, CourierAio, CourierSync, Grpcio, LoopThread, run_cases

pytestmark = pytest.mark.timeout(120)

CACHE = Path(os.environ.get("CACHE") or Path.home() / ".cache" / "courier").expanduser()
COURIER_SERVERS = ["courier-py-sync", "courier-py-aio", "courier-rust", "courier-go"]
STOCK_SERVERS = ["grpcio", "grpc-go", "grpc-java"]
COURIER_CLIENTS = ["courier-py-sync", "courier-py-aio", "courier-rust", "courier-go"]
STOCK_CLIENTS = ["grpcio", "grpc-go", "grpc-java"]
CELLS = [(c, s) for c in COURIER_CLIENTS for s in COURIER_SERVERS + STOCK_SERVERS] + [
    (c, s) for c in STOCK_CLIENTS for s in COURIER_SERVERS
]
Results = dict[str, Optional[str]]


def built(path: Path, how: str) -> Path:
    if not path.is_file():
        pytest.fail(f"{path} not found: build it with `{how}` (make test-py does)")
    return path


def go_peer() -> Path:
    return built(CACHE / "bin" / "courier-go-testpeer", "make go-peer")


def java_peer() -> Path:
    return built(CACHE / "java-peer" / "courier-grpc-java-peer.jar", "make java-peer")


class ProcessServer(PeerServer):
    """A peer server process (`argv --listen 127.0.0.1:0`) that prints `PORT <n>`
    and stops when its stdin closes; its stderr goes to the test's output."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen([*argv, "--listen", "127.0.0.1:0"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=None)
        self.port = self._read_port(timeout=60)
        self.target = f"127.0.0.1:{self.port}"


class Servers:
    """The matrix's servers, each started on first use (per xdist worker)."""

    def __init__(self, pb: types.SimpleNamespace, loop: LoopThread) -> None:
        self.pb, self.loop = pb, loop
        self.targets: dict[str, str] = {}
        self.stops: list[Callable[[], object]] = []

    def target(self, name: str) -> str:
        if name not in self.targets:
            self.targets[name] = getattr(self, "_" + name.replace("-", "_"))()
        return self.targets[name]

    def _process(self, argv: list[str]) -> str:
        s = ProcessServer(argv)

        def stop() -> None:
            try:
                s.stop("stdin", timeout=10)
            finally:
                s.kill()
                s.close_pipes()

        self.stops.append(stop)
        return s.target

    def _courier_py_sync(self) -> str:
        server = courier.Server(workers=1, max_concurrency=8)
        server.add_handlers(service(self.pb.msgs), handlers(SyncTest(self.pb.msgs)))
        port = server.listen("127.0.0.1:0")
        server.start()
        self.stops.append(lambda: server.stop(grace=1.0))
        return f"127.0.0.1:{port}"

    def _courier_py_aio(self) -> str:
        async def start() -> tuple[courier.aio.Server, int]:
            server = courier.aio.Server(workers=1)
            server.add_handlers(service(self.pb.msgs), handlers(AsyncTest(self.pb.msgs)))
            port = server.listen("127.0.0.1:0")
            await server.start()
            return server, port

        server, port = self.loop.run(start())
        self.stops.append(lambda: self.loop.run(server.stop(grace=1.0)))
        return f"127.0.0.1:{port}"

    def _courier_rust(self) -> str:
        return self._process([str(peer_binary("courier-test-server")), "--workers", "1"])

    def _courier_go(self) -> str:
        return self._process([str(go_peer()), "server"])

    def _grpcio(self) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16),
                             options=[("grpc.max_receive_message_length", 8 << 20)])
        self.pb.grpc.add_TestServicer_to_server(make_servicer(self.pb), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self.stops.append(lambda: server.stop(grace=0.5).wait(5))
        return f"127.0.0.1:{port}"

    def _grpc_go(self) -> str:
        return self._process([str(go_peer()), "grpc-server"])

    def _grpc_java(self) -> str:
        return self._process(["java", "-XX:+UseSerialGC", "-jar", str(java_peer()), "server", "--services", "test"])

    def close(self) -> None:
        for stop in reversed(self.stops):
            stop()


@pytest.fixture(scope="session")
def loop() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.stop()


@pytest.fixture(scope="session")
def servers(pb: types.SimpleNamespace, loop: LoopThread) -> Iterator[Servers]:
    s = Servers(pb, loop)
    yield s
    s.close()


# ---------------------------------------------------------------- clients


def json_lines(out: str) -> Results:
    """Per-case results of a runner that prints {"case", "ok", "error"} lines."""
    results: Results = {}
    for line in out.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            results[r["case"]] = None if r["ok"] else r.get("error", "failed")
    return results


def rust_lines(out: str) -> Results:
    """Per-case results of `courier-test-client`: `ok   NAME (..)` / `FAIL NAME: why`."""
    results: Results = {}
    for line in out.splitlines():
        if line.startswith("ok   "):
            results[line.split()[1]] = None
        elif line.startswith("FAIL "):
            name, _, why = line[5:].partition(": ")
            results[name] = why
    return results


def run_process(argv: list[str], parse: Callable[[str], Results]) -> Results:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=100, stdin=subprocess.DEVNULL)
    results = parse(r.stdout)
    if r.returncode not in (0, 1) or (r.returncode == 1 and all(v is None for v in results.values())):
        results["(runner)"] = f"exit {r.returncode}: {r.stdout[-2000:]}{r.stderr[-2000:]}"
    return results


def run_client(client: str, target: str, pb: types.SimpleNamespace, loop: LoopThread) -> Results:
    c: Client
    if client == "courier-py-sync":
        c = CourierSync(target, pb, service(pb.msgs))
    elif client == "courier-py-aio":
        c = CourierAio(target, pb, service(pb.msgs), loop)
    elif client == "grpcio":
        c = Grpcio(target, pb)
    elif client == "courier-rust":
        # --courier-server: the app error must arrive as one (every server here sends it).
        return run_process([str(peer_binary("courier-test-client")), "--target", target, "--case", "all",
                            "--courier-server"], rust_lines)
    elif client in ("courier-go", "grpc-go"):
        return run_process([str(go_peer()), "client" if client == "courier-go" else "grpc-client", "--target", target],
                           json_lines)
    elif client == "grpc-java":
        return run_process(["java", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-jar", str(java_peer()), "client",
                            "--target", target], json_lines)
    else:
        raise AssertionError(client)
    return run_cases(c, pb)


@pytest.mark.parametrize("client,server", CELLS, ids=[f"{c}-to-{s}" for c, s in CELLS])
def test_cell(client: str, server: str, servers: Servers, pb: types.SimpleNamespace, loop: LoopThread) -> None:
    results = run_client(client, servers.target(server), pb, loop)
    missing = [c for c in CASES if c not in results]
    failed = {c: why for c, why in results.items() if why is not None}
    report = "\n".join(f"  {c}: {why}" for c, why in failed.items())
    assert not missing and not failed, (
        f"{client} -> {server}: {len(failed)} failed {sorted(failed)}, missing {missing}\n{report}")
