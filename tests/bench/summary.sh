#!/usr/bin/env bash
# summary.sh OUT [SECONDS]: the summary of a make bench run (tests/bench/run.sh)
# as markdown on stdout: the issue #15 goals next to the measured values with
# ✓/✗, then the side-by-side table and every cost table of the run. Parts the
# run skipped show as "not run". Reads OUT/peers/{results,rss}.tsv,
# OUT/{gov,qwen}/medians.tsv, OUT/stream-mem.tsv and the *.md tables.
set -euo pipefail
out=${1:?usage: summary.sh OUT [SECONDS]}
secs=${2:-}

# med FILE SCENARIO COLUMN: a column of a medians.tsv row (empty if absent).
# Columns: 2 rps without, 3 rps with, 4/5 cpu µs/req, 6/7 p50 µs, 8/9 p99 µs.
med() { [ -s "$1" ] && awk -F'\t' -v s="$2" -v c="$3" '$1 == s { print $c }' "$1" || true; }

# goal NAME TARGET MEASURED OK: one row; OK is 1, 0, or empty (not measured).
goal() {
    local mark="—"
    [ "$4" = 1 ] && mark="✓"
    [ "$4" = 0 ] && mark="✗"
    printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$mark"
}
# cost R0 R1: throughput cost in percent (one decimal).
cost() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0) printf "%.1f", (a - b) * 100 / a }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { print (a <= b) ? 1 : 0 }'; }

echo "# make bench summary"
echo
[ -s "$out/peers/env.txt" ] && sed -n 's/^\(date\|cpus\|settings\): /- \1: /p' "$out/peers/env.txt"
[ -s "$out/load.txt" ] && echo "- $(grep -o 'machine load.*' "$out/load.txt")"
[ -n "$secs" ] && echo "- wall time of the whole run: $((secs / 60)) min $((secs % 60)) s"
echo
echo "## Goals (issue #15)"
echo
echo "| goal | target | measured | |"
echo "|---|---|---|:-:|"

g="$out/gov/medians.tsv"
if [ -s "$g" ] && [ -n "$(med "$g" max 2)" ]; then
    c=$(cost "$(med "$g" max 2)" "$(med "$g" max 3)")
    goal "governance: throughput cost (max)" "≤ 10%" \
        "$c% ($(med "$g" max 2) → $(med "$g" max 3) req/s)" "$(le "$c" 10)"
else
    goal "governance: throughput cost (max)" "≤ 10%" "not run" ""
fi
if [ -s "$g" ] && [ -n "$(med "$g" c1 2)" ]; then
    d=$(awk -v a="$(med "$g" c1 6)" -v b="$(med "$g" c1 7)" 'BEGIN { printf "%+d", b - a }')
    goal "governance: one connection p50 over governance off" "≤ +50 µs" \
        "$d µs ($(med "$g" c1 6) → $(med "$g" c1 7) µs)" "$(le "$d" 50)"
    goal "governance: one connection p99" "≤ 2 ms" "$(med "$g" c1 9) µs" "$(le "$(med "$g" c1 9)" 2000)"
else
    goal "governance: one connection p50 over governance off" "≤ +50 µs" "not run" ""
    goal "governance: one connection p99" "≤ 2 ms" "not run" ""
fi
q="$out/qwen/medians.tsv"
for s in max stream; do
    if [ -s "$q" ] && [ -n "$(med "$q" "$s" 2)" ]; then
        c=$(cost "$(med "$q" "$s" 2)" "$(med "$q" "$s" 3)")
        goal "translating (qwen, DashScope): throughput vs pass-through ($s)" "within 20%" \
            "$(awk -v c="$c" 'BEGIN { printf (c < 0 ? "%.1f%% above" : "%.1f%% below"), (c < 0 ? -c : c) }') ($(med "$q" "$s" 2) → $(med "$q" "$s" 3) req/s)" "$(le "$c" 20)"
    else
        goal "translating (qwen, DashScope): throughput vs pass-through ($s)" "within 20%" "not run" ""
    fi
done
m="$out/stream-mem.tsv"
if [ -s "$m" ]; then
    read -r n before after per < "$m"
    goal "memory per open idle stream" "≤ 64 KiB" \
        "$per KiB ($n streams: VmRSS $((before / 1024)) → $((after / 1024)) MiB)" "$(le "$per" 64)"
else
    goal "memory per open idle stream" "≤ 64 KiB" "not run" ""
fi
r="$out/peers/rss.tsv"
if [ -s "$r" ] && grep -q '^gateway' "$r"; then
    goal "peak RSS at 32 connections (VmHWM, side-by-side run)" "reported" \
        "$(awk -F'\t' '$1 == "gateway" { printf "%.1f MiB (nginx2: ", $3 / 1024 } $1 == "nginx2" { n = $3 } END { printf "%s)", n ? sprintf("%.1f MiB", n / 1024) : "-" }' "$r")" ""
else
    goal "peak RSS at 32 connections (VmHWM, side-by-side run)" "reported" "not run" ""
fi

# The gateway next to nginx, medians over the repeats.
p="$out/peers/results.tsv"
if [ -s "$p" ]; then
    echo
    echo "## Side by side (medians of $(awk -F'\t' 'NR > 1 && $1 > n { n = $1 } END { print n + 0 }' "$p") repeats)"
    echo
    awk -F'\t' '
function median(k,   n, i, j, a, x) {
  n = cnt[k]; if (n == 0) return ""
  for (i = 1; i <= n; i++) a[i] = val[k, i] + 0
  for (i = 2; i <= n; i++) { x = a[i]; j = i - 1; while (j >= 1 && a[j] > x) { a[j + 1] = a[j]; j-- } a[j + 1] = x }
  return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function add(k, x) { cnt[k]++; val[k, cnt[k]] = x }
NR == 1 { next }
{
  if (!($3 in ss)) { ss[$3] = 1; so[++ns] = $3 }
  if (!($2 in ts)) { ts[$2] = 1; to[++nt] = $2 }
  add($2 SUBSEP $3 SUBSEP "rps", $4); add($2 SUBSEP $3 SUBSEP "p50", $6); add($2 SUBSEP $3 SUBSEP "p99", $8)
}
END {
  printf "| scenario |"; for (i = 1; i <= nt; i++) printf " %s RPS |", to[i]
  print " gateway / nginx1 RPS | gateway / nginx2 RPS | gateway p50 / p99 µs | nginx1 p50 / p99 µs |"
  printf "|---|"; for (i = 1; i <= nt; i++) printf "---:|"; print "---:|---:|---:|---:|"
  for (s = 1; s <= ns; s++) {
    sc = so[s]; printf "| %s |", sc
    for (i = 1; i <= nt; i++) { v = median(to[i] SUBSEP sc SUBSEP "rps"); printf " %s |", v == "" ? "-" : sprintf("%.0f", v) }
    g = median("gateway" SUBSEP sc SUBSEP "rps"); n1 = median("nginx1" SUBSEP sc SUBSEP "rps"); n2 = median("nginx2" SUBSEP sc SUBSEP "rps")
    printf " %s | %s |", (g != "" && n1 > 0) ? sprintf("%.2f", g / n1) : "-", (g != "" && n2 > 0) ? sprintf("%.2f", g / n2) : "-"
    printf " %s |", g == "" ? "-" : sprintf("%d / %d", median("gateway" SUBSEP sc SUBSEP "p50"), median("gateway" SUBSEP sc SUBSEP "p99"))
    printf " %s |\n", n1 == "" ? "-" : sprintf("%d / %d", median("nginx1" SUBSEP sc SUBSEP "p50"), median("nginx1" SUBSEP sc SUBSEP "p99"))
  }
}' "$p"
    echo
    echo "Full table (RPS range, overhead over direct, CPU µs/req, RSS): \`$out/peers/summary.md\`."
fi

for f in gov-cost qwen-cost otel-cost lua-cost; do
    [ -s "$out/$f.md" ] && cat "$out/$f.md"
done
if [ -s "$out/cache-hits.md" ]; then
    printf '\n## Cache hits (gateway with the response cache on, one run)\n\n'
    sed 's/^\[cache hits\] */- /' "$out/cache-hits.md"
fi
if [ -s "$out/stream-mem.md" ]; then
    printf '\n## Memory\n\n- %s' "$(cat "$out/stream-mem.md")"
    [ -s "$r" ] && awk -F'\t' '{ printf "\n- %s: RSS after start %.1f MiB, peak (VmHWM, 32 connections) %.1f MiB", $1, $2 / 1024, $3 / 1024 }' "$r"
    echo
fi
echo
echo "Figures from one machine in one run; a busy machine moves them (compare rows of the same run)."
