"""Shared fixtures of the cross-language interop tests.

Nothing is built here: the Rust peer binaries (`cargo build -p courier-testpeer`,
done by `make test-py`) are found under $CARGO_TARGET_DIR/debug (default
~/.cache/courier/target). The grpcio code for test.proto is generated with
`python -m grpc_tools.protoc` into a pytest tmp dir once per session (per xdist
worker); nothing generated is checked in.

Every fixture binds its own 127.0.0.1:0 port, so xdist workers never collide.
"""

from __future__ import annotations

import importlib
import os
import selectors
import signal
import subprocess
import sys
import time
import types
import uuid
from concurrent import futures
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

import grpc
import pytest

REPO = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO / "tests" / "protos" / "courier" / "test"

TEST_ERROR_ENUM = "courier.test.TestError"
APP_ERROR_TRAILER = "courier-app-error"
ECHO_HEADER = "x-echo-header"
ECHO_TRAILER = "x-echo-trailer"
CODES = {c.value[0]: c for c in grpc.StatusCode}


def target_dir() -> Path:
    d = os.environ.get("CARGO_TARGET_DIR") or str(Path.home() / ".cache" / "courier" / "target")
    return Path(d).expanduser().resolve()


def peer_binary(name: str) -> Path:
    p = target_dir() / "debug" / name
    if not p.is_file():
        pytest.fail(f"{p} not found: build it first with `cargo build -p courier-testpeer` (make test-py does)")
    return p


@pytest.fixture(scope="session")
def server_bin() -> Path:
    return peer_binary("courier-test-server")


@pytest.fixture(scope="session")
def client_bin() -> Path:
    return peer_binary("courier-test-client")


@pytest.fixture(scope="session")
def pb(tmp_path_factory: pytest.TempPathFactory) -> types.SimpleNamespace:
    """test_pb2 / test_pb2_grpc generated for this session: `pb.msgs`, `pb.grpc`."""
    out = tmp_path_factory.mktemp("gen")
    r = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}", f"--python_out={out}",
         f"--grpc_python_out={out}", "test.proto"],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 0, f"protoc failed: {r.stderr}"
    sys.path.insert(0, str(out))
    try:
        msgs = importlib.import_module("test_pb2")
        stubs = importlib.import_module("test_pb2_grpc")
    finally:
        sys.path.remove(str(out))
    return types.SimpleNamespace(msgs=msgs, grpc=stubs)


class PeerServer:
    """A `courier-test-server` subprocess, stopped (and checked) at teardown."""

    def __init__(self, binary: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [str(binary), "--listen", "127.0.0.1:0", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.port = self._read_port(timeout=15)
        self.target = f"127.0.0.1:{self.port}"

    def _read_port(self, timeout: float) -> int:
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                self.kill()
                raise RuntimeError(f"courier-test-server printed no PORT line within {timeout} s")
            chunk = os.read(self.proc.stdout.fileno(), 1)
            if not chunk:
                self.kill()
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"courier-test-server exited before listening: {err}")
            line += chunk
        sel.close()
        text = line.decode().strip()
        assert text.startswith("PORT "), f"expected 'PORT <n>', got {text!r}"
        return int(text.split()[1])

    def stop(self, how: Union[str, signal.Signals] = "stdin", timeout: float = 5.0) -> int:
        """Stops the server by closing stdin (or a signal); returns its exit code."""
        if self.proc.poll() is None:
            if how == "stdin":
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            else:
                assert isinstance(how, signal.Signals)
                self.proc.send_signal(how)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def close_pipes(self) -> None:
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None and not f.closed:
                f.close()


@pytest.fixture(scope="session")
def courier_server(server_bin: Path) -> Iterator[PeerServer]:
    """One Courier Rust server per xdist worker; must exit 0 on stdin EOF."""
    s = PeerServer(server_bin, "--workers", "2")
    try:
        yield s
    finally:
        try:
            rc = s.stop("stdin")
        finally:
            s.kill()
            s.close_pipes()
        assert rc == 0, f"courier-test-server exited with {rc}"


@pytest.fixture
def spawn_server(server_bin: Path) -> Iterator[Callable[..., PeerServer]]:
    """Starts extra servers for a test; each is killed at teardown."""
    started: list[PeerServer] = []

    def start(*args: str) -> PeerServer:
        s = PeerServer(server_bin, *args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.kill()
        s.close_pipes()


# ---------------------------------------------------------------- grpcio servicer


class _CallState:
    def __init__(self) -> None:
        self.headers_sent = False
        self.trailers: list[tuple[str, str]] = []


# (code, message, app error value or None)
Failure = tuple[grpc.StatusCode, str, Optional[int]]


def _apply(req: Any, context: grpc.ServicerContext, state: _CallState) -> tuple[str, Optional[Failure]]:
    """Steps 1-4 of the test service's semantics (see tests/peer/src/service.rs).

    Returns (metadata_value, failure); failure is None or (code, message, app_error).
    """
    value = ""
    if req.echo_header:
        md = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        v = md.get(req.echo_header.lower())
        if v is not None:
            value = v
            if not state.headers_sent:
                context.send_initial_metadata(((ECHO_HEADER, v),))
                state.headers_sent = True
            state.trailers.append((ECHO_TRAILER, v))
            context.set_trailing_metadata(tuple(state.trailers))
    if req.sleep_ms > 0:
        end = time.monotonic() + req.sleep_ms / 1000
        while time.monotonic() < end and context.is_active():
            time.sleep(min(0.01, max(0.0, end - time.monotonic())))
    if req.app_error:
        msg = req.fail_message or f"app error {req.app_error}"
        return value, (grpc.StatusCode.FAILED_PRECONDITION, msg, req.app_error)
    if req.fail_code:
        return value, (CODES.get(req.fail_code, grpc.StatusCode.UNKNOWN), req.fail_message, None)
    return value, None


def _fail(context: grpc.ServicerContext, state: _CallState, failure: Failure) -> None:
    code, msg, app = failure
    if app is not None:
        state.trailers.append((APP_ERROR_TRAILER, f"{TEST_ERROR_ENUM}:{app}"))
        context.set_trailing_metadata(tuple(state.trailers))
    context.abort(code, msg)


def _request_id(context: grpc.ServicerContext) -> str:
    rid = dict(context.invocation_metadata()).get("x-request-id")
    return rid if isinstance(rid, str) and rid else uuid.uuid4().hex


def _deadline_ms(context: grpc.ServicerContext, report: bool) -> int:
    if not report:
        return 0
    left = context.time_remaining()
    return -1 if left is None else int(left * 1000)


def make_servicer(pb: types.SimpleNamespace) -> Any:
    """A stock grpcio implementation of courier.test.Test, same semantics as the Rust one."""
    Resp = pb.msgs.TestResponse

    def response(req: Any, context: grpc.ServicerContext, value: str, index: int) -> Any:
        return Resp(s=req.s, payload=req.payload, index=index, metadata_value=value,
                    deadline_ms=_deadline_ms(context, req.report_deadline), request_id=_request_id(context))

    class Servicer(pb.grpc.TestServicer):  # type: ignore[name-defined,misc]
        def UnaryUnary(self, req: Any, context: grpc.ServicerContext) -> Any:
            st = _CallState()
            value, failure = _apply(req, context, st)
            if failure:
                _fail(context, st, failure)
            return response(req, context, value, 0)

        def UnaryStream(self, req: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            st = _CallState()
            value, failure = _apply(req, context, st)
            for i in range(max(0, req.count)):
                yield response(req, context, value, i)
            if failure:
                _fail(context, st, failure)

        def StreamUnary(self, reqs: Iterator[Any], context: grpc.ServicerContext) -> Any:
            st = _CallState()
            out = Resp(request_id=_request_id(context))
            for req in reqs:
                value, failure = _apply(req, context, st)
                if failure:
                    _fail(context, st, failure)
                out.s += req.s
                out.payload += req.payload
                if req.echo_header:
                    out.metadata_value = value
                if req.report_deadline:
                    out.deadline_ms = _deadline_ms(context, True)
            return out

        def StreamStream(self, reqs: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            st = _CallState()
            for i, req in enumerate(reqs):
                value, failure = _apply(req, context, st)
                if failure:
                    _fail(context, st, failure)
                yield response(req, context, value, i)

    return Servicer()


@pytest.fixture(scope="module")
def grpcio_server(pb: types.SimpleNamespace) -> Iterator[str]:
    """A stock grpcio server serving Test in-process; yields its target."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    pb.grpc.add_TestServicer_to_server(make_servicer(pb), server)
    port = server.add_insecure_port("127.0.0.1:0")
    assert port, "grpcio could not bind 127.0.0.1:0"
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=0.5).wait(5)


RunClient = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def run_client(client_bin: Path) -> RunClient:
    """Runs `courier-test-client --target T --case C [extra...]`; the process is
    killed by subprocess.run if it outlives `timeout`."""

    def run(target: str, case: str, *extra: str, timeout: float = 45) -> "subprocess.CompletedProcess[str]":
        return subprocess.run(
            [str(client_bin), "--target", target, "--case", case, *extra],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )

    return run
