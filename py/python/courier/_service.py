"""The method table: what a service's methods are and how their messages are
encoded. Generated `*_courier.py` code builds these; they can also be written by
hand to serve callables without generated stubs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Mapping, Optional, Protocol, Tuple, Type, TypeVar

from . import _core
from ._errors import StatusCode

ReqT = TypeVar("ReqT")
RespT = TypeVar("RespT")


class MethodKind(str, enum.Enum):
    UNARY = "unary"
    SERVER_STREAMING = "server_streaming"
    CLIENT_STREAMING = "client_streaming"
    BIDI_STREAMING = "bidi_streaming"

    @property
    def client_streams(self) -> bool:
        return self in (MethodKind.CLIENT_STREAMING, MethodKind.BIDI_STREAMING)

    @property
    def server_streams(self) -> bool:
        return self in (MethodKind.SERVER_STREAMING, MethodKind.BIDI_STREAMING)


class Message(Protocol):
    """What Courier needs of a message type: protobuf's two methods."""

    def SerializeToString(self, *, deterministic: bool = ...) -> bytes: ...


class _NoDeadline:
    def __repr__(self) -> str:
        return "NO_DEADLINE"


NO_DEADLINE: Any = _NoDeadline()
"""Declares a method that runs without a deadline unless its caller sets one."""


@dataclass(frozen=True)
class AppErrorEnum:
    """A proto enum marked `(courier.rpc_error)`: its full name and the gRPC
    code of each value (`(courier.grpc_code)`); unmapped values are `UNKNOWN`."""

    full_name: str
    codes: Mapping[int, StatusCode] = field(default_factory=dict)

    def code_of(self, value: int) -> StatusCode:
        return self.codes.get(value, StatusCode.UNKNOWN)


def _encode(msg: Any) -> bytes:
    # A message first: an isinstance() that fails on a upb message looks up
    # `__class__` through the message's own getattr (1.3k instructions a call).
    try:
        data: bytes = msg.SerializeToString()
    except AttributeError:
        if isinstance(msg, (bytes, bytearray, memoryview)):
            return bytes(msg)
        raise
    return data


def _decoder(t: Optional[type]) -> Callable[[bytes], Any]:
    if t is None or t is bytes:
        return bytes
    from_string: Callable[[bytes], Any] = getattr(t, "FromString")
    return from_string


@dataclass(frozen=True)
class Method(Generic[ReqT, RespT]):
    """One method. `deadline` is the default deadline in seconds, or
    `NO_DEADLINE`; it must be given: deadlines are mandatory in Courier.
    `request_type`/`response_type` are protobuf message classes (or `bytes`)."""

    service: str
    name: str
    kind: MethodKind
    request_type: Type[ReqT]
    response_type: Type[RespT]
    deadline: Any
    app_error: Optional[AppErrorEnum] = None
    decode_request: Callable[[bytes], ReqT] = field(init=False, repr=False, compare=False)
    decode_response: Callable[[bytes], RespT] = field(init=False, repr=False, compare=False)
    native: _core.Method = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.deadline is not NO_DEADLINE and not (
            isinstance(self.deadline, (int, float)) and self.deadline > 0
        ):
            raise ValueError(
                f"method {self.path}: deadline must be a positive number of seconds or "
                f"courier.NO_DEADLINE, got {self.deadline!r}"
            )
        object.__setattr__(self, "kind", MethodKind(self.kind))
        object.__setattr__(self, "decode_request", _decoder(self.request_type))
        object.__setattr__(self, "decode_response", _decoder(self.response_type))
        object.__setattr__(
            self,
            "native",
            _core.Method(self.path, self.kind.value, self.deadline_seconds, self.app_error.full_name if self.app_error else None),
        )

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"

    @property
    def deadline_seconds(self) -> Optional[float]:
        """The default deadline in seconds, None for `NO_DEADLINE`."""
        return None if self.deadline is NO_DEADLINE else float(self.deadline)

    encode = staticmethod(_encode)


@dataclass(frozen=True)
class Service:
    """A service: its full name (`package.Service`) and its methods."""

    name: str
    methods: Tuple[Method[Any, Any], ...]

    def method(self, name: str) -> Method[Any, Any]:
        for m in self.methods:
            if m.name == name:
                return m
        raise KeyError(f"{self.name} has no method {name!r}")
