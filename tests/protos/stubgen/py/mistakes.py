"""Deliberate mistakes: mypy --strict must report an error on exactly the lines
marked `# error` (test_stubgen.py checks the set of lines), and nowhere else."""

from __future__ import annotations

from typing import Iterator

import courier
from corpus.svc import echo_courier, echo_pb2

ctx = courier.Context.background()
client = echo_courier.EchoClient(courier.Channel("127.0.0.1:1"))

bad_none = echo_pb2.EchoRequest(text=None)  # error: None into a string field
bad_type = echo_pb2.EchoRequest(text=5)  # error: int into a string field
client.Say(ctx, echo_pb2.EchoReply())  # error: wrong request type
client.Say(echo_pb2.EchoRequest())  # error: missing ctx
reply: echo_pb2.EchoRequest = client.Say(ctx, echo_pb2.EchoRequest())  # error: the reply is an EchoReply
echo_courier.EchoAppError(echo_pb2.ADMIN_ERROR_DENIED)  # error: wrong enum
echo_pb2.EchoRequest(fail=echo_pb2.ADMIN_ERROR_BUSY)  # error: wrong enum in a field
client.Expand(ctx, [echo_pb2.EchoRequest()])  # error: a server-streaming call takes one request
echo_pb2.EchoRequest().HasField("text")  # error: proto3 scalars have no presence


class WrongReturn(echo_courier.EchoServicer):
    def Say(self, ctx: courier.Context, request: echo_pb2.EchoRequest) -> echo_pb2.EchoRequest:  # error: wrong return type
        return request


class NoCtx(echo_courier.EchoServicer):
    def Say(self, request: echo_pb2.EchoRequest) -> echo_pb2.EchoReply:  # type: ignore[override]  # ok: explicitly ignored
        return echo_pb2.EchoReply()

    def Quick(self, request: echo_pb2.EchoRequest) -> echo_pb2.EchoReply:  # error: missing ctx
        return echo_pb2.EchoReply()


class WrongStream(echo_courier.EchoServicer):
    def Expand(self, ctx: courier.Context, request: echo_pb2.EchoRequest) -> echo_pb2.EchoReply:  # error: streams replies
        return echo_pb2.EchoReply()

    def Collect(self, ctx: courier.Context, requests: Iterator[echo_pb2.EchoReply]) -> echo_pb2.EchoReply:  # error: wrong request type
        return echo_pb2.EchoReply()
