#!/usr/bin/env bash
# The core engine's benchmark: Courier's Rust-native unary echo against a bare
# hyper/h2 echo (the ceiling) and tonic, one pinned server core, h2load on the
# other core. Writes bench/results/core.md; raw outputs under bench/results/raw/.
#
# Env knobs:
#   ROUNDS=3          interleaved rounds (round-robin across servers)
#   DURATION=8        seconds measured per h2load run (after WARMUP)
#   WARMUP=2          h2load --warm-up-time
#   LAT_DURATION      seconds of the one-call-at-a-time run (default: DURATION)
#   SERVERS           space-separated ids to run (default: all, see below)
#   SERVER_CPU=0 CLIENT_CPU=1
#   SKIP_BUILD=1      use the binaries already in BIN_DIR
#   BIN_DIR           default: $CARGO_TARGET_DIR/release
#   FROM_GIT=REV      build core/ as committed at REV (git archive; bench/ from the work
#                     tree) in a private copy of the workspace, so that uncommitted work of
#                     others in core/ is not measured; target dir: $HOME/.cache/courier/target-bench
#   OUT               report path (default: bench/results/core.md)
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
LAT_DURATION=${LAT_DURATION:-$DURATION}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
if [ "$DURATION" -lt 2 ]; then echo "DURATION must be at least 2" >&2; exit 2; fi

HERE=$(cd "$(dirname "$0")" && pwd)
BENCH=$(dirname "$HERE")
REPO=$(dirname "$BENCH")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/courier/target}
BIN_DIR=${BIN_DIR:-$CARGO_TARGET_DIR/release}
OUT=${OUT:-$BENCH/results/core.md}

BINS=(--bin courier-bench --bin h2-echo --bin tonic-echo --bin courier-echo)
GIT_DESC="$(cd "$REPO" && git rev-parse --short HEAD)$(cd "$REPO" && git diff --quiet HEAD -- core 2>/dev/null || echo ' + uncommitted changes in core/')"
if [ -n "${FROM_GIT:-}" ]; then
  SNAP=$HOME/.cache/courier/bench-snapshot
  rm -rf "$SNAP" && mkdir -p "$SNAP"
  (cd "$REPO" && git archive "$FROM_GIT" Cargo.toml Cargo.lock core) | tar -x -C "$SNAP"
  # All of bench/ but results (other bins must exist for the manifest to load).
  mkdir -p "$SNAP/bench" && (cd "$BENCH" && tar -c --exclude=./results --exclude=target .) | tar -x -C "$SNAP/bench"
  sed -i 's/^members = .*/members = ["core", "bench"]/' "$SNAP/Cargo.toml"
  export CARGO_TARGET_DIR=$HOME/.cache/courier/target-bench
  BIN_DIR=$CARGO_TARGET_DIR/release
  GIT_DESC="core/ at $(cd "$REPO" && git rev-parse --short "$FROM_GIT") (git archive; bench/ from the work tree)"
  (cd "$SNAP" && cargo build --release -p courier-bench "${BINS[@]}")
elif [ -z "${SKIP_BUILD:-}" ]; then
  (cd "$REPO" && cargo build --release -p courier-bench "${BINS[@]}")
else
  GIT_DESC="prebuilt binaries in $BIN_DIR"
fi

RAW=$BENCH/results/raw/core-$(date +%Y%m%d-%H%M%S)
mkdir -p "$RAW"
REQ=$RAW/req.bin
"$BIN_DIR/courier-bench" req "$REQ"

# id | binary and args | pin (pin: server on SERVER_CPU, h2load on CLIENT_CPU; free: no pinning) | latency run
ALL_SERVERS=(
  "h2|h2-echo|pin|lat"
  "tonic-ct|tonic-echo --flavor current_thread|pin|lat"
  "tonic-mt|tonic-echo --flavor multi_thread|pin|lat"
  "courier|courier-echo|pin|lat"
  "courier-host|courier-echo --host|pin|lat"
  "courier-w1-free|courier-echo --workers 1|free|nolat"
  "courier-w2-free|courier-echo --workers 2|free|nolat"
)
SERVER_LIST=()
for s in "${ALL_SERVERS[@]}"; do
  id=${s%%|*}
  if [ -z "${SERVERS:-}" ] || [[ " $SERVERS " == *" $id "* ]]; then SERVER_LIST+=("$s"); fi
done

H2LOAD_COMMON=(-H 'content-type: application/grpc' -H 'te: trailers' -d "$REQ")
TPUT_ARGS=(-D "$DURATION" --warm-up-time "$WARMUP" -c 16 -m 8)
LAT_ARGS=(-D "$LAT_DURATION" --warm-up-time "$WARMUP" -c 1 -m 1)
HZ=$(getconf CLK_TCK)

{
  echo "date: $(date -Is)"
  echo "host: $(uname -srm)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') x $(nproc)"
  echo "built from: $GIT_DESC"
  echo "rounds: $ROUNDS duration: $DURATION warmup: $WARMUP lat_duration: $LAT_DURATION"
  echo "uptime before: $(uptime)"
} > "$RAW/machine.txt"
top -bn1 -o %CPU | head -20 > "$RAW/top-before.txt" || true

# Sum of utime+stime (clock ticks) of a process, all threads.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# Busy ticks of the whole machine (all CPUs) and steal.
machine_busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $9}' /proc/stat; }
now() { date +%s.%N; }

start_server() { # id cmd pin -> sets SRV_PID, SRV_PORT
  local id=$1 cmd=$2 pin=$3 log=$4
  local pre=()
  if [ "$pin" = pin ]; then pre=(taskset -c "$SERVER_CPU"); fi
  : > "$log"
  # shellcheck disable=SC2086
  "${pre[@]}" "$BIN_DIR"/$cmd --port 0 > "$log" 2>&1 &
  SRV_PID=$!
  SRV_PORT=
  for _ in $(seq 100); do
    SRV_PORT=$(awk '/^PORT /{print $2; exit}' "$log" || true)
    [ -n "$SRV_PORT" ] && return 0
    sleep 0.1
  done
  echo "server $id did not print PORT" >&2
  cat "$log" >&2
  exit 1
}

stop_server() {
  kill "$SRV_PID" 2>/dev/null || true
  wait "$SRV_PID" 2>/dev/null || true
}

CMDS=$RAW/commands.txt
echo "ROUNDS=$ROUNDS DURATION=$DURATION WARMUP=$WARMUP LAT_DURATION=$LAT_DURATION${FROM_GIT:+ FROM_GIT=$FROM_GIT}${SERVERS:+ SERVERS=\"$SERVERS\"} bench/core/run.sh" > "$CMDS"
RESULTS=$RAW/results.tsv
printf 'id\tround\tpin\treqps\tok\tcpu_us\tother_cpu_pct\tsteal_pct\tserver_busy_pct\tload_busy_pct\tlat_ok\tlat_mean_us\tlat_sd_us\tlat_min_us\tlat_p50_us\tlat_p90_us\tlat_p99_us\tlat_max_us\n' > "$RESULTS"

for round in $(seq "$ROUNDS"); do
  for s in "${SERVER_LIST[@]}"; do
    IFS='|' read -r id cmd pin lat <<< "$s"
    base=$RAW/$id.r$round
    echo "== round $round: $id ($cmd, $pin)" >&2
    start_server "$id" "$cmd" "$pin" "$base.server.log"
    cli=()
    if [ "$pin" = pin ]; then cli=(taskset -c "$CLIENT_CPU"); fi
    url=http://127.0.0.1:$SRV_PORT/bench.Echo/Echo
    [ "$round" = 1 ] && echo "$id: $([ "$pin" = pin ] && echo "taskset -c $SERVER_CPU ")$BIN_DIR/$cmd --port 0" >> "$CMDS"

    # A real gRPC client checks the answer (status OK, same message), then a short warm-up.
    "${cli[@]}" "$BIN_DIR/courier-bench" check "$SRV_PORT" > "$base.check.txt" 2>&1 || {
      echo "$id: answer check failed" >&2; cat "$base.check.txt" >&2; stop_server; exit 1; }
    "${cli[@]}" h2load "$url" -n 20000 -c 16 -m 8 "${H2LOAD_COMMON[@]}" > "$base.warmup.txt" 2>&1 || true

    # Throughput; server CPU sampled inside the measured window.
    [ "$round" = 1 ] && [ "$id" = h2 ] && echo "throughput: ${cli[*]} h2load $url ${TPUT_ARGS[*]} -H 'content-type: application/grpc' -H 'te: trailers' -d REQFILE" >> "$CMDS"
    "${cli[@]}" h2load "$url" "${TPUT_ARGS[@]}" "${H2LOAD_COMMON[@]}" > "$base.tput.txt" 2>&1 &
    load_pid=$!
    sleep "$WARMUP.5"
    c0=$(cpu_ticks "$SRV_PID"); l0=$(cpu_ticks "$load_pid"); read -r m0 st0 <<< "$(machine_busy)"; t0=$(now)
    sleep "$((DURATION - 1))"
    c1=$(cpu_ticks "$SRV_PID"); l1=$(cpu_ticks "$load_pid"); read -r m1 st1 <<< "$(machine_busy)"; t1=$(now)
    wait "$load_pid" || true

    reqps=$(awk '/^finished in/{gsub(",", "", $4); print $4}' "$base.tput.txt")
    ok=$(awk '
      /^requests:/ {tot=$2; done=$6; succ=$8; fail=$10; err=$12; to=$14}
      /^status codes:/ {c2=$3}
      END {print (tot > 0 && done == tot && succ == tot && fail == 0 && err == 0 && to == 0 && c2 == tot) ? "yes" : "NO"}' "$base.tput.txt")
    read -r cpu_us other_pct steal_pct srv_pct load_pct <<< "$(echo "$c0 $c1 $l0 $l1 $m0 $m1 $st0 $st1 $t0 $t1 ${reqps:-0} $HZ" | awk '{
      dt = $10 - $9; hz = $12; ncpu = '"$(nproc)"';
      srv = ($2 - $1) / hz; load = ($4 - $3) / hz; all = ($6 - $5) / hz; steal = ($8 - $7) / hz;
      calls = $11 * dt;
      printf "%.2f %.1f %.1f %.0f %.0f\n", (calls > 0 ? srv * 1e6 / calls : 0), 100 * (all - steal - srv - load) / (dt * ncpu), 100 * steal / (dt * ncpu), 100 * srv / dt, 100 * load / dt }')"

    lat_fields="-\t-\t-\t-\t-\t-\t-\t-"
    if [ "$lat" = lat ]; then
      [ "$round" = 1 ] && [ "$id" = h2 ] && echo "latency: ${cli[*]} h2load $url ${LAT_ARGS[*]} -H 'content-type: application/grpc' -H 'te: trailers' -d REQFILE --log-file LOG" >> "$CMDS"
      "${cli[@]}" h2load "$url" "${LAT_ARGS[@]}" "${H2LOAD_COMMON[@]}" --log-file "$base.lat.log" > "$base.lat.txt" 2>&1 || true
      lat_ok=$(awk '
        /^requests:/ {tot=$2; succ=$8}
        /^status codes:/ {c2=$3}
        END {print (tot > 0 && succ == tot && c2 == tot) ? "yes" : "NO"}' "$base.lat.txt")
      # mean and sd from h2load; percentiles from the per-request log (main phase only).
      msd=$(awk '/^time for request:/ {print $6, $7}' "$base.lat.txt")
      pct=$(python3 - "$base.lat.log" <<'EOF'
import sys
v = sorted(int(l.split("\t")[2]) for l in open(sys.argv[1]) if l.strip() and l.split("\t")[1] == "200")
q = lambda p: v[min(len(v) - 1, int(p * len(v)))]
print(v[0], q(0.5), q(0.9), q(0.99), v[-1]) if v else print("- - - - -")
EOF
)
      to_us() { case $1 in *us) echo "${1%us}";; *ms) echo "${1%ms}" | awk '{print $1*1000}';; *s) echo "${1%s}" | awk '{print $1*1e6}';; *) echo "$1";; esac; }
      read -r mean sd <<< "$msd"
      read -r lmin p50 p90 p99 lmax <<< "$pct"
      lat_fields="$lat_ok\t$(to_us "$mean")\t$(to_us "$sd")\t$lmin\t$p50\t$p90\t$p99\t$lmax"
      rm -f "$base.lat.log.gz"; gzip -f "$base.lat.log"
    fi
    stop_server
    printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t$lat_fields\n" "$id" "$round" "$pin" "${reqps:-0}" "$ok" "$cpu_us" "$other_pct" "$steal_pct" "$srv_pct" "$load_pct" >> "$RESULTS"
    echo "   $id: ${reqps:-?} req/s ok=$ok cpu=${cpu_us}us/call server=${srv_pct}% h2load=${load_pct}% other=${other_pct}% steal=${steal_pct}%" >&2
  done
done

echo "uptime after: $(uptime)" >> "$RAW/machine.txt"
top -bn1 -o %CPU | head -20 > "$RAW/top-after.txt" || true
python3 "$HERE/report.py" "$RAW" "$REPO" > "$OUT"
echo "wrote $OUT (raw: $RAW)" >&2
