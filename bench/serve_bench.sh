#!/usr/bin/env bash
# rbl serve: alert-to-first-primitive latency (p50/p99) and sustained alerts/s accepted with
# durable spooling, against the disk's fsync rate measured in the same run (bench/serve_bench.py).
# usage: bench/serve_bench.sh [path/to/rbl] [LATENCY_ALERTS] [FLOOD_SECONDS] [CLIENTS]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
RBL=$(realpath "${1:-$HERE/../build/rbl}")
exec python3 "$HERE/serve_bench.py" "$RBL" "${2:-40}" "${3:-5}" "${4:-32}"
