"""Stats and the debug server of Python servers, over real sockets: every
endpoint after real traffic, promtool on /metrics, writes refused over TCP,
a log level change seen in the process's output, the admin page rendered by
headless Chromium, and `courier deps` merging two services' graphs."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import pathlib
import re
import subprocess
import sys
import time
from typing import Any, Iterator

import pytest

import courier
import courier.aio
from courier import StatusCode
from obs_support import free_port, get_text, http_request, metric_samples, python_subprocess, read_line, tool, wait_for
from testservice import AsyncTest, handlers, make_service, start_sync_server


def _traffic(pb: Any, port: int, ok: int = 10, fail: int = 3) -> courier.Channel:
    ch = courier.Channel(f"127.0.0.1:{port}")
    m = make_service(pb).method("UnaryUnary")
    ctx = courier.Context.background()
    for i in range(ok):
        ch.unary(ctx, m, pb.TestRequest(s=f"ok{i}"))
    for _ in range(fail):
        with pytest.raises(courier.RpcError):
            ch.unary(ctx, m, pb.TestRequest(fail_code=int(StatusCode.NOT_FOUND), fail_message="no"))
    return ch


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text `text`."""
    for _, value in metric_samples(text, name, **labels):
        return value
    raise KeyError(f"{name}{labels} not in /metrics")


@pytest.fixture
def debug_server(pb: Any) -> Iterator[tuple[courier.Server, int, str]]:
    server, port, _ = start_sync_server(pb, debug_addr="127.0.0.1:0")
    dbg = server.debug_addr
    assert dbg is not None and dbg.startswith("127.0.0.1:") and not dbg.endswith(f":{port}")
    try:
        yield server, port, dbg
    finally:
        server.stop(1.0)


def test_every_endpoint_after_real_traffic(pb: Any, debug_server: tuple[courier.Server, int, str]) -> None:
    _, port, dbg = debug_server
    before = get_text(dbg, "/metrics")
    ok0 = _metric(before, "courier_server_requests_total", service="courier.test.Test", method="UnaryUnary", code="OK")
    ch = _traffic(pb, port)  # kept open: /rpcz shows its connection
    metrics = get_text(dbg, "/metrics")
    labels = {"service": "courier.test.Test", "method": "UnaryUnary"}
    assert _metric(metrics, "courier_server_requests_total", code="OK", **labels) == ok0 + 10
    assert _metric(metrics, "courier_server_requests_total", code="NOT_FOUND", **labels) >= 3
    assert _metric(metrics, "courier_server_latency_seconds_count", **labels) >= 13
    assert _metric(metrics, "courier_server_queue_wait_seconds_count", **labels) >= 13
    assert _metric(metrics, "courier_server_in_flight", **labels) == 0
    assert _metric(metrics, "courier_server_client_requests_total", client="unauthenticated") >= 13
    assert _metric(metrics, "courier_server_client_errors_total", client="unauthenticated") >= 3
    assert _metric(metrics, "courier_client_requests_total", code="NOT_FOUND", **labels) >= 3
    assert metrics == courier.metrics_text() or "courier_build_info" in courier.metrics_text()

    # promtool (Debian's prometheus package) lints the exposition format.
    promtool = tool("promtool")
    r = subprocess.run([promtool, "check", "metrics"], input=metrics, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr

    info = json.loads(get_text(dbg, "/info"))
    assert info["pid"] == os.getpid()
    assert {lang["name"] for lang in info["languages"]} >= {"rust", "python"}
    assert info["version"] == courier.__version__ and info["git_hash"] and info["start_time_unix"] > 1.6e9
    assert any("pytest" in a or "xdist" in a or "python" in a for a in info["command_line"])

    config = json.loads(get_text(dbg, "/config"))
    assert config["server"]["workers"] == 1
    assert any(m["path"] == "/courier.test.Test/UnaryUnary" and m["default_deadline_seconds"] == 10.0 for m in config["methods"])
    assert "limits" in config

    rpcz = json.loads(get_text(dbg, "/rpcz"))
    assert any(lst["kind"] == "grpc" and lst["addr"] == f"127.0.0.1:{port}" for lst in rpcz["listeners"])
    conns = [c for c in rpcz["connections"] if c["local"] == f"127.0.0.1:{port}"]
    assert conns and conns[0]["peer_identity"] == "unauthenticated" and conns[0]["streams_started"] >= 13
    uu = [m for m in rpcz["server_methods"] if m["service"] == "courier.test.Test" and m["method"] == "UnaryUnary"][0]
    assert uu["succeeded"] >= 10 and uu["failed"] >= 3 and uu["last_call_unix"] > 1.6e9
    chan = [c for c in rpcz["channels"] if c["target"] == f"127.0.0.1:{port}"]
    assert chan and chan[0]["started"] >= 13 and chan[0]["failed"] >= 3
    assert any(c["method"] == "/courier.test.Test/UnaryUnary" and c["code"] == "NOT_FOUND" for c in rpcz["recent_failed"])

    deps = json.loads(get_text(dbg, "/deps"))
    assert any(e["caller"] == "unauthenticated" and e["method"] == "UnaryUnary" and e["errors"] >= 3 for e in deps["callers"])
    assert "courier.test.Test" in deps["process"]["services"]
    dot = get_text(dbg, "/deps?format=dot")
    assert dot.startswith("digraph") and '"courier.test.Test/UnaryUnary"' in dot
    assert get_text(dbg, "/deps?format=svg").startswith("<svg")

    stacks = get_text(dbg, "/py/stacks")
    assert "courier-handler-0" in stacks and "MainThread" in stacks and "_work" in stacks
    gcs = json.loads(get_text(dbg, "/py/gc"))
    assert gcs["thresholds"] == list(gc.get_threshold()) and gcs["enabled"] == gc.isenabled()
    levels = json.loads(get_text(dbg, "/loglevel"))
    assert levels["controllable"] is True and "" in levels["levels"]

    page = get_text(dbg, "/")
    for link in ("/metrics", "/info", "/config", "/loglevel", "/rpcz", "/deps", "/pprof/profile", "/py/stacks", "/py/gc"):
        assert f'href="{link}' in page, link
    assert "UnaryUnary" in page

    # A CPU profile of this process (pprof protobuf, and folded text).
    status, prof, ctype = http_request(dbg, "/pprof/profile?seconds=1")
    assert status == 200 and ctype == "application/octet-stream" and len(prof) > 0
    assert http_request(dbg, "/pprof/profile?seconds=abc")[0] == 400

    # Writes over TCP without a client certificate are refused, and change nothing.
    threshold = gc.get_threshold()
    for path in ("/loglevel?module=courier_core&level=trace", "/py/gc?threshold0=1", "/py/loglevel?logger=x&level=DEBUG"):
        status, body, _ = http_request(dbg, path, method="PUT")
        assert status == 403 and b"unix socket" in body, (path, status, body)
    assert gc.get_threshold() == threshold
    assert http_request(dbg, "/nope")[0] == 404
    del ch


def test_writes_over_the_unix_socket_asyncio(pb: Any, tmp_path: pathlib.Path) -> None:
    sock = str(tmp_path / "debug.sock")

    async def main() -> None:
        impl = AsyncTest(pb)
        server = courier.aio.Server(workers=1, debug_addr=f"unix:{sock}")
        server.add_handlers(make_service(pb), handlers(impl))
        port = server.listen("127.0.0.1:0")
        await server.start()
        try:
            assert server.debug_addr == f"unix:{sock}"
            assert os.stat(sock).st_mode & 0o777 == 0o600
            ch = courier.aio.Channel(f"127.0.0.1:{port}")
            for i in range(5):
                await ch.unary(courier.Context.background(), make_service(pb).method("UnaryUnary"), pb.TestRequest(s=str(i)))
            dbg = f"unix:{sock}"
            loop = asyncio.get_running_loop()
            # The Python pages take the GIL on the debug server's thread: ask from another thread.
            old = gc.get_threshold()
            try:
                status, body, _ = await loop.run_in_executor(None, lambda: http_request(dbg, "/py/gc?threshold0=1234", method="PUT"))
                assert status == 200, body
                assert json.loads(body)["thresholds"][0] == 1234 and gc.get_threshold()[0] == 1234
                status, body, _ = await loop.run_in_executor(None, lambda: http_request(dbg, "/py/gc?threshold0=-5", method="PUT"))
                assert status == 400
            finally:
                gc.set_threshold(*old)
            status, body, _ = await loop.run_in_executor(None, lambda: http_request(dbg, "/py/loglevel?logger=courier.obs.test&level=DEBUG", method="PUT"))
            assert status == 200 and json.loads(body)["levels"]["courier.obs.test"] == "DEBUG"
            status, body, _ = await loop.run_in_executor(None, lambda: http_request(dbg, "/loglevel?module=courier_core::debug&level=info", method="PUT"))
            assert status == 200, body
            assert "courier_core::debug=info" in json.loads(body)["directives"]
            stacks = (await loop.run_in_executor(None, lambda: http_request(dbg, "/py/stacks")))[1].decode()
            assert "MainThread" in stacks
            metrics = (await loop.run_in_executor(None, lambda: http_request(dbg, "/metrics")))[1].decode()
            assert _metric(metrics, "courier_server_requests_total", service="courier.test.Test", method="UnaryUnary", code="OK") >= 5
        finally:
            await server.stop(1.0)
        assert not os.path.exists(sock), "the socket is removed when the server stops"

    asyncio.run(main())


_LOG_CHILD = """
import sys, time
sys.path.insert(0, sys.argv[1])
import test_pb2
from testservice import start_sync_server
server, port, _ = start_sync_server(test_pb2, debug_addr="unix:" + sys.argv[2])
print("READY", port, flush=True)
time.sleep(60)
"""


def test_log_level_change_takes_effect(pb: Any, tmp_path: pathlib.Path) -> None:
    """The debug server logs each request at debug level (target
    courier_core::debug): invisible at the default level, visible in the
    process's stderr once /loglevel turned that module up."""
    gen = pathlib.Path(pb.__file__).parent
    sock = str(tmp_path / "d.sock")
    child = python_subprocess(_LOG_CHILD, str(gen), sock, env={"RUST_LOG": ""})
    try:
        read_line(child, "READY")
        dbg = f"unix:{sock}"
        assert http_request(dbg, "/info?before")[0] == 200
        status, body, _ = http_request(dbg, "/loglevel?module=courier_core::debug&level=debug", method="PUT")
        assert status == 200, body
        assert http_request(dbg, "/info?after")[0] == 200
        time.sleep(0.2)
    finally:
        child.terminate()
        _, err = child.communicate(timeout=30)
    lines = [ln for ln in err.splitlines() if "debug request" in ln]
    assert any("/info" in ln and "DEBUG" in ln for ln in lines), err[-3000:]
    assert len(lines) == 1, "only the request after the change is logged: " + "\n".join(lines)


def test_admin_page_in_headless_chromium(pb: Any, debug_server: tuple[courier.Server, int, str], tmp_path: pathlib.Path) -> None:
    chromium = tool("chromium")
    _, port, dbg = debug_server
    _traffic(pb, port, ok=40, fail=4)
    time.sleep(1.2)  # one more sample of the page's one-second window
    _traffic(pb, port, ok=40, fail=4)
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=4000",
    ]
    url = f"http://{dbg}/"
    r = subprocess.run([chromium, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=90)
    dom = r.stdout
    assert "<h1>Courier admin</h1>" in dom, r.stderr[-2000:]
    # The script ran (it marks the body) and refilled the tables from /summary.json.
    assert re.search(r'<body[^>]*data-refreshed="\d+"', dom), dom[:2000]
    rows = re.findall(r"<tr><td>courier\.test\.Test</td><td>UnaryUnary</td>(.*?)</tr>", dom)
    assert rows, dom[:3000]
    cells = re.findall(r"<td class=\"?n\"?>([^<]*)</td>", rows[0])
    rate, err_rate, p99, total, errors = cells[0], cells[1], cells[2], int(cells[3]), int(cells[4])
    assert float(rate) > 0 and float(err_rate) > 0 and float(p99) > 0, cells
    assert total >= 88 and errors >= 8, cells
    assert re.search(r"<tr><td>unauthenticated</td><td class=\"?n\"?>[0-9.]+</td>", dom), "per-client row with a rate"
    assert "<svg" in dom and "UnaryUnary" in dom.split("<svg", 1)[1], "the dependency graph is drawn"
    # A screenshot, as a person would see it (kept for inspection when it fails).
    shot = tmp_path / "admin.png"
    subprocess.run([chromium, *flags, f"--screenshot={shot}", "--window-size=1200,900", url], capture_output=True, timeout=90)
    assert shot.exists() and shot.stat().st_size > 10_000


def test_courier_deps_merges_services(pb: Any, tmp_path: pathlib.Path) -> None:
    server_b, port_b, _ = start_sync_server(pb, debug_addr="127.0.0.1:0")
    server_a, port_a, impl_a = start_sync_server(pb, debug_addr="127.0.0.1:0")
    try:
        m = make_service(pb).method("UnaryUnary")
        impl_a.downstream = (courier.Channel(f"127.0.0.1:{port_b}"), m)
        ch = courier.Channel(f"127.0.0.1:{port_a}")
        for _ in range(3):
            ch.unary(courier.Context.background(), m, pb.TestRequest(s="hop"))
        urls = [f"http://{server_a.debug_addr}", f"http://{server_b.debug_addr}"]
        out = subprocess.run(
            [sys.executable, "-m", "courier.cli", "deps", *urls, "--format", "json"], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        graph = json.loads(out.stdout)
        assert len(graph["processes"]) == 2
        edges = {(e["from"], e["to"]) for e in graph["edges"]}
        assert ("unauthenticated", "courier.test.Test/UnaryUnary") in edges
        assert any(e["kind"] == "calls" and e["calls"] >= 3 for e in graph["edges"])
        dot = subprocess.run([sys.executable, "-m", "courier.cli", "deps", *urls, "--format", "dot"], capture_output=True, text=True, timeout=60)
        assert dot.returncode == 0 and dot.stdout.startswith("digraph"), dot.stderr
        tool("dot")
        svg = tmp_path / "deps.svg"
        r = subprocess.run([sys.executable, "-m", "courier.cli", "deps", *urls, "-o", str(svg)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        text = svg.read_text()
        assert text.lstrip().startswith("<?xml") or "<svg" in text[:500]
        assert "UnaryUnary" in text
        bad = subprocess.run([sys.executable, "-m", "courier.cli", "deps", f"http://127.0.0.1:{free_port()}"], capture_output=True, text=True, timeout=60)
        assert bad.returncode != 0 and "cannot read" in bad.stderr
    finally:
        server_a.stop(1.0)
        server_b.stop(1.0)


def test_tracing_config_is_validated() -> None:
    with pytest.raises(ValueError):
        courier.configure_tracing("http://127.0.0.1:4317", "x", sampling_ratio=1.5)
    with pytest.raises(ValueError):
        courier.configure_tracing("http://127.0.0.1:4317", "x", scheduled_delay=0)
    assert not courier._core.tracing_enabled()


def test_debug_addr_is_checked(pb: Any) -> None:
    server = courier.Server(workers=1, debug_addr="0.0.0.0:0")
    server.listen("127.0.0.1:0")
    with pytest.raises(Exception) as e:
        server.start()
    assert "not loopback" in str(e.value)
    server.stop(0)


def test_rejections_and_limits_on_the_debug_server(pb: Any, tmp_path: pathlib.Path) -> None:
    """Admission's refusals are counted per method and per client, by reason;
    /config shows the limits in force and the last reload; /metrics counts reloads."""
    limits = tmp_path / "limits.yaml"
    limits.write_text("limits:\n  courier.test.Test:\n    UnaryStream:\n      rate_acls:\n        unauthenticated: 0\n")
    server, port, _ = start_sync_server(pb, debug_addr="127.0.0.1:0", limits=limits)
    try:
        dbg = server.debug_addr
        assert dbg is not None
        ch = courier.Channel(f"127.0.0.1:{port}")
        svc = make_service(pb)
        for _ in range(3):
            with pytest.raises(courier.RpcError) as e:
                list(ch.server_streaming(courier.Context.background(), svc.method("UnaryStream"), pb.TestRequest(count=1)))
            assert e.value.code == StatusCode.UNAUTHENTICATED
        assert ch.unary(courier.Context.background(), svc.method("UnaryUnary"), pb.TestRequest(s="ok")).s == "ok"
        metrics = get_text(dbg, "/metrics")
        labels = {"service": "courier.test.Test", "method": "UnaryStream"}
        assert _metric(metrics, "courier_server_rejections_total", reason="unauthenticated", **labels) >= 3
        assert _metric(metrics, "courier_server_requests_total", code="UNAUTHENTICATED", **labels) >= 3
        assert _metric(metrics, "courier_server_client_rejections_total", client="unauthenticated", reason="unauthenticated") >= 3
        assert _metric(metrics, "courier_config_reloads_total", result="applied") >= 0
        config = json.loads(get_text(dbg, "/config"))
        assert config["limits"]["path"] == str(limits)
        assert config["limits"]["last_reload"]["ok"] is True
        assert config["limits"]["limits"]["courier.test.Test"]["UnaryStream"]["rate_acls"]["unauthenticated"] == 0
        page = get_text(dbg, "/")
        assert "UnaryStream" in page and "rate_acls" in page, "the admin page shows the limits in force"
    finally:
        server.stop(1.0)
