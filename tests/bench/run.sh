#!/usr/bin/env bash
# make bench: Longmen side by side with nginx, then what each feature costs,
# then memory, and a summary of the issue #15 goals. About 12 minutes on a
# 2-core machine (about 13 with portkey installed).
#
#  1. Side by side (tests/bench/peers, Longmen as target "gateway"): direct,
#     nginx1, nginx2, portkey (if installed), gateway over max, c1, rate500,
#     rate5000, stream; REPEATS (default 3) repeats of DURATION (default 4) s,
#     medians in the table.
#  2. Cost pairs: the gateway alone, without and with one feature, in
#     alternating harness runs (PAIRS pairs, default 3; the order alternates so
#     that a drift in machine load does not always favour the same variant),
#     PAIR_DURATION (default 3) s per scenario; a table per feature of RPS, CPU
#     per request, p50 and p99 (medians over the pairs):
#       cache       response cache hits (one run, no pair)        CACHE_SCENARIOS
#       governance  data_dir (SQLite ledger), prices and a virtual
#                   key with rpm/tpm/quota that never trip
#                   (tests/bench/gov_key.sh)                      GOV_SCENARIOS
#       translating the qwen plugin (DashScope native, translated
#                   both ways) against the mock's DashScope mode,
#                   versus the openai pass-through                QWEN_SCENARIOS
#       tracing     otel_endpoint to a live collector
#                   (tests/bench/otlp_sink.py)                    OTEL_SCENARIOS
#       Lua         per script in BENCH_LUA (default "noop realistic"):
#                   "noop" is tests/bench/noop.lua (every stage,
#                   doing nothing), "realistic" is
#                   scripts/route_latency.lua + scripts/pii_mask.lua,
#                   or paths joined with "+"                      LUA_SCENARIOS
#  3. Memory per open idle stream: MEM_STREAMS (default 1000) SSE streams held
#     open through the gateway (tests/bench/stream_mem.py).
#  4. $OUT/summary.md: the #15 goals next to the measured values, with ✓/✗.
# For costs in instructions, which machine load does not move, see
# tests/bench/path_profile.py, lua_profile.py, cache_profile.py and
# otel_profile.py (callgrind).
#
# Knobs (0 skips a part): BENCH_PEERS BENCH_CACHE BENCH_GOV BENCH_QWEN
# BENCH_OTEL BENCH_MEM, BENCH_LUA=none; BENCH_SETUP=0 never runs
# tests/bench/peers/setup-peers.sh (it runs when wrk, nginx or portkey is
# missing); TARGETS (peers, default "direct nginx1 nginx2 portkey"),
# SCENARIOS, DURATION, WARMUP, REPEATS, PAIRS (LUA_REPEATS is the old name),
# PAIR_DURATION, *_SCENARIOS above, MEM_STREAMS;
# BENCH_OUT=DIR (default /tmp/bench-results/<time>).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BENCH=${BENCH_DIR:-$ROOT/tests/bench/peers}
[ -x "$BENCH/run-peers.sh" ] || { echo "bench harness not found at $BENCH (set BENCH_DIR)"; exit 1; }
if [ "${BENCH_SETUP:-1}" != 0 ] && { ! command -v wrk >/dev/null || ! command -v nginx >/dev/null ||
    [ ! -d /tmp/peers/portkey/node_modules ]; }; then
    "$BENCH/setup-peers.sh"
fi
export DURATION=${DURATION:-4} WARMUP=${WARMUP:-2} REPEATS=${REPEATS:-3}
BENCH_LUA=${BENCH_LUA-noop realistic}
PAIRS=${PAIRS:-${LUA_REPEATS:-3}}
PAIR_DURATION=${PAIR_DURATION:-3}
CACHE_SCENARIOS=${CACHE_SCENARIOS:-max stream}
GOV_SCENARIOS=${GOV_SCENARIOS:-max c1}
QWEN_SCENARIOS=${QWEN_SCENARIOS:-max stream}
OTEL_SCENARIOS=${OTEL_SCENARIOS:-max stream}
LUA_SCENARIOS=${LUA_SCENARIOS:-max stream}
MEM_STREAMS=${MEM_STREAMS:-1000}
OUT=${BENCH_OUT:-/tmp/bench-results/$(date +%Y%m%d-%H%M%S)}
PEER_TARGETS=${TARGETS:-"direct nginx1 nginx2 portkey"}
mkdir -p "$OUT"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
started=$(date +%s)

# gateway_env VARIANT [SCRIPT]: the harness settings that start the gateway
# with the config for VARIANT: plain, cache, gov, qwen, otel, or lua (plus
# SCRIPT). Only the governance variant authenticates with the virtual key.
gateway_env() {
    local conf="$OUT/lm-bench-$1.conf" lua=none cache=0 otel='' plugin=openai data=''
    case $1 in
        lua) lua=$2 ;;
        cache) cache=1 ;;
        otel) otel=$OTEL_URL ;;
        qwen) plugin=qwen ;;
        gov) data="BENCH_DATA_DIR=$GOV_DATA BENCH_ADMIN=127.0.0.1:$GOV_ADMIN_PORT" ;;
    esac
    if [ "$1" = gov ]; then export BENCH_AUTH="Bearer $GOV_SECRET"; else unset BENCH_AUTH; fi
    export GATEWAY_CMD="$ROOT/build/longmen -c $conf"
    export GATEWAY_SETUP="BENCH_CACHE=$cache BENCH_LUA=$lua BENCH_OTEL=$otel BENCH_PLUGIN=$plugin $data BENCH_PLUGIN_DIR=$ROOT/build/plugins $ROOT/tests/bench/conf.sh > $conf"
}

if [ "${BENCH_PEERS:-1}" != 0 ]; then
    gateway_env plain
    TARGETS=$PEER_TARGETS OUT_DIR="$OUT/peers" "$BENCH/run-peers.sh"
fi

# gw_run DIR VARIANT PAIR SCRIPT TAG SCENARIOS: one gateway-only harness run.
gw_run() {
    local dir="$1/$2-r$3"
    gateway_env "$2" "$4"
    echo "[$5] pair $3: gateway $2 ..." >&2
    if ! TARGETS=" " REPEATS=1 DURATION=$PAIR_DURATION SCENARIOS=$6 OUT_DIR="$dir" \
        "$BENCH/run-peers.sh" > "$dir.log" 2>&1; then
        echo "harness failed for $2 (pair $3):" >&2
        tail -n 20 "$dir.log" >&2
        exit 1
    fi
    awk -F'\t' -v v="$2" -v tag="$5" 'FNR > 1 { printf "[%s]   %s %s: rps=%s p50=%sus p99=%sus cpu/req=%sus\n", tag, v, $3, $4, $6, $8, $14 }' \
        "$dir/results.tsv" >&2
}

# pair_cost DIR VARIANT SCRIPT TAG SCENARIOS: PAIRS alternating pairs of
# runs, plain and VARIANT.
pair_cost() {
    local i
    mkdir -p "$1"
    for ((i = 1; i <= PAIRS; i++)); do
        if ((i % 2)); then
            gw_run "$1" plain "$i" "$3" "$4" "$5"
            gw_run "$1" "$2" "$i" "$3" "$4" "$5"
        else
            gw_run "$1" "$2" "$i" "$3" "$4" "$5"
            gw_run "$1" plain "$i" "$3" "$4" "$5"
        fi
    done
}

# pair_table TITLE WHAT DIR VARIANT: the cost table from the pairs'
# results.tsv files (columns: repeat target scenario rps mean p50 p90 p99 ...
# target_cpu_ms cpu_us_per_req), medians over the pairs; also DIR/medians.tsv
# (scenario, then without/with for rps, cpu µs/req, p50 µs, p99 µs) for the
# summary.
pair_table() {
    awk -F'\t' -v title="$1" -v what="$2" -v var="$4" -v tsv="$3/medians.tsv" '
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
  add(v, $3 SUBSEP "rps", $4); add(v, $3 SUBSEP "p50", $6); add(v, $3 SUBSEP "p99", $8)
  if ($14 != "-") add(v, $3 SUBSEP "cpr", $14)
}
END {
  printf "\n## %s: gateway without and with %s (medians over %d pair(s))\n\n", title, what, cnt["plain", order[1] SUBSEP "rps"]
  print "| scenario | RPS without | RPS with | RPS cost | CPU µs/req without | CPU µs/req with | CPU cost | p50 µs without | p50 µs with | p50 Δ µs | p99 µs without | p99 µs with |"
  print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  printf "" > tsv
  for (i = 1; i <= ns; i++) {
    s = order[i]
    r0 = median("plain", s SUBSEP "rps"); r1 = median(var, s SUBSEP "rps")
    c0 = median("plain", s SUBSEP "cpr"); c1 = median(var, s SUBSEP "cpr")
    l0 = median("plain", s SUBSEP "p50"); l1 = median(var, s SUBSEP "p50")
    q0 = median("plain", s SUBSEP "p99"); q1 = median(var, s SUBSEP "p99")
    printf "| %s | %.0f | %.0f | %s | %.1f | %.1f | %s | %d | %d | %+d | %d | %d |\n", s, r0, r1,
      (r0 > 0 ? sprintf("%.1f%%", (r0 - r1) * 100 / r0) : "-"), c0, c1,
      (c0 > 0 ? sprintf("%+.1f%%", (c1 - c0) * 100 / c0) : "-"), l0, l1, l1 - l0, q0, q1
    printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s, r0, r1, c0, c1, l0, l1, q0, q1 >> tsv
  }
  print "\nRPS cost = (without - with) / without; CPU cost = extra gateway CPU time per request; p50 Δ = with - without."
}' "$3"/*/results.tsv
}

# Cache hits (docs/cache.md): the gateway alone, with the response cache on,
# so every request after the first is answered from it; read its rows next
# to the plain gateway's above. For instructions per hit and per miss see
# tests/bench/cache_profile.py.
if [ "${BENCH_CACHE:-1}" != 0 ]; then
    gateway_env cache
    echo "[cache hits] gateway with the response cache ..." >&2
    if ! TARGETS=" " REPEATS=1 DURATION=$PAIR_DURATION SCENARIOS=$CACHE_SCENARIOS OUT_DIR="$OUT/cache" \
        "$BENCH/run-peers.sh" > "$OUT/cache.log" 2>&1; then
        echo "harness failed for the cache run:" >&2
        tail -n 20 "$OUT/cache.log" >&2
        exit 1
    fi
    awk -F'\t' 'FNR > 1 { printf "[cache hits]   %s: rps=%s cpu/req=%sus\n", $3, $4, $14 }' \
        "$OUT/cache/results.tsv" | tee "$OUT/cache-hits.md" >&2
fi

# Governance (docs/admin.md): every request checked against the virtual
# key's rpm/tpm/quota, reserved and settled in the SQLite ledger.
if [ "${BENCH_GOV:-1}" != 0 ]; then
    GOV_DATA="$OUT/gov-data"
    GOV_ADMIN_PORT=$(free_port)
    GOV_SECRET=$(BENCH_PLUGIN_DIR=$ROOT/build/plugins "$ROOT/tests/bench/gov_key.sh" "$GOV_DATA")
    pair_cost "$OUT/gov" gov none governance "$GOV_SCENARIOS"
    pair_table "Governance cost" "data_dir, prices and a virtual key (rpm, tpm, quota)" "$OUT/gov" gov |
        tee "$OUT/gov-cost.md"
fi

# Translating (docs/providers.md): the qwen plugin rewrites the request into
# DashScope's native shape and the answer and every stream event back.
if [ "${BENCH_QWEN:-1}" != 0 ]; then
    pair_cost "$OUT/qwen" qwen none translating "$QWEN_SCENARIOS"
    pair_table "Translating cost" "the qwen plugin (DashScope native) instead of the openai pass-through" \
        "$OUT/qwen" qwen | tee "$OUT/qwen-cost.md"
fi

# Tracing cost (docs/observability.md): every request traced to a live
# collector. For instructions per request see tests/bench/otel_profile.py.
if [ "${BENCH_OTEL:-1}" != 0 ]; then
    OTEL_PORT=$(free_port)
    OTEL_URL="http://127.0.0.1:$OTEL_PORT/v1/traces"
    python3 "$ROOT/tests/bench/otlp_sink.py" "$OTEL_PORT" 2> "$OUT/otlp-sink.log" &
    sink=$!
    trap 'kill $sink 2>/dev/null || true' EXIT
    pair_cost "$OUT/otel/traces" otel none "tracing" "$OTEL_SCENARIOS"
    kill "$sink" && wait "$sink" 2>/dev/null || true
    trap - EXIT
    pair_table "Tracing cost" "otel_endpoint (a live collector)" "$OUT/otel/traces" otel | tee "$OUT/otel-cost.md"
    cat "$OUT/otlp-sink.log" >&2
fi

if [ "$BENCH_LUA" != none ] && [ -n "$BENCH_LUA" ]; then
    : > "$OUT/lua-cost.md"
    for script in $BENCH_LUA; do
        dir="$OUT/lua/$(basename "$script" .lua)"
        pair_cost "$dir" lua "$script" "lua cost, $script" "$LUA_SCENARIOS"
        pair_table "Lua cost" "$script" "$dir" lua | tee -a "$OUT/lua-cost.md"
    done
fi

# Memory per open idle stream (tests/bench/stream_mem.py).
if [ "${BENCH_MEM:-1}" != 0 ]; then
    echo "[memory] $MEM_STREAMS open idle streams ..." >&2
    python3 "$ROOT/tests/bench/stream_mem.py" --streams "$MEM_STREAMS" --out "$OUT/stream-mem.tsv" |
        tee "$OUT/stream-mem.md"
fi

printf '\nmachine load at the end: %s\n' "$(uptime)" | tee "$OUT/load.txt"
"$ROOT/tests/bench/summary.sh" "$OUT" "$(($(date +%s) - started))" > "$OUT/summary.md"
cat "$OUT/summary.md"
echo "results in $OUT" >&2
