"""Status codes and the exceptions of Courier calls.

`RpcError` is what every failed call raises on the client. Handlers raise
`AppError` for an application error declared with `(courier.rpc_error)`, or call
`ctx.abort(code, details)`; any other exception is `INTERNAL` for that call.
"""

from __future__ import annotations

import enum
from typing import NoReturn, Optional


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


class AppError(Exception):
    """Raised by a handler: an application error, a value of the method's
    `(courier.rpc_error)` enum. The client receives the value's mapped gRPC
    code and the value itself (`RpcError.app_error`)."""

    def __init__(self, value: int, message: str = "") -> None:
        self.value = int(value)
        self.message = message
        super().__init__(value, message)


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
