"""Every server the harness knows: how to start it on one core or on two, which
paths it serves, what it supports. Adding a language is adding one entry."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

ECHO = "/bench.Echo/Echo"
STREAM = "/bench.Echo/Stream"
GO_ECHO = "/courier.test.Test/UnaryUnary"
GO_STREAM = "/courier.test.Test/UnaryStream"


@dataclass
class Paths:
    bin: Path  # copied release binaries (courier-echo, h2-echo, tonic-echo, courier-load, go-server, ...)
    python: Path  # the bench venv's python (grpcio + the release wheel of courier)
    pygen: Path  # generated echo_pb2 / echo_pb2_grpc
    repo: Path
    java_jar: Path
    limits: Path  # the limits file the Rust-native server runs with (admission on)


@dataclass
class Spec:
    id: str
    label: str
    peer: str  # "courier" or "stock" or "ceiling"
    # argv(paths, two_core, pki) -> command line; pki: mutual TLS with that dev PKI
    argv: Callable[[Paths, bool, Optional[Path]], List[str]]
    unary_path: str = ECHO
    stream_path: Optional[str] = None
    tls: bool = False
    env: Callable[[Paths, bool], Dict[str, str]] = field(default=lambda p, two: {})
    prewarm_s: float = 0.0  # extra unmeasured load at the start of each session (JIT)
    needs: str = ""  # "java": skipped (and said so) when the jar is missing
    two_core_note: str = ""
    default: bool = True  # in `make bench`; the others only when named in SERVERS


def _tls(pki: Optional[Path], flag: str = "--tls") -> List[str]:
    return [flag, str(pki)] if pki else []


def _py(mode: str) -> Callable[[Paths, bool, Optional[Path]], List[str]]:
    return lambda p, two, pki: [str(p.python), str(p.repo / "bench/python/server.py"), mode, "--port", "0",
                                "--workers", "2" if two else "1"]


def _pyenv(p: Paths, two: bool) -> Dict[str, str]:
    return {"PYTHONPATH": str(p.pygen)}


def _goenv(p: Paths, two: bool) -> Dict[str, str]:
    return {"GOMAXPROCS": "2" if two else "1"}


SERVERS: List[Spec] = [
    Spec("h2", "bare hyper/h2 echo (ceiling)", "ceiling",
         lambda p, two, pki: [str(p.bin / "h2-echo"), "--port", "0"],
         two_core_note="one current_thread runtime: one core at most"),
    Spec("courier", "Courier, Rust-native handler (admission + stats on)", "courier",
         lambda p, two, pki: [str(p.bin / "courier-echo"), "--port", "0", "--workers", "2" if two else "1",
                              "--limits", str(p.limits), *_tls(pki)],
         stream_path=STREAM, tls=True),
    Spec("courier-py-sync", "Courier, Python sync handler", "courier", _py("courier-sync"), env=_pyenv),
    Spec("courier-py-aio", "Courier, Python asyncio handler", "courier", _py("courier-aio"), env=_pyenv),
    Spec("courier-go", "Courier, Go handler", "courier",
         lambda p, two, pki: [str(p.bin / "go-server"), "-impl", "courier", *_tls(pki, "-tls")],
         unary_path=GO_ECHO, stream_path=GO_STREAM, tls=True, env=_goenv,
         two_core_note="GOMAXPROCS=2, one Courier I/O thread"),
    Spec("grpcio-sync", "grpcio sync (10 threads)", "stock", _py("grpcio-sync"), env=_pyenv),
    Spec("grpcio-aio", "grpcio aio", "stock", _py("grpcio-aio"), env=_pyenv),
    Spec("grpc-go", "grpc-go", "stock",
         lambda p, two, pki: [str(p.bin / "go-server"), "-impl", "grpc", *_tls(pki, "-tls")],
         unary_path=GO_ECHO, stream_path=GO_STREAM, tls=True, env=_goenv, two_core_note="GOMAXPROCS=2"),
    Spec("grpc-java", "grpc-java (Netty, stock executor)", "stock",
         lambda p, two, pki: ["java", "-jar", str(p.java_jar), "server", "--ignore-stdin"],
         prewarm_s=3.0, needs="java"),
    Spec("tonic-ct", "tonic, current_thread", "stock",
         lambda p, two, pki: [str(p.bin / "tonic-echo"), "--port", "0", "--flavor", "current_thread"],
         two_core_note="one current_thread runtime: one core at most"),
    Spec("tonic-mt", "tonic, multi_thread (1 worker; 2 on two cores)", "stock",
         lambda p, two, pki: [str(p.bin / "tonic-echo"), "--port", "0", "--flavor", "multi_thread",
                              "--workers", "2" if two else "1"]),
]

# Variants for the per-area entry points (bench/core, bench/go), not in `make bench`.
SERVERS += [
    Spec("courier-host", "Courier, HostQueue + 1 Rust host thread (the bindings' boundary)", "courier",
         lambda p, two, pki: [str(p.bin / "courier-echo"), "--port", "0", "--workers", "2" if two else "1", "--host"],
         default=False),
    Spec("courier-go-w1", "Courier, Go handler, 1 worker goroutine", "courier",
         lambda p, two, pki: [str(p.bin / "go-server"), "-impl", "courier", "-workers", "1"],
         unary_path=GO_ECHO, env=_goenv, default=False),
    Spec("courier-go-nobatch", "Courier, Go handler, Go threads left SCHED_OTHER", "courier",
         lambda p, two, pki: [str(p.bin / "go-server"), "-impl", "courier"],
         unary_path=GO_ECHO, env=lambda p, two: {**_goenv(p, two), "COURIER_GO_SCHED": "normal"}, default=False),
    Spec("courier-go-b1", "Courier, Go handler, 1 worker blocking in C", "courier",
         lambda p, two, pki: [str(p.bin / "go-server"), "-impl", "courier", "-workers", "1"],
         unary_path=GO_ECHO, env=lambda p, two: {**_goenv(p, two), "COURIER_GO_PULL": "blocking"}, default=False),
]

BY_ID: Dict[str, Spec] = {s.id: s for s in SERVERS}

LIMITS_YAML = """\
# Admission in force for the Rust-native benchmark server: a bounded LIFO
# queue and workpool, and rate ACLs (unlimited) checked on every call.
limits:
  bench.Echo:
    default:
      max_concurrency: 1024
      queue: lifo
      queue_timeout_ms: 1000
      queue_size: 10000
      rate_acls:
        authenticated: -1
        unauthenticated: -1
"""
