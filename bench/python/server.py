"""Python echo servers for the benchmark: `server.py MODE --port N`, MODE one of
courier-sync, courier-aio, grpcio-sync, grpcio-aio. Every handler does the same
work: decode the request, build the reply (`Resp(s=req.s)`). Prints `PORT <n>`.
`--workers N`: Courier's I/O threads (default 1; the two-core runs use 2).

The generated echo_pb2 / echo_pb2_grpc must be importable (run.sh generates
them with grpcio-tools into a temporary directory on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from concurrent import futures
from typing import Any

import echo_pb2 as pb
import echo_pb2_grpc as pb_grpc


def announce(port: int) -> None:
    print(f"PORT {port}", flush=True)


def courier_sync(port: int, workers: int) -> None:
    import courier

    svc = courier.Service("bench.Echo", (courier.Method("bench.Echo", "Echo", courier.MethodKind.UNARY, pb.Req, pb.Resp, 10.0),))

    def echo(ctx: courier.Context, req: Any) -> Any:
        return pb.Resp(s=req.s)

    server = courier.Server(workers=workers)
    server.add_handlers(svc, {"Echo": echo})
    announce(server.listen(f"127.0.0.1:{port}"))
    server.start()
    server.wait()


def courier_aio(port: int, workers: int) -> None:
    import courier
    import courier.aio

    svc = courier.Service("bench.Echo", (courier.Method("bench.Echo", "Echo", courier.MethodKind.UNARY, pb.Req, pb.Resp, 10.0),))

    async def echo(ctx: courier.Context, req: Any) -> Any:
        return pb.Resp(s=req.s)

    async def main() -> None:
        server = courier.aio.Server(workers=workers)
        server.add_handlers(svc, {"Echo": echo})
        announce(server.listen(f"127.0.0.1:{port}"))
        await server.start()
        await server.wait()

    asyncio.run(main())


class GrpcioEcho(pb_grpc.EchoServicer):  # type: ignore[misc]
    def Echo(self, req: Any, context: Any) -> Any:
        return pb.Resp(s=req.s)


class GrpcioAioEcho(pb_grpc.EchoServicer):  # type: ignore[misc]
    async def Echo(self, req: Any, context: Any) -> Any:
        return pb.Resp(s=req.s)


def grpcio_sync(port: int, workers: int) -> None:
    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=10))
    pb_grpc.add_EchoServicer_to_server(GrpcioEcho(), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    announce(bound)
    server.wait_for_termination()


def grpcio_aio(port: int, workers: int) -> None:
    import grpc.aio

    async def main() -> None:
        server = grpc.aio.server()
        pb_grpc.add_EchoServicer_to_server(GrpcioAioEcho(), server)
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        announce(bound)
        await server.wait_for_termination()

    asyncio.run(main())


MODES = {"courier-sync": courier_sync, "courier-aio": courier_aio, "grpcio-sync": grpcio_sync, "grpcio-aio": grpcio_aio}

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=sorted(MODES))
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1)
    a = ap.parse_args()
    try:
        MODES[a.mode](a.port, a.workers)
    except KeyboardInterrupt:
        sys.exit(0)
