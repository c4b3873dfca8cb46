"""Courier for asyncio: `Server` runs `async def` handlers on the application's
event loop; `Channel` makes calls that are awaited.

The core wakes the loop through one eventfd, written only when the queue of
ready calls turns non-empty; each wake-up drains every ready call. A handler
coroutine is driven directly and becomes a Task only if it really suspends
(measured in PERF-NOTES: a Task per call costs about a fifth of the throughput).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import threading
from types import TracebackType
from typing import Any, AsyncIterable, AsyncIterator, Callable, Generator, Iterable, List, Mapping, Optional, Tuple, Type, TypeVar, Union

from .. import _core
from .._channel import Metadata, MetadataValue, _pairs
from .._errors import RpcError, StatusCode
from .._handlers import HandlerStats, bind, check_handlers, status_of
from .._service import Method, Service

__all__ = ["Server", "Channel", "AsyncReplyIterator"]

ReqT = TypeVar("ReqT")
RespT = TypeVar("RespT")


class _Resume:
    """Continues a coroutine that suspended on `first` (what it yielded):
    awaiting this inside a Task resumes it exactly where it stopped."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Any, first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, None, Any]:
        pending = self.first
        while True:
            try:
                yield pending
            except BaseException as exc:  # cancellation and friends go to the handler
                try:
                    pending = self.coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
                continue
            try:
                pending = self.coro.send(None)
            except StopIteration as stop:
                return stop.value


async def _complete(method: Method[Any, Any], stats: HandlerStats, flusher: _Flusher, call: _core.Call, resume: _Resume) -> None:
    """Finishes a unary handler that suspended, inside its Task."""
    try:
        call.reply(method.encode(await resume))
    except Exception as e:
        call.reply_error(*status_of(method, e, stats))
    flusher.soon()


class _Flusher:
    """Sends replies completed by tasks once per loop iteration, as one batch."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.scheduled = False

    def soon(self) -> None:
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.scheduled = False
        _core.flush_replies()


def _runner(
    method: Method[Any, Any], fn: Callable[..., Any], stats: HandlerStats, loop: asyncio.AbstractEventLoop, flusher: _Flusher
) -> Callable[..., Any]:
    """The method's runner for `_core.Server.run_ready`: a unary one is
    `runner(ctx, request_bytes)` and gives the reply bytes, a status tuple, or
    (when the handler suspended) the `_Resume` that `_spawn` turns into a Task;
    the others are `runner(call)`."""
    decode, encode, kind = method.decode_request, method.encode, method.kind.value

    async def requests(call: _core.Call) -> AsyncIterator[Any]:
        while True:
            m = await call.recv_async(loop)
            if m is None:
                return
            yield decode(m)

    def first_step(coro: Any) -> Any:
        # Drive the coroutine directly; only a suspension costs a Task.
        # Gives the reply bytes, or the _Resume of a suspended handler.
        if not inspect.iscoroutine(coro):
            return encode(coro)
        try:
            pending = coro.send(None)
        except StopIteration as stop:
            return encode(stop.value)
        return _Resume(coro, pending)

    if kind == "unary":

        def run_unary(ctx: _core.Context, data: bytes) -> Any:
            try:
                return first_step(fn(ctx, decode(data)))
            except Exception as e:
                return status_of(method, e, stats)

        return run_unary

    elif kind == "client_streaming":

        def run(call: _core.Call) -> None:
            call.start()
            try:
                result = first_step(fn(call.ctx, requests(call)))
                if not isinstance(result, _Resume):
                    call.reply(result)
                    return
            except Exception as e:
                call.reply_error(*status_of(method, e, stats))
                return
            loop.create_task(_complete(method, stats, flusher, call, result))

    else:
        server_only = kind == "server_streaming"

        async def stream(call: _core.Call, first: Optional[bytes]) -> None:
            try:
                replies = fn(call.ctx, decode(first or b"") if server_only else requests(call))
                if inspect.iscoroutine(replies):
                    replies = await replies
                async for r in _aiter(replies):
                    data = encode(r)
                    if not call.try_send(data):
                        await call.send_async(loop, data)
            except RpcError as e:
                if call.cancelled:
                    await call.finish_async(loop, int(e.code), e.details)
                    return
                await call.finish_async(loop, *status_of(method, e, stats))
            except Exception as e:
                await call.finish_async(loop, *status_of(method, e, stats))
            else:
                await call.finish_async(loop)

        def run(call: _core.Call) -> None:
            loop.create_task(stream(call, call.start()))

    return run


async def _aiter(items: Union[AsyncIterable[Any], Iterable[Any]]) -> AsyncIterator[Any]:
    if isinstance(items, AsyncIterable):
        async for x in items:
            yield x
    else:
        for x in items:
            yield x


class Server:
    """A Courier server whose handlers are `async def` functions on this loop."""

    def __init__(
        self,
        *,
        workers: Optional[int] = None,
        max_recv_message_size: Optional[int] = None,
        limits: Union[str, "os.PathLike[str]", None] = None,
        debug_addr: Optional[str] = None,
        tls: Optional[_core.ServerTLS] = None,
    ) -> None:
        self._core = _core.Server(tls=tls, 
            workers=workers,
            max_recv_message_size=max_recv_message_size,
            event_loop=True,
            limits=None if limits is None else os.fspath(limits),
            debug_addr=debug_addr,
        )
        self._handlers: List[Tuple[Method[Any, Any], Callable[..., Any]]] = []
        self._runners: List[Callable[..., Any]] = []
        self._flusher: Optional[_Flusher] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stopped: Optional[asyncio.Event] = None
        self._stopping: Optional["asyncio.Task[None]"] = None
        self.stats = HandlerStats()

    def add_service(self, servicer: Any) -> None:
        """Serves a servicer instance (a generated `Async...Servicer` subclass)."""
        service: Service = type(servicer).__courier_service__
        self.add_handlers(service, bind(service, servicer))

    def add_handlers(self, service: Service, handlers: Mapping[str, Callable[..., Any]]) -> None:
        handlers = check_handlers(service, handlers)
        for m in service.methods:
            method_id = len(self._handlers)
            self._handlers.append((m, handlers[m.name]))
            self._core.register(m.path, m.kind.value, m.deadline_seconds, method_id, m.app_error.full_name if m.app_error else None)

    def listen(self, address: str) -> int:
        return self._core.listen(address)

    @property
    def debug_addr(self) -> Optional[str]:
        """The debug server's address once started (`127.0.0.1:PORT` or `unix:/path`)."""
        return self._core.debug_addr

    def set_serving(self, service: str, serving: bool) -> None:
        self._core.set_serving(service, serving)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stopped = asyncio.Event()
        self._flusher = flusher = _Flusher(loop)
        self._runners = [_runner(m, fn, self.stats, loop, flusher) for m, fn in self._handlers]
        self._core.start()
        fd = self._core.notify_fd()
        assert fd is not None
        loop.add_reader(fd, self._drain)

    def _drain(self) -> None:
        # Every ready call runs here, in the core's loop (`run_ready`).
        if not self._core.run_ready(256, self._runners, self._spawn):
            self._detach()

    def _spawn(self, call: _core.Call, pending: _Resume) -> None:
        # A unary handler that suspended (see `run_ready`): a Task finishes it.
        assert self._loop is not None and self._flusher is not None
        method, _ = self._handlers[call.method_id]
        self._loop.create_task(_complete(method, self.stats, self._flusher, call, pending))

    def _detach(self) -> None:
        fd = self._core.notify_fd()
        if self._loop is not None and fd is not None:
            self._loop.remove_reader(fd)

    async def stop(self, grace: Optional[float] = 5.0) -> None:
        """Stops accepting calls (new ones get UNAVAILABLE), lets those in
        flight finish for up to `grace` seconds, then cancels the rest: their
        handlers see `ctx.cancelled`, their clients get UNAVAILABLE as the
        connections close."""
        loop = asyncio.get_running_loop()
        # The loop keeps serving calls in flight while the core drains.
        await loop.run_in_executor(None, self._core.shutdown, 0.0 if grace is None else grace)
        self._drain()
        self._detach()
        if self._stopped is not None:
            self._stopped.set()

    async def wait(self, *, grace: Optional[float] = 5.0, handle_signals: bool = True) -> None:
        """Waits until the server is stopped. Meanwhile, when this loop runs on
        the main thread, SIGTERM and SIGINT (Ctrl-C) stop it gracefully:
        `stop(grace)`, so calls in flight finish and new ones are refused, and
        `wait` returns once it has stopped. The signals' previous handlers are
        restored on return; a loop that cannot handle signals raises its
        error (NotImplementedError). `handle_signals=False` leaves signals
        alone."""
        if self._stopped is None:
            raise RuntimeError("the server is not started")
        loop = asyncio.get_running_loop()
        installed: List[Tuple[signal.Signals, Any]] = []
        try:
            if handle_signals and threading.current_thread() is threading.main_thread():
                for sig in (signal.SIGTERM, signal.SIGINT):
                    previous = signal.getsignal(sig)
                    loop.add_signal_handler(sig, self._stop_on_signal, grace)
                    installed.append((sig, previous))
            await self._stopped.wait()
        finally:
            for sig, previous in installed:
                loop.remove_signal_handler(sig)
                if previous is not None:
                    signal.signal(sig, previous)

    def _stop_on_signal(self, grace: Optional[float]) -> None:
        if self._stopping is None:  # a second signal does not start a second stop
            self._stopping = asyncio.ensure_future(self.stop(grace))

    async def __aenter__(self) -> "Server":
        """`async with Server() as s:` does not start the server; leaving the block is `await stop(1.0)`."""
        return self

    async def __aexit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        await self.stop(1.0)


class Channel:
    """The asyncio client channel: calls are awaited on the running loop."""

    def __init__(self, target: str, *, max_recv_message_size: Optional[int] = None, tls: Optional[_core.ClientTLS] = None) -> None:
        self._native: Optional[_core.Channel] = _core.Channel(target, max_recv_message_size=max_recv_message_size, tls=tls)
        self.target = target

    @property
    def native(self) -> _core.Channel:
        if self._native is None:
            raise ValueError("the channel is closed")
        return self._native

    async def unary(self, ctx: _core.Context, method: Method[ReqT, RespT], request: ReqT, *, metadata: Optional[Metadata] = None) -> RespT:
        loop = asyncio.get_running_loop()
        data, _, _ = await self.native.unary_async(loop, ctx, method.native, method.encode(request), _pairs(metadata))
        return method.decode_response(data)

    async def unary_with_metadata(
        self, ctx: _core.Context, method: Method[ReqT, RespT], request: ReqT, *, metadata: Optional[Metadata] = None
    ) -> Tuple[RespT, List[Tuple[str, MetadataValue]], List[Tuple[str, MetadataValue]]]:
        loop = asyncio.get_running_loop()
        data, headers, trailers = await self.native.unary_async(loop, ctx, method.native, method.encode(request), _pairs(metadata))
        return method.decode_response(data), headers, trailers

    def server_streaming(
        self, ctx: _core.Context, method: Method[ReqT, RespT], request: ReqT, *, metadata: Optional[Metadata] = None
    ) -> "AsyncReplyIterator[RespT]":
        call = self.native.stream(ctx, method.native, _pairs(metadata))
        call.send(method.encode(request))  # an empty buffer: never waits
        call.close()
        return AsyncReplyIterator(call, method)

    async def client_streaming(
        self,
        ctx: _core.Context,
        method: Method[ReqT, RespT],
        requests: Union[AsyncIterable[ReqT], Iterable[ReqT]],
        *,
        metadata: Optional[Metadata] = None,
    ) -> RespT:
        call = self.native.stream(ctx, method.native, _pairs(metadata))
        await _pump(call, method, requests)
        return await AsyncReplyIterator(call, method).single()

    def bidi_streaming(
        self,
        ctx: _core.Context,
        method: Method[ReqT, RespT],
        requests: Union[AsyncIterable[ReqT], Iterable[ReqT]],
        *,
        metadata: Optional[Metadata] = None,
    ) -> "AsyncReplyIterator[RespT]":
        call = self.native.stream(ctx, method.native, _pairs(metadata))
        it = AsyncReplyIterator(call, method)
        it._pump = asyncio.get_running_loop().create_task(_pump(call, method, requests))
        return it

    def close(self) -> None:
        self._native = None

    async def __aenter__(self) -> "Channel":
        return self

    async def __aexit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.close()


async def _pump(call: _core.ClientCall, method: Method[Any, Any], requests: Union[AsyncIterable[Any], Iterable[Any]]) -> None:
    loop = asyncio.get_running_loop()
    try:
        async for r in _aiter(requests):
            if not await call.send_async(loop, method.encode(r)):
                return
    except BaseException:
        call.cancel()
        raise
    finally:
        call.close()


class AsyncReplyIterator(AsyncIterator[RespT]):
    """The replies of a streaming call, for `async for`."""

    def __init__(self, call: _core.ClientCall, method: Method[Any, RespT]) -> None:
        self._call = call
        self._decode = method.decode_response
        self._pump: Optional["asyncio.Task[None]"] = None

    def __aiter__(self) -> "AsyncReplyIterator[RespT]":
        return self

    async def __anext__(self) -> RespT:
        m = await self._call.recv_async(asyncio.get_running_loop())
        if m is None:
            raise StopAsyncIteration
        return self._decode(m)

    async def single(self) -> RespT:
        loop = asyncio.get_running_loop()
        first = await self._call.recv_async(loop)
        if first is None:
            raise RpcError(StatusCode.INTERNAL, "server sent no response message")
        if await self._call.recv_async(loop) is not None:
            raise RpcError(StatusCode.INTERNAL, "server sent more than one response message for a unary call")
        return self._decode(first)

    def headers(self) -> Optional[List[Tuple[str, MetadataValue]]]:
        return self._call.headers()

    def trailers(self) -> Optional[List[Tuple[str, MetadataValue]]]:
        return self._call.trailers()

    def cancel(self) -> None:
        self._call.cancel()
        if self._pump is not None:
            self._pump.cancel()


