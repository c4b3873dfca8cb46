#!/usr/bin/env bash
# Go handlers on Courier vs the same handler on grpc-go: each server pinned to
# one core (GOMAXPROCS=1), h2load pinned to the other, same request, rounds
# interleaved. Reports req/s, p99 under load, one-call latency and server CPU
# per call; also the cgo crossing benchmarks (crossing/). Writes
# bench/results/go.md; raw outputs under bench/results/raw/go-*.
#
# Env: ROUNDS=3 DURATION=8 WARMUP=2 SERVER_CPU=0 CLIENT_CPU=1
#      VARIANTS (default: "courier-w1 courier-w4 courier-b1 grpc"): courier-wN: N worker
#      goroutines waiting for the core's eventfd in Go's netpoller (the default
#      design); courier-bN: N workers locked to threads blocking in C; grpc: grpc-go;
#      core-echo / core-host: the core's own echo (bench/core's courier-echo,
#      Rust handler / a Rust host thread on the batched boundary), for reference  COURIER_FFI_PROFILE=release
set -euo pipefail
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
VARIANTS=${VARIANTS:-"courier-w1 courier-w4 courier-b1 grpc core-echo core-host"}
# Servers and h2load run at this nice level, ahead of background builds (root only).
NICE=${NICE:--10}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${CACHE:-$HOME/.cache/courier}
export GOMODCACHE=${GOMODCACHE:-$CACHE/go/mod} GOCACHE=${GOCACHE:-$CACHE/go/build}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}

# The static core (release) and the server binary.
(cd "$REPO/go-cgo" && COURIER_FFI_PROFILE=${COURIER_FFI_PROFILE:-release} go generate .)
BIN=$CACHE/bench-go
mkdir -p "$BIN"
(cd "$HERE" && go build -o "$BIN/server" ./server)
case " $VARIANTS " in *" core-"*) (cd "$REPO" && cargo build -q --release -p courier-bench);; esac
CORE_BIN=$CARGO_TARGET_DIR/release

RAW=$REPO/bench/results/raw/go-$(date +%Y%m%d-%H%M%S)
mkdir -p "$RAW"
REQ=$RAW/req.bin
# TestRequest{s: "hello, world!"} in a gRPC frame.
printf '\x00\x00\x00\x00\x0f\x0a\x0dhello, world!' > "$REQ"
CORE_REQ=$RAW/core-req.bin
case " $VARIANTS " in *" core-"*) "$CORE_BIN/courier-bench" req "$CORE_REQ";; esac
{
  echo "date: $(date -Is)"; echo "host: $(uname -srm)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') x $(nproc)"
  echo "go: $(go version)"; echo "commit: $(cd "$REPO" && git rev-parse --short HEAD)"
  echo "rounds: $ROUNDS duration: $DURATION warmup: $WARMUP nice: $NICE"
  echo "uptime before: $(uptime)"
} > "$RAW/machine.txt"

HZ=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
RESULTS=$RAW/results.tsv
printf 'variant\tround\treqps\tok\tcpu_us\tp50_us\tp99_us\tlat1_p50_us\tlat1_p99_us\n' > "$RESULTS"
H2=(-H 'content-type: application/grpc' -H 'te: trailers' -d "$REQ")
pcts() { python3 - "$1" <<'PY'
import sys
v = sorted(int(l.split("\t")[2]) for l in open(sys.argv[1]) if l.strip() and l.split("\t")[1] == "200")
q = lambda p: v[min(len(v) - 1, int(p * len(v)))]
print(q(0.5), q(0.99)) if v else print("- -")
PY
}

for round in $(seq "$ROUNDS"); do
  for v in $VARIANTS; do
    pull=event
    srv=("$BIN/server")
    path=/courier.test.Test/UnaryUnary
    req=$REQ
    case $v in
      core-echo) srv=("$CORE_BIN/courier-echo" --port 0); args=(); path=/bench.Echo/Echo; req=$CORE_REQ;;
      core-host) srv=("$CORE_BIN/courier-echo" --port 0 --host); args=(); path=/bench.Echo/Echo; req=$CORE_REQ;;
      courier-w*) args=(-impl courier -workers "${v#courier-w}");;
      courier-b*) args=(-impl courier -workers "${v#courier-b}"); pull=blocking;;
      grpc) args=(-impl grpc);;
      *) echo "unknown variant $v" >&2; exit 2;;
    esac
    base=$RAW/$v.r$round
    COURIER_GO_PULL=$pull GOMAXPROCS=1 nice -n "$NICE" taskset -c "$SERVER_CPU" "${srv[@]}" "${args[@]}" > "$base.server.log" 2>&1 &
    pid=$!
    port=
    for _ in $(seq 100); do port=$(awk '/^PORT /{print $2; exit}' "$base.server.log"); [ -n "$port" ] && break; sleep 0.1; done
    [ -n "$port" ] || { echo "$v: no PORT" >&2; cat "$base.server.log" >&2; kill "$pid"; exit 1; }
    if [ "$path" = /bench.Echo/Echo ]; then chk=("$CORE_BIN/courier-bench" check "$port"); else chk=("$BIN/server" -check "127.0.0.1:$port"); fi
    "${chk[@]}" > "$base.check.txt" 2>&1 || { echo "$v: check failed" >&2; cat "$base.check.txt"; kill "$pid"; exit 1; }
    url=http://127.0.0.1:$port$path
    H2=(-H 'content-type: application/grpc' -H 'te: trailers' -d "$req")
    taskset -c "$CLIENT_CPU" h2load "$url" -n 20000 -c 16 -m 8 "${H2[@]}" > "$base.warmup.txt" 2>&1 || true
    nice -n "$NICE" taskset -c "$CLIENT_CPU" h2load "$url" -D "$DURATION" --warm-up-time "$WARMUP" -c 16 -m 8 "${H2[@]}" --log-file "$base.tput.log" > "$base.tput.txt" 2>&1 &
    lp=$!
    sleep "$WARMUP.5"; c0=$(cpu_ticks "$pid"); t0=$(date +%s.%N)
    sleep "$((DURATION - 1))"; c1=$(cpu_ticks "$pid"); t1=$(date +%s.%N)
    wait "$lp" || true
    reqps=$(awk '/^finished in/{gsub(",", "", $4); print $4}' "$base.tput.txt")
    ok=$(awk '/^requests:/{tot=$2; succ=$8} /^status codes:/{c2=$3} END{print (tot>0 && succ==tot && c2==tot) ? "yes" : "NO"}' "$base.tput.txt")
    cpu_us=$(echo "$c0 $c1 $t0 $t1 ${reqps:-0} $HZ" | awk '{dt=$4-$3; calls=$5*dt; printf "%.2f", (calls > 0 ? (($2-$1)/$6)*1e6/calls : 0)}')
    read -r p50 p99 <<< "$(pcts "$base.tput.log")"
    nice -n "$NICE" taskset -c "$CLIENT_CPU" h2load "$url" -D 4 --warm-up-time 1 -c 1 -m 1 "${H2[@]}" --log-file "$base.lat.log" > "$base.lat.txt" 2>&1 || true
    read -r l50 l99 <<< "$(pcts "$base.lat.log")"
    gzip -f "$base.tput.log" "$base.lat.log"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$v" "$round" "${reqps:-0}" "$ok" "$cpu_us" "$p50" "$p99" "$l50" "$l99" >> "$RESULTS"
    echo "round $round $v: ${reqps:-?} req/s ok=$ok cpu=${cpu_us}us/call p50=${p50}us p99=${p99}us one-call p50=${l50}us" >&2
  done
done

(cd "$HERE/crossing" && go test -run xxx -bench 'GoToC|CToGoOn' -benchtime 2000000x . && \
  go test -run xxx -bench 'FirstCall' -benchtime 2000x .) > "$RAW/crossing.txt" 2>&1 || true
python3 "$HERE/report.py" "$RAW" > "$REPO/bench/results/go.md"
echo "wrote bench/results/go.md (raw: $RAW)" >&2
