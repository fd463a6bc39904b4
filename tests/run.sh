#!/usr/bin/env bash
# tests/run.sh [unit|integration|all] - run the suite, print one line per
# test ("PASS name" / "FAIL name: why") and end with "N passed, N failed".
# A test program that crashes or times out counts as one failure.
# ONLY="test_store test_reload.py ..." runs just those (by file name).
set -u
mode=${1:-all}
O=${O:-build}
export O PLUGIN_DIR=${PLUGIN_DIR:-$O/plugins}
cd "$(dirname "$0")/.." || exit 2
passed=0
failed=0
log=$(mktemp)

run_one() { # name, command...
    local name=$1; shift
    if [ -n "${ONLY:-}" ] && ! [[ " $ONLY " == *" $name "* ]]; then
        return
    fi
    local rc
    timeout -k 5 "${TEST_TIMEOUT:-300}" "$@" >"$log" 2>&1
    rc=$?
    grep -E '^(PASS|FAIL|SKIP|     )' "$log"
    local p f
    p=$(grep -c '^PASS ' "$log")
    f=$(grep -c '^FAIL ' "$log")
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "FAIL $name: exited with status $rc"
        tail -n 30 "$log" | sed 's/^/    | /'
        f=1
    elif [ "$f" -gt 0 ] || grep -qE 'ERROR: (Address|Leak)Sanitizer|WARNING: ThreadSanitizer|runtime error:' "$log"; then
        if [ "$f" -eq 0 ]; then
            echo "FAIL $name: sanitizer report"; f=1
        fi
        grep -E 'Sanitizer|runtime error' "$log" | head -n 5 | sed 's/^/    | /'
    fi
    passed=$((passed + p))
    failed=$((failed + f))
}

if [ "$mode" = unit ] || [ "$mode" = all ]; then
    # the kernel's layer order (kernel/LAYERS): no upward include, no cycle
    run_one check_layers python3 tests/layers/check_layers.py
    # the docs: links, README.md vs README.zh-CN.md, no ../shared refs, conf blocks pass longmen -t
    run_one check_docs python3 tests/docs/check_docs.py
    # plugins translate only what is provider-specific: at most 8% of their
    # lines in runs shared with another plugin (prefixes normalised)
    run_one plugin_dup python3 tests/layers/plugin_dup.py --max 8 plugins
    for t in "$O"/tests/test_*; do
        [ -x "$t" ] || continue
        run_one "$(basename "$t")" "$t"
    done
fi
if [ "$mode" = integration ] || [ "$mode" = all ]; then
    for t in tests/integration/test_*.py; do
        [ -f "$t" ] || continue
        run_one "$(basename "$t")" python3 "$t"
    done
fi
rm -f "$log"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
