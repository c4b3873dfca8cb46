#!/usr/bin/env bash
# Python handlers on Courier against stock grpcio, and against Courier's own
# Rust-native handler, in one run: each server pinned to one core (the whole
# process), h2load on the other, interleaved rounds. Every handler decodes the
# request and builds the reply. Writes bench/results/python.md.
#
# Env: ROUNDS (3), DURATION (8 s), WARMUP (2 s), SERVER_CPU (0), CLIENT_CPU (1),
#      BENCH_VENV (~/.cache/courier/bench-venv: a release wheel of this tree is
#      built and installed there unless SKIP_BUILD=1).
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-8}; WARMUP=${WARMUP:-2}
SERVER_CPU=${SERVER_CPU:-0}; CLIENT_CPU=${CLIENT_CPU:-1}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/courier/target}
BV=${BENCH_VENV:-$HOME/.cache/courier/bench-venv}
if [ -z "${SKIP_BUILD:-}" ]; then
  [ -x "$BV/bin/python" ] || python3 -m venv "$BV"
  "$BV/bin/pip" install -q grpcio==1.85.3 grpcio-tools==1.85.1 protobuf==7.36.2 'maturin>=1.7,<2'
  rm -rf "$BV/wheels" && "$BV/bin/maturin" build --release -q -o "$BV/wheels"
  "$BV/bin/pip" install -q --force-reinstall --no-deps "$BV"/wheels/courier_rpc-*.whl
  cargo build -q --release -p courier-bench --bin courier-echo
fi
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
"$BV/bin/python" -m grpc_tools.protoc -I bench/python --python_out="$work" --grpc_python_out="$work" echo.proto
printf '\x00\x00\x00\x00\x0f\x0a\x0dhello, world!' > "$work/req.bin"
RAW=bench/results/raw/python-$(date +%Y%m%d-%H%M%S); mkdir -p "$RAW"
HZ=$(getconf CLK_TCK)

SERVERS=("rust-native|$CARGO_TARGET_DIR/release/courier-echo --workers 1"
         "courier-sync|$BV/bin/python bench/python/server.py courier-sync"
         "courier-aio|$BV/bin/python bench/python/server.py courier-aio"
         "grpcio-sync|$BV/bin/python bench/python/server.py grpcio-sync"
         "grpcio-aio|$BV/bin/python bench/python/server.py grpcio-aio")

h2() { taskset -c "$CLIENT_CPU" h2load "http://127.0.0.1:$1/bench.Echo/Echo" -H 'content-type: application/grpc' -H 'te: trailers' -d "$work/req.bin" "${@:2}"; }
echo "id round reqps ok cpu_us p50_us p99_us lat1_mean_us" > "$RAW/results.txt"
for r in $(seq "$ROUNDS"); do
  for s in "${SERVERS[@]}"; do
    id=${s%%|*}; cmd=${s#*|}
    # shellcheck disable=SC2086
    PYTHONPATH=$work taskset -c "$SERVER_CPU" $cmd --port 0 > "$RAW/$id.$r.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do grep -q '^PORT' "$RAW/$id.$r.log" && break; sleep 0.1; done
    port=$(awk '/^PORT/{print $2; exit}' "$RAW/$id.$r.log")
    h2 "$port" -n 5000 -c 16 -m 8 > /dev/null 2>&1 || true
    c0=$(awk '{print $14+$15}' /proc/$pid/stat)
    h2 "$port" -D "$DURATION" --warm-up-time "$WARMUP" -c 16 -m 8 --log-file "$RAW/$id.$r.lat.log" > "$RAW/$id.$r.tput.txt" 2>&1
    c1=$(awk '{print $14+$15}' /proc/$pid/stat)
    h2 "$port" -D 4 --warm-up-time 1 -c 1 -m 1 > "$RAW/$id.$r.one.txt" 2>&1
    kill "$pid"; wait "$pid" 2>/dev/null || true
    python3 - "$id" "$r" "$RAW/$id.$r.tput.txt" "$RAW/$id.$r.lat.log" "$RAW/$id.$r.one.txt" "$c0" "$c1" "$HZ" "$DURATION" "$WARMUP" >> "$RAW/results.txt" <<'PY'
import re, sys
id_, r, tput, latlog, one, c0, c1, hz, dur, warm = sys.argv[1:]
t = open(tput).read()
reqps = float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", t).group(1))
m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", t)
ok = m and m.group(1) == m.group(3) and m.group(4) == "0" and m.group(5) == "0"
lat = sorted(int(l.split("\t")[2]) for l in open(latlog) if l.strip())
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
cpu_s = (int(c1) - int(c0)) / int(hz)
calls = reqps * (float(dur) + float(warm))
o = open(one).read()
mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", o).group(1)
mean_us = float(mean[:-2]) if mean.endswith("us") else float(mean[:-2]) * 1000 if mean.endswith("ms") else float(mean[:-1]) * 1e6
print(id_, r, f"{reqps:.0f}", "yes" if ok else "NO", f"{cpu_s * 1e6 / calls:.2f}", q(0.5), q(0.99), f"{mean_us:.0f}")
PY
    tail -1 "$RAW/results.txt" >&2
  done
done
python3 - "$RAW/results.txt" "$RAW" > bench/results/python.md <<'PY'
import statistics as st, sys, subprocess
rows = [l.split() for l in open(sys.argv[1]).read().splitlines()[1:]]
by = {}
for r in rows:
    by.setdefault(r[0], []).append(r)
def med(id_, i):
    return st.median(float(r[i]) for r in by[id_])
def spread(id_, i):
    v = [float(r[i]) for r in by[id_]]
    return f"{st.median(v):.0f} [{min(v):.0f}–{max(v):.0f}]"
cpu = open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(": \t")
print("# Python handlers: Courier vs stock grpcio\n")
print(f"Server pinned to CPU 0 (whole process), h2load on CPU 1, `-c 16 -m 8`, 20-byte unary request; "
      f"one-call latency `-c 1 -m 1`. {len(by['rust-native'])} interleaved rounds, median [min–max]. CPU: {cpu}.\n")
print(f"Load average at the end: {open('/proc/loadavg').read().split()[:3]} (other work on the machine makes absolute figures lower; ratios are from the same run).\n")
print("| server | req/s | ok | µs server CPU per call | p50 µs | p99 µs | 1-call mean µs |")
print("|---|---|---|---|---|---|---|")
for id_ in by:
    print(f"| {id_} | {spread(id_, 2)} | {'yes' if all(r[3] == 'yes' for r in by[id_]) else 'NO'} | {med(id_, 4):.1f} | {med(id_, 5):.0f} | {med(id_, 6):.0f} | {med(id_, 7):.0f} |")
print()
def ratio(a, b):
    return med(a, 2) / med(b, 2)
targets = [
    ("Courier sync / grpcio sync", ratio("courier-sync", "grpcio-sync"), 20, "≥ 20x (aim 25x)"),
    ("Courier asyncio / grpcio aio", ratio("courier-aio", "grpcio-aio"), 25, "≥ 25x (aim 35x)"),
    ("Courier sync / Rust-native", ratio("courier-sync", "rust-native"), 0.6, "≥ 0.6"),
    ("Courier asyncio / Rust-native", ratio("courier-aio", "rust-native"), 0.6, "≥ 0.6"),
]
print("| ratio | measured | target | met |")
print("|---|---|---|---|")
for name, v, t, txt in targets:
    print(f"| {name} | {v:.2f} | {txt} | {'yes' if v >= t else 'no'} |")
for a, b in (("courier-sync", "grpcio-sync"), ("courier-aio", "grpcio-aio")):
    print(f"| server CPU per call {b} / {a} (robust on a busy machine) | {med(b, 4) / med(a, 4):.1f} | same targets | {'yes' if med(b, 4) / med(a, 4) >= (20 if 'sync' in a else 25) else 'no'} |")
for a, b in (("courier-sync", "grpcio-sync"), ("courier-aio", "grpcio-aio")):
    print(f"| p99 {a} < {b} | {med(a, 6):.0f} vs {med(b, 6):.0f} µs | lower | {'yes' if med(a, 6) < med(b, 6) else 'no'} |")
for a in ("courier-sync", "courier-aio"):
    v = med(a, 7) / med("rust-native", 7)
    print(f"| 1-call latency {a} / Rust-native | {v:.2f} | ≤ 1.6 | {'yes' if v <= 1.6 else 'no'} |")
print(f"\nCommand: `bash bench/python/run.sh` (raw: {sys.argv[2]}).")
PY
cat bench/results/python.md
