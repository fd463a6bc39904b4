#!/usr/bin/env bash
# make fuzz: build every target with libFuzzer (clang) + ASan/UBSan, run each
# for FUZZ_SECONDS (default 60) on its corpus, print one table of the final
# coverage (libFuzzer's last cov:/ft:) and fail if any target crashed. The
# crashing input stays in build-fuzz/crash-* (or leak-*, timeout-*): add it
# to tests/fuzz/corpus/<target>/ as a regression seed.
#   FUZZ_TARGETS="conf plugin_claude"  runs only those targets
#
# Coverage: libFuzzer only sees code built with coverage instrumentation.
# The kernel (both libraries) is built with -fsanitize=...,fuzzer-no-link;
# the plugins, which clang cannot link an ASan runtime into, are compiled
# with ASan/UBSan and sancov but linked without -z,defs, and the fuzzer
# binary is linked with -rdynamic, so their __asan_*/__sanitizer_cov_*
# references resolve to the fuzzer's runtime and their counters count.
#
# Adding a target: write tests/fuzz/fuzz_<name>.c defining
# LLVMFuzzerTestOneInput and `const char *lm_fuzz_name = "<name>";`, and put
# seeds in tests/fuzz/corpus/<name>/. This script and the Makefile pick it
# up by the file name: here as build-fuzz/fuzz_<name>, in the default suite
# as build/tests/test_fuzz_<name> (tests/fuzz/replay.c replays the corpus
# plus deterministic mutations). It links liblmtest.a and libkernel.a; code
# outside them (e.g. the HTTP front in kernel/server/main.c) must be moved
# into a library object first or compiled into the target here. A new
# plugin gets a target by a row in fuzz_plugin.c's table and a corpus
# directory tests/fuzz/corpus/plugin_<name>/.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${FUZZ_SECONDS:-60}
B=build-fuzz
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
KSAN="$SAN -fsanitize=fuzzer-no-link"
PSAN="$SAN -fsanitize-coverage=inline-8bit-counters,pc-table,trace-cmp"
OPT="-O1 -g -fno-omit-frame-pointer"
PKGS="evhtp libcurl jansson libevent_pthreads libcrypto sqlite3 lua5.4"

# make does not track flags: rebuild from scratch when they change.
flags="clang|$OPT|$KSAN|$PSAN"
if [ "$(cat "$B/.flags" 2>/dev/null)" != "$flags" ]; then
    rm -rf "$B/kernel" "$B/plugins" "$B"/*.a
    mkdir -p "$B"
    printf '%s' "$flags" >"$B/.flags"
fi
make -s -j2 O=$B CC=clang OPT="$OPT" SAN="$KSAN" $B/liblmtest.a $B/libkernel.a
plugins=$(ls -d plugins/*/ | xargs -n1 basename)
make -s -j2 O=$B CC=clang PLUGIN_DIR=$B/plugins OPT="$OPT" SAN="$PSAN" PLUGIN_LDFLAGS=-shared \
    $(for p in $plugins; do echo "$B/plugins/$p.so"; done)

# target name, source, extra cflags
targets=()
for src in tests/fuzz/fuzz_*.c; do
    name=$(basename "$src" .c)
    name=${name#fuzz_}
    [ "$name" = plugin ] && continue
    targets+=("$name|$src|")
done
for p in $plugins; do
    targets+=("plugin_$p|tests/fuzz/fuzz_plugin.c|-DFUZZ_PLUGIN=\"$p\"")
done

summary=()
failed=0
for t in "${targets[@]}"; do
    IFS='|' read -r name src extra <<<"$t"
    if [ -n "${FUZZ_TARGETS:-}" ] && ! grep -qw -- "$name" <<<"$FUZZ_TARGETS"; then
        continue
    fi
    bin=$B/fuzz_$name
    # shellcheck disable=SC2086 # $extra and pkg-config output are word lists
    clang -std=c11 -D_GNU_SOURCE $OPT $SAN -fsanitize=fuzzer -rdynamic $extra -I sdk -I kernel \
        $(pkg-config --cflags $PKGS) -o "$bin" "$src" $B/liblmtest.a $B/libkernel.a \
        $(pkg-config --libs $PKGS) -levent -lpthread -ldl -lm
    mkdir -p "$B/corpus-$name"
    echo "== fuzz_$name for ${SECS}s"
    log=$B/fuzz_$name.log
    rc=0
    PLUGIN_DIR=$B/plugins ASAN_OPTIONS=detect_leaks=1 "$bin" -max_total_time="$SECS" -timeout=10 \
        -artifact_prefix=$B/ "$B/corpus-$name" "tests/fuzz/corpus/$name" >"$log" 2>&1 || rc=$?
    last=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n 1 || true)
    cov=$(awk '{print $2}' <<<"$last")
    ft=$(awk '{print $4}' <<<"$last")
    execs=$(grep -Eo '^#[0-9]+' "$log" | tail -n 1 | tr -d '#' || true)
    if [ "$rc" -eq 0 ]; then
        result=ok
    else
        failed=$((failed + 1))
        art=$(grep -Eo 'Test unit written to [^ ]+' "$log" | tail -n 1 | awk '{print $NF}' || true)
        result="FAIL (exit $rc${art:+, input $art}; log $log)"
        grep -E 'ERROR|SUMMARY|runtime error' "$log" | head -n 5 | sed 's/^/    | /'
    fi
    summary+=("$(printf '%-16s %6s %7s %10s  %s' "$name" "${cov:--}" "${ft:--}" "${execs:--}" "$result")")
done

echo
echo "fuzz summary (${SECS}s per target)"
printf '%-16s %6s %7s %10s  %s\n' target cov ft execs result
printf '%s\n' "${summary[@]}"
[ "$failed" -eq 0 ]
