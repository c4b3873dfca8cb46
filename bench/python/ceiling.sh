#!/usr/bin/env bash
# The most any Python handler behind hyper/h2 could reach against grpcio on this
# machine: bare hyper/h2's server CPU per call (no gRPC, no Python) plus the
# handler's own Python work (decode the request, build the reply, encode it; the
# same handler as python/server.py, in a tight loop on core 0, nothing else),
# against grpcio's CPU per call from the same harness run. A Courier figure above
# that ceiling is impossible; a target above it needs another transport.
#
#   bash bench/python/ceiling.sh [RAW]
#
# RAW: a harness raw dir (bench/results/raw/bench-*) whose unary section ran h2,
# grpcio-sync and grpcio-aio (default: the newest such). Uses the bench venv that
# `make bench` (or `make bench-python`) built.
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE=${CACHE:-$HOME/.cache/courier}
BV=${BENCH_VENV:-$CACHE/bench-venv}
[ -x "$BV/bin/python" ] || { echo "run make bench-python first" >&2; exit 2; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
"$BV/bin/python" -m grpc_tools.protoc -I bench/python --python_out="$work" echo.proto
floor=$(PYTHONPATH=$work taskset -c 0 "$BV/bin/python" - <<'PY'
import statistics, time
import echo_pb2 as pb

req = pb.Req(s="x" * 32).SerializeToString()  # the harness's 32-byte message


def handler(ctx, r):
    return pb.Resp(s=r.s)


n, runs = 500_000, []
for _ in range(5):
    t = time.perf_counter()
    for _ in range(n):
        handler(None, pb.Req.FromString(req)).SerializeToString()
    runs.append((time.perf_counter() - t) / n * 1e6)
print(f"{statistics.median(runs):.3f} {min(runs):.3f} {max(runs):.3f}")
PY
)
python3 - "${1:-}" $floor <<'PY'
import json, statistics as st, sys
from pathlib import Path

raw, floor, lo, hi = sys.argv[1], *map(float, sys.argv[2:5])


def cpu(recs, server):
    v = [r["cpu_us_per_call"] for r in recs if r["server"] == server and r["section"] == "unary"
         and r["load"] == "u32" and r.get("ok")]
    return st.median(v) if v else None


dirs = [Path(raw)] if raw else sorted(Path("bench/results/raw").glob("bench-*"), reverse=True)
for d in dirs:
    f = d / "results.json"
    if not f.exists():
        continue
    recs = json.load(open(f))["records"]
    if all(cpu(recs, s) for s in ("h2", "grpcio-sync", "grpcio-aio")):
        break
else:
    sys.exit("no raw dir with h2, grpcio-sync and grpcio-aio in its unary section: run "
             "SERVERS=h2,courier-py-sync,courier-py-aio,grpcio-sync,grpcio-aio bash bench/python/run.sh")
h2 = cpu(recs, "h2")
print(f"raw: {d}")
print(f"handler's own Python work: {floor:.2f} us per call [{lo:.2f}-{hi:.2f}] (5 runs, core 0)")
print(f"bare hyper/h2 echo: {h2:.2f} us of server CPU per call")
print(f"ceiling: {h2 + floor:.2f} us per call = {1e6 / (h2 + floor) / 1000:.0f}k req/s on one core")
for peer, courier, target in (("grpcio-sync", "courier-py-sync", 20), ("grpcio-aio", "courier-py-aio", 25)):
    p, c = cpu(recs, peer), cpu(recs, courier)
    have = f"; Courier {p / c:.1f}x ({c:.2f} us)" if c else ""
    print(f"{peer}: {p:.1f} us per call; ceiling {p / (h2 + floor):.1f}x against a target of {target}x{have}")
PY
