#!/usr/bin/env bash
# make bench: the side-by-side harness (tests/bench/peers) with Longmen
# added as target "gateway". Knobs pass through (DURATION, REPEATS, TARGETS,
# SCENARIOS, ...); defaults here are a ~4-minute run, then ~2 minutes per Lua
# script below.
#
# Then the Lua cost, per script in BENCH_LUA (default "noop realistic";
# "none" skips this part): the gateway alone, without and with the script, in
# alternating harness runs (LUA_REPEATS pairs, default 3) so that both
# variants see the same machine load, over LUA_SCENARIOS (default "max
# stream"); a table per script of what it costs (RPS and CPU per request,
# medians over the pairs). Scripts: "noop" is tests/bench/noop.lua (every
# stage, doing nothing), "realistic" is scripts/route_latency.lua (on_route)
# plus scripts/pii_mask.lua (on_request), or a path (paths joined with "+").
# For the cost in instructions, which machine load does not move, see
# tests/bench/lua_profile.py (callgrind).
#   BENCH_PEERS=0      skip the side-by-side run (only the Lua comparison)
#   BENCH_CACHE=0      skip the cache-hit run (gateway with the response cache on)
#   BENCH_OTEL=0       skip the tracing cost run (gateway without and with
#                      otel_endpoint to a live collector, tests/bench/otlp_sink.py,
#                      in LUA_REPEATS alternating pairs like the Lua cost)
#   BENCH_OUT=DIR      where results go (default /tmp/bench-results/<time>)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BENCH=${BENCH_DIR:-$ROOT/tests/bench/peers}
[ -x "$BENCH/run-peers.sh" ] || { echo "bench harness not found at $BENCH (set BENCH_DIR)"; exit 1; }
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null || [ ! -d /tmp/peers/portkey/node_modules ]; then
    "$BENCH/setup-peers.sh"
fi
export DURATION=${DURATION:-5} WARMUP=${WARMUP:-2} REPEATS=${REPEATS:-1}
BENCH_LUA=${BENCH_LUA-noop realistic}
BENCH_PEERS=${BENCH_PEERS:-1}
LUA_REPEATS=${LUA_REPEATS:-3}
LUA_SCENARIOS=${LUA_SCENARIOS:-max stream}
OUT=${BENCH_OUT:-/tmp/bench-results/$(date +%Y%m%d-%H%M%S)}
PEER_TARGETS=${TARGETS:-"direct nginx1 nginx2 portkey"}
mkdir -p "$OUT"

# gateway_env VARIANT [SCRIPT]: the harness settings that start the gateway
# with the config for VARIANT ("plain", or "lua" = plus SCRIPT).
gateway_env() {
    local conf="$OUT/lm-bench-$1.conf" lua=none cache=0 otel=
    [ "$1" = lua ] && lua=$2
    [ "$1" = cache ] && cache=1
    [ "$1" = otel ] && otel=$OTEL_URL
    export GATEWAY_CMD="$ROOT/build/longmen -c $conf"
    export GATEWAY_SETUP="BENCH_CACHE=$cache BENCH_LUA=$lua BENCH_OTEL=$otel BENCH_PLUGIN_DIR=$ROOT/build/plugins $ROOT/tests/bench/conf.sh > $conf"
}

if [ "$BENCH_PEERS" != 0 ]; then
    gateway_env plain
    TARGETS=$PEER_TARGETS OUT_DIR="$OUT/peers" "$BENCH/run-peers.sh"
fi
# Cache hits (docs/cache.md): the gateway alone, with the response cache on,
# so every request after the first is answered from it; read its rows next
# to the plain gateway's above. BENCH_CACHE=0 skips it. For instructions per
# hit and per miss, which machine load does not move, see
# tests/bench/cache_profile.py (callgrind).
if [ "${BENCH_CACHE:-1}" != 0 ]; then
    gateway_env cache
    echo "[cache hits] gateway with the response cache ..." >&2
    if ! TARGETS=" " REPEATS=1 SCENARIOS=$LUA_SCENARIOS OUT_DIR="$OUT/cache" "$BENCH/run-peers.sh" > "$OUT/cache.log" 2>&1; then
        echo "harness failed for the cache run:" >&2
        tail -n 20 "$OUT/cache.log" >&2
        exit 1
    fi
    awk -F'\t' 'FNR > 1 { printf "[cache hits]   %s: rps=%s cpu/req=%sus\n", $3, $4, $14 }' \
        "$OUT/cache/results.tsv" | tee "$OUT/cache-hits.md" >&2
fi


# One gateway-only harness run per variant and pair; the order alternates
# so that a drift in machine load does not always favour the same variant.
lua_run() { # lua_run DIR VARIANT PAIR SCRIPT
    local dir="$1/$2-r$3"
    gateway_env "$2" "$4"
    echo "[lua cost] $4, pair $3: gateway $2 ..." >&2
    if ! TARGETS=" " REPEATS=1 SCENARIOS=$LUA_SCENARIOS OUT_DIR="$dir" "$BENCH/run-peers.sh" > "$dir.log" 2>&1; then
        echo "harness failed for $2 (pair $3):" >&2
        tail -n 20 "$dir.log" >&2
        exit 1
    fi
    awk -F'\t' -v v="$2" 'FNR > 1 { printf "[lua cost]   %s %s: rps=%s cpu/req=%sus\n", v, $3, $4, $14 }' \
        "$dir/results.tsv" >&2
}

# lua_table SCRIPT DIR: the cost table from the pairs' results.tsv files
# (columns: repeat target scenario rps ... target_cpu_ms cpu_us_per_req).
lua_table() { # lua_table SCRIPT DIR [VARIANT TITLE]
    awk -F'\t' -v script="$1" -v var="${3:-lua}" -v title="${4:-Lua cost}" '
function median(v, k,   n, i, j, a, x) {
  n = cnt[v, k]; if (n == 0) return 0
  for (i = 1; i <= n; i++) a[i] = val[v, k, i] + 0
  for (i = 2; i <= n; i++) { x = a[i]; j = i - 1; while (j >= 1 && a[j] > x) { a[j + 1] = a[j]; j-- } a[j + 1] = x }
  return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function add(v, k, x) { cnt[v, k]++; val[v, k, cnt[v, k]] = x }
FNR == 1 { split(FILENAME, p, "/"); v = p[length(p) - 1]; sub(/-r[0-9]+$/, "", v); next }
{
  if (!($3 in seen)) { seen[$3] = 1; order[++ns] = $3 }
  add(v, $3 SUBSEP "rps", $4); if ($14 != "-") add(v, $3 SUBSEP "cpr", $14)
}
END {
  printf "\n## %s: gateway without and with %s (medians over %d pair(s))\n\n", title, script, cnt["plain", order[1] SUBSEP "rps"]
  print "| scenario | RPS without | RPS with | RPS cost | CPU µs/req without | CPU µs/req with | CPU cost |"
  print "|---|---:|---:|---:|---:|---:|---:|"
  for (i = 1; i <= ns; i++) {
    s = order[i]
    r0 = median("plain", s SUBSEP "rps"); r1 = median(var, s SUBSEP "rps")
    c0 = median("plain", s SUBSEP "cpr"); c1 = median(var, s SUBSEP "cpr")
    printf "| %s | %.0f | %.0f | %s | %.1f | %.1f | %s |\n", s, r0, r1,
      (r0 > 0 ? sprintf("%.1f%%", (r0 - r1) * 100 / r0) : "-"), c0, c1,
      (c0 > 0 ? sprintf("%+.1f%%", (c1 - c0) * 100 / c0) : "-")
  }
  print "\nRPS cost = (without - with) / without; CPU cost = extra gateway CPU time per request."
}' "$2"/*/results.tsv
}

# Tracing cost (docs/observability.md): every request traced to a live
# collector, against the same gateway without otel_endpoint, in alternating
# pairs. For instructions per request see tests/bench/otel_profile.py.
if [ "${BENCH_OTEL:-1}" != 0 ]; then
    OTEL_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    OTEL_URL="http://127.0.0.1:$OTEL_PORT/v1/traces"
    python3 "$ROOT/tests/bench/otlp_sink.py" "$OTEL_PORT" 2> "$OUT/otlp-sink.log" &
    sink=$!
    trap 'kill $sink 2>/dev/null || true' EXIT
    dir="$OUT/otel/traces"
    mkdir -p "$dir"
    for ((i = 1; i <= LUA_REPEATS; i++)); do
        if ((i % 2)); then
            lua_run "$dir" plain "$i" none
            lua_run "$dir" otel "$i" none
        else
            lua_run "$dir" otel "$i" none
            lua_run "$dir" plain "$i" none
        fi
    done
    kill "$sink" && wait "$sink" 2>/dev/null || true
    trap - EXIT
    lua_table "otel_endpoint (a live collector)" "$dir" otel "Tracing cost" | tee "$OUT/otel-cost.md"
    cat "$OUT/otlp-sink.log" >&2
fi
if [ "$BENCH_LUA" = none ] || [ -z "$BENCH_LUA" ]; then exit 0; fi

: > "$OUT/lua-cost.md"
for script in $BENCH_LUA; do
    dir="$OUT/lua/$(basename "$script" .lua)"
    mkdir -p "$dir"
    for ((i = 1; i <= LUA_REPEATS; i++)); do
        if ((i % 2)); then
            lua_run "$dir" plain "$i" "$script"
            lua_run "$dir" lua "$i" "$script"
        else
            lua_run "$dir" lua "$i" "$script"
            lua_run "$dir" plain "$i" "$script"
        fi
    done
    lua_table "$script" "$dir" | tee -a "$OUT/lua-cost.md"
done
printf '\nmachine load at the end: %s\n' "$(uptime)" | tee -a "$OUT/lua-cost.md"
echo "results in $OUT" >&2
