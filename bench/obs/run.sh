#!/usr/bin/env bash
# What observability costs: the Rust-native unary echo (bench/obs/obs-echo.rs)
# with stats on and tracing sampling 1% ("on") against both off ("off"), in the
# same run, interleaved round by round; server pinned to SERVER_CPU, h2load to
# CLIENT_CPU. Then instructions per call under `valgrind --tool=callgrind`
# (repeatable on a noisy machine): (Ir after N2 calls - Ir after N1 calls) /
# (N2 - N1), so start-up and shutdown cancel out.
#
# Env knobs: ROUNDS=5 DURATION=8 WARMUP=2 SERVER_CPU=0 CLIENT_CPU=1
#            CG_N1=2000 CG_N2=12000 (callgrind call counts) SKIP_BUILD=1
#            JAEGER=1: export the sampled spans to a local Jaeger (pinned to
#            CLIENT_CPU) instead of a closed port.
# Writes bench/obs/results.md; raw outputs under bench/results/raw/obs-<time>/.
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
CG_N1=${CG_N1:-2000}
CG_N2=${CG_N2:-12000}

HERE=$(cd "$(dirname "$0")" && pwd)
BENCH=$(dirname "$HERE")
REPO=$(dirname "$BENCH")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/courier/target}
BIN=$CARGO_TARGET_DIR/release
CACHE=${CACHE:-$HOME/.cache/courier}
for t in h2load taskset valgrind; do
  command -v "$t" >/dev/null || { echo "needs $t (apt-get install nghttp2-client util-linux valgrind)" >&2; exit 2; }
done
[ -n "${SKIP_BUILD:-}" ] || (cd "$REPO" && cargo build --release -q -p courier-bench)

RAW=$BENCH/results/raw/obs-$(date +%Y%m%d-%H%M%S)
mkdir -p "$RAW"
REQ=$RAW/req.bin
"$BIN/courier-bench" req "$REQ"
H2LOAD_COMMON=(-H 'content-type: application/grpc' -H 'te: trailers' -d "$REQ")

OTLP=http://127.0.0.1:9 # closed: spans are made and batched, export fails fast
JPID=
if [ -n "${JAEGER:-}" ]; then
  JP=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  QP=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  GP=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat > "$RAW/jaeger.yaml" <<EOF
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces: {receivers: [otlp], processors: [batch], exporters: [jaeger_storage_exporter]}
  telemetry: {metrics: {level: none}, logs: {level: warn}}
extensions:
  jaeger_query: {storage: {traces: mem}, http: {endpoint: "127.0.0.1:$QP"}, grpc: {endpoint: "127.0.0.1:$GP"}}
  jaeger_storage: {backends: {mem: {memory: {max_traces: 100000}}}}
receivers:
  otlp: {protocols: {grpc: {endpoint: "127.0.0.1:$JP"}}}
processors:
  batch: {}
exporters:
  jaeger_storage_exporter: {trace_storage: mem}
EOF
  taskset -c "$CLIENT_CPU" "$CACHE/bin/jaeger" --config "$RAW/jaeger.yaml" > "$RAW/jaeger.log" 2>&1 &
  JPID=$!
  OTLP=http://127.0.0.1:$JP
  sleep 3
fi
trap '[ -n "$JPID" ] && kill $JPID 2>/dev/null || true' EXIT

declare -A ARGS=([off]="--obs off" [on]="--obs on --ratio 0.01 --otlp $OTLP")
{
  echo "date: $(date -Is)"
  echo "host: $(uname -srm); cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') x $(nproc)"
  echo "built from: $(cd "$REPO" && git rev-parse --short HEAD)$(cd "$REPO" && git diff --quiet HEAD -- core 2>/dev/null || echo ' + uncommitted changes in core/')"
  echo "rounds: $ROUNDS duration: $DURATION warmup: $WARMUP; server cpu $SERVER_CPU, h2load cpu $CLIENT_CPU; otlp: $OTLP"
  echo "uptime: $(uptime)"
} > "$RAW/machine.txt"

start_server() { # args... -> SRV_PID SRV_PORT
  local log=$1; shift
  : > "$log"
  "$@" --port 0 > "$log" 2>&1 &
  SRV_PID=$!
  SRV_PORT=
  for _ in $(seq 300); do
    SRV_PORT=$(awk '/^PORT /{print $2; exit}' "$log" || true)
    [ -n "$SRV_PORT" ] && return 0
    sleep 0.1
  done
  echo "server did not print PORT: $*" >&2; cat "$log" >&2; exit 1
}
stop_server() { kill -TERM "$SRV_PID" 2>/dev/null || true; wait "$SRV_PID" 2>/dev/null || true; }

RESULTS=$RAW/results.tsv
printf 'variant\tround\treqps\tok\n' > "$RESULTS"
for round in $(seq "$ROUNDS"); do
  for v in off on; do
    # shellcheck disable=SC2086
    start_server "$RAW/$v.r$round.log" taskset -c "$SERVER_CPU" "$BIN/obs-echo" ${ARGS[$v]}
    url=http://127.0.0.1:$SRV_PORT/bench.Echo/Echo
    taskset -c "$CLIENT_CPU" "$BIN/courier-bench" check "$SRV_PORT" > /dev/null
    taskset -c "$CLIENT_CPU" h2load "$url" -n 20000 -c 16 -m 8 "${H2LOAD_COMMON[@]}" > /dev/null 2>&1 || true
    taskset -c "$CLIENT_CPU" h2load "$url" -D "$DURATION" --warm-up-time "$WARMUP" -c 16 -m 8 "${H2LOAD_COMMON[@]}" > "$RAW/$v.r$round.txt" 2>&1 || true
    stop_server
    reqps=$(awk '/^finished in/{gsub(",", "", $4); print $4}' "$RAW/$v.r$round.txt")
    ok=$(awk '/^requests:/ {tot=$2; succ=$8} /^status codes:/ {c2=$3} END {print (tot > 0 && succ == tot && c2 == tot) ? "yes" : "NO"}' "$RAW/$v.r$round.txt")
    printf '%s\t%s\t%s\t%s\n' "$v" "$round" "${reqps:-0}" "$ok" >> "$RESULTS"
    echo "round $round $v: ${reqps:-?} req/s ok=$ok" >&2
  done
done

# Instructions per call under callgrind (one I/O thread; every thread of the process counted).
CG=$RAW/callgrind.tsv
printf 'variant\tcalls\tIr\n' > "$CG"
for v in off on; do
  for n in "$CG_N1" "$CG_N2"; do
    out=$RAW/callgrind.$v.$n.out
    # shellcheck disable=SC2086
    start_server "$RAW/cg.$v.$n.log" taskset -c "$SERVER_CPU" valgrind --tool=callgrind --callgrind-out-file="$out" "$BIN/obs-echo" ${ARGS[$v]}
    taskset -c "$CLIENT_CPU" h2load "http://127.0.0.1:$SRV_PORT/bench.Echo/Echo" -n "$n" -c 4 -m 4 "${H2LOAD_COMMON[@]}" > "$RAW/cg.$v.$n.txt" 2>&1 || true
    stop_server
    ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$out")
    printf '%s\t%s\t%s\n' "$v" "$n" "$ir" >> "$CG"
    echo "callgrind $v $n calls: Ir=$ir" >&2
  done
done

python3 - "$RAW" "$HERE/results.md" <<'EOF'
import statistics, sys, pathlib
raw, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
rows = [l.split("\t") for l in (raw / "results.tsv").read_text().splitlines()[1:]]
r = {v: [float(x[2]) for x in rows if x[0] == v] for v in ("off", "on")}
ok = all(x[3] == "yes" for x in rows)
def spread(v): return f"{min(v):,.0f} – {max(v):,.0f} (sd {statistics.pstdev(v) / statistics.mean(v) * 100:.1f}%)"
med = {v: statistics.median(r[v]) for v in r}
pairs = [on / off for off, on in zip(r["off"], r["on"])]
cg = [l.split("\t") for l in (raw / "callgrind.tsv").read_text().splitlines()[1:]]
ipc = {}
for v in ("off", "on"):
    (n1, i1), (n2, i2) = sorted((int(x[1]), int(x[2])) for x in cg if x[0] == v)
    ipc[v] = (i2 - i1) / (n2 - n1)
machine = (raw / "machine.txt").read_text().strip()
rounds = "\n".join(f"| {i + 1} | {off:,.0f} | {on:,.0f} | {on / off:.3f} |" for i, (off, on) in enumerate(zip(r["off"], r["on"])))
out.write_text(f"""# Observability cost: results

Rust-native unary echo, one pinned server core, h2load (16 connections × 8
streams) on the other core; `off`: stats and tracing off; `on`: stats on,
tracing on with sampling 1% (spans made, batched, exported over OTLP).
Generated by `bench/obs/run.sh` (raw data: `{raw.relative_to(raw.parents[3])}`).

```
{machine}
```

| variant | median req/s | min – max (spread) |
|---|---|---|
| off | {med['off']:,.0f} | {spread(r['off'])} |
| on | {med['on']:,.0f} | {spread(r['on'])} |

**on / off: {med['on'] / med['off']:.3f}** of the median (per round: {min(pairs):.3f} – {max(pairs):.3f}); every answer OK: {'yes' if ok else 'NO'}.

| round | off req/s | on req/s | on/off |
|---|---|---|---|
{rounds}

Instructions per call (`valgrind --tool=callgrind`, every thread of the server,
(Ir at {cg[1][1]} calls − Ir at {cg[0][1]} calls) / difference):

| variant | instructions per call |
|---|---|
| off | {ipc['off']:,.0f} |
| on | {ipc['on']:,.0f} |

**on − off: {ipc['on'] - ipc['off']:,.0f} instructions per call ({(ipc['on'] / ipc['off'] - 1) * 100:.1f}%).**
""")
print(out.read_text())
EOF
