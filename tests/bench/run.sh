#!/usr/bin/env bash
# make bench: the shared side-by-side harness (../shared/bench) with Longmen
# added as target "gateway". Knobs pass through (DURATION, REPEATS, TARGETS,
# SCENARIOS, ...); defaults here are a ~4-minute run.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BENCH=${BENCH_DIR:-$ROOT/../shared/bench}
[ -x "$BENCH/run-peers.sh" ] || { echo "bench harness not found at $BENCH (set BENCH_DIR)"; exit 1; }
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null || [ ! -d /tmp/peers/portkey/node_modules ]; then
    "$BENCH/setup-peers.sh"
fi
export DURATION=${DURATION:-5} WARMUP=${WARMUP:-2} REPEATS=${REPEATS:-1}
export TARGETS=${TARGETS:-"direct nginx1 nginx2 portkey"}
export GATEWAY_CMD="$ROOT/build/longmen -c /tmp/lm-bench.conf"
export GATEWAY_SETUP="BENCH_PLUGIN_DIR=$ROOT/plugins $ROOT/tests/bench/conf.sh > /tmp/lm-bench.conf"
exec "$BENCH/run-peers.sh"
