"""Handlers and clients written against courier-stubgen's output for
corpus/svc/echo.proto, the way a user writes them: explicit ctx, typed
requests and replies, typed app errors. `mypy --strict` must pass on this file
(test_stubgen.py checks it), and the end-to-end tests serve and call these."""

from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator, Iterator, List

import courier
import courier.aio
from corpus.common import common_pb2
from corpus.svc import echo_courier, echo_pb2
from google.protobuf import empty_pb2


def _deadline_ms(ctx: courier.Context) -> int:
    left = ctx.time_remaining()
    return -1 if left is None else int(left * 1000)


def _reply(ctx: courier.Context, req: echo_pb2.EchoRequest, index: int = 0) -> echo_pb2.EchoReply:
    if req.fail != echo_pb2.ECHO_ERROR_UNSPECIFIED:
        raise echo_courier.EchoAppError(req.fail, f"failing with {echo_pb2.EchoError.Name(req.fail)}")
    return echo_pb2.EchoReply(text=req.text, index=index, deadline_ms=_deadline_ms(ctx) if req.report_deadline else 0)


class Echo(echo_courier.EchoServicer):
    """corpus.svc.Echo with synchronous handlers."""

    def __init__(self, downstream: "echo_courier.EchoClient | None" = None) -> None:
        self.downstream = downstream

    def Say(self, ctx: courier.Context, request: echo_pb2.EchoRequest) -> echo_pb2.EchoReply:
        if request.text == "hop" and self.downstream is not None:
            # A downstream app error that escapes is UNKNOWN for our caller.
            return self.downstream.Say(ctx, echo_pb2.EchoRequest(text="down", fail=request.fail))
        return _reply(ctx, request)

    def Quick(self, ctx: courier.Context, request: echo_pb2.EchoRequest) -> echo_pb2.EchoReply:
        if request.sleep_ms:
            time.sleep(request.sleep_ms / 1000)
        return _reply(ctx, request)

    def Expand(self, ctx: courier.Context, request: echo_pb2.EchoRequest) -> Iterator[echo_pb2.EchoReply]:
        for i in range(request.repeat):
            yield echo_pb2.EchoReply(text=request.text, index=i)
        if request.fail:
            raise echo_courier.EchoAppError(request.fail, "after the replies")

    def Collect(self, ctx: courier.Context, requests: Iterator[echo_pb2.EchoRequest]) -> echo_pb2.EchoReply:
        texts: List[str] = []
        for r in requests:
            texts.append(r.text)
        return echo_pb2.EchoReply(text="".join(texts), index=len(texts))

    def Chat(self, ctx: courier.Context, requests: Iterator[echo_pb2.EchoRequest]) -> Iterator[echo_pb2.EchoReply]:
        for i, r in enumerate(requests):
            yield _reply(ctx, r, i)

    def Watch(self, ctx: courier.Context, request: echo_pb2.EchoRequest) -> Iterator[echo_pb2.EchoReply]:
        yield echo_pb2.EchoReply(text=request.text, deadline_ms=_deadline_ms(ctx))


class Admin(echo_courier.AdminServicer):
    """corpus.svc.Admin: Reset is implemented, Price raises app errors; the
    base class answers UNIMPLEMENTED for anything left out."""

    def Reset(self, ctx: courier.Context, request: empty_pb2.Empty) -> common_pb2.Audit:
        raise echo_courier.AdminAppError(echo_pb2.ADMIN_ERROR_DENIED, "not you")

    def Price(self, ctx: courier.Context, request: common_pb2.Money) -> empty_pb2.Empty:
        if request.units < 0:
            raise echo_courier.EchoAppError(echo_pb2.ECHO_ERROR_GONE, "negative")
        if request.units == 13:
            # Not this method's enum: INTERNAL.
            raise echo_courier.AdminAppError(echo_pb2.ADMIN_ERROR_BUSY, "wrong enum")
        return empty_pb2.Empty()


class AsyncEcho(echo_courier.AsyncEchoServicer):
    """corpus.svc.Echo with asyncio handlers."""

    async def Say(self, ctx: courier.Context, request: echo_pb2.EchoRequest) -> echo_pb2.EchoReply:
        await asyncio.sleep(0)
        return _reply(ctx, request)

    async def Quick(self, ctx: courier.Context, request: echo_pb2.EchoRequest) -> echo_pb2.EchoReply:
        if request.sleep_ms:
            await asyncio.sleep(request.sleep_ms / 1000)
        return _reply(ctx, request)

    async def Expand(self, ctx: courier.Context, request: echo_pb2.EchoRequest) -> AsyncIterator[echo_pb2.EchoReply]:
        for i in range(request.repeat):
            yield echo_pb2.EchoReply(text=request.text, index=i)
        if request.fail:
            raise echo_courier.EchoAppError(request.fail, "after the replies")

    async def Collect(self, ctx: courier.Context, requests: AsyncIterator[echo_pb2.EchoRequest]) -> echo_pb2.EchoReply:
        texts = [r.text async for r in requests]
        return echo_pb2.EchoReply(text="".join(texts), index=len(texts))

    async def Chat(self, ctx: courier.Context, requests: AsyncIterator[echo_pb2.EchoRequest]) -> AsyncIterator[echo_pb2.EchoReply]:
        i = 0
        async for r in requests:
            yield _reply(ctx, r, i)
            i += 1

    async def Watch(self, ctx: courier.Context, request: echo_pb2.EchoRequest) -> AsyncIterator[echo_pb2.EchoReply]:
        yield echo_pb2.EchoReply(text=request.text, deadline_ms=_deadline_ms(ctx))


def call_everything(client: echo_courier.EchoClient) -> List[str]:
    """A client using every kind; returns what it saw."""
    ctx = courier.Context.background().with_timeout(5)
    seen = [client.Say(ctx, echo_pb2.EchoRequest(text="say")).text]
    seen += [r.text + str(r.index) for r in client.Expand(ctx, echo_pb2.EchoRequest(text="x", repeat=3))]
    seen.append(client.Collect(ctx, iter([echo_pb2.EchoRequest(text="a"), echo_pb2.EchoRequest(text="b")])).text)
    seen += [r.text for r in client.Chat(ctx, [echo_pb2.EchoRequest(text="c1"), echo_pb2.EchoRequest(text="c2")])]
    try:
        client.Say(ctx, echo_pb2.EchoRequest(fail=echo_pb2.ECHO_ERROR_GONE))
    except echo_courier.EchoAppError as e:
        value: echo_pb2.EchoError.ValueType = e.value
        seen.append(f"{echo_pb2.EchoError.Name(value)}:{e.code.name}")
    return seen


async def acall_everything(client: echo_courier.AsyncEchoClient) -> List[str]:
    """The asyncio twin of `call_everything`."""
    ctx = courier.Context.background().with_timeout(5)
    seen = [(await client.Say(ctx, echo_pb2.EchoRequest(text="say"))).text]
    seen += [r.text + str(r.index) async for r in client.Expand(ctx, echo_pb2.EchoRequest(text="x", repeat=3))]

    async def two() -> AsyncIterator[echo_pb2.EchoRequest]:
        yield echo_pb2.EchoRequest(text="a")
        yield echo_pb2.EchoRequest(text="b")

    seen.append((await client.Collect(ctx, two())).text)
    seen += [r.text async for r in client.Chat(ctx, [echo_pb2.EchoRequest(text="c1"), echo_pb2.EchoRequest(text="c2")])]
    try:
        await client.Say(ctx, echo_pb2.EchoRequest(fail=echo_pb2.ECHO_ERROR_GONE))
    except echo_courier.EchoAppError as e:
        seen.append(f"{echo_pb2.EchoError.Name(e.value)}:{e.code.name}")
    return seen
