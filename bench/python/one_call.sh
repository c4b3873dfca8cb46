#!/usr/bin/env bash
# One call in flight (h2load -c 1 -m 1): mean latency of Courier's Python sync
# and asyncio handlers against its Rust-native handler, server pinned to core 0,
# h2load on core 1, ROUNDS interleaved rounds of DURATION s. Issue 4's bound:
# Python at most 1.6x the Rust-native latency. Uses the binaries and the bench
# venv that `make bench` (or `make bench-python`) built.
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE=${CACHE:-$HOME/.cache/courier}
BV=${BENCH_VENV:-$CACHE/bench-venv}
ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-4}
[ -x "$CACHE/bench-bin/courier-echo" ] && [ -x "$BV/bin/python" ] || { echo "run make bench-python first" >&2; exit 2; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
"$BV/bin/python" -m grpc_tools.protoc -I bench/python --python_out="$work" --grpc_python_out="$work" echo.proto
printf '\x00\x00\x00\x00\x0f\x0a\x0dhello, world!' > "$work/req.bin"
declare -A cmd=([rust-native]="$CACHE/bench-bin/courier-echo --workers 1"
                [courier-sync]="$BV/bin/python bench/python/server.py courier-sync"
                [courier-aio]="$BV/bin/python bench/python/server.py courier-aio")
for r in $(seq "$ROUNDS"); do
  for id in rust-native courier-sync courier-aio; do
    # shellcheck disable=SC2086
    PYTHONPATH=$work taskset -c 0 ${cmd[$id]} --port 0 > "$work/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do grep -q '^PORT' "$work/server.log" && break; sleep 0.1; done
    port=$(awk '/^PORT/{print $2; exit}' "$work/server.log")
    h2() { taskset -c 1 h2load "http://127.0.0.1:$port/bench.Echo/Echo" -H 'content-type: application/grpc' -H 'te: trailers' -d "$work/req.bin" "$@"; }
    h2 -n 2000 -c 1 -m 1 > /dev/null
    mean=$(h2 -D "$DURATION" --warm-up-time 1 -c 1 -m 1 | awk '/time for request:/{print $6}')
    echo "$r $id $mean"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done | tee "$work/rows" >&2
python3 - "$work/rows" <<'PY'
import statistics as st, sys
us = lambda v: float(v[:-2]) if v.endswith("us") else float(v[:-2]) * 1000 if v.endswith("ms") else float(v[:-1]) * 1e6
by = {}
for line in open(sys.argv[1]):
    r, id_, v = line.split()
    by.setdefault(id_, []).append(us(v))
base = st.median(by["rust-native"])
for id_, v in by.items():
    print(f"{id_:12} mean {st.median(v):6.0f} µs [{min(v):.0f}–{max(v):.0f}]  vs rust-native {st.median(v) / base:.2f}")
PY
