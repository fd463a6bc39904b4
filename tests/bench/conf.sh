#!/usr/bin/env bash
# Writes a bench config: listen on $BENCH_PORT, one openai channel to
# $BENCH_UPSTREAM serving the model the wrk script asks for. The keys are the
# harness's fixed bench keys (loopback only, not secrets).
# BENCH_LUA adds Lua policy scripts: "noop" is tests/bench/noop.lua (every
# stage, doing nothing); "realistic" is scripts/route_latency.lua (on_route)
# plus scripts/pii_mask.lua (on_request); any other value is a path to a .lua
# file, or several paths joined with "+" (loaded in that order).
# BENCH_PLUGIN=qwen serves the model through the qwen plugin (DashScope's
# native wire format, translated both ways) at the mock's root instead of
# the openai plugin at $BENCH_UPSTREAM.
# BENCH_DATA_DIR=DIR turns governance on: the SQLite store in DIR, the admin
# API on BENCH_ADMIN (host:port) and prices on the channel, so that a virtual
# key's request is checked (rpm, tpm, quota), reserved and written to the
# ledger (tests/bench/gov_key.sh creates such a key).
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cat <<CONF
listen 127.0.0.1:${BENCH_PORT:-18083}
workers ${BENCH_WORKERS:-auto}
plugin_dir ${BENCH_PLUGIN_DIR:-build/plugins}
log_level warn
key bench-preflight sk-bench
key bench-wrk sk-bench-0000000000000000000000000000000000000000
CONF
upstream=${BENCH_UPSTREAM:-http://127.0.0.1:18080/v1}
if [ "${BENCH_PLUGIN:-openai}" = qwen ]; then
    printf 'channel mock-qwen {\n    plugin qwen\n    base_url %s\n    api_key sk-qwen-bench\n    models gpt-4o-mini\n}\n' \
        "${upstream%/v1}"
else
    printf 'channel mock-upstream {\n    plugin openai\n    base_url %s\n    models gpt-4o-mini\n' "$upstream"
    [ -n "${BENCH_DATA_DIR:-}" ] && printf '    price_input 1\n    price_output 1\n'
    printf '}\n'
fi
if [ -n "${BENCH_DATA_DIR:-}" ]; then
    printf 'data_dir %s\nadmin_listen %s\n' "$BENCH_DATA_DIR" "${BENCH_ADMIN:-127.0.0.1:18085}"
fi
# BENCH_CACHE=1 turns the response cache on for the bench model (its bodies
# sample at temperature 0.2, hence cache_sampled): repeated requests are hits.
if [ "${BENCH_CACHE:-0}" = 1 ]; then
    printf 'cache on models gpt-4o-mini\ncache_sampled on\n'
fi
# BENCH_OTEL=URL traces every request to a live collector at URL (make
# bench's tracing run starts tests/bench/otlp_sink.py there). Anything else
# (make bench's knob BENCH_OTEL=0, which skips the tracing run) is no URL.
case ${BENCH_OTEL:-} in
    http://* | https://*) printf 'otel_endpoint %s\n' "$BENCH_OTEL" ;;
esac
case ${BENCH_LUA:-} in
    "" | none) scripts="" ;;
    noop) scripts=$HERE/noop.lua ;;
    realistic) scripts="$ROOT/scripts/route_latency.lua+$ROOT/scripts/pii_mask.lua" ;;
    *) scripts=$BENCH_LUA ;;
esac
i=0
IFS=+ read -ra paths <<< "$scripts"
for p in "${paths[@]}"; do
    i=$((i + 1))
    echo "script bench-lua$i $(realpath "$p")"
done
