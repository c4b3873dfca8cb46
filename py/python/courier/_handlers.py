"""Running Python handlers on calls from the core: decode, call, encode, and
map exceptions to statuses. Shared by the sync and asyncio servers."""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any, Callable, ContextManager, Optional, Protocol, Tuple, Union

from . import _core
from ._errors import AbortError, AppError, RpcError, StatusCode
from ._service import Method, Service

log = logging.getLogger("courier.server")

# The sync server whose handler this thread runs, if any (see `waiting_on_call`).
_worker = threading.local()
_NOT_A_HANDLER: ContextManager[None] = contextlib.nullcontext()


class WorkerPool(Protocol):
    def waiting(self) -> ContextManager[None]: ...


def set_worker_pool(pool: Optional[WorkerPool]) -> None:
    _worker.pool = pool


def waiting_on_call() -> ContextManager[None]:
    """Wraps a blocking client call's wait. On a sync server's handler
    thread it lets that server run one more handler meanwhile, so handlers
    that call their own server (directly or through others) never wait for
    a thread that is waiting for them."""
    pool: Optional[WorkerPool] = getattr(_worker, "pool", None)
    return _NOT_A_HANDLER if pool is None else pool.waiting()

Status = Tuple[int, str, Optional[Tuple[str, int]]]


class HandlerStats:
    """Counts handler failures (the core's stats take these over later)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.exceptions = 0

    def count_exception(self) -> None:
        with self._lock:
            self.exceptions += 1


def status_of(method: Method[Any, Any], exc: BaseException, stats: HandlerStats) -> Status:
    """The status a handler's exception ends its call with."""
    if isinstance(exc, AbortError):
        return int(exc.code), exc.details, None
    if isinstance(exc, AppError) and not exc.received:
        if exc.enum is not None and (method.app_error is None or exc.enum.full_name != method.app_error.full_name):
            log.error("%s raised an app error of %s, not of its own enum", method.path, exc.enum.full_name)
            stats.count_exception()
            return int(StatusCode.INTERNAL), f"{method.path} raised an app error of {exc.enum.full_name}, not of its own enum", None
        if method.app_error is None:
            log.error("%s raised AppError(%d) but declares no rpc_error enum", method.path, exc.value)
            stats.count_exception()
            return int(StatusCode.INTERNAL), f"{method.path} raised an undeclared application error", None
        enum = method.app_error
        return int(enum.code_of(exc.value)), exc.message, (enum.full_name, exc.value)
    if isinstance(exc, RpcError):
        # The boundary rule: a downstream status that escapes is UNKNOWN here.
        return int(StatusCode.UNKNOWN), f"unhandled error from a downstream call: {exc.code.name}", None
    stats.count_exception()
    log.error("handler %s raised", method.path, exc_info=exc)
    return int(StatusCode.INTERNAL), f"handler raised {type(exc).__name__}: {exc}", None


def bind(service: Service, servicer: Any) -> dict[str, Callable[..., Any]]:
    """The handler callables of `servicer` for each method of `service`."""
    handlers = {}
    for m in service.methods:
        fn = getattr(servicer, m.name, None)
        if fn is None or not callable(fn):
            raise TypeError(f"{type(servicer).__name__} has no handler for {m.path}")
        handlers[m.name] = fn
    return handlers


def check_handlers(service: Service, handlers: Any) -> dict[str, Callable[..., Any]]:
    missing = [m.name for m in service.methods if m.name not in handlers]
    extra = [n for n in handlers if all(m.name != n for m in service.methods)]
    if missing or extra:
        raise ValueError(f"handlers for {service.name}: missing {missing}, unknown {extra}")
    return dict(handlers)


def sync_runner(method: Method[Any, Any], fn: Callable[..., Any], stats: HandlerStats) -> Callable[..., Any]:
    """A function that serves one call of `method` with `fn` on this thread,
    as `_core.Server.run_batch` calls it: `run(ctx, request_bytes)` returning
    the reply bytes or a status tuple for a unary method, `run(call)` for the
    other kinds."""
    decode = method.decode_request
    encode = method.encode
    kind = method.kind.value

    def requests(call: _core.Call) -> Any:
        while True:
            m = call.recv()
            if m is None:
                return
            yield decode(m)

    if kind == "unary":

        def run_unary(ctx: _core.Context, data: bytes) -> Union[bytes, Status]:
            try:
                return encode(fn(ctx, decode(data)))
            except Exception as e:
                return status_of(method, e, stats)

        return run_unary

    if kind == "client_streaming":

        def run(call: _core.Call) -> None:
            call.start()
            try:
                call.reply(encode(fn(call.ctx, requests(call))))
            except Exception as e:
                call.reply_error(*status_of(method, e, stats))

    else:
        server_only = kind == "server_streaming"

        def run(call: _core.Call) -> None:
            first = call.start()
            try:
                replies = fn(call.ctx, decode(first or b"") if server_only else requests(call))
                for r in replies:
                    call.send(encode(r))
            except RpcError as e:
                if call.cancelled:
                    # The client left (send raised CANCELLED): nothing to answer.
                    call.finish(int(e.code), e.details)
                    return
                call.finish(*status_of(method, e, stats))
            except Exception as e:
                call.finish(*status_of(method, e, stats))
            else:
                call.finish()

    return run
