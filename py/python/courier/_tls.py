"""Mutual TLS options and counters.

`ServerTLS.from_files(cert=, key=, ca=, require_client_cert=True)` and
`ClientTLS.from_files(cert=, key=, ca=, server_identity=)` load PEM files (the
dev CA, `courier ca`, writes `ca.pem`, `cert.pem`, `key.pem`) and reload them
when they change. `server_identity` is a full SPIFFE ID
(`spiffe://example.org/billing`) or a trust domain (`spiffe://example.org`);
the server is checked by that identity, never by host name. A server handler
sees its verified client as `ctx.peer_identity` / `ctx.peer_name`.
"""

from __future__ import annotations

from typing import List, TypedDict, cast

from . import _core

ServerTLS = _core.ServerTLS
ClientTLS = _core.ClientTLS


class HandshakeCount(TypedDict):
    side: str  # "server" or "client"
    peer: str  # the peer's SPIFFE ID, or "unauthenticated"
    full: int
    resumed: int


class HandshakeErrorCount(TypedDict):
    side: str
    reason: str  # e.g. "expired", "unknown_ca", "no_spiffe_id", "timeout", "not_tls"
    count: int
    last_error: str


class TLSStats(TypedDict):
    handshakes: List[HandshakeCount]
    errors: List[HandshakeErrorCount]
    reloads_ok: int
    reloads_failed: int
    last_reload_error: str


def tls_stats() -> TLSStats:
    """This process's TLS counters: handshakes per peer (full/resumed),
    failures per reason with the latest message, certificate reloads."""
    return cast(TLSStats, _core.tls_stats())


__all__ = ["ClientTLS", "HandshakeCount", "HandshakeErrorCount", "ServerTLS", "TLSStats", "tls_stats"]
