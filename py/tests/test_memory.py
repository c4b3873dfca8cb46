"""200k calls through a Python server keep its RSS flat: no call, context or
buffer leaks. Load from h2load (Debian nghttp2-client), the server in its own
process."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys
from typing import Any

import pytest

SERVER = r"""
import sys
sys.path[:0] = sys.argv[1:3]
import courier
from testservice import start_sync_server
import test_pb2 as pb
server, port, _ = start_sync_server(pb, max_concurrency=4)
print(port, flush=True)
sys.stdin.read()
server.stop(1.0)
"""


def rss_kib(pid: int) -> int:
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert m
    return int(m.group(1))


def h2load(port: int, n: int, body: pathlib.Path) -> None:
    out = subprocess.run(
        ["h2load", "-n", str(n), "-c", "4", "-m", "16", "-d", str(body),
         "-H", "content-type: application/grpc", "-H", "te: trailers",
         f"http://127.0.0.1:{port}/courier.test.Test/UnaryUnary"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    assert m, out
    assert int(m.group(4)) == n and int(m.group(5)) == 0 and int(m.group(6)) == 0, out


@pytest.mark.timeout(600)
def test_200k_calls_keep_rss_flat(pb: Any, tmp_path: pathlib.Path) -> None:
    if shutil.which("h2load") is None:
        pytest.fail("h2load is missing: install Debian's nghttp2-client (.ci/run does)")
    msg = pb.TestRequest(s="hello, world!", payload=b"x" * 64).SerializeToString()
    body = tmp_path / "req.bin"
    body.write_bytes(b"\x00" + len(msg).to_bytes(4, "big") + msg)
    here = pathlib.Path(__file__).parent
    gen = pathlib.Path(pb.__file__).parent
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(here), str(gen)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ},
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        h2load(port, 20_000, body)  # warm-up: pools, caches, allocator arenas
        before = rss_kib(proc.pid)
        h2load(port, 200_000, body)
        after = rss_kib(proc.pid)
        growth = after - before
        print(f"RSS before {before} KiB, after 200k calls {after} KiB, growth {growth} KiB")
        assert growth < 8 * 1024, f"RSS grew by {growth} KiB over 200k calls"
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)
