"""courier.test.Test on Courier's Python binding (sync and asyncio), with the
exact semantics of tests/peer/src/service.rs, for the interop matrix.

py/tests/testservice.py serves Courier's own Python tests with test hooks and
looser rules (it fails before sleeping or
echoing, and its app errors have a fixed message); the matrix needs every
server to answer the same case list the same way, so the steps are spelled out
here:

1. `echo_header`: the named request header's value goes to `metadata_value` and
   is set as reply header `x-echo-header` (before the first response message
   only) and reply trailer `x-echo-trailer`; a missing header sets nothing.
2. `sleep_ms`: sleep, ending early when the call is cancelled or expires.
3. `app_error`: `AppError(value, fail_message or "app error <n>")`
   (FAILED_PRECONDITION, and `courier-app-error` in the trailers).
4. `fail_code`: that status and `fail_message`.
5. reply `s`, `payload`, `deadline_ms` if asked, `request_id` from the ctx.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Iterator, Optional, Tuple

import courier
from courier import AppErrorEnum, Method, MethodKind, StatusCode

# Every TestError value is FAILED_PRECONDITION, as in the Rust peer.
TEST_ERROR = AppErrorEnum("courier.test.TestError", {1: StatusCode.FAILED_PRECONDITION, 2: StatusCode.FAILED_PRECONDITION})
KINDS = {"UnaryUnary": MethodKind.UNARY, "UnaryStream": MethodKind.SERVER_STREAMING,
         "StreamUnary": MethodKind.CLIENT_STREAMING, "StreamStream": MethodKind.BIDI_STREAMING}

Failure = Optional[BaseException]


class _Call:
    """One call's state: whether reply headers went out with a message."""

    def __init__(self, pb: Any, ctx: courier.Context) -> None:
        self.pb = pb
        self.ctx = ctx
        self.headers_sent = False

    def echo(self, req: Any) -> str:
        if not req.echo_header:
            return ""
        name = req.echo_header.lower()
        for k, v in self.ctx.metadata:
            if k == name:
                value = v if isinstance(v, str) else v.decode()
                if not self.headers_sent:
                    self.ctx.add_reply_header("x-echo-header", value)
                self.ctx.add_reply_trailer("x-echo-trailer", value)
                return value
        return ""

    def failure(self, req: Any) -> Failure:
        if req.app_error:
            return courier.AppError(req.app_error, req.fail_message or f"app error {req.app_error}")
        if req.fail_code:
            return courier.AbortError(courier.StatusCode(req.fail_code), req.fail_message)
        return None

    def expired(self) -> BaseException:
        left = self.ctx.time_remaining()
        if left is not None and left <= 0:
            return courier.AbortError(courier.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded while sleeping")
        return courier.AbortError(courier.StatusCode.CANCELLED, "cancelled while sleeping")

    def sleep_sync(self, ms: int) -> None:
        end = time.monotonic() + ms / 1000
        while (left := end - time.monotonic()) > 0:
            if self.ctx.cancelled:
                raise self.expired()
            time.sleep(min(0.005, left))

    async def sleep_async(self, ms: int) -> None:
        end = time.monotonic() + ms / 1000
        while (left := end - time.monotonic()) > 0:
            if self.ctx.cancelled:
                raise self.expired()
            await asyncio.sleep(min(0.005, left))

    def deadline_ms(self, report: bool) -> int:
        if not report:
            return 0
        left = self.ctx.time_remaining()
        return -1 if left is None else int(left * 1000)

    def response(self, req: Any, value: str, index: int) -> Any:
        self.headers_sent = True
        return self.pb.TestResponse(s=req.s, payload=req.payload, index=index, metadata_value=value,
                                    deadline_ms=self.deadline_ms(req.report_deadline), request_id=self.ctx.request_id)


class _Sum:
    """StreamUnary's answer, built message by message."""

    def __init__(self, call: _Call) -> None:
        self.call = call
        self.out = call.pb.TestResponse(request_id=call.ctx.request_id)

    def add(self, req: Any, value: str) -> None:
        self.out.s += req.s
        self.out.payload += req.payload
        if req.echo_header:
            self.out.metadata_value = value
        if req.report_deadline:
            self.out.deadline_ms = self.call.deadline_ms(True)


class SyncTest:
    def __init__(self, pb: Any) -> None:
        self.pb = pb

    def _apply(self, call: _Call, req: Any) -> Tuple[str, Failure]:
        value = call.echo(req)
        if req.sleep_ms > 0:
            call.sleep_sync(req.sleep_ms)
        return value, call.failure(req)

    def UnaryUnary(self, ctx: courier.Context, req: Any) -> Any:
        call = _Call(self.pb, ctx)
        value, failure = self._apply(call, req)
        if failure:
            raise failure
        return call.response(req, value, 0)

    def UnaryStream(self, ctx: courier.Context, req: Any) -> Iterator[Any]:
        call = _Call(self.pb, ctx)
        value, failure = self._apply(call, req)
        for i in range(req.count):
            yield call.response(req, value, i)
        if failure:
            raise failure

    def StreamUnary(self, ctx: courier.Context, reqs: Iterator[Any]) -> Any:
        call = _Call(self.pb, ctx)
        acc = _Sum(call)
        for req in reqs:
            value, failure = self._apply(call, req)
            if failure:
                raise failure
            acc.add(req, value)
        return acc.out

    def StreamStream(self, ctx: courier.Context, reqs: Iterator[Any]) -> Iterator[Any]:
        call = _Call(self.pb, ctx)
        for i, req in enumerate(reqs):
            value, failure = self._apply(call, req)
            if failure:
                raise failure
            yield call.response(req, value, i)


class AsyncTest:
    def __init__(self, pb: Any) -> None:
        self.pb = pb

    async def _apply(self, call: _Call, req: Any) -> Tuple[str, Failure]:
        value = call.echo(req)
        if req.sleep_ms > 0:
            await call.sleep_async(req.sleep_ms)
        return value, call.failure(req)

    async def UnaryUnary(self, ctx: courier.Context, req: Any) -> Any:
        call = _Call(self.pb, ctx)
        value, failure = await self._apply(call, req)
        if failure:
            raise failure
        return call.response(req, value, 0)

    async def UnaryStream(self, ctx: courier.Context, req: Any) -> AsyncIterator[Any]:
        call = _Call(self.pb, ctx)
        value, failure = await self._apply(call, req)
        for i in range(req.count):
            yield call.response(req, value, i)
        if failure:
            raise failure

    async def StreamUnary(self, ctx: courier.Context, reqs: AsyncIterator[Any]) -> Any:
        call = _Call(self.pb, ctx)
        acc = _Sum(call)
        async for req in reqs:
            value, failure = await self._apply(call, req)
            if failure:
                raise failure
            acc.add(req, value)
        return acc.out

    async def StreamStream(self, ctx: courier.Context, reqs: AsyncIterator[Any]) -> AsyncIterator[Any]:
        call = _Call(self.pb, ctx)
        i = 0
        async for req in reqs:
            value, failure = await self._apply(call, req)
            if failure:
                raise failure
            yield call.response(req, value, i)
            i += 1


def handlers(impl: Any) -> dict[str, Any]:
    return {n: getattr(impl, n) for n in ("UnaryUnary", "UnaryStream", "StreamUnary", "StreamStream")}


def service(pb: Any) -> courier.Service:
    """The method table of courier.test.Test: 10 s default deadlines, TestError app errors."""
    return courier.Service("courier.test.Test", tuple(
        Method("courier.test.Test", name, kind, pb.TestRequest, pb.TestResponse, 10.0, TEST_ERROR)
        for name, kind in KINDS.items()))
