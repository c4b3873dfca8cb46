"""Interop with stock grpcio, both ways, sync and asyncio."""

from __future__ import annotations

import asyncio
import threading
from concurrent import futures
from typing import Any, AsyncIterator, Iterator, Optional, Tuple

import grpc
import grpc.aio
import pytest

import courier
import courier.aio
from courier import StatusCode
from testservice import AsyncTest, SyncTest, handlers, make_service, start_sync_server


def grpcio_calls(pb: Any, pb_grpc: Any, port: int) -> None:
    """Every kind, status, deadline and metadata from a stock grpcio client."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = pb_grpc.TestStub(ch)
        assert stub.UnaryUnary(pb.TestRequest(s="a"), timeout=5).s == "a"
        assert [r.index for r in stub.UnaryStream(pb.TestRequest(count=3), timeout=5)] == [0, 1, 2]
        assert stub.StreamUnary(iter([pb.TestRequest(s="x"), pb.TestRequest(s="y")]), timeout=5).s == "xy"
        assert [r.s for r in stub.StreamStream(iter([pb.TestRequest(s="p"), pb.TestRequest(s="q")]), timeout=5)] == ["p", "q"]
        with pytest.raises(grpc.RpcError) as e:
            stub.UnaryUnary(pb.TestRequest(fail_code=7, fail_message="denied: 100%"), timeout=5)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and e.value.details() == "denied: 100%"
        with pytest.raises(grpc.RpcError) as e:
            stub.UnaryUnary(pb.TestRequest(app_error=2), timeout=5)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        err: Any = e.value  # a grpc.Call as well as an RpcError
        trailing = list(err.trailing_metadata())
        assert ("courier-app-error", "courier.test.TestError:2") in trailing
        with pytest.raises(grpc.RpcError) as e:
            stub.UnaryUnary(pb.TestRequest(sleep_ms=2000), timeout=0.2)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        r = stub.UnaryUnary(pb.TestRequest(report_deadline=True), timeout=3)
        # grpc-core rounds the timeout it sends up to a coarser unit.
        assert 2000 <= r.deadline_ms <= 3100
        r, call = stub.UnaryUnary.with_call(pb.TestRequest(echo_header="x-m"), metadata=[("x-m", "v")], timeout=5)
        assert r.metadata_value == "v"
        assert ("x-echo-header", "v") in call.initial_metadata()
        assert ("x-echo-trailer", "v") in call.trailing_metadata()


async def grpcio_aio_calls(pb: Any, pb_grpc: Any, port: int) -> None:
    """Every kind, a status and a deadline from a stock grpc.aio client."""

    async def reqs(*s: str) -> AsyncIterator[Any]:
        for x in s:
            yield pb.TestRequest(s=x)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = pb_grpc.TestStub(ch)
        assert (await stub.UnaryUnary(pb.TestRequest(s="aio"), timeout=5)).s == "aio"
        assert [r.index async for r in stub.UnaryStream(pb.TestRequest(count=3), timeout=5)] == [0, 1, 2]
        assert (await stub.StreamUnary(reqs("x", "y"), timeout=5)).s == "xy"
        assert [r.s async for r in stub.StreamStream(reqs("p", "q"), timeout=5)] == ["p", "q"]
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.UnaryUnary(pb.TestRequest(fail_code=5, fail_message="no such"), timeout=5)
        assert (e.value.code(), e.value.details()) == (grpc.StatusCode.NOT_FOUND, "no such")
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.UnaryUnary(pb.TestRequest(sleep_ms=2000), timeout=0.2)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        r = await stub.UnaryUnary(pb.TestRequest(report_deadline=True), timeout=3)
        assert 2000 <= r.deadline_ms <= 3100


def test_grpcio_client_to_courier_sync_server(pb: Any, pb_grpc: Any) -> None:
    server, port, _ = start_sync_server(pb)
    try:
        grpcio_calls(pb, pb_grpc, port)
        asyncio.run(grpcio_aio_calls(pb, pb_grpc, port))
    finally:
        server.stop(1.0)


def test_reply_headers_of_a_failed_call_reach_grpcio_as_initial_metadata(pb: Any, pb_grpc: Any) -> None:
    """A handler that sets a reply header and then fails: grpcio sees the header
    as initial metadata (not folded into trailing metadata), like from a stock
    server; the interop spec's echo of x-grpc-test-echo-initial relies on it."""

    def unary(ctx: courier.Context, req: Any) -> Any:
        ctx.add_reply_header("x-initial", "i")
        ctx.add_reply_trailer("x-trailing-bin", b"\x0a\x0b")
        ctx.abort(StatusCode.NOT_FOUND, "after metadata")

    server = courier.Server(workers=1, max_concurrency=2)
    server.add_handlers(make_service(pb), {**handlers(SyncTest(pb)), "UnaryUnary": unary})
    port = server.listen("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            with pytest.raises(grpc.RpcError) as e:
                pb_grpc.TestStub(ch).UnaryUnary(pb.TestRequest(), timeout=5)
        err: Any = e.value
        assert (err.code(), err.details()) == (grpc.StatusCode.NOT_FOUND, "after metadata")
        assert ("x-initial", "i") in list(err.initial_metadata())
        trailing = list(err.trailing_metadata())
        assert ("x-trailing-bin", b"\x0a\x0b") in trailing and ("x-initial", "i") not in trailing
    finally:
        server.stop(1.0)


def test_grpcio_client_to_courier_aio_server(pb: Any, pb_grpc: Any) -> None:
    async def main() -> None:
        server = courier.aio.Server(workers=1)
        server.add_handlers(make_service(pb), handlers(AsyncTest(pb)))
        port = server.listen("127.0.0.1:0")
        await server.start()
        try:
            # The blocking grpcio client runs on a thread; the loop serves.
            await asyncio.get_running_loop().run_in_executor(None, grpcio_calls, pb, pb_grpc, port)
            await grpcio_aio_calls(pb, pb_grpc, port)
        finally:
            await server.stop(1.0)

    asyncio.run(main())


class GrpcioTest:
    """courier.test.Test on a stock grpcio server."""

    def __init__(self, pb: Any) -> None:
        self.pb = pb

    def _failure(self, req: Any, context: Any) -> Optional[Tuple[grpc.StatusCode, str]]:
        """The status `req` asks for (trailers set), or None."""
        if req.fail_code:
            return next(c for c in grpc.StatusCode if c.value[0] == req.fail_code), req.fail_message
        if req.app_error:
            context.set_trailing_metadata([("courier-app-error", f"courier.test.TestError:{req.app_error}")])
            return grpc.StatusCode.FAILED_PRECONDITION, "app error as asked"
        return None

    def _check(self, req: Any, context: Any) -> None:
        failure = self._failure(req, context)
        if failure is not None:
            context.abort(*failure)

    def _resp(self, req: Any, context: Any, index: int = 0) -> Any:
        resp = self.pb.TestResponse(s=req.s, payload=req.payload, index=index)
        md = dict(context.invocation_metadata())
        resp.request_id = md.get("x-request-id", "")
        if req.echo_header:
            resp.metadata_value = md.get(req.echo_header, "")
            context.set_trailing_metadata([("x-echo-trailer", resp.metadata_value)])
        if req.report_deadline:
            left = context.time_remaining()
            resp.deadline_ms = -1 if left is None else int(left * 1000)
        return resp

    def UnaryUnary(self, req: Any, context: Any) -> Any:
        self._check(req, context)
        return self._resp(req, context)

    def UnaryStream(self, req: Any, context: Any) -> Iterator[Any]:
        self._check(req, context)
        for i in range(req.count):
            yield self._resp(req, context, i)

    def StreamUnary(self, reqs: Any, context: Any) -> Any:
        rs = list(reqs)
        return self.pb.TestResponse(s="".join(r.s for r in rs))

    def StreamStream(self, reqs: Any, context: Any) -> Iterator[Any]:
        for i, r in enumerate(reqs):
            self._check(r, context)
            yield self._resp(r, context, i)


class AsyncGrpcioTest(GrpcioTest):
    """courier.test.Test on a stock grpc.aio server."""

    async def _acheck(self, req: Any, context: Any) -> None:
        failure = self._failure(req, context)
        if failure is not None:
            await context.abort(*failure)

    async def UnaryUnary(self, req: Any, context: Any) -> Any:
        await self._acheck(req, context)
        return self._resp(req, context)

    async def UnaryStream(self, req: Any, context: Any) -> AsyncIterator[Any]:  # type: ignore[override]
        await self._acheck(req, context)
        for i in range(req.count):
            yield self._resp(req, context, i)

    async def StreamUnary(self, reqs: Any, context: Any) -> Any:
        return self.pb.TestResponse(s="".join([r.s async for r in reqs]))

    async def StreamStream(self, reqs: Any, context: Any) -> AsyncIterator[Any]:  # type: ignore[override]
        i = 0
        async for r in reqs:
            await self._acheck(r, context)
            yield self._resp(r, context, i)
            i += 1


@pytest.fixture(params=["grpc", "grpc.aio"])
def grpcio_server(request: pytest.FixtureRequest, pb: Any, pb_grpc: Any) -> Iterator[int]:
    """A stock grpcio server of courier.test.Test: `grpc.server`, or
    `grpc.aio.server` on an event loop of its own thread."""
    if request.param == "grpc":
        server = grpc.server(futures.ThreadPoolExecutor(8))
        pb_grpc.add_TestServicer_to_server(GrpcioTest(pb), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        try:
            yield port
        finally:
            server.stop(0)
        return
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="grpc-aio-server", daemon=True)
    thread.start()

    async def start() -> Tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()
        pb_grpc.add_TestServicer_to_server(AsyncGrpcioTest(pb), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    aio_server, port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield port
    finally:
        asyncio.run_coroutine_threadsafe(aio_server.stop(0), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_courier_sync_client_to_grpcio_server(pb: Any, grpcio_server: int) -> None:
    ch = courier.Channel(f"127.0.0.1:{grpcio_server}")
    svc = make_service(pb)
    ctx = courier.Context.background()
    assert ch.unary(ctx, svc.method("UnaryUnary"), pb.TestRequest(s="a")).s == "a"
    assert [r.index for r in ch.server_streaming(ctx, svc.method("UnaryStream"), pb.TestRequest(count=3))] == [0, 1, 2]
    assert ch.client_streaming(ctx, svc.method("StreamUnary"), [pb.TestRequest(s="x"), pb.TestRequest(s="y")]).s == "xy"
    assert [r.s for r in ch.bidi_streaming(ctx, svc.method("StreamStream"), [pb.TestRequest(s="p")])] == ["p"]
    with pytest.raises(courier.RpcError) as e:
        ch.unary(ctx, svc.method("UnaryUnary"), pb.TestRequest(fail_code=9, fail_message="précondition"))
    assert (e.value.code, e.value.details) == (StatusCode.FAILED_PRECONDITION, "précondition")
    with pytest.raises(courier.RpcError) as e:
        ch.unary(ctx, svc.method("UnaryUnary"), pb.TestRequest(app_error=2))
    assert (e.value.code, e.value.app_error, e.value.app_error_enum) == (StatusCode.FAILED_PRECONDITION, 2, "courier.test.TestError")
    r = ch.unary(ctx.with_timeout(3), svc.method("UnaryUnary"), pb.TestRequest(report_deadline=True))
    assert 2000 <= r.deadline_ms <= 3000
    r, _, trailers = ch.unary_with_metadata(ctx, svc.method("UnaryUnary"), pb.TestRequest(echo_header="x-m"), metadata=[("x-m", "v")])
    assert r.metadata_value == "v" and ("x-echo-trailer", "v") in trailers
    assert r.request_id == ctx.request_id


def test_courier_aio_client_to_grpcio_server(pb: Any, grpcio_server: int) -> None:
    async def main() -> None:
        ch = courier.aio.Channel(f"127.0.0.1:{grpcio_server}")
        svc = make_service(pb)
        ctx = courier.Context.background()
        assert (await ch.unary(ctx, svc.method("UnaryUnary"), pb.TestRequest(s="a"))).s == "a"
        assert [r.index async for r in ch.server_streaming(ctx, svc.method("UnaryStream"), pb.TestRequest(count=2))] == [0, 1]
        assert (await ch.client_streaming(ctx, svc.method("StreamUnary"), [pb.TestRequest(s="x")])).s == "x"
        assert [r.s async for r in ch.bidi_streaming(ctx, svc.method("StreamStream"), [pb.TestRequest(s="p"), pb.TestRequest(s="q")])] == ["p", "q"]
        with pytest.raises(courier.RpcError) as e:
            await ch.unary(ctx, svc.method("UnaryUnary"), pb.TestRequest(fail_code=3, fail_message="bad"))
        assert e.value.code == StatusCode.INVALID_ARGUMENT

    asyncio.run(main())
