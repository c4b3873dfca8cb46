"""A real Prometheus server (Debian's `prometheus`) scrapes a running Courier
server's debug port and answers a PromQL query for a per-client counter."""

from __future__ import annotations

import json
import pathlib
import subprocess
import urllib.parse
import urllib.request
from typing import Any, Optional

import courier
from obs_support import free_port, tool, wait_for
from testservice import make_service, start_sync_server


def test_prometheus_scrapes_per_client_counters(pb: Any, tmp_path: pathlib.Path) -> None:
    prometheus = tool("prometheus")
    server, port, _ = start_sync_server(pb, debug_addr="127.0.0.1:0")
    prom_port = free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n"
        "scrape_configs:\n  - job_name: courier\n    static_configs:\n"
        f"      - targets: ['{server.debug_addr}']\n"
    )
    proc = subprocess.Popen(
        [
            prometheus,
            f"--config.file={cfg}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ch = courier.Channel(f"127.0.0.1:{port}")
        m = make_service(pb).method("UnaryUnary")
        for i in range(25):
            ch.unary(courier.Context.background(), m, pb.TestRequest(s=str(i)))

        def query(q: str) -> Optional[float]:
            url = f"http://127.0.0.1:{prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
            with urllib.request.urlopen(url, timeout=5) as r:
                data = json.load(r)
            assert data["status"] == "success", data
            res = data["data"]["result"]
            if not res:
                return None
            return float(res[0]["value"][1])

        q = 'sum(courier_server_client_requests_total{job="courier",client="unauthenticated"})'
        v = wait_for(lambda: (lambda x: x if x is not None and x >= 25 else None)(query(q)), 60, f"Prometheus to answer {q}")
        assert v >= 25
        # A per-method series and its labels, through PromQL too.
        q2 = 'courier_server_requests_total{job="courier",service="courier.test.Test",method="UnaryUnary",code="OK"}'
        assert (query(q2) or 0) >= 25
        up = query('up{job="courier"}')
        assert up == 1.0
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        server.stop(1.0)
