"""The Courier Rust client (`courier-test-client`) against a stock grpcio server."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import RunClient

pytestmark = pytest.mark.timeout(60)

# The cases of `courier-test-client --list` (checked below).
CASES = [
    "unary",
    "server_streaming",
    "client_streaming",
    "bidi_streaming",
    "deadline_exceeded",
    "deadline_propagated",
    "status_codes",
    "app_error",
    "metadata",
    "large_message",
    "oversize_request",
]


def test_case_list_matches_the_client(client_bin: Path) -> None:
    import subprocess

    out = subprocess.run([str(client_bin), "--list"], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.split() == CASES


@pytest.mark.parametrize("case", CASES)
def test_courier_client_case(run_client: RunClient, grpcio_server: str, case: str) -> None:
    # No --courier-server: a stock server need not send `courier-app-error` (this
    # one does, and the client then checks it).
    r = run_client(grpcio_server, case)
    assert r.returncode == 0, f"courier-test-client --case {case} failed:\n{r.stdout}{r.stderr}"
    assert r.stdout.startswith(f"ok   {case} ")


def test_demo_against_grpcio(run_client: RunClient, grpcio_server: str) -> None:
    r = run_client(grpcio_server, "demo")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "DEADLINE_EXCEEDED" in r.stdout and "courier.test.TestError:2" in r.stdout
