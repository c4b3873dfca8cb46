"""Status codes and the exceptions of Courier calls.

`RpcError` is what every failed call raises on the client. Handlers raise
`AppError` for an application error declared with `(courier.rpc_error)`, or call
`ctx.abort(code, details)`; any other exception is `INTERNAL` for that call.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, ClassVar, Dict, NoReturn, Optional, Type

if TYPE_CHECKING:
    from ._service import AppErrorEnum


class StatusCode(enum.IntEnum):
    """The gRPC status codes."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class RpcError(Exception):
    """A call ended with a non-OK status.

    `app_error` is the value of the method's `rpc_error` enum when the server
    sent an application error (`app_error_enum` names that enum).
    """

    def __init__(
        self,
        code: int,
        details: str,
        app_error_enum: Optional[str] = None,
        app_error: Optional[int] = None,
    ) -> None:
        try:
            self.code: StatusCode = StatusCode(code)
        except ValueError:
            self.code = StatusCode.UNKNOWN
        self.details: str = details
        self.app_error_enum: Optional[str] = app_error_enum
        self.app_error: Optional[int] = app_error
        super().__init__(code, details, app_error_enum, app_error)

    def __str__(self) -> str:
        app = f" (app error {self.app_error_enum}={self.app_error})" if self.app_error is not None else ""
        return f"{self.code.name}: {self.details}{app}"

    def __repr__(self) -> str:
        return f"RpcError({self.code.name}, {self.details!r}, app_error={self.app_error!r})"


class AppError(RpcError):
    """An application error: a value of a method's `(courier.rpc_error)` enum.

    Raised by a handler, the client receives the value's mapped gRPC code and
    the value itself. Generated code subclasses it per enum (`enum` set, the
    value typed); a client call raises that subclass for an app error of its
    enum, with `received` True. A received app error that escapes a handler is
    `UNKNOWN` for its caller, like any other downstream error.
    """

    enum: ClassVar[Optional["AppErrorEnum"]] = None

    def __init__(self, value: int, message: str = "", *, code: Optional[int] = None, received: bool = False) -> None:
        enum = type(self).enum
        if code is None:
            code = enum.code_of(int(value)) if enum is not None else StatusCode.UNKNOWN
        super().__init__(code, message, enum.full_name if enum is not None else None, int(value))
        self.value = int(value)
        self.message = message
        self.received = received

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        enum = cls.__dict__.get("enum")
        if enum is not None:
            _TYPED_APP_ERRORS[enum.full_name] = cls

    def __reduce__(self) -> "tuple[object, ...]":
        return (_rebuild_app_error, (type(self), self.value, self.message, int(self.code), self.received))


_TYPED_APP_ERRORS: Dict[str, Type[AppError]] = {}


def _rebuild_app_error(cls: Type[AppError], value: int, message: str, code: int, received: bool) -> AppError:
    return cls(value, message, code=code, received=received)


def _from_status(code: int, details: str, app_error_enum: Optional[str] = None, app_error: Optional[int] = None) -> RpcError:
    """The exception of a failed call (the native module calls this): the typed
    app error generated for `app_error_enum` if there is one, else RpcError."""
    if app_error_enum is not None and app_error is not None:
        typed = _TYPED_APP_ERRORS.get(app_error_enum)
        if typed is not None:
            return typed(app_error, details, code=code, received=True)
    return RpcError(code, details, app_error_enum, app_error)


class AbortError(Exception):
    """Raised by `abort`: ends the call with the given status."""

    def __init__(self, code: StatusCode, details: str) -> None:
        if code == StatusCode.OK:
            raise ValueError("abort needs a non-OK status code")
        self.code = StatusCode(code)
        self.details = details
        super().__init__(code, details)


def abort(code: StatusCode, details: str) -> NoReturn:
    """Ends the current call with `code` and `details` (raises `AbortError`)."""
    raise AbortError(code, details)
