"""Courier: gRPC-compatible RPC with a Rust core.

Every call takes an explicit `ctx` (`courier.Context`): its deadline travels
across hops, with the request id and trace context. Handlers are
`fn(ctx, request)`; they raise `AppError` for declared application errors or
call `ctx.abort(code, details)`; clients raise `RpcError`.
"""

from __future__ import annotations

from . import _core
from ._channel import Channel, Metadata, MetadataValue, ReplyIterator
from ._debug import configure_tracing, flush_tracing, metrics_text, shutdown_tracing
from ._debug import install as _install_debug_pages
from ._errors import AbortError, AppError, RpcError, StatusCode, abort
from ._reflection import register_descriptor
from ._service import NO_DEADLINE, AppErrorEnum, Method, MethodKind, Service
from ._server import Server
from ._tls import ClientTLS, ServerTLS, tls_stats

Context = _core.Context
__version__: str = _core.__version__
_install_debug_pages()

__all__ = [
    "AbortError",
    "AppError",
    "AppErrorEnum",
    "Channel",
    "ClientTLS",
    "Context",
    "Metadata",
    "MetadataValue",
    "Method",
    "MethodKind",
    "NO_DEADLINE",
    "ReplyIterator",
    "RpcError",
    "Server",
    "ServerTLS",
    "Service",
    "StatusCode",
    "abort",
    "configure_tracing",
    "flush_tracing",
    "metrics_text",
    "register_descriptor",
    "shutdown_tracing",
    "tls_stats",
]
