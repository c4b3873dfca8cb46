#!/usr/bin/env bash
# Python handlers on Courier (sync, asyncio) against stock grpcio (sync, aio) and
# Courier's Rust-native handler, one area of the harness (bench/harness, see
# bench/README.md): each server pinned to one core (the whole process), h2load
# and courier-load on the other, interleaved rounds; every handler decodes the
# request and builds the reply (bench/python/server.py).
# Writes bench/results/python/REPORT.md. Env knobs: those of bench/harness/run.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
export SECTIONS=${SECTIONS:-unary} SERVERS=${SERVERS:-courier,courier-py-sync,courier-py-aio,grpcio-sync,grpcio-aio}
exec python3 bench/harness/run.py --out "${OUT:-bench/results/python}" "$@"
