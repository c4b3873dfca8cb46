#!/usr/bin/env bash
# Overload: a method with max_concurrency 4 and a 20 ms handler (capacity
# 200 calls/s) offered 3x its capacity (600 calls/s, open loop, 1 s deadlines)
# for SECONDS. LIFO with a 100 ms queue timeout against FIFO with no time bound.
# Server pinned to core 0, load to core 1. Writes bench/results/admission.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/courier/target}"
SECONDS_RUN="${SECONDS_RUN:-10}"
ROUNDS="${ROUNDS:-3}"
RATE="${RATE:-600}"
cargo build -q --release -p courier-bench --bin overload-server --bin overload-client
BIN="$CARGO_TARGET_DIR/release"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
out=bench/results/admission.md
mkdir -p bench/results/raw

cat > "$work/lifo.yaml" <<'Y'
limits:
  bench.Echo:
    Echo:
      max_concurrency: 4
      queue: lifo
      queue_timeout_ms: 100
      queue_size: 1000
Y
cat > "$work/fifo.yaml" <<'Y'
limits:
  bench.Echo:
    Echo:
      max_concurrency: 4
      queue: fifo
      queue_size: 100000
Y
cat > "$work/codel.yaml" <<'Y'
limits:
  bench.Echo:
    Echo:
      max_concurrency: 4
      queue: codel
      codel_target_ms: 5
      codel_interval_ms: 100
      queue_size: 1000
Y

run() {  # $1 = config name, then extra client args
  taskset -c 0 "$BIN/overload-server" --limits "$work/$1.yaml" >"$work/port" 2>"$work/rss.$1" &
  local pid=$!
  for _ in $(seq 100); do grep -q PORT "$work/port" 2>/dev/null && break; sleep 0.05; done
  local port; port=$(awk '/PORT/{print $2}' "$work/port")
  local q=$1; shift
  taskset -c 1 "$BIN/overload-client" --target "127.0.0.1:$port" --rate "$RATE" --seconds "$SECONDS_RUN" --deadline-ms 1000 "$@"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "peak_rss_kib $(awk '/RSS_KIB/{if ($2>m) m=$2} END{print m}' "$work/rss.$q")" >&2
}

{
  echo "# Admission under overload"
  echo
  echo "Method with \`max_concurrency: 4\` and a 20 ms handler (capacity 200 calls/s), offered $RATE calls/s"
  echo "open-loop for ${SECONDS_RUN} s, every call with a 1 s deadline. Server pinned to core 0, load to core 1."
  echo "Goodput: calls answered OK (all within their deadline). $ROUNDS interleaved rounds; median [min–max]."
  echo
  echo "Command: \`bash bench/admission/run.sh\` (ROUNDS, SECONDS_RUN, RATE). CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)."
  echo
} > "$out"

for r in $(seq "$ROUNDS"); do
  # Capacity: 16 callers back to back keep all 4 slots busy (no timeouts).
  line=$(run lifo --closed 16 2>"$work/err")
  echo "capacity $r $line" | tee -a bench/results/raw/admission.txt
  echo "capacity|$line|0" >> "$work/all"
  for q in lifo codel fifo; do
    line=$(run "$q" 2>"$work/err")
    rss=$(awk '/peak_rss_kib/{print $2}' "$work/err")
    echo "$q $r $line peak_rss_kib=$rss" | tee -a bench/results/raw/admission.txt
    echo "$q|$line|$rss" >> "$work/all"
  done
done

python3 - "$work/all" >> "$out" <<'PY'
import json, statistics, sys
rows = {}
for l in open(sys.argv[1]):
    q, j, rss = l.rstrip("\n").split("|")
    d = json.loads(j); d["rss"] = int(rss or 0)
    rows.setdefault(q, []).append(d)
def f(v, fmt="{:.0f}"):
    return f"{fmt.format(statistics.median(v))} [{fmt.format(min(v))}–{fmt.format(max(v))}]"
cap = statistics.median(r["goodput_per_s"] for r in rows["capacity"])
print(f"Measured capacity (16 closed-loop callers keeping the 4 slots busy): {f([r['goodput_per_s'] for r in rows['capacity']], '{:.1f}')} calls/s.")
print()
print("| queue | goodput/s | goodput / capacity | served p50 ms | served p99 ms | failed (by code, median round) | peak RSS KiB |")
print("|---|---|---|---|---|---|---|")
for q in ("lifo", "codel", "fifo"):
    rs = rows.get(q, [])
    if not rs: continue
    g = [r["goodput_per_s"] for r in rs]
    mid = sorted(rs, key=lambda r: r["goodput_per_s"])[len(rs)//2]
    print(f"| {q} | {f(g, '{:.1f}')} | {statistics.median(g)/cap:.2f} | {f([r['p50_ms'] for r in rs], '{:.1f}')} | {f([r['p99_ms'] for r in rs], '{:.1f}')} | {mid['failed']} | {f([r['rss'] for r in rs])} |")
PY
echo >> "$out"
echo "Targets: LIFO goodput ≥ 0.95 of capacity, served p99 < queue_timeout (100 ms) + handler (20 ms) = 120 ms; FIFO with no time bound shown for contrast." >> "$out"
cat "$out"
