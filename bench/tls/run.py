#!/usr/bin/env python3
"""TLS benchmark driver: handshakes per second of *server CPU* and mTLS vs
plaintext unary calls, server pinned to one core, client to the other.

The server's CPU time is read from /proc/<pid>/task/*/schedstat (nanoseconds
on CPU) between the client's `GO` (after its warm-up) and its result line, so
a client that is slower than the server does not distort the figure.

    python3 bench/tls/run.py [--rounds 3] [--secs 3] [--only SUBSTRING|ID,ID,...] [--out bench/tls/results.md]

Needs: `cargo build --release -p courier-bench-tls --features ring` (done by
`make bench-tls`), taskset. Rounds are interleaved (every case once per
round) so drift of the machine spreads over all cases.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/courier/target"))
BIN = Path(os.environ.get("COURIER_BENCH_TLS_BIN", TARGET / "release" / "courier-bench-tls"))
SERVER_CPU = os.environ.get("SERVER_CPU", "0")
CLIENT_CPU = os.environ.get("CLIENT_CPU", "1")

# (id, section, label, server args, client args)
HS: List[Tuple[str, str, str, List[str], List[str]]] = []


def hs(id_: str, section: str, label: str, server: List[str], client: List[str]) -> None:
    HS.append((id_, section, label, server, client))


# Courier's shipped server (ServerTls: policy, SPIFFE checks, counters), mutual TLS.
# Client certificates: "ECDSA client" is the ECDSA P-256 client of the ECDSA CA,
# used against both server certificates (same client cert for both); "all-RSA"
# is an RSA 2048 CA, server and client (matching key types).
KX = {"hybrid": "X25519MLKEM768", "x25519": "X25519"}
for cert in ("ecdsa", "rsa"):
    for kx in ("hybrid", "x25519"):
        hs(f"full13-{cert}-{kx}", "courier", f"full TLS 1.3, {cert.upper()} {'P-256' if cert == 'ecdsa' else '2048'} server, ECDSA client, {KX[kx]}",
           ["--mode", "courier", "--cert", cert], ["--version", "13", "--resume", "none", "--kx", kx])
for kx in ("hybrid", "x25519"):
    hs(f"full13-rsaall-{kx}", "courier", f"full TLS 1.3, all-RSA 2048 (CA, server, client), {KX[kx]}",
       ["--mode", "courier", "--cert", "rsa", "--ca", "rsa"], ["--version", "13", "--resume", "none", "--kx", kx, "--ca", "rsa"])
for kx in ("hybrid", "x25519"):
    hs(f"res13-ecdsa-{kx}", "courier", f"TLS 1.3 resumed by ticket, ECDSA, {KX[kx]}",
       ["--mode", "courier", "--cert", "ecdsa"], ["--version", "13", "--resume", "ticket", "--kx", kx])
# The verified-chain cache off: what a client presenting a chain for the first time costs.
for id_, label, sargs, cargs in (
    ("ecdsa", "ECDSA server, ECDSA client", ["--cert", "ecdsa"], []),
    ("rsa", "RSA server, ECDSA client", ["--cert", "rsa"], []),
    ("rsaall", "all-RSA", ["--cert", "rsa", "--ca", "rsa"], ["--ca", "rsa"]),
):
    hs(f"nocache13-{id_}", "cache", f"full TLS 1.3, {label}, X25519, chain cache off",
       ["--mode", "courier", "--chain-cache", "0", *sargs], ["--version", "13", "--resume", "none", "--kx", "x25519", *cargs])
# Without client certificates (server-authenticated TLS only), for comparison with PERF-NOTES.
for cert in ("ecdsa", "rsa"):
    hs(f"noauth13-{cert}", "courier", f"full TLS 1.3, {cert.upper()}, X25519, no client certificate",
       ["--mode", "courier", "--cert", cert, "--no-client-auth"], ["--version", "13", "--resume", "none", "--kx", "x25519", "--no-cert"])
hs("full12-ecdsa", "courier", "full TLS 1.2, ECDSA P-256, X25519", ["--mode", "courier", "--cert", "ecdsa"], ["--version", "12", "--resume", "none", "--kx", "x25519"])
hs("res12-ticket", "courier", "TLS 1.2 resumed by ticket (RFC 5077)", ["--mode", "courier", "--cert", "ecdsa"], ["--version", "12", "--resume", "ticket", "--kx", "x25519"])
hs("res12-sessid", "courier", "TLS 1.2 resumed by session id", ["--mode", "courier", "--cert", "ecdsa"], ["--version", "12", "--resume", "session-id", "--kx", "x25519"])
# Ticket count: full and resumed TLS 1.3 handshakes (shipped groups) with N tickets per connection.
for n in ("0", "1", "2", "4"):
    hs(f"tickets{n}-full", "tickets", f"{n} tickets, full TLS 1.3 (hybrid)", ["--mode", "courier", "--cert", "ecdsa", "--tickets", n], ["--version", "13", "--resume", "none", "--kx", "hybrid"])
    if n != "0":
        hs(f"tickets{n}-res", "tickets", f"{n} tickets, resumed TLS 1.3 (hybrid)", ["--mode", "courier", "--cert", "ecdsa", "--tickets", n], ["--version", "13", "--resume", "ticket", "--kx", "hybrid"])
# Provider comparison: the same policy on aws-lc-rs and ring, plain webpki verification.
for prov in ("aws", "ring"):
    for cert in ("ecdsa", "rsa"):
        hs(f"prov-{prov}-{cert}", "provider", f"{prov}: full TLS 1.3, {cert.upper()}, X25519", ["--mode", f"rustls-{prov}", "--cert", cert], ["--version", "13", "--resume", "none", "--kx", "x25519"])
    hs(f"prov-{prov}-res12", "provider", f"{prov}: TLS 1.2 resumed by session id", ["--mode", f"rustls-{prov}", "--cert", "ecdsa"], ["--version", "12", "--resume", "session-id", "--kx", "x25519"])

RPC = [
    ("rpc-plain", "plaintext h2c", [], []),
    ("rpc-mtls", "mutual TLS (TLS 1.3, AES-128-GCM)", ["--tls"], ["--tls"]),
]


# 1-minute load average at the end of every measured window.
LOADS: List[float] = []


def cpu_ns(pid: int) -> int:
    total = 0
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((t / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def start_server(args: List[str]) -> Tuple[subprocess.Popen[str], str]:
    p = subprocess.Popen(["taskset", "-c", SERVER_CPU, str(BIN), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    line = p.stdout.readline()
    if not line.startswith("PORT "):
        p.kill()
        raise RuntimeError(f"server {args} said {line!r}")
    return p, f"127.0.0.1:{line.split()[1]}"


def run_client(server: subprocess.Popen[str], args: List[str]) -> Tuple[Dict[str, float], float, float]:
    c = subprocess.Popen(["taskset", "-c", CLIENT_CPU, str(BIN), *args], stdout=subprocess.PIPE, text=True)
    assert c.stdout is not None
    go = c.stdout.readline().strip()
    assert go == "GO", go
    cpu0, t0 = cpu_ns(server.pid), time.monotonic()
    result = json.loads(c.stdout.readline())
    cpu1, t1 = cpu_ns(server.pid), time.monotonic()
    LOADS.append(os.getloadavg()[0])
    c.wait(timeout=30)
    return result, (cpu1 - cpu0) / 1e9, t1 - t0


def stop(p: subprocess.Popen[str]) -> None:
    try:
        assert p.stdin is not None
        p.stdin.close()
        p.wait(timeout=5)
    except Exception:
        p.kill()


def fmt(xs: List[float]) -> str:
    if not xs:
        return "—"
    med = statistics.median(xs)
    k = lambda v: f"{v / 1000:.2f}k" if v >= 1000 else f"{v:.0f}"
    return f"{k(med)} [{k(min(xs))}–{k(max(xs))}]"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=float, default=3.0)
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--only", default="")
    ap.add_argument("--out", default=str(REPO / "bench/tls/results.md"))
    a = ap.parse_args()
    if not BIN.exists():
        print(f"{BIN} missing: cargo build --release -p courier-bench-tls --features ring", file=sys.stderr)
        return 2
    pki = Path(tempfile.mkdtemp(prefix="courier-bench-tls-"))
    subprocess.run([str(BIN), "pki", "--out", str(pki)], check=True, stdout=subprocess.DEVNULL)
    # --only: a substring of case ids, or a comma-separated list of exact ids.
    only = (lambda i: i in a.only.split(",")) if "," in a.only else (lambda i: a.only in i)
    hs_cases = [c for c in HS if only(c[0])]
    rpc_cases = [c for c in RPC if only(c[0])]
    rates: Dict[str, List[float]] = {c[0]: [] for c in hs_cases + rpc_cases}
    extra: Dict[str, List[str]] = {c[0]: [] for c in hs_cases + rpc_cases}
    walls: Dict[str, List[float]] = {c[0]: [] for c in hs_cases + rpc_cases}
    raw: List[Dict[str, object]] = []
    for r in range(a.rounds):
        for id_, _, label, sargs, cargs in hs_cases:
            server, addr = start_server(["hs-server", "--pki", str(pki), *sargs])
            try:
                res, cpu, wall = run_client(server, ["hs-client", "--addr", addr, "--pki", str(pki), "--conns", str(a.conns), "--secs", str(a.secs), *cargs])
            finally:
                stop(server)
            n = res["full"] + res["resumed"]
            rates[id_].append(n / cpu)
            walls[id_].append(n / wall)
            extra[id_].append(f"{res['resumed'] / max(n, 1):.0%} resumed, server CPU {cpu / wall:.0%}, errors {int(res['errors'])}")
            raw.append({"round": r, "case": id_, **res, "server_cpu_s": cpu, "wall_s": wall})
            print(f"round {r} {id_:22s} {n / cpu:8.0f}/server-cpu-s  {n / wall:8.0f}/s wall  {extra[id_][-1]}", flush=True)
        for id_, label, sargs, cargs in rpc_cases:
            server, addr = start_server(["rpc-server", "--pki", str(pki), *sargs])
            try:
                res, cpu, wall = run_client(server, ["rpc-client", "--addr", addr, "--pki", str(pki), "--secs", str(a.secs), *cargs])
            finally:
                stop(server)
            rates[id_].append(res["calls"] / cpu)
            walls[id_].append(res["calls"] / wall)
            extra[id_].append(f"server CPU {cpu / wall:.0%}, errors {int(res['errors'])}")
            raw.append({"round": r, "case": id_, **res, "server_cpu_s": cpu, "wall_s": wall})
            print(f"round {r} {id_:22s} {res['calls'] / cpu:8.0f}/server-cpu-s  {res['calls'] / wall:8.0f}/s wall  {extra[id_][-1]}", flush=True)

    lines = [
        "# TLS benchmark results",
        "",
        f"Generated by `python3 bench/tls/run.py --rounds {a.rounds} --secs {a.secs}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"`{os.uname().nodename}`, {os.cpu_count()} CPUs; commit {subprocess.run(['git', '-C', str(REPO), 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()}. "
        f"Server on core {SERVER_CPU}, client on core {CLIENT_CPU}; median [min–max] of {a.rounds} interleaved rounds of {a.secs} s after a 1 s warm-up. "
        f"1-minute load average during the run (shared machine): median {statistics.median(LOADS):.1f} [{min(LOADS):.1f}–{max(LOADS):.1f}].",
        "",
    ]
    sections = [("courier", "Handshakes per second of server CPU: Courier's server (mutual TLS, SPIFFE checks, counters)"),
                ("cache", "Verified-chain cache off (every client chain verified in full: a client's first handshake)"),
                ("tickets", "TLS 1.3 tickets issued per connection (Courier server, ECDSA, hybrid group)"),
                ("provider", "Crypto provider: the same policy on aws-lc-rs and ring (plain webpki client verification)")]
    for sec, title in sections:
        rows = [c for c in hs_cases if c[1] == sec]
        if not rows:
            continue
        lines += [f"## {title}", "", "| handshake | per server-CPU-second | per wall second | last round |", "|---|---|---|---|"]
        for id_, _, label, _, _ in rows:
            lines.append(f"| {label} (`{id_}`) | {fmt(rates[id_])} | {fmt(walls[id_])} | {extra[id_][-1] if extra[id_] else ''} |")
        lines.append("")
    if rpc_cases:
        lines += ["## Unary calls, one Courier I/O thread (Rust echo, 4 connections x 32 calls in flight)", "",
                  "| transport | calls per server-CPU-second | calls per wall second | last round |", "|---|---|---|---|"]
        for id_, label, _, _ in rpc_cases:
            lines.append(f"| {label} | {fmt(rates[id_])} | {fmt(walls[id_])} | {extra[id_][-1] if extra[id_] else ''} |")
        lines.append("")
    Path(a.out).write_text("\n".join(lines))
    Path(a.out).with_suffix(".json").write_text(json.dumps(raw, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
