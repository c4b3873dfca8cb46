"""The synchronous server: handlers run on a pool of Python threads that pull
batches of calls from the core (the GIL is released while they wait)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from types import TracebackType
from typing import Any, Callable, Iterator, List, Mapping, Optional, Type, Union

from . import _core
from ._handlers import HandlerStats, bind, check_handlers, set_worker_pool, sync_runner
from ._service import Service

# Calls one thread takes at a time: big enough to amortise a wake-up; a batch
# whose handlers turn out slow hands its calls not started yet back after 2 ms.
_BATCH = 64
# How long a handler thread waits for calls before it checks whether it is a
# spare one no longer needed (see `Server.waiting`).
_SPARE_IDLE = 1.0


class Server:
    """A Courier server with synchronous handlers.

    `workers`: I/O threads of the core (default: one per core).
    `max_concurrency`: Python handler threads, i.e. handlers running at once.
    Each method takes up to `max_concurrency + 64` calls (running, or waiting
    in a batch a thread will take) before the core queues them (LIFO, see the
    limits file); a method's `max_concurrency` in the limits file replaces it.
    `limits`: the limits YAML file (ACLs, rate limits, queues; see
    core/README.md), watched and reloaded when it changes or on SIGHUP.
    `debug_addr`: the debug (admin) server, `127.0.0.1:PORT` or `unix:/path`
    (`/metrics`, `/rpcz`, `/deps`, ... and the admin page at `/`).
    """

    def __init__(
        self,
        *,
        workers: Optional[int] = None,
        max_concurrency: int = 32,
        max_recv_message_size: Optional[int] = None,
        limits: Union[str, "os.PathLike[str]", None] = None,
        debug_addr: Optional[str] = None,
        tls: Optional[_core.ServerTLS] = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self._core = _core.Server(tls=tls, 
            workers=workers,
            max_recv_message_size=max_recv_message_size,
            limits=None if limits is None else os.fspath(limits),
            # A method's workpool, unless the limits file sets its own
            # max_concurrency: a call per handler thread plus one batch ready
            # to take. Calls past it wait in the core's LIFO queue. Bounded by
            # the threads alone, a busy server's batches shrink to a few calls
            # and each costs a thread switch (measured: 95k calls/s against
            # 117k on one core with 32 threads).
            host_concurrency=max_concurrency + _BATCH,
            debug_addr=debug_addr,
        )
        self._max_concurrency = max_concurrency
        self._runners: List[Callable[..., Any]] = []
        self._threads: List[threading.Thread] = []
        # Handler threads alive, and how many of them wait on a client call
        # (see `waiting`); both under _pool_lock.
        self._pool_lock = threading.Lock()
        self._live = 0
        self._waiting = 0
        self._stopped = threading.Event()
        self._started = False
        self.stats = HandlerStats()

    def add_service(self, servicer: Any) -> None:
        """Serves a servicer instance (a generated `...Servicer` subclass)."""
        service: Service = type(servicer).__courier_service__
        self.add_handlers(service, bind(service, servicer))

    def add_handlers(self, service: Service, handlers: Mapping[str, Callable[..., Any]]) -> None:
        """Serves `service` with one callable per method name: `fn(ctx, request)`."""
        handlers = check_handlers(service, handlers)
        for m in service.methods:
            method_id = len(self._runners)
            self._runners.append(sync_runner(m, handlers[m.name], self.stats))
            self._core.register(m.path, m.kind.value, m.deadline_seconds, method_id, m.app_error.full_name if m.app_error else None)

    def listen(self, address: str) -> int:
        """Binds `address` ("host:port"; port 0 picks one) and returns the port."""
        return self._core.listen(address)

    @property
    def debug_addr(self) -> Optional[str]:
        """The debug server's address once started (`127.0.0.1:PORT` or `unix:/path`)."""
        return self._core.debug_addr

    def set_serving(self, service: str, serving: bool) -> None:
        """Sets a service's status in the built-in `grpc.health.v1` service."""
        self._core.set_serving(service, serving)

    def limits_status(self) -> Optional[dict[str, Any]]:
        """The limits in force, the file and the last reload's result (or None)."""
        text = self._core.limits_json()
        return None if text is None else dict(json.loads(text))

    def start(self) -> None:
        self._core.start()
        self._started = True
        with self._pool_lock:
            for _ in range(self._max_concurrency):
                self._add_thread()

    def _add_thread(self) -> None:
        # Under _pool_lock.
        t = threading.Thread(target=self._work, name=f"courier-handler-{len(self._threads)}", daemon=True)
        self._live += 1
        self._threads.append(t)
        t.start()

    def _work(self) -> None:
        # The batch loop runs in the core (see `_core.Server.run_batch`).
        set_worker_pool(self)
        core, runners, lock = self._core, self._runners, self._pool_lock
        # Threads added while others wait on calls come back after an idle
        # second to see whether they are still needed.
        while core.run_batch(_BATCH, runners, _SPARE_IDLE):
            if self._live - self._waiting > self._max_concurrency:
                with lock:
                    if self._live - self._waiting > self._max_concurrency:
                        self._live -= 1
                        return
        with lock:
            self._live -= 1

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Around a handler's wait on a client call (see
        `_handlers.waiting_on_call`): while it waits, another thread may run
        a handler, so `max_concurrency` handlers can always make progress and
        a handler that calls its own server never waits on itself. Threads
        added that way leave once not needed. The calls of this thread's
        batch not started yet go back to the queue first."""
        _core.hand_back_held()
        with self._pool_lock:
            self._waiting += 1
            if self._live - self._waiting < self._max_concurrency and not self._stopped.is_set():
                self._add_thread()
        try:
            yield
        finally:
            with self._pool_lock:
                self._waiting -= 1

    def stop(self, grace: Optional[float] = 5.0) -> None:
        """Stops accepting calls (new ones get UNAVAILABLE), lets those in
        flight finish for up to `grace` seconds, then cancels the rest: their
        handlers see `ctx.cancelled`, their clients get UNAVAILABLE as the
        connections close. Returns once every handler has returned."""
        if self._started:
            self._core.shutdown(0.0 if grace is None else grace)
            joined = 0
            while True:
                with self._pool_lock:
                    left = self._threads[joined:]
                if not left:
                    break
                for t in left:
                    t.join()
                joined += len(left)
            _core.flush_replies()
        self._stopped.set()

    def wait(self, timeout: Optional[float] = None, *, grace: float = 5.0) -> bool:
        """Blocks until the server stops (or `timeout`). Meanwhile Ctrl-C
        (KeyboardInterrupt) and, on the main thread, SIGTERM stop it
        gracefully with `stop(grace)`; SIGTERM's previous handler is restored
        on return. Returns True once stopped, False on timeout."""
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, lambda *_: self._stop_in_background(grace))
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._stopped.is_set():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                # Short waits keep the main thread responsive to signals.
                self._stopped.wait(0.2 if left is None else min(0.2, left))
            return True
        except KeyboardInterrupt:
            self.stop(grace)
            return True
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def _stop_in_background(self, grace: float) -> None:
        threading.Thread(target=self.stop, args=(grace,), daemon=True).start()

    def __enter__(self) -> "Server":
        """`with Server() as s:` does not start the server; leaving the block is `stop(1.0)`."""
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop(1.0)
