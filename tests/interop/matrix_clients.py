"""The interop matrix's case list for the Python clients: Courier's sync
`Channel`, Courier's asyncio `Channel` (driven on an event loop thread), and a
stock grpcio client. The cases are written once against `Client`, a thin view
of each; `run_cases` returns one result per case, like the other languages'
runners (`courier-test-client`, `courier-go-testpeer client`, the grpc-java
peer's `client`).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Coroutine, Iterable, Iterator, Optional, Protocol, TypeVar

import grpc

import courier
import courier.aio

CASES = ["unary", "server_streaming", "client_streaming", "bidi_streaming", "deadline_exceeded",
         "deadline_propagated", "status_codes", "app_error", "metadata", "large_message"]
LARGE = 3 * 1024 * 1024
# grpc-core rounds the grpc-timeout it sends up to 10 ms: the same slack for all.
ROUNDING_MS = 10
APP_ERROR_TRAILER = "courier-app-error"
Pairs = list[tuple[str, str]]
T = TypeVar("T")


@dataclass
class Reply:
    """What one call gave: messages, final status, reply metadata, app error."""

    messages: list[Any] = field(default_factory=list)
    code: int = 0
    details: str = ""
    headers: Pairs = field(default_factory=list)
    trailers: Pairs = field(default_factory=list)
    app_error: Optional[str] = None  # "enum:value" as the client sees it


class Failed(Exception):
    """A case failed; the message says what was expected and what came."""


class PingPong(Protocol):
    def send(self, req: Any) -> None: ...
    def recv(self, timeout: float) -> Any: ...  # a message, or None at the end of an OK call
    def close(self) -> None: ...


class Client(Protocol):
    def call(self, method: str, reqs: list[Any], md: Pairs = ..., timeout: float = ...) -> Reply: ...
    def ping_pong(self, timeout: float) -> PingPong: ...


def _md(pairs: Optional[Iterable[Any]]) -> Pairs:
    return [(k, v if isinstance(v, str) else v.decode()) for k, v in pairs or ()]


def first(pairs: Pairs, key: str) -> Optional[str]:
    return next((v for k, v in pairs if k == key), None)


# ---------------------------------------------------------------- Courier sync


class CourierSync:
    def __init__(self, target: str, pb: Any, service: courier.Service) -> None:
        self.ch = courier.Channel(target, max_recv_message_size=8 << 20)
        self.pb, self.svc = pb, service

    def call(self, method: str, reqs: list[Any], md: Pairs = [], timeout: float = 10) -> Reply:
        ctx = courier.Context.background().with_timeout(timeout)
        m = self.svc.method(method)
        out = Reply()
        try:
            if method == "UnaryUnary":
                resp, h, t = self.ch.unary_with_metadata(ctx, m, reqs[0], metadata=md)
                out.messages, out.headers, out.trailers = [resp], _md(h), _md(t)
            elif method == "StreamUnary":
                out.messages = [self.ch.client_streaming(ctx, m, iter(reqs), metadata=md)]
            else:
                it = (self.ch.server_streaming(ctx, m, reqs[0], metadata=md) if method == "UnaryStream"
                      else self.ch.bidi_streaming(ctx, m, iter(reqs), metadata=md))
                try:
                    for r in it:
                        out.messages.append(r)
                finally:
                    out.headers, out.trailers = _md(it.headers()), _md(it.trailers())
        except courier.RpcError as e:
            _status(out, e)
        return out

    def ping_pong(self, timeout: float) -> PingPong:
        ctx = courier.Context.background().with_timeout(timeout)
        return QueuePingPong(lambda reqs: self.ch.bidi_streaming(ctx, self.svc.method("StreamStream"), reqs))


class QueuePingPong:
    """A blocking client's bidi call fed from a queue: `start` gets the request
    iterator and returns the reply iterator."""

    def __init__(self, start: Callable[[Iterator[Any]], Iterator[Any]]) -> None:
        self.q: queue.Queue[Any] = queue.Queue()
        self.it = start(iter(self.q.get, None))

    def send(self, req: Any) -> None:
        self.q.put(req)

    def recv(self, timeout: float) -> Any:
        return next(self.it, None)

    def close(self) -> None:
        self.q.put(None)


def _status(out: Reply, e: courier.RpcError) -> None:
    out.code, out.details = int(e.code), e.details
    if e.app_error is not None:
        out.app_error = f"{e.app_error_enum}:{e.app_error}"


# ---------------------------------------------------------------- Courier asyncio


class LoopThread:
    """An asyncio event loop on a daemon thread, for driving async code from tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="matrix-loop")
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class CourierAio:
    def __init__(self, target: str, pb: Any, service: courier.Service, loop: LoopThread) -> None:
        self.loop = loop
        self.pb, self.svc = pb, service

        async def make() -> courier.aio.Channel:
            return courier.aio.Channel(target, max_recv_message_size=8 << 20)

        self.ch = loop.run(make())

    def call(self, method: str, reqs: list[Any], md: Pairs = [], timeout: float = 10) -> Reply:
        async def go() -> Reply:
            ctx = courier.Context.background().with_timeout(timeout)
            m = self.svc.method(method)
            out = Reply()
            try:
                if method == "UnaryUnary":
                    resp, h, t = await self.ch.unary_with_metadata(ctx, m, reqs[0], metadata=md)
                    out.messages, out.headers, out.trailers = [resp], _md(h), _md(t)
                elif method == "StreamUnary":
                    out.messages = [await self.ch.client_streaming(ctx, m, reqs, metadata=md)]
                else:
                    it = (self.ch.server_streaming(ctx, m, reqs[0], metadata=md) if method == "UnaryStream"
                          else self.ch.bidi_streaming(ctx, m, reqs, metadata=md))
                    try:
                        async for r in it:
                            out.messages.append(r)
                    finally:
                        out.headers, out.trailers = _md(it.headers()), _md(it.trailers())
            except courier.RpcError as e:
                _status(out, e)
            return out

        return self.loop.run(go())

    def ping_pong(self, timeout: float) -> PingPong:
        loop = self.loop

        async def start() -> tuple[asyncio.Queue[Any], courier.aio.AsyncReplyIterator[Any]]:
            q: asyncio.Queue[Any] = asyncio.Queue()

            async def reqs() -> AsyncIterator[Any]:
                while (r := await q.get()) is not None:
                    yield r

            ctx = courier.Context.background().with_timeout(timeout)
            return q, self.ch.bidi_streaming(ctx, self.svc.method("StreamStream"), reqs())

        q, it = loop.run(start())

        async def next_or_none() -> Any:
            return await anext(it, None)

        class P:
            def send(self, req: Any) -> None:
                loop.loop.call_soon_threadsafe(q.put_nowait, req)

            def recv(self, timeout: float) -> Any:
                return loop.run(next_or_none(), timeout)

            def close(self) -> None:
                loop.loop.call_soon_threadsafe(q.put_nowait, None)

        return P()


# ---------------------------------------------------------------- stock grpcio


class Grpcio:
    def __init__(self, target: str, pb: Any) -> None:
        self.ch = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 8 << 20),
                                                         ("grpc.max_send_message_length", 8 << 20)])
        self.stub = pb.grpc.TestStub(self.ch)

    def call(self, method: str, reqs: list[Any], md: Pairs = [], timeout: float = 10) -> Reply:
        out = Reply()
        fn = getattr(self.stub, method)
        try:
            if method == "UnaryUnary":
                resp, c = fn.with_call(reqs[0], metadata=md, timeout=timeout)
                out.messages, out.headers, out.trailers = [resp], _md(c.initial_metadata()), _md(c.trailing_metadata())
            else:
                call = fn(reqs[0] if method == "UnaryStream" else iter(reqs), metadata=md, timeout=timeout)
                if method == "StreamUnary":
                    out.messages = [call]
                    return out
                try:
                    for r in call:
                        out.messages.append(r)
                finally:
                    out.headers, out.trailers = _md(call.initial_metadata()), _md(call.trailing_metadata())
        except grpc.RpcError as e:
            out.code, out.details = e.code().value[0], e.details() or ""
            out.trailers = _md(e.trailing_metadata())
            # A stock client has no notion of app errors: it sees the trailer.
            out.app_error = first(out.trailers, APP_ERROR_TRAILER)
        return out

    def ping_pong(self, timeout: float) -> PingPong:
        return QueuePingPong(lambda reqs: self.stub.StreamStream(reqs, timeout=timeout))


# ---------------------------------------------------------------- cases


def check(what: str, got: object, want: object) -> None:
    if got != want:
        raise Failed(f"{what}: expected {want!r}, got {got!r}")


def ok(what: str, r: Reply) -> Reply:
    if r.code:
        raise Failed(f"{what}: expected success, got status {r.code} {r.details!r}")
    return r


def only(what: str, r: Reply) -> Any:
    ok(what, r)
    check(f"{what}: number of responses", len(r.messages), 1)
    return r.messages[0]


def failed(what: str, r: Reply, code: grpc.StatusCode) -> Reply:
    if r.code != code.value[0]:
        raise Failed(f"{what}: expected status {code.name}, got {r.code} {r.details!r}")
    return r


def pattern(n: int) -> bytes:
    return bytes(i * 7 % 251 for i in range(n))


def status_message(name: str) -> str:
    # `%`, an escape-looking `%41`, non-ASCII and a newline must all round-trip.
    return f"{name}: 100% sure %41 naïve café ✓ 日本\nsecond line"


def run_cases(c: Client, pb: Any, names: Optional[list[str]] = None) -> dict[str, Optional[str]]:
    """Runs the cases; case name -> None (passed) or what failed."""
    Req = pb.msgs.TestRequest

    def unary() -> None:
        payload = pattern(256)
        r = only("UnaryUnary", c.call("UnaryUnary", [Req(s="hello from python", payload=payload)],
                                      [("x-request-id", "py-rid-1")]))
        check("UnaryUnary s/payload/index/request_id", (r.s, r.payload, r.index, r.request_id),
              ("hello from python", payload, 0, "py-rid-1"))
        r = only("UnaryUnary without x-request-id", c.call("UnaryUnary", [Req(s="no id")]))
        check("UnaryUnary: the server makes a request id when none is sent", bool(r.request_id), True)

    def server_streaming() -> None:
        r = ok("UnaryStream count=5", c.call("UnaryStream", [Req(s="tick", count=5)]))
        check("UnaryStream count=5", [(m.s, m.index) for m in r.messages], [("tick", i) for i in range(5)])
        check("UnaryStream count=0", ok("UnaryStream count=0", c.call("UnaryStream", [Req(count=0)])).messages, [])
        r = c.call("UnaryStream", [Req(count=2, fail_code=10, fail_message="stop")])
        check("UnaryStream messages before the failure", len(r.messages), 2)
        check("UnaryStream failure message", failed("UnaryStream fail", r, grpc.StatusCode.ABORTED).details, "stop")

    def client_streaming() -> None:
        r = only("StreamUnary", c.call("StreamUnary", [Req(s="al", payload=b"\x01"), Req(s="pha", payload=b"\x02\x03"),
                                                      Req(s="bet")]))
        check("StreamUnary s/payload", (r.s, r.payload), ("alphabet", b"\x01\x02\x03"))
        check("StreamUnary of no messages", only("StreamUnary of no messages", c.call("StreamUnary", [])).s, "")
        r2 = c.call("StreamUnary", [Req(s="a"), Req(s="b", fail_code=3, fail_message="bad part")])
        check("StreamUnary failure message", failed("StreamUnary fail", r2, grpc.StatusCode.INVALID_ARGUMENT).details,
              "bad part")

    def bidi_streaming() -> None:
        # Ping-pong: each request goes out only after the previous answer came.
        p = c.ping_pong(10)
        for i in range(4):
            p.send(Req(s=f"ping {i}", payload=bytes([i])))
            m = p.recv(5)
            check(f"StreamStream answer {i}", None if m is None else (m.s, m.index, m.payload),
                  (f"ping {i}", i, bytes([i])))
        p.close()
        check("StreamStream end after half-close", p.recv(5), None)
        r = c.call("StreamStream", [Req(s="one"), Req(s="two"), Req(s="three", fail_code=10, fail_message="third fails"),
                                    Req(s="never answered")])
        check("StreamStream answers before the failure", [m.s for m in r.messages], ["one", "two"])
        check("StreamStream failure message", failed("StreamStream fail", r, grpc.StatusCode.ABORTED).details,
              "third fails")

    def deadline_exceeded() -> None:
        slow = Req(s="slow", sleep_ms=2000, count=1)
        failed("UnaryUnary sleep 2000 ms with a 100 ms deadline", c.call("UnaryUnary", [slow], timeout=0.1),
               grpc.StatusCode.DEADLINE_EXCEEDED)
        failed("UnaryStream sleep 2000 ms with a 100 ms deadline", c.call("UnaryStream", [slow], timeout=0.1),
               grpc.StatusCode.DEADLINE_EXCEEDED)
        check("UnaryUnary after the deadline cases", only("after", c.call("UnaryUnary", [Req(s="after")])).s, "after")

    def deadline_propagated() -> None:
        r = only("UnaryUnary report_deadline", c.call("UnaryUnary", [Req(s="budget", report_deadline=True)], timeout=3))
        if not 2000 <= r.deadline_ms <= 3000 + ROUNDING_MS:
            raise Failed(f"server-side remaining deadline with a 3 s client deadline: expected 2000..3010 ms, "
                         f"got {r.deadline_ms}")

    def status_codes() -> None:
        for code in grpc.StatusCode:
            if code is grpc.StatusCode.OK:
                continue
            msg = status_message(code.name)
            r = c.call("UnaryUnary", [Req(s="fail", fail_code=code.value[0], fail_message=msg)])
            check(f"UnaryUnary fail_code={code.name} message", failed(f"fail_code={code.name}", r, code).details, msg)

    def app_error() -> None:
        for value, message, want in [(2, "it is gone for good", "it is gone for good"), (1, "", "app error 1")]:
            r = c.call("UnaryUnary", [Req(s="app", app_error=value, fail_message=message)])
            what = f"UnaryUnary app_error={value}"
            check(f"{what} message", failed(what, r, grpc.StatusCode.FAILED_PRECONDITION).details, want)
            check(f"{what} app error", r.app_error, f"courier.test.TestError:{value}")

    def metadata() -> None:
        md = [("x-test-echo", "echo me: 42"), ("x-request-id", "interop-request-1")]
        r = ok("UnaryUnary echo_header", c.call("UnaryUnary", [Req(s="meta", echo_header="x-test-echo")], md))
        m = r.messages[0]
        check("UnaryUnary metadata_value/request_id/x-echo-header/x-echo-trailer",
              (m.metadata_value, m.request_id, first(r.headers, "x-echo-header"), first(r.trailers, "x-echo-trailer")),
              ("echo me: 42", "interop-request-1", "echo me: 42", "echo me: 42"))
        r = ok("UnaryUnary echo_header (absent)", c.call("UnaryUnary", [Req(s="meta", echo_header="x-not-sent")]))
        check("absent header metadata_value/reply header", (r.messages[0].metadata_value, first(r.headers, "x-echo-header")),
              ("", None))
        r = ok("UnaryStream echo_header", c.call("UnaryStream", [Req(s="meta stream", echo_header="x-test-echo", count=2)], md))
        check("UnaryStream metadata_value/x-echo-header/x-echo-trailer",
              ([m.metadata_value for m in r.messages], first(r.headers, "x-echo-header"), first(r.trailers, "x-echo-trailer")),
              (["echo me: 42"] * 2, "echo me: 42", "echo me: 42"))

    def large_message() -> None:
        payload = pattern(LARGE)
        r = only("UnaryUnary 3 MiB", c.call("UnaryUnary", [Req(s="large", payload=payload)], timeout=20))
        check("UnaryUnary 3 MiB payload intact", r.payload == payload, True)
        rs = ok("StreamStream 2 x 3 MiB", c.call("StreamStream", [Req(payload=payload)] * 2, timeout=20))
        check("StreamStream 2 x 3 MiB payloads intact", [m.payload == payload for m in rs.messages], [True, True])

    funcs: dict[str, Callable[[], None]] = {
        "unary": unary, "server_streaming": server_streaming, "client_streaming": client_streaming,
        "bidi_streaming": bidi_streaming, "deadline_exceeded": deadline_exceeded,
        "deadline_propagated": deadline_propagated, "status_codes": status_codes, "app_error": app_error,
        "metadata": metadata, "large_message": large_message,
    }
    results: dict[str, Optional[str]] = {}
    for name in names or CASES:
        try:
            funcs[name]()
            results[name] = None
        except Failed as e:
            results[name] = str(e)
        except Exception as e:  # a crash of the client is that case's failure
            results[name] = f"unexpected {type(e).__name__}: {e}"
    return results

