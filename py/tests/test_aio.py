"""The asyncio server and client over real loopback sockets."""

from __future__ import annotations

import asyncio
import logging
import pathlib
import time
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest

import courier
import courier.aio
from courier import StatusCode
from test_sync import check_exception_logged
from testservice import AsyncTest, handlers, make_service, start_aio_server, start_sync_server


def run(pb: Any, body: Callable[[courier.aio.Channel, Any, AsyncTest, courier.aio.Server], Awaitable[None]]) -> None:
    async def main() -> None:
        server, port, impl = await start_aio_server(pb)
        try:
            async with courier.aio.Channel(f"127.0.0.1:{port}") as ch:
                await body(ch, make_service(pb), impl, server)
        finally:
            await server.stop(1.0)

    asyncio.run(main())


def test_all_four_kinds(pb: Any) -> None:
    async def body(ch: courier.aio.Channel, svc: Any, impl: AsyncTest, server: Any) -> None:
        ctx = courier.Context.background()
        r = await ch.unary(ctx, svc.method("UnaryUnary"), pb.TestRequest(s="hi"))
        assert r.s == "hi"
        got = [x.index async for x in ch.server_streaming(ctx, svc.method("UnaryStream"), pb.TestRequest(count=3))]
        assert got == [0, 1, 2]

        async def reqs() -> AsyncIterator[Any]:
            for c in "abc":
                yield pb.TestRequest(s=c)

        r = await ch.client_streaming(ctx, svc.method("StreamUnary"), reqs())
        assert r.s == "abc"
        got2 = [x.s async for x in ch.bidi_streaming(ctx, svc.method("StreamStream"), [pb.TestRequest(s=c) for c in "xyz"])]
        assert got2 == ["x", "y", "z"]
        # A handler that suspends (sleeps) runs as a task; others go on meanwhile.
        t0 = time.monotonic()
        slow = asyncio.ensure_future(ch.unary(ctx, svc.method("UnaryUnary"), pb.TestRequest(s="slow", sleep_ms=300)))
        fast = await asyncio.gather(*(ch.unary(ctx, svc.method("UnaryUnary"), pb.TestRequest(s=str(i))) for i in range(50)))
        assert [f.s for f in fast] == [str(i) for i in range(50)]
        assert time.monotonic() - t0 < 0.3
        assert (await slow).s == "slow"

    run(pb, body)


def test_errors_deadlines_and_metadata(pb: Any) -> None:
    async def body(ch: courier.aio.Channel, svc: Any, impl: AsyncTest, server: Any) -> None:
        ctx = courier.Context.background()
        m = svc.method("UnaryUnary")
        with pytest.raises(courier.RpcError) as e:
            await ch.unary(ctx, m, pb.TestRequest(fail_code=5, fail_message="nope %"))
        assert (e.value.code, e.value.details) == (StatusCode.NOT_FOUND, "nope %")
        with pytest.raises(courier.RpcError) as e:
            await ch.unary(ctx, m, pb.TestRequest(app_error=1))
        assert (e.value.code, e.value.app_error) == (StatusCode.FAILED_PRECONDITION, 1)
        with pytest.raises(courier.RpcError) as e:
            await ch.unary(ctx, m, pb.TestRequest(s="raise"))
        assert e.value.code == StatusCode.INTERNAL
        assert server.stats.exceptions == 1
        with pytest.raises(courier.RpcError) as e:
            await ch.unary(ctx.with_timeout(0.1), m, pb.TestRequest(s="slow", sleep_ms=2000))
        assert e.value.code == StatusCode.DEADLINE_EXCEEDED
        for _ in range(100):
            if "slow" in impl.seen_cancelled:
                break
            await asyncio.sleep(0.01)
        assert "slow" in impl.seen_cancelled
        r, headers, trailers = await ch.unary_with_metadata(ctx, m, pb.TestRequest(echo_header="x-k"), metadata=[("x-k", "v")])
        assert r.metadata_value == "v" and ("x-echo-header", "v") in headers and ("x-echo-trailer", "v") in trailers
        # Streaming errors.
        it = ch.bidi_streaming(ctx, svc.method("StreamStream"), [pb.TestRequest(s="a"), pb.TestRequest(fail_code=10)])
        assert (await it.__anext__()).s == "a"
        with pytest.raises(courier.RpcError) as e:
            await it.__anext__()
        assert e.value.code == StatusCode.ABORTED

    run(pb, body)


def test_cancelling_an_awaited_call_cancels_the_server_handler(pb: Any) -> None:
    async def body(ch: courier.aio.Channel, svc: Any, impl: AsyncTest, server: Any) -> None:
        task = asyncio.ensure_future(ch.unary(courier.Context.background(), svc.method("UnaryUnary"), pb.TestRequest(s="c", sleep_ms=3000)))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(200):
            if "c" in impl.seen_cancelled:
                break
            await asyncio.sleep(0.01)
        assert "c" in impl.seen_cancelled

    run(pb, body)


def test_two_hops_sync_to_async(pb: Any) -> None:
    """An asyncio server calling a sync Courier server with its ctx."""

    async def main() -> None:
        server_b, port_b, _ = start_sync_server(pb)
        server_a, port_a, impl_a = await start_aio_server(pb)
        try:
            svc = make_service(pb)
            impl_a.downstream = (courier.aio.Channel(f"127.0.0.1:{port_b}"), svc.method("UnaryUnary"))
            ch = courier.aio.Channel(f"127.0.0.1:{port_a}")
            ctx = courier.Context.background().with_timeout(2.0)
            r = await ch.unary(ctx, svc.method("UnaryUnary"), pb.TestRequest(s="hop"))
            assert 1000 <= r.deadline_ms < 2000 and r.request_id == ctx.request_id
        finally:
            await server_a.stop(1.0)
            server_b.stop(1.0)

    asyncio.run(main())


def test_many_concurrent_calls(pb: Any) -> None:
    async def body(ch: courier.aio.Channel, svc: Any, impl: AsyncTest, server: Any) -> None:
        m = svc.method("UnaryUnary")
        rs = await asyncio.gather(*(ch.unary(courier.Context.background(), m, pb.TestRequest(s=str(i))) for i in range(2000)))
        assert [r.s for r in rs] == [str(i) for i in range(2000)]

    run(pb, body)


def test_stop_drains(pb: Any) -> None:
    async def main() -> None:
        server, port, _ = await start_aio_server(pb)
        ch = courier.aio.Channel(f"127.0.0.1:{port}")
        m = make_service(pb).method("UnaryUnary")
        calls = [asyncio.ensure_future(ch.unary(courier.Context.background(), m, pb.TestRequest(s="d", sleep_ms=200))) for _ in range(5)]
        await asyncio.sleep(0.05)
        await server.stop(5.0)
        assert [(await c).s for c in calls] == ["d"] * 5

    asyncio.run(main())


def test_handler_calling_its_own_server_does_not_deadlock(pb: Any) -> None:
    """Many self-calling calls at once on a one-I/O-thread server: each handler
    awaits a call to another method (another service) of the same server."""

    async def main() -> None:
        other = make_service(pb, name="courier.test.Other")
        server, port, impl = await start_aio_server(pb, services=[other])
        try:
            ch = courier.aio.Channel(f"127.0.0.1:{port}")
            impl.downstream = (ch, other.method("UnaryUnary"))
            m = make_service(pb).method("UnaryUnary")
            rs = await asyncio.gather(*(ch.unary(courier.Context.background().with_timeout(5), m, pb.TestRequest(s="hop")) for _ in range(32)))
            assert [r.s for r in rs] == ["hop"] * 32
        finally:
            await server.stop(1.0)

    asyncio.run(main())


def test_handler_exception_is_logged_with_traceback_and_counted(pb: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="courier.server")

    async def body(ch: courier.aio.Channel, svc: Any, impl: AsyncTest, server: Any) -> None:
        m = svc.method("UnaryUnary")
        assert server.stats.exceptions == 0
        with pytest.raises(courier.RpcError) as e:
            await ch.unary(courier.Context.background().with_timeout(5), m, pb.TestRequest(s="raise"))
        assert e.value.code == StatusCode.INTERNAL
        assert server.stats.exceptions == 1
        check_exception_logged(caplog, "/courier.test.Test/UnaryUnary")

    run(pb, body)


def test_method_default_deadline(pb: Any) -> None:
    """A method's default deadline (0.5 s here) bounds every call; a caller's earlier one wins."""

    async def main() -> None:
        impl = AsyncTest(pb)
        server = courier.aio.Server(workers=1)
        server.add_handlers(make_service(pb, deadline=0.5), handlers(impl))
        port = server.listen("127.0.0.1:0")
        await server.start()
        try:
            ch = courier.aio.Channel(f"127.0.0.1:{port}")
            m = make_service(pb, deadline=0.5).method("UnaryUnary")
            bg = courier.Context.background()
            for ctx, low, high in ((bg, 300, 500), (bg.with_timeout(5), 300, 500), (bg.with_timeout(0.2), 50, 200)):
                r = await ch.unary(ctx, m, pb.TestRequest(report_deadline=True))
                assert low <= r.deadline_ms <= high, (r.deadline_ms, low, high)
            t0 = time.monotonic()
            with pytest.raises(courier.RpcError) as e:
                await ch.unary(bg, m, pb.TestRequest(s="slow", sleep_ms=3000))
            assert e.value.code == StatusCode.DEADLINE_EXCEEDED
            assert 0.4 < time.monotonic() - t0 < 1.5
        finally:
            await server.stop(1.0)

    asyncio.run(main())


def test_expired_while_queued_never_runs(pb: Any, tmp_path: pathlib.Path) -> None:
    limits = tmp_path / "limits.yaml"
    limits.write_text("limits:\n  courier.test.Test:\n    UnaryUnary:\n      max_concurrency: 1\n      queue_timeout_ms: 5000\n")

    async def main() -> None:
        server, port, impl = await start_aio_server(pb, limits=limits)
        try:
            ch = courier.aio.Channel(f"127.0.0.1:{port}")
            m = make_service(pb).method("UnaryUnary")
            busy = asyncio.ensure_future(ch.unary(courier.Context.background(), m, pb.TestRequest(s="busy", sleep_ms=500)))
            await asyncio.sleep(0.1)
            before = impl.started
            with pytest.raises(courier.RpcError) as e:
                await ch.unary(courier.Context.background().with_timeout(0.1), m, pb.TestRequest(s="late"))
            assert e.value.code == StatusCode.DEADLINE_EXCEEDED
            assert (await busy).s == "busy"
            await asyncio.sleep(0.1)
            assert impl.started == before, "the expired call's handler must never run"
        finally:
            await server.stop(1.0)

    asyncio.run(main())


def test_ctx_method_and_closed_channel(pb: Any) -> None:
    seen: list[Any] = []

    async def unary(ctx: courier.Context, req: Any) -> Any:
        seen.append(ctx.method)
        return pb.TestResponse(s=req.s)

    async def reqs() -> AsyncIterator[Any]:
        yield pb.TestRequest()

    async def main() -> None:
        svc = make_service(pb)
        async with courier.aio.Server(workers=1) as server:
            server.add_handlers(svc, {**handlers(AsyncTest(pb)), "UnaryUnary": unary})
            port = server.listen("127.0.0.1:0")
            await server.start()
            async with courier.aio.Channel(f"127.0.0.1:{port}") as ch:
                m = svc.method("UnaryUnary")
                assert (await ch.unary(courier.Context.background().with_timeout(5), m, pb.TestRequest(s="m"))).s == "m"
                assert seen == ["/courier.test.Test/UnaryUnary"]
            bg = courier.Context.background()
            with pytest.raises(ValueError, match="the channel is closed"):
                await ch.unary(bg, m, pb.TestRequest())
            with pytest.raises(ValueError, match="the channel is closed"):
                ch.server_streaming(bg, svc.method("UnaryStream"), pb.TestRequest())
            with pytest.raises(ValueError, match="the channel is closed"):
                await ch.client_streaming(bg, svc.method("StreamUnary"), reqs())
            with pytest.raises(ValueError, match="the channel is closed"):
                ch.bidi_streaming(bg, svc.method("StreamStream"), reqs())

    asyncio.run(main())


def test_cancel_streaming_call_is_seen_by_handler(pb: Any) -> None:
    async def body(ch: courier.aio.Channel, svc: Any, impl: AsyncTest, server: Any) -> None:
        ctx = courier.Context.background().child()
        it = ch.server_streaming(ctx, svc.method("UnaryStream"), pb.TestRequest(s="s", count=1000, sleep_ms=10))
        assert (await it.__anext__()).index == 0
        assert impl.seen_cancelled == []
        ctx.cancel()
        with pytest.raises(courier.RpcError) as e:
            async for _ in it:
                pass
        assert e.value.code == StatusCode.CANCELLED
        for _ in range(200):
            if impl.seen_cancelled:
                break
            await asyncio.sleep(0.01)
        assert impl.seen_cancelled == ["s"]

    run(pb, body)
