"""Server lifecycle: SIGTERM / SIGINT drain a server process gracefully, the
context managers start and stop, and stop(grace) cancels what outlives the grace."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from typing_extensions import TypeVarTuple, Unpack

import pytest

import courier
import courier.aio
from courier import StatusCode
from obs_support import get_text, metric_samples, wait_for
from testservice import AsyncTest, Impl, SyncTest, handlers, make_service, spawn_server_process

GRACE = 3.0  # serve.py's grace
REFUSED = (StatusCode.UNAVAILABLE,)


def ctx(timeout: float) -> courier.Context:
    return courier.Context.background().with_timeout(timeout)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
@pytest.mark.parametrize("flavour", ["sync", "aio"])
def test_signal_drains_the_server_process(pb: Any, flavour: str, sig: signal.Signals) -> None:
    """`Server.wait()` / `await aio.Server.wait()`: the signal stops the server
    gracefully: the call in flight succeeds, new calls are refused, the
    process exits 0 within the grace."""
    proc, port, debug_addr = spawn_server_process(pb, flavour, "wait")
    try:
        ch = courier.Channel(f"127.0.0.1:{port}")
        m = make_service(pb).method("UnaryUnary")
        assert ch.unary(ctx(5), m, pb.TestRequest(s="warm")).s == "warm"
        with ThreadPoolExecutor(1) as pool:
            inflight = pool.submit(ch.unary, ctx(10), m, pb.TestRequest(s="inflight", sleep_ms=1000))
            wait_for(lambda: in_flight(debug_addr) or None, 5, "the call in flight at the server", every=0.01)
            t0 = time.monotonic()
            proc.send_signal(sig)
            time.sleep(0.1)
            assert not inflight.done(), "the server is draining the call"
            with pytest.raises(courier.RpcError) as e:
                ch.unary(ctx(2), m, pb.TestRequest(s="new"))
            assert e.value.code in REFUSED
            with pytest.raises(courier.RpcError) as e:
                courier.Channel(f"127.0.0.1:{port}").unary(ctx(2), m, pb.TestRequest(s="new"))
            assert e.value.code in REFUSED
            assert inflight.result(timeout=5).s == "inflight"
        assert proc.wait(timeout=GRACE) == 0
        assert time.monotonic() - t0 < GRACE
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def in_flight(debug_addr: str) -> float:
    text = get_text(debug_addr, "/metrics")
    return sum(v for _, v in metric_samples(text, "courier_server_in_flight", service="courier.test.Test", method="UnaryUnary"))


def wait_started(impl: Impl, n: int) -> None:
    wait_for(lambda: impl.started >= n or None, 5, f"{n} handlers started", every=0.01)


def test_sigterm_with_nothing_in_flight_exits_at_once(pb: Any) -> None:
    for flavour in ("sync", "aio"):
        proc, _, _ = spawn_server_process(pb, flavour, "wait")
        # serve.py prints its port just before calling wait(), which installs the handlers.
        time.sleep(0.3)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=GRACE) == 0
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        assert time.monotonic() - t0 < 1.5, flavour


def test_sync_server_context_manager_stops_on_exit(pb: Any) -> None:
    """`with courier.Server() as s`: the block starts it; leaving the block is
    `stop(1.0)`: a call in flight that ends within the grace succeeds; one
    that outlives it is cancelled (its handler sees `ctx.cancelled`) and its
    client gets UNAVAILABLE (the connection closes, as with grpcio servers);
    the port refuses new calls."""
    impl = SyncTest(pb)
    m = make_service(pb).method("UnaryUnary")
    with ThreadPoolExecutor(2) as pool:
        with courier.Server(workers=1, max_concurrency=2) as server:
            assert isinstance(server, courier.Server)
            server.add_handlers(make_service(pb), handlers(impl))
            port = server.listen("127.0.0.1:0")
            server.start()
            ch = courier.Channel(f"127.0.0.1:{port}")
            assert ch.unary(ctx(5), m, pb.TestRequest(s="in")).s == "in"
            short = pool.submit(ch.unary, ctx(10), m, pb.TestRequest(s="short", sleep_ms=300))
            long = pool.submit(ch.unary, ctx(10), m, pb.TestRequest(s="long", sleep_ms=8000))
            wait_started(impl, 3)
            t0 = time.monotonic()
        assert time.monotonic() - t0 < 2.5, "exit is stop(1.0)"
        assert short.result(timeout=5).s == "short"
        with pytest.raises(courier.RpcError) as e:
            long.result(timeout=5)
        assert e.value.code == StatusCode.UNAVAILABLE, "the server closed the connection"
    assert "long" in impl.seen_cancelled
    with pytest.raises(courier.RpcError) as e:
        ch.unary(ctx(2), m, pb.TestRequest(s="after"))
    assert e.value.code in REFUSED


def test_sync_server_context_manager_without_start(pb: Any) -> None:
    with courier.Server(workers=1) as server:
        server.add_handlers(make_service(pb), handlers(SyncTest(pb)))
        server.listen("127.0.0.1:0")
    assert server.wait(timeout=0) is True, "exit stopped it"


def test_aio_server_context_manager_stops_on_exit(pb: Any) -> None:
    async def main() -> None:
        impl = AsyncTest(pb)
        m = make_service(pb).method("UnaryUnary")
        async with courier.aio.Server(workers=1) as server:
            assert isinstance(server, courier.aio.Server)
            server.add_handlers(make_service(pb), handlers(impl))
            port = server.listen("127.0.0.1:0")
            await server.start()
            ch = courier.aio.Channel(f"127.0.0.1:{port}")
            assert (await ch.unary(ctx(5), m, pb.TestRequest(s="in"))).s == "in"
            short = asyncio.ensure_future(ch.unary(ctx(10), m, pb.TestRequest(s="short", sleep_ms=300)))
            long = asyncio.ensure_future(ch.unary(ctx(10), m, pb.TestRequest(s="long", sleep_ms=8000)))
            while impl.started < 3:
                await asyncio.sleep(0.01)
            t0 = time.monotonic()
        assert time.monotonic() - t0 < 2.5, "exit is stop(1.0)"
        await server.wait()  # returns at once: stopped
        assert (await short).s == "short"
        with pytest.raises(courier.RpcError) as e:
            await long
        assert e.value.code == StatusCode.UNAVAILABLE, "the server closed the connection"
        for _ in range(100):
            if "long" in impl.seen_cancelled:
                break
            await asyncio.sleep(0.01)
        assert "long" in impl.seen_cancelled
        with pytest.raises(courier.RpcError) as e:
            await ch.unary(ctx(2), m, pb.TestRequest(s="after"))
        assert e.value.code in REFUSED

    asyncio.run(main())


def test_aio_server_context_manager_without_start(pb: Any) -> None:
    async def main() -> None:
        async with courier.aio.Server(workers=1) as server:
            server.add_handlers(make_service(pb), handlers(AsyncTest(pb)))
            server.listen("127.0.0.1:0")

    asyncio.run(main())


def test_aio_wait_restores_signal_handlers(pb: Any) -> None:
    """`aio.Server.wait()` handles SIGTERM/SIGINT only while it waits."""

    async def main() -> None:
        before = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
        async with courier.aio.Server(workers=1) as server:
            server.add_handlers(make_service(pb), handlers(AsyncTest(pb)))
            server.listen("127.0.0.1:0")
            await server.start()
            waiting = asyncio.ensure_future(server.wait(grace=1.0))
            await asyncio.sleep(0.05)
            assert signal.getsignal(signal.SIGTERM) != before[0]
            await server.stop(1.0)
            await waiting
        assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before

    asyncio.run(main())


_Ts = TypeVarTuple("_Ts")


class _NoSigintLoop(asyncio.SelectorEventLoop):
    """A loop that cannot handle SIGINT (as the proactor loop on Windows
    cannot handle any signal): its add_signal_handler raises."""

    def add_signal_handler(self, sig: int, callback: Callable[[Unpack[_Ts]], Any], *args: Unpack[_Ts]) -> None:
        if sig == signal.SIGINT:
            raise NotImplementedError("no SIGINT here")
        super().add_signal_handler(sig, callback, *args)


def test_aio_wait_on_a_loop_without_signal_handling_raises(pb: Any) -> None:
    """`aio.Server.wait()` does not silently serve without SIGTERM/SIGINT
    handling: the loop's error comes out, the handler installed before it
    (SIGTERM) is restored; `handle_signals=False` waits without them."""

    async def main() -> None:
        before = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
        async with courier.aio.Server(workers=1) as server:
            server.add_handlers(make_service(pb), handlers(AsyncTest(pb)))
            server.listen("127.0.0.1:0")
            await server.start()
            with pytest.raises(NotImplementedError, match="no SIGINT here"):
                await server.wait(grace=1.0)
            assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
            waiting = asyncio.ensure_future(server.wait(grace=1.0, handle_signals=False))
            await asyncio.sleep(0.05)
            assert not waiting.done()
            await server.stop(1.0)
            await asyncio.wait_for(waiting, 5.0)

    loop = _NoSigintLoop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
