#!/usr/bin/env bash
# gov_key.sh DATA_DIR: prepares a governance store for make bench and prints
# a virtual key's secret on stdout. It starts the gateway once on free
# loopback ports with the bench config plus data_dir DATA_DIR, sets a known
# admin token through LONGMEN_ADMIN_TOKEN (it persists in the store), creates
# a key whose rpm, tpm and quota are far above what a bench run can use (so
# the limits are checked on every request but never trip), and stops the
# gateway by its PID. The harness then starts the gateway on the same store.
# Loopback only; the token and the secret are bench values, not secrets.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
data=${1:?usage: gov_key.sh DATA_DIR}
mkdir -p "$data"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
admin=$(free_port)
conf="$data/gov-key.conf"
BENCH_PORT=$port BENCH_DATA_DIR=$data BENCH_OTEL= BENCH_CACHE=0 BENCH_LUA=none BENCH_PLUGIN=openai BENCH_ADMIN=127.0.0.1:$admin \
    BENCH_PLUGIN_DIR=${BENCH_PLUGIN_DIR:-$ROOT/build/plugins} "$HERE/conf.sh" > "$conf"
token=lmadm-bench-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
LONGMEN_ADMIN_TOKEN=$token "$ROOT/build/longmen" -c "$conf" > "$data/gov-key.log" 2>&1 &
gw=$!
trap 'kill "$gw" 2>/dev/null || true; wait "$gw" 2>/dev/null || true' EXIT
reply=
for _ in $(seq 1 100); do
    kill -0 "$gw" 2>/dev/null || { echo "gov_key: gateway exited, see $data/gov-key.log" >&2; exit 1; }
    if reply=$(curl -sf --max-time 10 "http://127.0.0.1:$admin/admin/keys" \
        -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
        -d '{"name":"bench","quota":"1000000","rpm":1000000000,"tpm":1000000000000}'); then
        break
    fi
    sleep 0.1
done
secret=$(printf '%s' "$reply" | python3 -c 'import json, sys; print(json.load(sys.stdin)["secret"])')
echo "$secret"
