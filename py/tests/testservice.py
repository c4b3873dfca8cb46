"""courier.test.Test implemented in Python on Courier, sync and asyncio, with
the semantics documented in tests/protos/courier/test/test.proto."""

from __future__ import annotations

import asyncio
import pathlib
import subprocess
import sys
import threading
import time
from typing import Any, AsyncIterator, Iterator, Sequence, Tuple

import courier
import courier.aio
from courier import AppErrorEnum, Method, MethodKind, Service, StatusCode

# The Rust peer (tests/peer) sends every TestError value as FAILED_PRECONDITION; so does this one.
TEST_ERROR = AppErrorEnum("courier.test.TestError", {1: StatusCode.FAILED_PRECONDITION, 2: StatusCode.FAILED_PRECONDITION})


def make_service(pb: Any, name: str = "courier.test.Test", deadline: Any = 10.0) -> Service:
    def m(method: str, kind: MethodKind) -> Method[Any, Any]:
        return Method(name, method, kind, pb.TestRequest, pb.TestResponse, deadline, TEST_ERROR)

    return Service(
        name,
        (
            m("UnaryUnary", MethodKind.UNARY),
            m("UnaryStream", MethodKind.SERVER_STREAMING),
            m("StreamUnary", MethodKind.CLIENT_STREAMING),
            m("StreamStream", MethodKind.BIDI_STREAMING),
        ),
    )


class Impl:
    """Shared behaviour; records what handlers saw for the tests to check."""

    def __init__(self, pb: Any) -> None:
        self.pb = pb
        self.lock = threading.Lock()
        self.started = 0
        self.seen_cancelled: list[str] = []
        self.downstream: Any = None  # (channel, method) for two-hop tests

    def begin(self, ctx: courier.Context, req: Any) -> None:
        with self.lock:
            self.started += 1
        if req.fail_code:
            ctx.abort(req.fail_code, req.fail_message)
        if req.app_error:
            raise courier.AppError(req.app_error, "app error as asked")

    def note_cancelled(self, ctx: courier.Context, req: Any) -> None:
        """Records that the handler of `req` saw its ctx cancelled."""
        if ctx.cancelled:
            with self.lock:
                self.seen_cancelled.append(req.s)

    def respond(self, ctx: courier.Context, req: Any, index: int = 0) -> Any:
        resp = self.pb.TestResponse(s=req.s, payload=req.payload, index=index, request_id=ctx.request_id)
        if req.echo_header:
            for k, v in ctx.metadata:
                if k == req.echo_header:
                    resp.metadata_value = v if isinstance(v, str) else v.decode()
            ctx.add_reply_header("x-echo-header", resp.metadata_value)
            ctx.add_reply_trailer("x-echo-trailer", resp.metadata_value)
        if req.report_deadline:
            left = ctx.time_remaining()
            resp.deadline_ms = -1 if left is None else int(left * 1000)
        return resp


class NotAnException(BaseException):
    """Escapes a handler runner's `except Exception`."""


class SyncTest(Impl):
    def UnaryUnary(self, ctx: courier.Context, req: Any) -> Any:
        self.begin(ctx, req)
        if req.sleep_ms:
            end = time.monotonic() + req.sleep_ms / 1000
            while time.monotonic() < end:
                if ctx.cancelled:
                    with self.lock:
                        self.seen_cancelled.append(req.s)
                    break
                time.sleep(0.005)
        if req.s == "raise":
            raise ValueError("handler bug")
        if req.s == "raise-base":
            raise NotAnException("not an Exception")
        if req.s == "bad-return":
            return 42
        if req.s == "hop" and self.downstream is not None:
            ch, method = self.downstream
            down = ch.unary(ctx, method, self.pb.TestRequest(s="down", report_deadline=True))
            return self.pb.TestResponse(s="hop", deadline_ms=down.deadline_ms, request_id=down.request_id)
        return self.respond(ctx, req)

    def UnaryStream(self, ctx: courier.Context, req: Any) -> Iterator[Any]:
        self.begin(ctx, req)
        try:
            for i in range(req.count):
                if req.sleep_ms:
                    time.sleep(req.sleep_ms / 1000)
                if ctx.cancelled:
                    return
                yield self.respond(ctx, req, i)
        finally:
            # Left early, or closed by the server when a send failed.
            self.note_cancelled(ctx, req)

    def StreamUnary(self, ctx: courier.Context, reqs: Iterator[Any]) -> Any:
        s, payload = [], []
        for r in reqs:
            self.begin(ctx, r)
            s.append(r.s)
            payload.append(r.payload)
        return self.pb.TestResponse(s="".join(s), payload=b"".join(payload))

    def StreamStream(self, ctx: courier.Context, reqs: Iterator[Any]) -> Iterator[Any]:
        for i, r in enumerate(reqs):
            self.begin(ctx, r)
            yield self.respond(ctx, r, i)


class AsyncTest(Impl):
    async def UnaryUnary(self, ctx: courier.Context, req: Any) -> Any:
        self.begin(ctx, req)
        if req.sleep_ms:
            end = time.monotonic() + req.sleep_ms / 1000
            while time.monotonic() < end:
                if ctx.cancelled:
                    with self.lock:
                        self.seen_cancelled.append(req.s)
                    break
                await asyncio.sleep(0.005)
        if req.s == "raise":
            raise ValueError("handler bug")
        if req.s == "raise-base":
            raise NotAnException("not an Exception")
        if req.s == "bad-return":
            return 42
        if req.s == "hop" and self.downstream is not None:
            ch, method = self.downstream
            down = await ch.unary(ctx, method, self.pb.TestRequest(s="down", report_deadline=True))
            return self.pb.TestResponse(s="hop", deadline_ms=down.deadline_ms, request_id=down.request_id)
        return self.respond(ctx, req)

    async def UnaryStream(self, ctx: courier.Context, req: Any) -> AsyncIterator[Any]:
        self.begin(ctx, req)
        try:
            for i in range(req.count):
                if req.sleep_ms:
                    await asyncio.sleep(req.sleep_ms / 1000)
                if ctx.cancelled:
                    return
                yield self.respond(ctx, req, i)
        finally:
            self.note_cancelled(ctx, req)

    async def StreamUnary(self, ctx: courier.Context, reqs: AsyncIterator[Any]) -> Any:
        s, payload = [], []
        async for r in reqs:
            self.begin(ctx, r)
            s.append(r.s)
            payload.append(r.payload)
        return self.pb.TestResponse(s="".join(s), payload=b"".join(payload))

    async def StreamStream(self, ctx: courier.Context, reqs: AsyncIterator[Any]) -> AsyncIterator[Any]:
        i = 0
        async for r in reqs:
            self.begin(ctx, r)
            yield self.respond(ctx, r, i)
            i += 1


def handlers(impl: Any) -> dict[str, Any]:
    return {n: getattr(impl, n) for n in ("UnaryUnary", "UnaryStream", "StreamUnary", "StreamStream")}


def start_sync_server(pb: Any, *, services: Sequence[Service] = (), **kw: Any) -> Tuple[courier.Server, int, SyncTest]:
    """courier.test.Test (and `services`, served by the same Impl) on a started server."""
    impl = SyncTest(pb)
    server = courier.Server(workers=kw.pop("workers", 1), **kw)
    for service in (make_service(pb), *services):
        server.add_handlers(service, handlers(impl))
    port = server.listen("127.0.0.1:0")
    server.start()
    return server, port, impl


async def start_aio_server(pb: Any, *, services: Sequence[Service] = (), **kw: Any) -> Tuple[courier.aio.Server, int, AsyncTest]:
    impl = AsyncTest(pb)
    server = courier.aio.Server(workers=kw.pop("workers", 1), **kw)
    for service in (make_service(pb), *services):
        server.add_handlers(service, handlers(impl))
    port = server.listen("127.0.0.1:0")
    await server.start()
    return server, port, impl


def spawn_server_process(pb: Any, flavour: str, mode: str, *extra: str) -> Tuple["subprocess.Popen[str]", int, str]:
    """`serve.py` in a process of its own (see there): (process, port, debug address).
    Its stdin is a pipe: closing it stops a `stdin` mode server."""
    script = pathlib.Path(__file__).with_name("serve.py")
    gen = pathlib.Path(pb.__file__).parent
    proc = subprocess.Popen(
        [sys.executable, str(script), str(gen), flavour, mode, *extra], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise AssertionError(f"serve.py {flavour} {mode} exited with {proc.wait()} before serving")
    port, debug_addr = line.split()
    return proc, int(port), debug_addr
