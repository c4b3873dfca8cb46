"""Courier Rust client to Courier Rust server across processes, and the server
binary's process contract (PORT line, clean exit on SIGTERM / SIGINT / stdin EOF)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING, Callable, Union

import signal
import time

import pytest

if TYPE_CHECKING:
    from conftest import PeerServer, RunClient

pytestmark = pytest.mark.timeout(60)


def test_all_cases_courier_to_courier(run_client: RunClient, courier_server: PeerServer) -> None:
    r = run_client(courier_server.target, "all", "--courier-server")
    assert r.returncode == 0, f"courier-test-client --case all failed:\n{r.stdout}{r.stderr}"
    assert "11 passed, 0 failed" in r.stdout, r.stdout


def test_failure_is_reported_with_expected_and_got(run_client: RunClient, spawn_server: Callable[..., PeerServer]) -> None:
    """A client case against a server that is gone fails with a precise message."""
    s = spawn_server()
    target = s.target
    assert s.stop("stdin") == 0
    r = run_client(target, "unary")
    assert r.returncode == 1
    assert "FAIL unary: UnaryUnary: expected success, got status UNAVAILABLE" in r.stdout, r.stdout


@pytest.mark.parametrize("how", ["stdin", signal.SIGTERM, signal.SIGINT], ids=["stdin-eof", "sigterm", "sigint"])
def test_server_exits_cleanly(run_client: RunClient, spawn_server: Callable[..., PeerServer], how: Union[str, signal.Signals]) -> None:
    s = spawn_server("--workers", "1")
    assert run_client(s.target, "unary").returncode == 0
    t0 = time.monotonic()
    assert s.stop(how) == 0
    assert time.monotonic() - t0 < 3, "graceful shutdown has a 1 s grace"


def test_shutdown_lets_a_call_in_flight_finish(pb: SimpleNamespace, spawn_server: Callable[..., PeerServer]) -> None:
    import grpc

    s = spawn_server("--workers", "1")
    with grpc.insecure_channel(s.target) as ch:
        stub = pb.grpc.TestStub(ch)
        fut = stub.UnaryUnary.future(pb.msgs.TestRequest(s="late", sleep_ms=300), timeout=10)
        time.sleep(0.1)
        s.proc.send_signal(signal.SIGTERM)
        assert fut.result().s == "late"
        assert s.proc.wait(5) == 0


def test_sigterm_right_after_the_port_line_is_a_clean_exit(spawn_server: Callable[..., PeerServer]) -> None:
    """Signal handlers are installed before `PORT <n>` is printed."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        s = spawn_server()
        assert s.stop(sig) == 0
