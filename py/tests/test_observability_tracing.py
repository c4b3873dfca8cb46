"""Tracing end to end: a client, a Python server (hop 1) that calls another
Python server in another process (hop 2), spans exported over OTLP to a real
Jaeger (all-in-one, in-memory storage, built from the jaeger Go module), and
the two-hop trace read back through Jaeger's query API: one trace id,
parent/child spans client → server → client → server."""

from __future__ import annotations

import json
import pathlib
import subprocess
import urllib.request
from typing import Any, Dict, Iterator, List, Optional

import pytest

import courier
from obs_support import free_port, jaeger_binary, python_subprocess, read_line, wait_for
from testservice import make_service, start_sync_server

_HOP2 = """
import sys, time
sys.path.insert(0, sys.argv[1])
import courier, test_pb2
from testservice import start_sync_server
courier.configure_tracing(sys.argv[2], "courier-hop2", sampling_ratio=0.0, scheduled_delay=0.1)
server, port, _ = start_sync_server(test_pb2)
print("PORT", port, flush=True)
sys.stdin.readline()
server.stop(1.0)
courier.shutdown_tracing()
print("DONE", flush=True)
"""

_CONFIG = """
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: mem
    http:
      endpoint: 127.0.0.1:{query}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
  jaeger_storage:
    backends:
      mem:
        memory:
          max_traces: 10000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{otlp}
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: mem
"""


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)


@pytest.fixture
def jaeger(tmp_path: pathlib.Path) -> Iterator[Dict[str, int]]:
    ports = {"query": free_port(), "query_grpc": free_port(), "otlp": free_port()}
    cfg = tmp_path / "jaeger.yaml"
    cfg.write_text(_CONFIG.format(**ports))
    proc = subprocess.Popen([jaeger_binary(), "--config", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: _get(f"http://127.0.0.1:{ports['query']}/api/services"), 60, "Jaeger's query API")
        yield ports
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_two_hop_trace_in_jaeger(pb: Any, jaeger: Dict[str, int]) -> None:
    otlp = f"http://127.0.0.1:{jaeger['otlp']}"
    gen = pathlib.Path(pb.__file__).parent
    hop2 = python_subprocess(_HOP2, str(gen), otlp, stdin=True)
    courier.configure_tracing(otlp, "courier-hop1", sampling_ratio=1.0, scheduled_delay=0.1)
    server, port, impl = start_sync_server(pb)
    try:
        port2 = int(read_line(hop2, "PORT"))
        m = make_service(pb).method("UnaryUnary")
        impl.downstream = (courier.Channel(f"127.0.0.1:{port2}"), m)
        r = courier.Channel(f"127.0.0.1:{port}").unary(courier.Context.background(), m, pb.TestRequest(s="hop"))
        assert r.s == "hop"
    finally:
        server.stop(1.0)
        courier.shutdown_tracing()  # flushes hop 1's spans
        # Hop 2 flushes its spans when it stops.
        out, err = hop2.communicate(input="\n", timeout=60)
    assert "DONE" in out, err

    api = f"http://127.0.0.1:{jaeger['query']}/api"

    def find() -> Optional[Dict[str, Any]]:
        data = _get(f"{api}/traces?service=courier-hop2&limit=20&lookback=1h")["data"]
        for t in data:
            if len(t["spans"]) >= 4:
                return dict(t)
        return None

    trace = wait_for(find, 30, "the two-hop trace in Jaeger")
    spans: List[Dict[str, Any]] = trace["spans"]
    assert len({s["traceID"] for s in spans}) == 1
    procs = {pid: p["serviceName"] for pid, p in trace["processes"].items()}

    def kind(s: Dict[str, Any]) -> str:
        return str(next(t["value"] for t in s["tags"] if t["key"] == "span.kind"))

    by_id = {s["spanID"]: s for s in spans}

    def parent(s: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        refs = [r for r in s.get("references", []) if r["refType"] == "CHILD_OF"]
        return by_id.get(refs[0]["spanID"]) if refs else None

    # The chain: hop-1 client (root) → hop-1 server → hop-1 client → hop-2 server.
    leaf = next(s for s in spans if procs[s["processID"]] == "courier-hop2" and kind(s) == "server")
    out_call = parent(leaf)
    assert out_call is not None and kind(out_call) == "client" and procs[out_call["processID"]] == "courier-hop1"
    mid = parent(out_call)
    assert mid is not None and kind(mid) == "server" and procs[mid["processID"]] == "courier-hop1"
    root = parent(mid)
    assert root is not None and kind(root) == "client" and parent(root) is None
    for s in (leaf, out_call, mid, root):
        assert s["operationName"] == "courier.test.Test/UnaryUnary"
        tags = {t["key"]: t["value"] for t in s["tags"]}
        assert tags["rpc.system"] == "grpc" and tags["rpc.grpc.status_code"] == 0
    server_tags = {t["key"]: t["value"] for t in mid["tags"]}
    assert server_tags["courier.peer_identity"] == "unauthenticated" and "courier.queue_wait_ms" in server_tags
    # The child spans sit inside their parents in time.
    assert root["startTime"] <= mid["startTime"] <= out_call["startTime"] <= leaf["startTime"]

