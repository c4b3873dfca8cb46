#!/usr/bin/env python3
"""`make bench`: builds every benchmark server and load client, runs every
section in interleaved rounds, and writes bench/results/REPORT.md and
bench/results/chart.svg (bench/README.md says what runs and how long).

    python3 bench/harness/run.py [--sections unary,tls,...] [--servers id,...] [--skip-build]

Env knobs (defaults fit the 20-minute budget on a 2-core machine):
  ROUNDS=3 WARMUP=1 UNARY_SECS=2 SIZE_SECS=2 RATE=1000 RATE_SECS=3 TLS_SECS=2
  STORM_CLIENTS=1000 HS_SECS=1 SCALE_SECS=2 BDP_SECS=20 BDP_DELAY_MS=50 BDP_RATE= BDP_RELAY_MBIT=400
  SERVER_CPU=0 CLIENT_CPU=1  QUICK=1 (1 round, 1 s everything: proves it works)
  CACHE (~/.cache/courier), BENCH_VENV ($CACHE/bench-venv), OUT (bench/results)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as H  # noqa: E402
import servers as S  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("CACHE", Path.home() / ".cache/courier"))
os.environ.setdefault("CARGO_TARGET_DIR", str(CACHE / "target"))
os.environ.setdefault("GOMODCACHE", str(CACHE / "go/mod"))
os.environ.setdefault("GOCACHE", str(CACHE / "go/build"))
VENV = Path(os.environ.get("BENCH_VENV", CACHE / "bench-venv"))
BIN = CACHE / "bench-bin"
QUICK = bool(os.environ.get("QUICK"))


def knob(name: str, default: float) -> float:
    v = os.environ.get(name)
    if v:
        return float(v)
    return min(default, 1.0) if QUICK else default


ROUNDS = int(os.environ.get("ROUNDS", "1" if QUICK else "3"))
WARMUP = knob("WARMUP", 1)
UNARY_SECS = knob("UNARY_SECS", 2)
SIZE_SECS = knob("SIZE_SECS", 2)
RATE = float(os.environ.get("RATE", "1000"))
RATE_SECS = knob("RATE_SECS", 3)
TLS_SECS = knob("TLS_SECS", 2)
STORM_CLIENTS = int(os.environ.get("STORM_CLIENTS", "200" if QUICK else "1000"))
HS_SECS = knob("HS_SECS", 1)
SCALE_SECS = knob("SCALE_SECS", 2)
BDP_SECS = int(os.environ.get("BDP_SECS", "4" if QUICK else "20"))
BDP_DELAY_MS = int(os.environ.get("BDP_DELAY_MS", "50"))
BDP_RATE = os.environ.get("BDP_RATE", "")  # netem's `rate` (e.g. 1gbit); none by default
# Without netem: the link rate of the user-space relay (bench/src/bin/delay-link.rs), one
# the 2-core machine carries with server, client and relay on it (iperf3 measured 800 through it).
BDP_RELAY_MBIT = float(os.environ.get("BDP_RELAY_MBIT", "400"))
SERVER_CPU = os.environ.get("SERVER_CPU", "0")
CLIENT_CPU = os.environ.get("CLIENT_CPU", "1")

SIZES = [32, 16384, 1 << 20]
# (connections, streams per connection) of the closed-loop load, per message size.
INFLIGHT = {32: (16, 8), 16384: (16, 8), 1 << 20: (4, 2)}
SECTIONS = ["unary", "tls", "storm", "handshakes", "scaling", "bdp", "aes"]
TLS_SERVERS = ["courier", "courier-go", "grpc-go"]
# Kept small (the budget): the ceiling, each Courier kind against its stock peer.
SCALE_SERVERS = ["h2", "courier", "courier-py-sync", "courier-go", "grpc-go", "tonic-mt"]
HS_CASES = ["full13-ecdsa-hybrid", "full13-rsa-hybrid", "noauth13-ecdsa", "noauth13-rsa", "full12-ecdsa",
            "res12-sessid", "res13-ecdsa-hybrid"]


class Run:
    def __init__(self, raw: Path):
        self.raw = raw
        self.records: List[Dict[str, Any]] = []
        self.meta: Dict[str, Any] = {"sections": {}, "build": {}, "skipped": {}}

    def add(self, **r: Any) -> None:
        self.records.append(r)
        self.save()

    def save(self) -> None:
        (self.raw / "results.json").write_text(json.dumps({"meta": self.meta, "records": self.records}, indent=1))

    def skip(self, what: str, why: str) -> None:
        H.log(f"SKIPPED {what}: {why}")
        self.meta["skipped"][what] = why
        self.save()


# ---------------------------------------------------------------- build

def sh(argv: List[str], cwd: Path = REPO, env: Optional[Dict[str, str]] = None, log: Optional[Path] = None) -> None:
    H.log("$ " + " ".join(argv))
    with open(log, "a") if log else open(os.devnull, "w") as lf:
        p = subprocess.run(argv, cwd=cwd, env={**os.environ, **(env or {})}, stdout=lf if log else None,
                           stderr=subprocess.STDOUT if log else None)
    if p.returncode != 0:
        raise SystemExit(f"build step failed ({p.returncode}): {' '.join(argv)}" + (f"; log: {log}" if log else ""))


def build(run: Run, want_java: bool) -> None:
    BIN.mkdir(parents=True, exist_ok=True)
    blog = run.raw / "build.log"
    steps: List[tuple] = [
        ("rust bench binaries (release)", lambda: build_rust(blog)),
        ("Go servers (release core via cgo)", lambda: build_go(blog)),
        ("Python release wheel + grpcio in the bench venv", lambda: build_py(blog)),
    ]
    if want_java:
        steps.append(("grpc-java peer (Maven)", lambda: sh(["make", "-s", "java-peer"], log=blog)))
    for name, f in steps:
        t0 = time.monotonic()
        f()
        run.meta["build"][name] = round(time.monotonic() - t0, 1)
        run.save()


def build_rust(blog: Path) -> None:
    sh(["cargo", "build", "--release", "--locked", "-q", "-p", "courier-bench", "-p", "courier-bench-tls",
        "--features", "courier-bench-tls/ring"], log=blog)
    # Copied at once: the target dir is shared with other checkouts' builds.
    rel = Path(os.environ["CARGO_TARGET_DIR"]) / "release"
    for b in ["courier-echo", "h2-echo", "tonic-echo", "courier-load", "courier-bench", "courier-bench-tls", "delay-link"]:
        shutil.copy2(rel / b, BIN / b)


def build_go(blog: Path) -> None:
    sh(["go", "generate", "."], cwd=REPO / "go-cgo", env={"COURIER_FFI_PROFILE": "release"}, log=blog)
    sh(["go", "build", "-o", str(BIN / "go-server"), "./server"], cwd=REPO / "bench/go", log=blog)


def build_py(blog: Path) -> None:
    if not (VENV / "bin/python").exists():
        sh([sys.executable, "-m", "venv", str(VENV)], log=blog)
    sh([str(VENV / "bin/pip"), "install", "-q", "grpcio==1.85.3", "grpcio-tools==1.85.1", "protobuf==7.36.2",
        "maturin>=1.7,<2"], log=blog)
    wheels = VENV / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    sh([str(VENV / "bin/maturin"), "build", "--release", "-q", "-o", str(wheels)], log=blog)
    whl = sorted(wheels.glob("courier_rpc-*.whl"))
    sh([str(VENV / "bin/pip"), "install", "-q", "--force-reinstall", "--no-deps", str(whl[-1])], log=blog)


# ---------------------------------------------------------------- sections

class Bench:
    def __init__(self, run: Run, server_ids: List[str]):
        self.run = run
        self.raw = run.raw
        self.server_ids = server_ids
        self.pki = self.raw / "pki"
        subprocess.run([str(BIN / "courier-bench-tls"), "pki", "--out", str(self.pki)], check=True, stdout=subprocess.DEVNULL)
        pygen = self.raw / "pygen"
        pygen.mkdir(exist_ok=True)
        subprocess.run([str(VENV / "bin/python"), "-m", "grpc_tools.protoc", "-I", str(REPO / "bench/python"),
                        f"--python_out={pygen}", f"--grpc_python_out={pygen}", "echo.proto"], check=True)
        limits = self.raw / "limits.yaml"
        limits.write_text(S.LIMITS_YAML)
        self.paths = S.Paths(bin=BIN, python=VENV / "bin/python", pygen=pygen, repo=REPO,
                             java_jar=CACHE / "java-peer/courier-grpc-java-peer.jar", limits=limits)
        self.req: Dict[int, Path] = {}
        for size in SIZES:
            p = self.raw / f"req-{size}.bin"
            p.write_bytes(frame(message(1, size)))
            self.req[size] = p
        self.load = BIN / "courier-load"

    def specs(self, ids: List[str]) -> List[S.Spec]:
        out = []
        for i in ids:
            if i not in self.server_ids:
                continue
            s = S.BY_ID[i]
            if s.needs == "java" and not self.paths.java_jar.exists():
                self.run.skip(f"server {i}", f"{self.paths.java_jar} missing (make java-peer)")
                continue
            out.append(s)
        return out

    def server(self, spec: S.Spec, tag: str, *, two_core: bool = False, pki: Optional[Path] = None) -> H.Server:
        return H.Server(spec.id, spec.argv(self.paths, two_core, pki), self.raw / f"{tag}.server.log",
                        cpus=None if two_core else SERVER_CPU, env=spec.env(self.paths, two_core))

    def check(self, srv: H.Server, spec: S.Spec, tag: str, tls: bool = False) -> None:
        """Real gRPC calls: status 0, the same message back (a cold JVM may need a few tries)."""
        for _ in range(10):
            r = H.courier_load(self.load, srv, ["unary", "--addr", f"127.0.0.1:{srv.port}", "--path", spec.unary_path,
                                                "--conns", "1", "--streams", "1", "--secs", "0.5", "--warmup", "0.2",
                                                *(["--tls", str(self.pki)] if tls else [])],
                               cpus=CLIENT_CPU, out=self.raw / f"{tag}.check.txt")
            calls = int(r.get("calls", 0))
            if calls or r.get("errors"):
                break
        if r.get("errors") or calls == 0 or r.get("bytes") != calls * (32 + 5):
            raise RuntimeError(f"{spec.id}: answer check failed: {r}")

    # -- unary: every server on one core, 3 sizes closed loop + fixed rate
    def unary(self, rnd: int) -> None:
        for spec in self.specs([s.id for s in S.SERVERS]):
            tag = f"unary.{spec.id}.r{rnd}"
            H.log(f"== round {rnd} unary {spec.id}")
            try:
                with self.server(spec, tag) as srv:
                    self.check(srv, spec, tag)
                    if spec.prewarm_s:
                        H.h2load(srv, spec.unary_path, self.req[32], conns=16, streams=8, secs=spec.prewarm_s, warmup=0,
                                 cpus=CLIENT_CPU, out=self.raw / f"{tag}.prewarm.txt")
                    for size in SIZES:
                        c, m = INFLIGHT[size]
                        secs = UNARY_SECS if size == 32 else SIZE_SECS
                        r = H.h2load(srv, spec.unary_path, self.req[size], conns=c, streams=m, secs=secs,
                                     warmup=WARMUP if size == 32 else min(WARMUP, 0.5), cpus=CLIENT_CPU,
                                     out=self.raw / f"{tag}.u{size}.txt", log_file=self.raw / f"{tag}.u{size}.lat")
                        self.run.add(section="unary", server=spec.id, load=f"u{size}", round=rnd, size=size,
                                     inflight=c * m, **r)
                        H.log(f"   u{size}: {r.get('reqps', 0):.0f} req/s ok={r['ok']} cpu={r['cpu_us_per_call']:.2f}us/call")
                    r = H.courier_load(self.load, srv, ["unary", "--addr", f"127.0.0.1:{srv.port}", "--path",
                                                        spec.unary_path, "--conns", "16", "--rate", str(RATE),
                                                        "--secs", str(RATE_SECS), "--warmup", "0.5"],
                                       cpus=CLIENT_CPU, out=self.raw / f"{tag}.rate.txt")
                    r["ok"] = r.get("errors") == 0
                    r["cpu_us_per_call"] = r["server_cpu_s"] * 1e6 / max(1, r["calls"])
                    self.run.add(section="unary", server=spec.id, load="rate", round=rnd, size=32, **r)
                    H.log(f"   rate {RATE:.0f}/s: p50 {r['p50_us']} p99 {r['p99_us']} p999 {r['p999_us']} us")
                    self.run.add(section="unary", server=spec.id, load="rss", round=rnd, peak_rss_kib=srv.peak_rss_kib())
            except Exception as e:  # one broken server must not end the run
                H.log(f"   FAILED: {e}")
                self.run.add(section="unary", server=spec.id, load="error", round=rnd, error=str(e)[:500])

    # -- plaintext vs mutual TLS with the same client: unary 32 B, streams of 64 KiB and 1 MiB messages
    def tls(self, rnd: int) -> None:
        for spec in self.specs(TLS_SERVERS):
            for transport in ("plain", "mtls"):
                tag = f"tls.{spec.id}.{transport}.r{rnd}"
                H.log(f"== round {rnd} tls {spec.id} {transport}")
                tl = ["--tls", str(self.pki)] if transport == "mtls" else []
                try:
                    with self.server(spec, tag, pki=self.pki if transport == "mtls" else None) as srv:
                        self.check(srv, spec, tag, tls=transport == "mtls")
                        addr = f"127.0.0.1:{srv.port}"
                        r = H.courier_load(self.load, srv, ["unary", "--addr", addr, "--path", spec.unary_path,
                                                            "--conns", "16", "--streams", "8", "--secs", str(TLS_SECS),
                                                            "--warmup", str(min(WARMUP, 0.5)), *tl],
                                           cpus=CLIENT_CPU, out=self.raw / f"{tag}.unary.txt")
                        r["cpu_us_per_call"] = r["server_cpu_s"] * 1e6 / max(1, r["calls"])
                        self.run.add(section="tls", server=spec.id, transport=transport, load="unary32", round=rnd, **r)
                        H.log(f"   unary: {r['reqps']:.0f} req/s, {r['cpu_us_per_call']:.2f} us/call")
                        for size, streams in ((65536, 4), (1 << 20, 2)):
                            r = H.courier_load(self.load, srv, ["stream", "--addr", addr, "--path", str(spec.stream_path),
                                                                "--size", str(size), "--conns", "1", "--streams",
                                                                str(streams), "--secs", str(TLS_SECS), "--warmup",
                                                                str(min(WARMUP, 0.5)), *tl],
                                               cpus=CLIENT_CPU, out=self.raw / f"{tag}.stream{size}.txt")
                            r["mb_per_cpu_s"] = r["bytes"] / 1e6 / r["server_cpu_s"] if r["server_cpu_s"] > 0 else 0.0
                            self.run.add(section="tls", server=spec.id, transport=transport, load=f"stream{size}",
                                         round=rnd, size=size, **r)
                            H.log(f"   stream {size}: {r['mbps']:.0f} MB/s, {r['mb_per_cpu_s']:.0f} MB per server-CPU-s")
                        self.run.add(section="tls", server=spec.id, transport=transport, load="rss", round=rnd,
                                     peak_rss_kib=srv.peak_rss_kib())
                except Exception as e:
                    H.log(f"   FAILED: {e}")
                    self.run.add(section="tls", server=spec.id, transport=transport, load="error", round=rnd, error=str(e)[:500])

    # -- reconnect storm: STORM_CLIENTS mTLS clients at once, full then resumed handshakes
    def storm(self, rnd: int) -> None:
        for spec in self.specs(TLS_SERVERS):
            tag = f"storm.{spec.id}.r{rnd}"
            H.log(f"== round {rnd} storm {spec.id}")
            try:
                with self.server(spec, tag, pki=self.pki) as srv:
                    self.check(srv, spec, tag, tls=True)
                    for kind in ("full", "resumed"):
                        r = H.courier_load(self.load, srv, ["storm", "--addr", f"127.0.0.1:{srv.port}", "--path",
                                                            spec.unary_path, "--clients", str(STORM_CLIENTS), "--tls",
                                                            str(self.pki), *(["--resume"] if kind == "resumed" else [])],
                                           cpus=CLIENT_CPU, out=self.raw / f"{tag}.{kind}.txt")
                        r["conn_per_cpu_s"] = r["ok"] / r["server_cpu_s"] if r["server_cpu_s"] > 0 else 0.0
                        r["conn_per_s"] = r["ok"] / r["secs"] if r["secs"] > 0 else 0.0
                        self.run.add(section="storm", server=spec.id, load=kind, round=rnd, **r)
                        H.log(f"   {kind}: {r['ok']} ok {r['errors']} errors, server CPU {r['server_cpu_s']:.3f} s, "
                              f"{r['resumed']} resumed, {r['secs']:.2f} s")
                    self.run.add(section="storm", server=spec.id, load="rss", round=rnd, peak_rss_kib=srv.peak_rss_kib())
            except Exception as e:
                H.log(f"   FAILED: {e}")
                self.run.add(section="storm", server=spec.id, load="error", round=rnd, error=str(e)[:500])

    # -- the same servers on both cores, the load generator sharing them
    def scaling(self, rnd: int) -> None:
        for spec in self.specs(SCALE_SERVERS):
            tag = f"scaling.{spec.id}.r{rnd}"
            H.log(f"== round {rnd} scaling {spec.id}")
            try:
                with self.server(spec, tag, two_core=True) as srv:
                    self.check(srv, spec, tag)
                    if spec.prewarm_s:
                        H.h2load(srv, spec.unary_path, self.req[32], conns=16, streams=8, secs=spec.prewarm_s, warmup=0,
                                 cpus=None, threads=2, out=self.raw / f"{tag}.prewarm.txt")
                    r = H.h2load(srv, spec.unary_path, self.req[32], conns=16, streams=8, secs=SCALE_SECS,
                                 warmup=min(WARMUP, 0.5), cpus=None, threads=2, out=self.raw / f"{tag}.u32.txt")
                    self.run.add(section="scaling", server=spec.id, load="u32", round=rnd, **r)
                    H.log(f"   {r.get('reqps', 0):.0f} req/s, server {r['server_busy_pct']:.0f}% h2load {r['load_busy_pct']:.0f}%")
            except Exception as e:
                H.log(f"   FAILED: {e}")
                self.run.add(section="scaling", server=spec.id, load="error", round=rnd, error=str(e)[:500])

    # -- TLS handshakes per server-CPU-second (bench/tls, a subset of its cases)
    def handshakes(self) -> None:
        out = self.raw / "tls-handshakes.md"
        argv = [sys.executable, str(REPO / "bench/tls/run.py"), "--rounds", str(ROUNDS), "--secs", str(HS_SECS),
                "--only", ",".join(HS_CASES), "--out", str(out)]
        env = {**os.environ, "COURIER_BENCH_TLS_BIN": str(BIN / "courier-bench-tls"), "SERVER_CPU": SERVER_CPU,
               "CLIENT_CPU": CLIENT_CPU}
        H.log("$ " + " ".join(argv))
        p = subprocess.run(argv, env=env, stdout=open(self.raw / "tls-handshakes.log", "w"), stderr=subprocess.STDOUT)
        if p.returncode != 0:
            self.run.skip("handshakes", f"bench/tls/run.py failed ({p.returncode}); see tls-handshakes.log")
            return
        for r in json.loads(out.with_suffix(".json").read_text()):
            n = r["full"] + r["resumed"]
            extra = {k: v for k, v in r.items() if k not in ("round", "case")}
            self.run.add(section="handshakes", server="courier", load=r["case"], round=r["round"] + 1,
                         hs_per_cpu_s=n / r["server_cpu_s"] if r["server_cpu_s"] else 0.0, **extra)

    # -- one connection over a high bandwidth-delay link (two netns, veth, netem; else a user-space relay)
    def bdp(self) -> None:
        if not shutil.which("iperf3"):
            self.run.skip("bdp", "iperf3 not installed")
            return
        for tool in ("ip", "tc"):
            if not shutil.which(tool):
                return self.bdp_relay(f"{tool} not installed")
        if os.geteuid() != 0:
            return self.bdp_relay("network namespaces need root")
        srv_ns, cli_ns = f"cbench-s{os.getpid()}", f"cbench-c{os.getpid()}"
        va, vb = f"cbs{os.getpid() % 100000}", f"cbc{os.getpid() % 100000}"
        netem = ["netem", "delay", f"{BDP_DELAY_MS}ms", "limit", "1000000"] + (["rate", BDP_RATE] if BDP_RATE else [])
        setup = [["ip", "netns", "add", srv_ns], ["ip", "netns", "add", cli_ns],
                 ["ip", "link", "add", va, "type", "veth", "peer", "name", vb],
                 ["ip", "link", "set", va, "netns", srv_ns], ["ip", "link", "set", vb, "netns", cli_ns],
                 ["ip", "-n", srv_ns, "addr", "add", "10.77.0.1/24", "dev", va],
                 ["ip", "-n", cli_ns, "addr", "add", "10.77.0.2/24", "dev", vb],
                 ["ip", "-n", srv_ns, "link", "set", va, "up"], ["ip", "-n", cli_ns, "link", "set", vb, "up"],
                 ["ip", "-n", srv_ns, "link", "set", "lo", "up"], ["ip", "-n", cli_ns, "link", "set", "lo", "up"],
                 # The delay on the server's side of the link (the direction the data flows).
                 ["tc", "-n", srv_ns, "qdisc", "add", "dev", va, "root", *netem]]
        self.run.meta["bdp"] = {"mode": "netem", "delay_ms": BDP_DELAY_MS, "rate": BDP_RATE or "none",
                                "secs": BDP_SECS, "netem": " ".join(netem),
                                "tcp_rmem": Path("/proc/sys/net/ipv4/tcp_rmem").read_text().split(),
                                "tcp_wmem": Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()}
        try:
            for c in setup:
                p = subprocess.run(c, capture_output=True, text=True)
                if p.returncode != 0 and c[0] == "tc":
                    cfg = subprocess.run("zcat /proc/config.gz 2>/dev/null | grep NET_SCH_NETEM", shell=True,
                                         capture_output=True, text=True).stdout.strip()
                    for ns in (srv_ns, cli_ns):
                        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
                    return self.bdp_relay(f"`tc qdisc add ... netem` failed ({p.stderr.strip()}): this kernel "
                                          f"({platform.release()}) has no netem qdisc"
                                          + (f" (`{cfg}` in /proc/config.gz)" if cfg else ""))
                if p.returncode != 0:
                    raise RuntimeError(f"{' '.join(c)}: {p.stderr.strip()}")
            ping = subprocess.run(["ip", "netns", "exec", cli_ns, "ping", "-c", "2", "-i", "0.2", "10.77.0.1"],
                                  capture_output=True, text=True).stdout
            m = re.search(r"= [\d.]+/([\d.]+)/", ping)
            self.run.meta["bdp"]["ping_rtt_ms"] = float(m.group(1)) if m else None
            # iperf3: one plain TCP stream, server -> client (as the gRPC stream flows).
            ip_srv = subprocess.Popen(["ip", "netns", "exec", srv_ns, "taskset", "-c", SERVER_CPU, "iperf3", "-s", "-1",
                                       "-B", "10.77.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            out = subprocess.run(["ip", "netns", "exec", cli_ns, "taskset", "-c", CLIENT_CPU, "iperf3", "-c", "10.77.0.1",
                                  "-R", "-t", str(BDP_SECS), "-J"], capture_output=True, text=True, timeout=BDP_SECS + 60).stdout
            ip_srv.wait(timeout=10)
            self.bdp_iperf3(out)
            for window in ("adaptive", "65535"):
                argv = ["ip", "netns", "exec", srv_ns, str(BIN / "courier-echo"), "--port", "0", "--bind", "10.77.0.1",
                        "--workers", "1"] + (["--adaptive-window"] if window == "adaptive" else [])
                with H.Server(f"bdp-{window}", argv, self.raw / f"bdp.{window}.server.log", cpus=SERVER_CPU) as srv:
                    out = subprocess.run(["ip", "netns", "exec", cli_ns, "taskset", "-c", CLIENT_CPU,
                                          str(BIN / "courier-bench"), "stream", f"10.77.0.1:{srv.port}", str(BDP_SECS),
                                          "65536", window], capture_output=True, text=True, timeout=BDP_SECS + 60)
                    self.bdp_stream(window, out)
        except Exception as e:
            H.log(f"   bdp FAILED: {e}")
            self.run.add(section="bdp", server="courier", load="error", round=1, error=str(e)[:500])
        finally:
            for ns in (srv_ns, cli_ns):
                subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)

    def bdp_iperf3(self, out: str) -> None:
        (self.raw / "bdp.iperf3.json").write_text(out)
        j = json.loads(out)
        ivals = [iv["sum"]["bytes"] for iv in j.get("intervals", [])]
        half = ivals[len(ivals) // 2:]
        r = {"mbps": j["end"]["sum_received"]["bytes"] / j["end"]["sum_received"]["seconds"] / 1e6,
             "second_half_mbps": sum(half) / max(1, len(half)) / 1e6, "per_sec": ivals}
        self.run.add(section="bdp", server="iperf3", load="tcp", round=1, **r)
        H.log(f"   bdp iperf3: {r['mbps']:.1f} MB/s")

    def bdp_stream(self, window: str, out: "subprocess.CompletedProcess[str]") -> None:
        (self.raw / f"bdp.{window}.txt").write_text(out.stdout + out.stderr)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        self.run.add(section="bdp", server="courier", load=f"window-{window}", round=1, **r)
        H.log(f"   bdp {window}: {r['mbps']:.1f} MB/s")

    def bdp_relay(self, why: str) -> None:
        """No netem: the same three transfers through delay-link, a user-space relay that delays
        each direction by BDP_DELAY_MS and drains it at BDP_RELAY_MBIT (bench/src/bin/delay-link.rs).
        Each transfer gets its own relay in front of its server; the relay is not pinned."""
        H.log(f"   bdp: {why}; user-space relay instead")
        buffer = int(2 * BDP_RELAY_MBIT * 1e6 / 8 * BDP_DELAY_MS / 1e3)
        self.run.meta["bdp"] = {
            "mode": f"user-space relay: delay {BDP_DELAY_MS} ms one way, rate {BDP_RELAY_MBIT:g} Mbit/s, "
                    f"buffer {buffer} bytes per direction", "netem_unavailable": why,
            "delay_ms": BDP_DELAY_MS, "rate": f"{BDP_RELAY_MBIT:g} Mbit/s", "relay_buffer_bytes": buffer,
            "secs": BDP_SECS, "tcp_rmem": Path("/proc/sys/net/ipv4/tcp_rmem").read_text().split(),
            "tcp_wmem": Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split(),
            "loadavg_before": Path("/proc/loadavg").read_text().split()[:3]}
        relay_cpu: Dict[str, float] = {}

        def relay(to_port: int, tag: str) -> H.Server:
            return H.Server(f"delay-link-{tag}", [str(BIN / "delay-link"), "--port", "0", "--to", f"127.0.0.1:{to_port}",
                                                  "--delay-ms", str(BDP_DELAY_MS), "--rate-mbit", f"{BDP_RELAY_MBIT:g}"],
                            self.raw / f"bdp.{tag}.relay.log")
        try:
            # The round trip through the relay, measured with a TCP ping-pong (1 byte each way).
            with socket.socket() as ls:
                ls.bind(("127.0.0.1", 0))
                ls.listen(1)
                with relay(ls.getsockname()[1], "ping") as rl, socket.create_connection(("127.0.0.1", rl.port)) as c:
                    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    s, _ = ls.accept()
                    with s:
                        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        rtts = []
                        for _ in range(5):
                            t0 = time.monotonic()
                            c.sendall(b"x")
                            s.sendall(s.recv(1))
                            c.recv(1)
                            rtts.append((time.monotonic() - t0) * 1e3)
            self.run.meta["bdp"]["ping_rtt_ms"] = round(statistics.median(rtts), 1)
            # iperf3: one plain TCP stream, server -> client (as the gRPC stream flows); its control
            # connection goes through the relay too.
            with socket.socket() as fs:
                fs.bind(("127.0.0.1", 0))
                ip_port = fs.getsockname()[1]
            ip_srv = subprocess.Popen(["taskset", "-c", SERVER_CPU, "iperf3", "-s", "-1", "-B", "127.0.0.1", "-p",
                                       str(ip_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(0.5)
                with relay(ip_port, "iperf3") as rl:
                    out = subprocess.run(["taskset", "-c", CLIENT_CPU, "iperf3", "-c", "127.0.0.1", "-p", str(rl.port),
                                          "-R", "-t", str(BDP_SECS), "-J"], capture_output=True, text=True,
                                         timeout=BDP_SECS + 60).stdout
                    relay_cpu["iperf3"] = round(rl.cpu(), 2)
                ip_srv.wait(timeout=10)
            finally:
                if ip_srv.poll() is None:
                    ip_srv.kill()
                    ip_srv.wait()
            self.bdp_iperf3(out)
            for window in ("adaptive", "65535"):
                argv = [str(BIN / "courier-echo"), "--port", "0", "--workers", "1"] + \
                    (["--adaptive-window"] if window == "adaptive" else [])
                with H.Server(f"bdp-{window}", argv, self.raw / f"bdp.{window}.server.log", cpus=SERVER_CPU) as srv, \
                        relay(srv.port, window) as rl:
                    out = subprocess.run(["taskset", "-c", CLIENT_CPU, str(BIN / "courier-bench"), "stream",
                                          f"127.0.0.1:{rl.port}", str(BDP_SECS), "65536", window],
                                         capture_output=True, text=True, timeout=BDP_SECS + 60)
                    relay_cpu[window] = round(rl.cpu(), 2)
                    self.bdp_stream(window, out)
        except Exception as e:
            H.log(f"   bdp FAILED: {e}")
            self.run.add(section="bdp", server="courier", load="error", round=1, error=str(e)[:500])
        self.run.meta["bdp"]["relay_cpu_s"] = relay_cpu
        self.run.meta["bdp"]["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
        self.run.save()

    # -- the core's AES-128-GCM speed: the physical ceiling of mTLS bulk throughput
    def aes(self) -> None:
        for rnd in range(1, ROUNDS + 1):
            out = subprocess.run(["taskset", "-c", SERVER_CPU, "openssl", "speed", "-evp", "aes-128-gcm", "-bytes", "16384",
                                  "-seconds", str(max(1, int(SIZE_SECS)))], capture_output=True, text=True).stdout
            (self.raw / f"aes.r{rnd}.txt").write_text(out)
            m = re.search(r"^AES-128-GCM\s+([\d.]+)k", out, re.M | re.I)
            if m:
                self.run.add(section="aes", server="openssl", load="aes-128-gcm-16k", round=rnd, mbps=float(m.group(1)) * 1e3 / 1e6)


def message(field: int, size: int) -> bytes:
    """Same bytes as courier_bench::message: one length-delimited field of 'x', `size` bytes in all."""
    def vlen(v: int) -> int:
        return 1 if v < 1 << 7 else 2 if v < 1 << 14 else 3 if v < 1 << 21 else 4
    n = size - 2
    while 1 + vlen(n) + n > size:
        n -= 1
    out = bytearray([field << 3 | 2])
    v = n
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out) + b"x" * n


def frame(msg: bytes) -> bytes:
    return b"\x00" + len(msg).to_bytes(4, "big") + msg


# ---------------------------------------------------------------- machine and versions

def machine(run: Run) -> None:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    lock = (REPO / "Cargo.lock").read_text()

    def lockver(name: str) -> str:
        m = re.search(r'name = "' + re.escape(name) + r'"\nversion = "([^"]+)"', lock)
        return m.group(1) if m else "?"

    gomod = (REPO / "bench/go/go.mod").read_text()
    grpcgo = re.search(r"google.golang.org/grpc (v[\d.]+)", gomod)
    pom = (REPO / "tests/peers/java/pom.xml").read_text() if (REPO / "tests/peers/java/pom.xml").exists() else ""
    grpcjava = re.search(r"<grpc.version>([^<]+)<", pom)
    pyv = H.first_line([str(VENV / "bin/python"), "-c",
                        "import sys, grpc, google.protobuf as p; print(sys.version.split()[0], grpc.__version__, p.__version__)"]).split()
    run.meta["machine"] = {
        "cpu": cpu, "ncpu": os.cpu_count(), "kernel": platform.release(),
        "pinning": f"server: taskset -c {SERVER_CPU} (whole process; GOMAXPROCS=1 for Go); load generator: taskset -c {CLIENT_CPU}",
        "commit": H.first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
        "dirty": bool(subprocess.run(["git", "-C", str(REPO), "diff", "--quiet", "HEAD", "--", "core", "py", "go-cgo", "ffi-c", "bench"]).returncode),
        "loadavg_before": Path("/proc/loadavg").read_text().split()[:3],
    }
    run.meta["versions"] = {
        "rustc": H.first_line(["rustc", "--version"]), "go": H.first_line(["go", "version"]),
        "java": H.first_line(["java", "-version"]), "python": pyv[0] if pyv else "?",
        "grpcio": pyv[1] if len(pyv) > 1 else "?", "protobuf (Python)": pyv[2] if len(pyv) > 2 else "?",
        "grpc-go": grpcgo.group(1) if grpcgo else "?", "grpc-java": grpcjava.group(1) if grpcjava else "?",
        "tonic": lockver("tonic"), "hyper": lockver("hyper"), "h2": lockver("h2"), "tokio": lockver("tokio"),
        "rustls": lockver("rustls"), "aws-lc-rs": lockver("aws-lc-rs"),
        "h2load": H.first_line(["h2load", "--version"]), "iperf3": H.first_line(["iperf3", "--version"]),
        "openssl": H.first_line(["openssl", "version"]),
    }
    run.meta["knobs"] = {k: v for k, v in {
        "ROUNDS": ROUNDS, "WARMUP": WARMUP, "UNARY_SECS": UNARY_SECS, "SIZE_SECS": SIZE_SECS, "RATE": RATE,
        "RATE_SECS": RATE_SECS, "TLS_SECS": TLS_SECS, "STORM_CLIENTS": STORM_CLIENTS, "HS_SECS": HS_SECS,
        "SCALE_SECS": SCALE_SECS, "BDP_SECS": BDP_SECS, "BDP_DELAY_MS": BDP_DELAY_MS, "BDP_RELAY_MBIT": BDP_RELAY_MBIT,
        "QUICK": QUICK}.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", default=os.environ.get("SECTIONS", ",".join(SECTIONS)))
    ap.add_argument("--servers", default=os.environ.get("SERVERS", ",".join(s.id for s in S.SERVERS if s.default)))
    ap.add_argument("--skip-build", action="store_true", default=bool(os.environ.get("SKIP_BUILD")))
    ap.add_argument("--out", default=os.environ.get("OUT", str(REPO / "bench/results")))
    a = ap.parse_args()
    sections = [s for s in re.split(r"[ ,]+", a.sections) if s]
    bad = [s for s in sections if s not in SECTIONS]
    server_ids = [s for s in re.split(r"[ ,]+", a.servers) if s]
    bad += [s for s in server_ids if s not in S.BY_ID]
    if bad:
        ap.error(f"unknown section or server: {bad}; sections: {SECTIONS}; servers: {list(S.BY_ID)}")
    t_start = time.monotonic()
    raw = REPO / "bench/results/raw" / time.strftime("bench-%Y%m%d-%H%M%S")
    raw.mkdir(parents=True)
    run = Run(raw)
    run.meta["started"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    # Every knob set in the environment, so the report's command reproduces the run.
    knobs = ("QUICK", "ROUNDS", "SECTIONS", "SERVERS", "WARMUP", "UNARY_SECS", "SIZE_SECS", "RATE", "RATE_SECS",
             "TLS_SECS", "STORM_CLIENTS", "HS_SECS", "SCALE_SECS", "BDP_SECS", "BDP_DELAY_MS", "BDP_RATE",
             "BDP_RELAY_MBIT", "SERVER_CPU", "CLIENT_CPU")
    run.meta["command"] = " ".join(["make bench"] + [f"{k}={os.environ[k]}" for k in knobs if os.environ.get(k)])
    run.meta["section_list"] = sections
    run.meta["server_list"] = server_ids
    if not a.skip_build:
        build(run, want_java="grpc-java" in server_ids)
    elif not (BIN / "courier-load").exists():
        raise SystemExit(f"{BIN} has no binaries: run without --skip-build once")
    machine(run)
    b = Bench(run, server_ids)
    per_round: Dict[str, Callable[[int], None]] = {"unary": b.unary, "tls": b.tls, "storm": b.storm, "scaling": b.scaling}
    once: Dict[str, Callable[[], None]] = {"handshakes": b.handshakes, "bdp": b.bdp, "aes": b.aes}
    for rnd in range(1, ROUNDS + 1):
        for s in sections:
            if s in per_round:
                t0 = time.monotonic()
                per_round[s](rnd)
                run.meta["sections"][s] = run.meta["sections"].get(s, 0) + round(time.monotonic() - t0, 1)
    for s in sections:
        if s in once:
            t0 = time.monotonic()
            once[s]()
            run.meta["sections"][s] = round(time.monotonic() - t0, 1)
    run.meta["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    run.meta["total_s"] = round(time.monotonic() - t_start, 1)
    run.save()
    out = Path(a.out)
    subprocess.run([sys.executable, str(Path(__file__).parent / "report.py"), str(raw), str(out)], check=True)
    H.log(f"wrote {out / 'REPORT.md'} and {out / 'chart.svg'} (raw: {raw}); {run.meta['total_s']:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
