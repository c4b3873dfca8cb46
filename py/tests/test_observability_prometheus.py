"""A real Prometheus server (Debian's `prometheus`) scrapes a running Courier
server's debug port and answers PromQL queries for per-client counters: the
clients are told apart by their mutual-TLS identity (certificates made by
`courier ca`)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import urllib.parse
import urllib.request
from typing import Any, Optional

import courier
from obs_support import free_port, tool, wait_for
from testservice import make_service, start_sync_server


def _ca(*args: str) -> None:
    r = subprocess.run([sys.executable, "-m", "courier", "ca", *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_prometheus_scrapes_per_client_counters(pb: Any, tmp_path: pathlib.Path) -> None:
    prometheus = tool("prometheus")
    ca = tmp_path / "ca"
    _ca("init", "--trust-domain", "obs.test", "--out", str(ca))
    for name, sid in (("server", "spiffe://obs.test/metrics-server"), ("billing", "spiffe://obs.test/billing"), ("ocr", "spiffe://obs.test/ocr")):
        _ca("issue", "--ca", str(ca), "--id", sid, "--out", str(tmp_path / name), "--ip", "127.0.0.1")
    tls = courier.ServerTLS.from_files(cert=tmp_path / "server" / "cert.pem", key=tmp_path / "server" / "key.pem", ca=ca / "ca.pem")
    server, port, _ = start_sync_server(pb, debug_addr="127.0.0.1:0", tls=tls)
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
        m = make_service(pb).method("UnaryUnary")
        for who, n in (("billing", 25), ("ocr", 7)):
            ctls = courier.ClientTLS.from_files(
                cert=tmp_path / who / "cert.pem",
                key=tmp_path / who / "key.pem",
                ca=ca / "ca.pem",
                server_identity="spiffe://obs.test/metrics-server",
            )
            ch = courier.Channel(f"127.0.0.1:{port}", tls=ctls)
            for i in range(n):
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

        q = 'courier_server_client_requests_total{job="courier",client="billing"}'
        v = wait_for(lambda: (lambda x: x if x is not None and x >= 25 else None)(query(q)), 60, f"Prometheus to answer {q}")
        assert v == 25
        assert query('courier_server_client_requests_total{job="courier",client="ocr"}') == 7
        # The TLS layer's handshake counters, per peer identity.
        assert (query('sum(courier_tls_handshakes_total{job="courier",side="server",peer="spiffe://obs.test/billing"})') or 0) >= 1
        # A per-method series and its labels, through PromQL too.
        q2 = 'courier_server_requests_total{job="courier",service="courier.test.Test",method="UnaryUnary",code="OK"}'
        assert (query(q2) or 0) >= 32
        up = query('up{job="courier"}')
        assert up == 1.0
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        server.stop(1.0)
