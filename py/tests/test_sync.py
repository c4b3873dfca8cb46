"""The synchronous server and client over real loopback sockets."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import courier
from courier import StatusCode
from testservice import SyncTest, handlers, make_service, start_sync_server


def client(pb: Any, port: int) -> tuple[courier.Channel, Any]:
    return courier.Channel(f"127.0.0.1:{port}"), make_service(pb)


def test_all_four_kinds(pb: Any, sync_server: Any) -> None:
    _, port, _ = sync_server
    ch, svc = client(pb, port)
    ctx = courier.Context.background()
    r = ch.unary(ctx, svc.method("UnaryUnary"), pb.TestRequest(s="hi", payload=b"\x00\x01"))
    assert (r.s, r.payload) == ("hi", b"\x00\x01")
    got = list(ch.server_streaming(ctx, svc.method("UnaryStream"), pb.TestRequest(s="x", count=4)))
    assert [g.index for g in got] == [0, 1, 2, 3]
    r = ch.client_streaming(ctx, svc.method("StreamUnary"), (pb.TestRequest(s=c) for c in "abc"))
    assert r.s == "abc"
    got = list(ch.bidi_streaming(ctx, svc.method("StreamStream"), [pb.TestRequest(s=c) for c in "xyz"]))
    assert [g.s for g in got] == ["x", "y", "z"]
    assert list(ch.server_streaming(ctx, svc.method("UnaryStream"), pb.TestRequest(count=0))) == []


def test_bidi_ping_pong(pb: Any, sync_server: Any) -> None:
    """Requests that depend on replies: the request iterator blocks on them."""
    _, port, _ = sync_server
    ch, svc = client(pb, port)
    import queue

    q: "queue.Queue[Any]" = queue.Queue()
    q.put(pb.TestRequest(s="0"))

    def reqs() -> Any:
        for _ in range(5):
            item = q.get(timeout=5)
            if item is None:
                return
            yield item

    out = []
    for r in ch.bidi_streaming(courier.Context.background(), svc.method("StreamStream"), reqs()):
        out.append(r.s)
        q.put(pb.TestRequest(s=str(int(r.s) + 1)) if len(out) < 5 else None)
    assert out == ["0", "1", "2", "3", "4"]


def test_status_codes_messages_and_app_errors(pb: Any, sync_server: Any) -> None:
    server, port, _ = sync_server
    ch, svc = client(pb, port)
    ctx = courier.Context.background()
    m = svc.method("UnaryUnary")
    for code in list(StatusCode)[1:]:
        with pytest.raises(courier.RpcError) as e:
            ch.unary(ctx, m, pb.TestRequest(fail_code=int(code), fail_message="100% naïve\nline"))
        assert e.value.code == code
        assert e.value.details == "100% naïve\nline"
        assert e.value.app_error is None
    with pytest.raises(courier.RpcError) as e:
        ch.unary(ctx, m, pb.TestRequest(app_error=2))
    assert (e.value.code, e.value.app_error, e.value.app_error_enum) == (StatusCode.FAILED_PRECONDITION, 2, "courier.test.TestError")
    # An uncaught exception is INTERNAL for that call; the server keeps serving.
    with pytest.raises(courier.RpcError) as e:
        ch.unary(ctx, m, pb.TestRequest(s="raise"))
    assert e.value.code == StatusCode.INTERNAL and "ValueError: handler bug" in e.value.details
    assert server.stats.exceptions == 1
    assert ch.unary(ctx, m, pb.TestRequest(s="ok")).s == "ok"
    # Errors in streams: an app error from a later message of a bidi call.
    it = ch.bidi_streaming(ctx, svc.method("StreamStream"), [pb.TestRequest(s="a"), pb.TestRequest(app_error=1)])
    assert next(it).s == "a"
    with pytest.raises(courier.RpcError) as e:
        next(it)
    assert (e.value.code, e.value.app_error) == (StatusCode.FAILED_PRECONDITION, 1)
    # Unknown method.
    other = make_service(pb, name="courier.test.Nope")
    with pytest.raises(courier.RpcError) as e:
        ch.unary(ctx, other.method("UnaryUnary"), pb.TestRequest())
    assert e.value.code == StatusCode.UNIMPLEMENTED


def test_metadata_both_ways_and_request_id(pb: Any, sync_server: Any) -> None:
    _, port, _ = sync_server
    ch, svc = client(pb, port)
    ctx = courier.Context.background()
    r, headers, trailers = ch.unary_with_metadata(
        ctx,
        svc.method("UnaryUnary"),
        pb.TestRequest(echo_header="x-hello"),
        metadata=[("x-hello", "world"), ("x-blob-bin", b"\x00\xff")],
    )
    assert r.metadata_value == "world"
    assert ("x-echo-header", "world") in headers
    assert ("x-echo-trailer", "world") in trailers
    assert r.request_id == ctx.request_id
    with pytest.raises(ValueError, match="lowercase"):
        ch.unary(ctx, svc.method("UnaryUnary"), pb.TestRequest(), metadata=[("X-Bad", "v")])


def test_deadlines_client_default_and_two_hops(pb: Any) -> None:
    server_b, port_b, _ = start_sync_server(pb)
    server_a, port_a, impl_a = start_sync_server(pb)
    try:
        ch, svc = client(pb, port_a)
        m = svc.method("UnaryUnary")
        # Client-set deadline shorter than the handler.
        t0 = time.monotonic()
        with pytest.raises(courier.RpcError) as e:
            ch.unary(courier.Context.background().with_timeout(0.2), m, pb.TestRequest(s="slow", sleep_ms=3000))
        assert e.value.code == StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - t0 < 1.5
        # The handler saw its ctx cancelled at the deadline and stopped early.
        for _ in range(100):
            if "slow" in impl_a.seen_cancelled:
                break
            time.sleep(0.01)
        assert "slow" in impl_a.seen_cancelled
        # The method default (10 s) applies when the caller sets none.
        r = ch.unary(courier.Context.background(), m, pb.TestRequest(report_deadline=True))
        assert 9000 <= r.deadline_ms <= 10000
        # Two hops: A calls B with its own ctx; B sees A's remaining budget.
        impl_a.downstream = (courier.Channel(f"127.0.0.1:{port_b}"), m)
        ctx = courier.Context.background().with_timeout(2.0)
        r = ch.unary(ctx, m, pb.TestRequest(s="hop"))
        assert 1000 <= r.deadline_ms < 2000
        assert r.request_id == ctx.request_id, "request id travels across hops"
        # A deadline as wall-clock time.
        c = courier.Context.background().with_deadline(time.time() + 5)
        assert c.deadline is not None and abs(c.deadline - (time.time() + 5)) < 0.1
        assert 4.8 < (c.time_remaining() or 0) <= 5
    finally:
        server_a.stop(1.0)
        server_b.stop(1.0)


def test_handler_returning_a_wrong_type_is_internal(pb: Any, sync_server: Any) -> None:
    _, port, _ = sync_server
    ch, svc = client(pb, port)
    with pytest.raises(courier.RpcError) as e:
        ch.unary(courier.Context.background(), svc.method("UnaryUnary"), pb.TestRequest(s="bad-return"))
    assert e.value.code == StatusCode.INTERNAL and "AttributeError" in e.value.details


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_base_exception_in_handler_answers_its_call(pb: Any) -> None:
    # Not an Exception: the handler thread ends (as an uncaught BaseException
    # ends any thread), but its call is answered and the other threads serve on.
    server, port, _ = start_sync_server(pb, max_concurrency=2)
    try:
        ch, svc = client(pb, port)
        m = svc.method("UnaryUnary")
        with pytest.raises(courier.RpcError) as e:
            ch.unary(courier.Context.background().with_timeout(5), m, pb.TestRequest(s="raise-base"))
        assert e.value.code == StatusCode.INTERNAL
        assert [ch.unary(courier.Context.background().with_timeout(5), m, pb.TestRequest(s=str(i))).s for i in range(5)] == [str(i) for i in range(5)]
    finally:
        server.stop(1.0)


def test_expired_while_queued_never_runs(pb: Any) -> None:
    server, port, impl = start_sync_server(pb, max_concurrency=1)
    try:
        ch, svc = client(pb, port)
        m = svc.method("UnaryUnary")
        with ThreadPoolExecutor(2) as pool:
            busy = pool.submit(ch.unary, courier.Context.background(), m, pb.TestRequest(s="busy", sleep_ms=500))
            time.sleep(0.1)
            before = impl.started
            with pytest.raises(courier.RpcError) as e:
                ch.unary(courier.Context.background().with_timeout(0.1), m, pb.TestRequest(s="late"))
            assert e.value.code == StatusCode.DEADLINE_EXCEEDED
            assert busy.result().s == "busy"
        time.sleep(0.1)
        assert impl.started == before, "the expired call's handler must never run"
    finally:
        server.stop(1.0)


def test_blocking_handler_does_not_hold_up_others(pb: Any) -> None:
    server, port, _ = start_sync_server(pb, max_concurrency=4)
    try:
        ch, svc = client(pb, port)
        m = svc.method("UnaryUnary")
        with ThreadPoolExecutor(8) as pool:
            slow = [pool.submit(ch.unary, courier.Context.background(), m, pb.TestRequest(s="slow", sleep_ms=1500)) for _ in range(2)]
            time.sleep(0.2)
            t0 = time.monotonic()
            fast = [ch.unary(courier.Context.background(), m, pb.TestRequest(s=str(i))) for i in range(20)]
            elapsed = time.monotonic() - t0
            assert [f.s for f in fast] == [str(i) for i in range(20)]
            assert elapsed < 1.0, f"fast calls waited behind blocked handlers: {elapsed:.2f}s"
            assert all(s.result().s == "slow" for s in slow)
    finally:
        server.stop(1.0)


def test_large_messages_and_limits(pb: Any, sync_server: Any) -> None:
    _, port, _ = sync_server
    ch, svc = client(pb, port)
    big = bytes(range(256)) * (3 * 4096)  # 3 MiB
    r = ch.unary(courier.Context.background(), svc.method("UnaryUnary"), pb.TestRequest(payload=big))
    assert r.payload == big
    with pytest.raises(courier.RpcError) as e:
        ch.unary(courier.Context.background(), svc.method("UnaryUnary"), pb.TestRequest(payload=b"x" * (5 * 1024 * 1024)))
    assert e.value.code == StatusCode.RESOURCE_EXHAUSTED


def test_many_threads_many_calls(pb: Any) -> None:
    server, port, _ = start_sync_server(pb, workers=2, max_concurrency=8)
    try:
        ch, svc = client(pb, port)
        m = svc.method("UnaryUnary")

        def work(i: int) -> None:
            for j in range(100):
                assert ch.unary(courier.Context.background(), m, pb.TestRequest(s=f"{i}-{j}")).s == f"{i}-{j}"

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(work, range(16)))
    finally:
        server.stop(1.0)


def test_cancel_streaming_call_is_seen_by_handler(pb: Any, sync_server: Any) -> None:
    _, port, impl = sync_server
    ch, svc = client(pb, port)
    ctx = courier.Context.background().child()
    it = ch.server_streaming(ctx, svc.method("UnaryStream"), pb.TestRequest(s="s", count=1000, sleep_ms=10))
    assert next(it).index == 0
    assert impl.seen_cancelled == []
    it.cancel()
    with pytest.raises(courier.RpcError) as e:
        for _ in it:
            pass
    assert e.value.code == StatusCode.CANCELLED
    # The handler saw its ctx turn cancelled and stopped long before 1000 replies.
    for _ in range(200):
        if impl.seen_cancelled:
            break
        time.sleep(0.01)
    assert impl.seen_cancelled == ["s"]


def test_stop_drains_calls_in_flight(pb: Any) -> None:
    server, port, _ = start_sync_server(pb)
    ch, svc = client(pb, port)
    m = svc.method("UnaryUnary")
    with ThreadPoolExecutor(4) as pool:
        calls = [pool.submit(ch.unary, courier.Context.background(), m, pb.TestRequest(s="f", sleep_ms=300)) for _ in range(3)]
        time.sleep(0.1)
        t0 = time.monotonic()
        server.stop(5.0)
        assert time.monotonic() - t0 < 3.0
        assert [c.result().s for c in calls] == ["f", "f", "f"]
    with pytest.raises(courier.RpcError) as e:
        ch.unary(courier.Context.background().with_timeout(1), m, pb.TestRequest())
    assert e.value.code == StatusCode.UNAVAILABLE


def test_handler_calling_its_own_server_does_not_deadlock(pb: Any) -> None:
    """Three times as many calls at once as handler threads, each handler
    holding its thread (100 ms) and then calling another method (another
    service) of its own server and waiting for it. While a handler waits on
    a client call the server runs another handler thread, so every inner
    call finds one: all succeed, and the spare threads leave afterwards."""
    threads = 4
    other = make_service(pb, name="courier.test.Other")
    server, port, impl = start_sync_server(pb, max_concurrency=threads, services=[other])
    try:
        ch, svc = client(pb, port)
        impl.downstream = (ch, other.method("UnaryUnary"))
        m = svc.method("UnaryUnary")
        hop = pb.TestRequest(s="hop", sleep_ms=100)
        n = 3 * threads
        with ThreadPoolExecutor(n) as pool:
            calls = [pool.submit(ch.unary, courier.Context.background().with_timeout(5.0), m, hop) for _ in range(n)]
            assert [c.result().s for c in calls] == ["hop"] * n
        # Spare threads leave once idle (they look after an idle second).
        deadline = time.monotonic() + 5
        while server._live > threads and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server._live == threads
    finally:
        server.stop(1.0)


def test_a_blocked_handler_does_not_hold_up_its_batch(pb: Any) -> None:
    """Calls that arrive together are taken as one batch by one thread; when
    its handler blocks (a sleep here, a database call in life), idle threads
    take the rest of the batch: max_concurrency handlers run at once."""
    threads = 4
    impl = SyncTest(pb)
    running, most = 0, 0
    lock = threading.Lock()

    def counting(ctx: courier.Context, req: Any) -> Any:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            return impl.UnaryUnary(ctx, req)
        finally:
            with lock:
                running -= 1

    server = courier.Server(workers=1, max_concurrency=threads)
    server.add_handlers(make_service(pb), {**handlers(impl), "UnaryUnary": counting})
    port = server.listen("127.0.0.1:0")
    server.start()
    try:
        ch, svc = client(pb, port)
        m = svc.method("UnaryUnary")
        n = 3 * threads
        with ThreadPoolExecutor(n) as pool:
            calls = [pool.submit(ch.unary, courier.Context.background().with_timeout(10.0), m, pb.TestRequest(s="slow", sleep_ms=300)) for _ in range(n)]
            assert [c.result().s for c in calls] == ["slow"] * n
        assert most == threads
    finally:
        server.stop(1.0)


def test_context_validation() -> None:
    with pytest.raises(ValueError):
        courier.Context.background().with_timeout(float("nan"))
    c = courier.Context.background()
    assert c.deadline is None and c.time_remaining() is None and not c.cancelled
    remaining = c.with_timeout(seconds=5.0).time_remaining()
    assert remaining is not None and 4.0 < remaining <= 5.0
    child = c.child()
    c.cancel()
    assert child.cancelled
    with pytest.raises(courier.AbortError):
        c.abort(int(StatusCode.NOT_FOUND), "x")


def test_method_deadline_is_mandatory(pb: Any) -> None:
    with pytest.raises(ValueError, match="deadline"):
        courier.Method("a.B", "C", courier.MethodKind.UNARY, bytes, bytes, None)
    m = courier.Method("a.B", "C", courier.MethodKind.UNARY, bytes, bytes, courier.NO_DEADLINE)
    assert m.deadline_seconds is None


def test_server_lifecycle_errors(pb: Any) -> None:
    s = courier.Server()
    with pytest.raises(RuntimeError, match="listen"):
        s.start()
    with pytest.raises(OSError):
        s.listen("256.0.0.1:1")
    s.add_handlers(make_service(pb), {n: (lambda c, r: r) for n in ("UnaryUnary", "UnaryStream", "StreamUnary", "StreamStream")})
    with pytest.raises(ValueError, match="twice"):
        s.add_handlers(make_service(pb), {n: (lambda c, r: r) for n in ("UnaryUnary", "UnaryStream", "StreamUnary", "StreamStream")})
    with pytest.raises(ValueError, match="missing"):
        s.add_handlers(make_service(pb, name="x.Y"), {"UnaryUnary": lambda c, r: r})
    threading.Thread(target=s.stop, args=(0.1,)).start()


def check_exception_logged(caplog: pytest.LogCaptureFixture, method: str) -> None:
    """One ERROR record on `courier.server` for the handler's ValueError, with its traceback."""
    records = [r for r in caplog.records if r.name == "courier.server" and r.levelno == logging.ERROR]
    assert len(records) == 1, caplog.text
    r = records[0]
    assert method in r.getMessage()
    assert r.exc_info is not None and r.exc_info[0] is ValueError and str(r.exc_info[1]) == "handler bug"
    assert "Traceback (most recent call last)" in caplog.text and "in UnaryUnary" in caplog.text


def test_handler_exception_is_logged_with_traceback_and_counted(pb: Any, sync_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    server, port, _ = sync_server
    ch, svc = client(pb, port)
    caplog.set_level(logging.ERROR, logger="courier.server")
    assert server.stats.exceptions == 0
    with pytest.raises(courier.RpcError) as e:
        ch.unary(courier.Context.background().with_timeout(5), svc.method("UnaryUnary"), pb.TestRequest(s="raise"))
    assert e.value.code == StatusCode.INTERNAL
    assert server.stats.exceptions == 1
    check_exception_logged(caplog, "/courier.test.Test/UnaryUnary")


def test_ctx_method_and_closed_channel(pb: Any) -> None:
    seen: list[Any] = []

    def unary(ctx: courier.Context, req: Any) -> Any:
        seen.append(ctx.method)
        return pb.TestResponse(s=req.s)

    server = courier.Server(workers=1, max_concurrency=2)
    server.add_handlers(make_service(pb), {**handlers(SyncTest(pb)), "UnaryUnary": unary})
    port = server.listen("127.0.0.1:0")
    server.start()
    try:
        ch, svc = client(pb, port)
        m = svc.method("UnaryUnary")
        assert ch.unary(courier.Context.background().with_timeout(5), m, pb.TestRequest(s="m")).s == "m"
        assert seen == ["/courier.test.Test/UnaryUnary"]
        with ch:
            pass
        for use in (
            lambda: ch.unary(courier.Context.background(), m, pb.TestRequest()),
            lambda: ch.server_streaming(courier.Context.background(), svc.method("UnaryStream"), pb.TestRequest()),
            lambda: ch.client_streaming(courier.Context.background(), svc.method("StreamUnary"), []),
            lambda: ch.bidi_streaming(courier.Context.background(), svc.method("StreamStream"), []),
        ):
            with pytest.raises(ValueError, match="the channel is closed"):
                use()
    finally:
        server.stop(1.0)
