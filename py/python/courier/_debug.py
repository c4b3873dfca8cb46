"""Python pages of the debug server and tracing setup.

The debug server lives in the core (`courier-core`'s `debug` module) and is
language-neutral; this module registers the pages only a Python process can
answer: `/py/stacks` (every thread's stack), `/py/gc` (collector state,
thresholds settable with PUT) and `/py/loglevel` (levels of Python loggers,
settable with PUT). Writes reach these handlers only over the unix socket or
with a client certificate: the core refuses them elsewhere.
"""

from __future__ import annotations

import gc
import json
import logging
import platform
import sys
import threading
import traceback
from typing import Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qs

from . import _core

__all__ = ["configure_tracing", "flush_tracing", "shutdown_tracing", "metrics_text", "install"]

_Response = Tuple[int, str, bytes]
_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"


def configure_tracing(
    otlp_endpoint: str = "http://127.0.0.1:4317",
    service_name: str = "courier-python",
    sampling_ratio: float = 0.01,
    *,
    max_queue_size: int = 2048,
    max_export_batch_size: int = 512,
    scheduled_delay: float = 1.0,
    export_timeout: float = 10.0,
) -> None:
    """Turns on tracing for this process: a span per client and server call,
    sent in batches over OTLP/gRPC (Jaeger, an OpenTelemetry collector).
    `sampling_ratio` is the share of calls without a sampled caller that start
    a trace; calls whose caller sampled them are always traced."""
    _core.configure_tracing(
        otlp_endpoint,
        service_name,
        sampling_ratio,
        max_queue_size=max_queue_size,
        max_export_batch_size=max_export_batch_size,
        scheduled_delay=scheduled_delay,
        export_timeout=export_timeout,
    )


def flush_tracing() -> None:
    """Sends every finished span now."""
    _core.flush_tracing()


def shutdown_tracing() -> None:
    """Flushes and turns tracing off."""
    _core.shutdown_tracing()


def metrics_text() -> str:
    """This process's stats as Prometheus text (what `/metrics` serves)."""
    return _core.metrics_text()


def _params(query: str, body: bytes) -> Dict[str, str]:
    out = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    if body.strip():
        try:
            loaded = json.loads(body)
        except ValueError:
            loaded = None
        if isinstance(loaded, dict):
            out.update({str(k): str(v) for k, v in loaded.items()})
    return out


def _stacks(method: str, query: str, body: bytes, can_write: bool) -> _Response:
    frames = sys._current_frames()
    lines: List[str] = [f"{len(frames)} threads in pid {__import__('os').getpid()}\n"]
    names = {t.ident: t for t in threading.enumerate()}
    for ident, frame in sorted(frames.items(), key=lambda kv: kv[0]):
        t = names.get(ident)
        title = f"{t.name} (daemon)" if t is not None and t.daemon else (t.name if t is not None else "<unknown>")
        lines.append(f"\n--- thread {ident}: {title}\n")
        lines.extend(traceback.format_stack(frame))
    return 200, _TEXT, "".join(lines).encode()


def _gc_state() -> Dict[str, object]:
    return {
        "enabled": gc.isenabled(),
        "thresholds": list(gc.get_threshold()),
        "counts": list(gc.get_count()),
        "stats": gc.get_stats(),
        "objects_tracked": len(gc.get_objects()),
        "garbage": len(gc.garbage),
    }


def _gc(method: str, query: str, body: bytes, can_write: bool) -> _Response:
    if method in ("GET", "HEAD"):
        return 200, _JSON, json.dumps(_gc_state()).encode()
    if method not in ("PUT", "POST"):
        return 405, _TEXT, b"GET, or PUT threshold0/threshold1/threshold2, enabled or collect\n"
    p = _params(query, body)
    try:
        t = list(gc.get_threshold())
        for i in range(3):
            if f"threshold{i}" in p:
                v = int(p[f"threshold{i}"])
                if v < 0:
                    raise ValueError(f"threshold{i} must not be negative")
                t[i] = v
        enabled = p.get("enabled")
        collect = p.get("collect")
    except ValueError as e:
        return 400, _TEXT, f"{e}\n".encode()
    gc.set_threshold(*t)
    if enabled is not None:
        (gc.enable if enabled.lower() in ("1", "true", "yes") else gc.disable)()
    state = _gc_state()
    if collect is not None and collect.lower() in ("1", "true", "yes"):
        state["collected"] = gc.collect()
    return 200, _JSON, json.dumps(state).encode()


def _loglevel(method: str, query: str, body: bytes, can_write: bool) -> _Response:
    def levels() -> Dict[str, str]:
        out = {"root": logging.getLevelName(logging.getLogger().level)}
        for name, lg in sorted(logging.Logger.manager.loggerDict.items()):
            if isinstance(lg, logging.Logger) and lg.level != logging.NOTSET:
                out[name] = logging.getLevelName(lg.level)
        return out

    if method in ("GET", "HEAD"):
        return 200, _JSON, json.dumps({"levels": levels()}).encode()
    p = _params(query, body)
    name, level = p.get("logger", ""), p.get("level", "").upper()
    if level not in ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG", "NOTSET"):
        return 400, _TEXT, f"unknown level {level!r}: CRITICAL, ERROR, WARNING, INFO, DEBUG or NOTSET\n".encode()
    logging.getLogger(None if name in ("", "root") else name).setLevel(level)
    return 200, _JSON, json.dumps({"levels": levels()}).encode()


_PAGES: List[Tuple[str, str, Callable[[str, str, bytes, bool], _Response]]] = [
    ("/py/stacks", "Python stacks", _stacks),
    ("/py/gc", "Python gc", _gc),
    ("/py/loglevel", "Python log levels", _loglevel),
]
_installed: Optional[bool] = None
_lock = threading.Lock()


def install() -> None:
    """Registers the Python pages and names the language (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        _core.register_language("python", f"{platform.python_implementation()} {platform.python_version()}")
        for path, title, fn in _PAGES:
            _core.register_debug_handler(path, title, fn)
        _installed = True
