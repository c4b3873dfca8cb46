#!/usr/bin/env bash
# Go handlers on Courier vs the same handler on grpc-go, one area of the harness
# (bench/harness, see bench/README.md): each server pinned to one core
# (GOMAXPROCS=1), the load on the other; pull designs (courier-go: 4 worker
# goroutines in the netpoller, -w1: one, -b1: one blocking in C), unary, mTLS,
# streaming and the reconnect storm; then the cgo crossing benchmarks (crossing/).
# Writes bench/results/go/REPORT.md and bench/results/go/crossing.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
export SECTIONS=${SECTIONS:-unary,tls,storm} SERVERS=${SERVERS:-courier,courier-go,courier-go-w1,courier-go-b1,grpc-go}
OUT=${OUT:-bench/results/go}
python3 bench/harness/run.py --out "$OUT" "$@"
export GOMODCACHE=${GOMODCACHE:-$HOME/.cache/courier/go/mod} GOCACHE=${GOCACHE:-$HOME/.cache/courier/go/build}
(cd bench/go/crossing && go test -run xxx -bench 'GoToC|CToGoOn' -benchtime 2000000x . \
  && go test -run xxx -bench 'FirstCall' -benchtime 2000x .) > "$OUT/crossing.txt" 2>&1 || echo "crossing benchmarks failed: $OUT/crossing.txt" >&2
