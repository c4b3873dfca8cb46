"""The synchronous client: `Channel` and the calls generated clients make."""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Tuple, Type, TypeVar, Union

from . import _core
from ._handlers import waiting_on_call
from ._service import Method

ReqT = TypeVar("ReqT")
RespT = TypeVar("RespT")

MetadataValue = Union[str, bytes]
Metadata = Sequence[Tuple[str, MetadataValue]]


class Channel:
    """A connection to one server (`"host:port"`), made on first use and
    re-made after failures; calls from any thread share it."""

    def __init__(self, target: str, *, max_recv_message_size: Optional[int] = None, tls: Optional[_core.ClientTLS] = None) -> None:
        self._native: Optional[_core.Channel] = _core.Channel(target, max_recv_message_size=max_recv_message_size, tls=tls)
        self.target = target

    @property
    def native(self) -> _core.Channel:
        if self._native is None:
            raise ValueError("the channel is closed")
        return self._native

    def unary(self, ctx: _core.Context, method: Method[ReqT, RespT], request: ReqT, *, metadata: Optional[Metadata] = None) -> RespT:
        return self.unary_with_metadata(ctx, method, request, metadata=metadata)[0]

    def unary_with_metadata(
        self, ctx: _core.Context, method: Method[ReqT, RespT], request: ReqT, *, metadata: Optional[Metadata] = None
    ) -> Tuple[RespT, List[Tuple[str, MetadataValue]], List[Tuple[str, MetadataValue]]]:
        """A unary call that also returns the response headers and trailers."""
        native, req, md = self.native, method.encode(request), _pairs(metadata)
        with waiting_on_call():
            data, headers, trailers = native.unary(ctx, method.native, req, md)
        return method.decode_response(data), headers, trailers

    def server_streaming(
        self, ctx: _core.Context, method: Method[ReqT, RespT], request: ReqT, *, metadata: Optional[Metadata] = None
    ) -> "ReplyIterator[RespT]":
        call = self.native.stream(ctx, method.native, _pairs(metadata))
        call.send(method.encode(request))
        call.close()
        return ReplyIterator(call, method)

    def client_streaming(
        self, ctx: _core.Context, method: Method[ReqT, RespT], requests: Iterable[ReqT], *, metadata: Optional[Metadata] = None
    ) -> RespT:
        call = self.native.stream(ctx, method.native, _pairs(metadata))
        _pump(call, method, requests)
        replies = ReplyIterator(call, method)
        return replies.single()

    def bidi_streaming(
        self, ctx: _core.Context, method: Method[ReqT, RespT], requests: Iterable[ReqT], *, metadata: Optional[Metadata] = None
    ) -> "ReplyIterator[RespT]":
        call = self.native.stream(ctx, method.native, _pairs(metadata))
        # Requests may depend on replies (ping-pong): send them from a thread.
        t = threading.Thread(target=_pump, args=(call, method, requests), daemon=True, name="courier-request-pump")
        t.start()
        return ReplyIterator(call, method)

    def close(self) -> None:
        """Closes the channel; calls in flight finish, new calls raise ValueError."""
        self._native = None

    def __enter__(self) -> "Channel":
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.close()


def _pairs(metadata: Optional[Metadata]) -> Optional[List[Tuple[str, MetadataValue]]]:
    return None if metadata is None else list(metadata)


def _pump(call: _core.ClientCall, method: Method[Any, Any], requests: Iterable[Any]) -> None:
    try:
        for r in requests:
            data = method.encode(r)
            with waiting_on_call():
                sent = call.send(data)
            if not sent:
                return  # the call ended; its status comes with the replies
    except BaseException:
        call.cancel()
        raise
    finally:
        call.close()


class ReplyIterator(Iterator[RespT]):
    """The replies of a streaming call. Raises RpcError with the call's status
    if it failed; `cancel()` ends it early."""

    def __init__(self, call: _core.ClientCall, method: Method[Any, RespT]) -> None:
        self._call = call
        self._decode = method.decode_response

    def __iter__(self) -> "ReplyIterator[RespT]":
        return self

    def __next__(self) -> RespT:
        with waiting_on_call():
            m = self._call.recv()
        if m is None:
            raise StopIteration
        return self._decode(m)

    def single(self) -> RespT:
        with waiting_on_call():
            first = self._call.recv()
        if first is None:
            from ._errors import RpcError, StatusCode

            raise RpcError(StatusCode.INTERNAL, "server sent no response message")
        with waiting_on_call():
            more = self._call.recv()
        if more is not None:
            from ._errors import RpcError, StatusCode

            raise RpcError(StatusCode.INTERNAL, "server sent more than one response message for a unary call")
        return self._decode(first)

    def headers(self) -> Optional[List[Tuple[str, MetadataValue]]]:
        return self._call.headers()

    def trailers(self) -> Optional[List[Tuple[str, MetadataValue]]]:
        return self._call.trailers()

    def cancel(self) -> None:
        self._call.cancel()
