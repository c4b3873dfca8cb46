"""200k calls through a Python server (sync and asyncio) keep its RSS flat: no
call, context or buffer leaks. Load from h2load (Debian nghttp2-client), every
request with a `grpc-timeout` (the deadline path), the server in its own
process (serve.py). Each call must end with grpc-status 0: h2load counts any
HTTP 200 as a success, so the server's own per-code counters are checked."""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import subprocess
import time
from typing import Any

import pytest

from obs_support import get_text, metric_samples
from testservice import spawn_server_process

WARM_UP, CALLS = 20_000, 200_000


def rss_kib(pid: int) -> int:
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert m
    return int(m.group(1))


def h2load(port: int, n: int, body: pathlib.Path) -> None:
    out = subprocess.run(
        ["h2load", "-n", str(n), "-c", "4", "-m", "16", "-d", str(body),
         "-H", "content-type: application/grpc", "-H", "te: trailers", "-H", "grpc-timeout: 10S",
         f"http://127.0.0.1:{port}/courier.test.Test/UnaryUnary"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    assert m, out
    assert int(m.group(4)) == n and int(m.group(5)) == 0 and int(m.group(6)) == 0, out


def codes_answered(debug_addr: str) -> dict[str, float]:
    """The server's `courier_server_requests_total` of UnaryUnary, by status code."""
    text = get_text(debug_addr, "/metrics")
    samples = metric_samples(text, "courier_server_requests_total", service="courier.test.Test", method="UnaryUnary")
    return {labels["code"]: value for labels, value in samples if value}


def largest_mappings(pid: int, n: int = 4) -> list[tuple[int, str]]:
    """The `n` mappings of `pid` with the most resident KiB: (KiB, mapping line)."""
    maps: list[tuple[int, str]] = []
    head = ""
    for line in pathlib.Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            head = line
        elif line.startswith("Rss:"):
            maps.append((int(line.split()[1]), head))
    return sorted(maps, reverse=True)[:n]


def python_objects(debug_addr: str) -> int:
    """Objects the server's Python gc tracks (its debug page /py/gc)."""
    return int(json.loads(get_text(debug_addr, "/py/gc"))["objects_tracked"])


@pytest.mark.timeout(600)
@pytest.mark.parametrize("flavour", ["sync", "aio"])
def test_200k_calls_keep_rss_flat(pb: Any, tmp_path: pathlib.Path, flavour: str) -> None:
    if shutil.which("h2load") is None:
        pytest.fail("h2load is missing: install Debian's nghttp2-client (.ci/run does)")
    msg = pb.TestRequest(s="hello, world!", payload=b"x" * 64).SerializeToString()
    body = tmp_path / "req.bin"
    body.write_bytes(b"\x00" + len(msg).to_bytes(4, "big") + msg)
    proc, port, debug_addr = spawn_server_process(pb, flavour, "stdin")
    try:
        h2load(port, WARM_UP, body)  # warm-up: pools, caches, allocator arenas
        assert codes_answered(debug_addr) == {"OK": WARM_UP}
        before = rss_kib(proc.pid)
        objects_before = python_objects(debug_addr)
        h2load(port, CALLS, body)
        after = rss_kib(proc.pid)
        assert codes_answered(debug_addr) == {"OK": WARM_UP + CALLS}, "every call must end with grpc-status 0"
        growth = after - before
        print(f"{flavour}: RSS before {before} KiB, after {CALLS} calls {after} KiB, growth {growth} KiB")
        if growth >= 8 * 1024:
            # What was it: Python objects, and is it given back once the
            # calls' deadlines (10 s) have passed?
            time.sleep(11)
            later = rss_kib(proc.pid)
            pytest.fail(
                f"RSS grew by {growth} KiB over {CALLS} calls; Python objects tracked: {objects_before} before, "
                f"{python_objects(debug_addr)} after; RSS 11 s later {later} KiB; largest mappings: {largest_mappings(proc.pid)}"
            )
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
