#!/usr/bin/env bash
# The core engine's benchmark, one area of the harness (bench/harness, see
# bench/README.md): Courier's Rust-native unary echo against the bare hyper/h2
# echo (the ceiling) and tonic, plus the HostQueue boundary, one pinned server
# core, h2load on the other; then the same on both cores.
# Writes bench/results/core/REPORT.md. Env knobs: those of bench/harness/run.py
# (ROUNDS, UNARY_SECS, SIZE_SECS, QUICK=1, SKIP_BUILD=1, ...).
set -euo pipefail
cd "$(dirname "$0")/../.."
export SECTIONS=${SECTIONS:-unary,scaling} SERVERS=${SERVERS:-h2,courier,courier-host,tonic-ct,tonic-mt}
exec python3 bench/harness/run.py --out "${OUT:-bench/results/core}" "$@"
