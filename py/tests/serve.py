"""courier.test.Test served in a process of its own, for tests that signal it
or measure it: `python serve.py GEN_DIR sync|aio wait|stdin [max_concurrency]`.

GEN_DIR holds the generated `test_pb2`. Prints `PORT DEBUG_ADDR` once serving
(the debug server on a free loopback port). `wait`: the server's own `wait()`,
so SIGTERM / SIGINT stop it gracefully (grace 3 s); `stdin`: serves until
stdin closes, then stops with a 1 s grace. Exits 0 once stopped."""

from __future__ import annotations

import asyncio
import pathlib
import signal
import sys

sys.path[:0] = [str(pathlib.Path(__file__).parent), sys.argv[1]]

import test_pb2 as pb  # noqa: E402

from testservice import start_aio_server, start_sync_server  # noqa: E402

GRACE = 3.0


def main() -> None:
    flavour, mode = sys.argv[2], sys.argv[3]
    # What an interactive Python process has; a parent that ignores SIGINT
    # (a test runner's worker) would otherwise pass that on.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if flavour == "sync":
        concurrency = int(sys.argv[4]) if len(sys.argv) > 4 else 4
        server, port, _ = start_sync_server(pb, max_concurrency=concurrency, debug_addr="127.0.0.1:0")
        print(port, server.debug_addr, flush=True)
        if mode == "wait":
            assert server.wait(grace=GRACE)
        else:
            sys.stdin.read()
            server.stop(1.0)
        return

    async def serve() -> None:
        server, port, _ = await start_aio_server(pb, debug_addr="127.0.0.1:0")
        print(port, server.debug_addr, flush=True)
        if mode == "wait":
            await server.wait(grace=GRACE)
        else:
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
            await server.stop(1.0)

    asyncio.run(serve())


if __name__ == "__main__":
    main()
