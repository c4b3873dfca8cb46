"""A stock grpcio client against the Courier Rust server (`courier-test-server`)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Iterator

import asyncio
import queue
import re
import time
from concurrent import futures

import grpc
import pytest

if TYPE_CHECKING:
    from conftest import PeerServer

pytestmark = pytest.mark.timeout(60)

MiB = 1024 * 1024
# grpc-core rounds the grpc-timeout it sends up to a multiple of 10 ms.
GRPC_TIMEOUT_ROUNDING_MS = 10
CODES = [c for c in grpc.StatusCode if c is not grpc.StatusCode.OK]


def status_message(code: grpc.StatusCode) -> str:
    # `%`, a literal escape-looking `%41`, non-ASCII and a newline must all round-trip.
    return f"{code.name}: 100% sure %41 naïve café ✓ 日本\nsecond line"


@pytest.fixture(scope="module")
def channel(courier_server: PeerServer) -> Iterator[grpc.Channel]:
    ch = grpc.insecure_channel(
        courier_server.target,
        options=[("grpc.max_send_message_length", 8 * MiB), ("grpc.max_receive_message_length", 8 * MiB)],
    )
    grpc.channel_ready_future(ch).result(timeout=10)
    yield ch
    ch.close()


@pytest.fixture(scope="module")
def stub(pb: SimpleNamespace, channel: grpc.Channel) -> Any:
    return pb.grpc.TestStub(channel)


@pytest.fixture
def Req(pb: SimpleNamespace) -> Any:
    return pb.msgs.TestRequest


# ---------------------------------------------------------------- every kind


def test_unary(stub: Any, Req: Any) -> None:
    payload = bytes(range(256))
    resp = stub.UnaryUnary(Req(s="hello from grpcio", payload=payload), timeout=10)
    assert (resp.s, resp.payload, resp.index) == ("hello from grpcio", payload, 0)
    assert re.fullmatch(r"[0-9a-f]{32}", resp.request_id), "server makes a request id when none is sent"


def test_server_streaming(stub: Any, Req: Any) -> None:
    got = list(stub.UnaryStream(Req(s="tick", count=5), timeout=10))
    assert [(r.s, r.index) for r in got] == [("tick", i) for i in range(5)]
    assert list(stub.UnaryStream(Req(count=0), timeout=10)) == []


def test_server_streaming_error_after_messages(stub: Any, Req: Any) -> None:
    call = stub.UnaryStream(Req(count=2, fail_code=grpc.StatusCode.ABORTED.value[0], fail_message="stop"), timeout=10)
    got = []
    with pytest.raises(grpc.RpcError) as ei:
        for r in call:
            got.append(r.index)
    assert got == [0, 1]
    assert (ei.value.code(), ei.value.details()) == (grpc.StatusCode.ABORTED, "stop")


def test_client_streaming(stub: Any, Req: Any) -> None:
    reqs = [Req(s="al", payload=b"\x01"), Req(s="pha", payload=b"\x02\x03"), Req(s="bet")]
    resp = stub.StreamUnary(iter(reqs), timeout=10)
    assert (resp.s, resp.payload) == ("alphabet", b"\x01\x02\x03")
    assert stub.StreamUnary(iter([]), timeout=10).s == ""
    with pytest.raises(grpc.RpcError) as ei:
        stub.StreamUnary(iter([Req(s="a"), Req(fail_code=3, fail_message="bad part")]), timeout=10)
    assert (ei.value.code(), ei.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "bad part")


def test_bidi_streaming_ping_pong(stub: Any, Req: Any) -> None:
    """Each request is sent only after the previous answer: the server must echo as messages arrive."""
    q: "queue.Queue[Any]" = queue.Queue()
    responses = stub.StreamStream(iter(q.get, None), timeout=10)
    for i in range(4):
        q.put(Req(s=f"ping {i}", payload=bytes([i])))
        r = next(responses)
        assert (r.s, r.index, r.payload) == (f"ping {i}", i, bytes([i]))
    q.put(None)
    assert list(responses) == []
    assert responses.code() == grpc.StatusCode.OK


def test_bidi_streaming_error_per_message(stub: Any, Req: Any) -> None:
    reqs = [Req(s="one"), Req(s="two"), Req(s="three", fail_code=10, fail_message="third fails"), Req(s="never")]
    call = stub.StreamStream(iter(reqs), timeout=10)
    got = []
    with pytest.raises(grpc.RpcError) as ei:
        for r in call:
            got.append(r.s)
    assert got == ["one", "two"]
    assert (ei.value.code(), ei.value.details()) == (grpc.StatusCode.ABORTED, "third fails")


def test_concurrent_calls(stub: Any, Req: Any) -> None:
    calls = [stub.UnaryUnary.future(Req(s=str(i), sleep_ms=100), timeout=10) for i in range(32)]
    t0 = time.monotonic()
    assert [c.result().s for c in calls] == [str(i) for i in range(32)]
    assert time.monotonic() - t0 < 3, "calls ran concurrently"


# ---------------------------------------------------------------- deadlines


def test_deadline_exceeded(stub: Any, Req: Any) -> None:
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as ei:
        stub.UnaryUnary(Req(sleep_ms=2000), timeout=0.1)
    took = time.monotonic() - t0
    assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert took < 1.0, f"DEADLINE_EXCEEDED took {took:.3f} s"
    # Streaming too.
    with pytest.raises(grpc.RpcError) as ei:
        list(stub.UnaryStream(Req(sleep_ms=2000, count=1), timeout=0.1))
    assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_deadline_propagated_to_the_handler(stub: Any, Req: Any) -> None:
    # grpc-core sends grpc-timeout rounded *up* to 10 ms units (from a cached
    # clock), so a 3 s timeout arrives as up to "3010m": allow that much.
    resp = stub.UnaryUnary(Req(report_deadline=True), timeout=3)
    assert 2000 <= resp.deadline_ms <= 3000 + GRPC_TIMEOUT_ROUNDING_MS, resp.deadline_ms
    # No client deadline: the method table's 10 s default applies on the server.
    resp = stub.UnaryUnary(Req(report_deadline=True))
    assert 9000 <= resp.deadline_ms <= 10_000, resp.deadline_ms
    # A longer client deadline is capped by the method default (the earliest wins).
    resp = stub.UnaryUnary(Req(report_deadline=True), timeout=60)
    assert 9000 <= resp.deadline_ms <= 10_000, resp.deadline_ms


# ---------------------------------------------------------------- statuses, app errors


@pytest.mark.parametrize("code", CODES, ids=[c.name for c in CODES])
def test_status_code_and_message_round_trip(stub: Any, Req: Any, code: grpc.StatusCode) -> None:
    msg = status_message(code)
    with pytest.raises(grpc.RpcError) as ei:
        stub.UnaryUnary(Req(fail_code=code.value[0], fail_message=msg), timeout=10)
    assert ei.value.code() == code
    assert ei.value.details() == msg


@pytest.mark.parametrize("value,message,want", [(2, "it is gone", "it is gone"), (1, "", "app error 1")])
def test_app_error_trailer(stub: Any, Req: Any, value: int, message: str, want: str) -> None:
    with pytest.raises(grpc.RpcError) as ei:
        stub.UnaryUnary(Req(app_error=value, fail_message=message), timeout=10)
    e: Any = ei.value
    assert (e.code(), e.details()) == (grpc.StatusCode.FAILED_PRECONDITION, want)
    assert ("courier-app-error", f"courier.test.TestError:{value}") in tuple(e.trailing_metadata())


# ---------------------------------------------------------------- metadata


def test_metadata_both_ways(stub: Any, Req: Any) -> None:
    md = (("x-test-echo", "echo me: 42"), ("x-request-id", "grpcio-rid-1"))
    resp, call = stub.UnaryUnary.with_call(Req(echo_header="x-test-echo"), metadata=md, timeout=10)
    assert resp.metadata_value == "echo me: 42"
    assert resp.request_id == "grpcio-rid-1"
    assert ("x-echo-header", "echo me: 42") in tuple(call.initial_metadata())
    assert ("x-echo-trailer", "echo me: 42") in tuple(call.trailing_metadata())
    # Absent header: empty value, nothing set.
    resp, call = stub.UnaryUnary.with_call(Req(echo_header="x-not-sent"), timeout=10)
    assert resp.metadata_value == ""
    assert "x-echo-header" not in dict(call.initial_metadata())


def test_metadata_on_a_stream(stub: Any, Req: Any) -> None:
    call = stub.UnaryStream(Req(echo_header="x-test-echo", count=2), metadata=(("x-test-echo", "s"),), timeout=10)
    assert ("x-echo-header", "s") in tuple(call.initial_metadata())
    assert [r.metadata_value for r in call] == ["s", "s"]
    assert ("x-echo-trailer", "s") in tuple(call.trailing_metadata())


def test_metadata_with_an_error(stub: Any, Req: Any) -> None:
    """Trailers set by the handler travel with an error status too."""
    with pytest.raises(grpc.RpcError) as ei:
        stub.UnaryUnary(Req(echo_header="x-test-echo", fail_code=5, fail_message="nf"),
                        metadata=(("x-test-echo", "v"),), timeout=10)
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND
    trailing: Any = ei.value.trailing_metadata()
    assert ("x-echo-trailer", "v") in tuple(trailing)


# ---------------------------------------------------------------- sizes


def test_large_message_3mib(stub: Any, Req: Any) -> None:
    payload = bytes(i * 7 % 251 for i in range(3 * MiB))
    resp = stub.UnaryUnary(Req(s="large", payload=payload), timeout=20)
    assert len(resp.payload) == len(payload) and resp.payload == payload
    got = list(stub.StreamStream(iter([Req(payload=payload)] * 2), timeout=20))
    assert [r.payload == payload for r in got] == [True, True]


def test_oversize_request_is_resource_exhausted(stub: Any, Req: Any) -> None:
    with pytest.raises(grpc.RpcError) as ei:
        stub.UnaryUnary(Req(payload=b"\x00" * (5 * MiB)), timeout=20)
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, ei.value.details()
    # The server keeps serving on the same channel.
    assert stub.UnaryUnary(Req(s="still here"), timeout=10).s == "still here"


# ---------------------------------------------------------------- protocol edges


def test_unknown_method_and_service_are_unimplemented(channel: grpc.Channel) -> None:
    for path in ("/courier.test.Test/NoSuchMethod", "/no.such.Service/Method"):
        call: Any = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as ei:
            call(b"", timeout=10)
        assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED, path


def test_undecodable_request_is_invalid_argument(channel: grpc.Channel) -> None:
    call: Any = channel.unary_unary("/courier.test.Test/UnaryUnary", request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as ei:
        call(b"\xff\xff\xff", timeout=10)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _health_request(service: str) -> bytes:
    raw = service.encode()
    assert len(raw) < 128
    return b"" if not raw else b"\x0a" + bytes([len(raw)]) + raw  # field 1, length-delimited


def test_health_check(channel: grpc.Channel) -> None:
    check: Any = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=None, response_deserializer=None)
    SERVING = b"\x08\x01"  # HealthCheckResponse{status: SERVING}
    assert check(_health_request(""), timeout=10) == SERVING
    assert check(_health_request("courier.test.Test"), timeout=10) == SERVING
    with pytest.raises(grpc.RpcError) as ei:
        check(_health_request("no.such.Service"), timeout=10)
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND


# ---------------------------------------------------------------- asyncio


def test_aio_client(pb: SimpleNamespace, courier_server: PeerServer) -> None:
    async def main() -> None:
        async with grpc.aio.insecure_channel(courier_server.target) as ch:
            stub = pb.grpc.TestStub(ch)
            Req = pb.msgs.TestRequest
            resp = await stub.UnaryUnary(Req(s="aio", report_deadline=True), timeout=3)
            assert resp.s == "aio" and 2000 <= resp.deadline_ms <= 3000 + GRPC_TIMEOUT_ROUNDING_MS
            got = [r.index async for r in stub.UnaryStream(Req(count=3), timeout=10)]
            assert got == [0, 1, 2]
            call = stub.StreamStream(timeout=10)
            for i in range(3):
                await call.write(Req(s=f"a{i}"))
                assert (await call.read()).s == f"a{i}"
            await call.done_writing()
            assert await call.read() == grpc.aio.EOF
            # Many calls in flight on one channel.
            rs = await asyncio.gather(*(stub.UnaryUnary(Req(s=str(i), sleep_ms=50), timeout=10) for i in range(20)))
            assert [r.s for r in rs] == [str(i) for i in range(20)]
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await stub.UnaryUnary(Req(sleep_ms=2000), timeout=0.1)
            assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await stub.UnaryUnary(Req(app_error=2), timeout=10)
            assert ("courier-app-error", "courier.test.TestError:2") in tuple(ei.value.trailing_metadata())

    asyncio.run(main())


def test_threaded_clients_share_a_channel(stub: Any, Req: Any) -> None:
    with futures.ThreadPoolExecutor(8) as ex:
        got = list(ex.map(lambda i: stub.UnaryUnary(Req(s=f"t{i}"), timeout=10).s, range(64)))
    assert got == [f"t{i}" for i in range(64)]
