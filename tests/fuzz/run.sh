#!/usr/bin/env bash
# make fuzz: build each target with libFuzzer (clang) + ASan/UBSan and run it
# for FUZZ_SECONDS (default 60) on its corpus. New crashes land in
# build-fuzz/crash-*; add them to the corpus as regressions.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${FUZZ_SECONDS:-60}
make -s O=build-fuzz CC=clang OPT="-O1 -g" SAN="-fsanitize=address,undefined" build-fuzz/liblmtest.a
# clang does not link the ASan runtime into shared objects: the plugin the
# stream target loads is built uninstrumented (the kit around it is not).
make -s O=build-fuzz CC=clang PLUGIN_DIR=build-fuzz/plugins OPT="-O1 -g" build-fuzz/plugins/openai.so
for src in tests/fuzz/fuzz_*.c; do
    name=$(basename "$src" .c); name=${name#fuzz_}
    clang -std=c11 -D_GNU_SOURCE -O1 -g -fsanitize=fuzzer,address,undefined -I sdk -I kernel \
        $(pkg-config --cflags jansson) -o "build-fuzz/fuzz_$name" "$src" build-fuzz/liblmtest.a \
        $(pkg-config --libs jansson libcrypto sqlite3 lua5.4) -ldl -lpthread -lm
    mkdir -p "build-fuzz/corpus-$name"
    echo "== fuzz_$name for ${SECS}s"
    PLUGIN_DIR=build-fuzz/plugins "build-fuzz/fuzz_$name" -max_total_time="$SECS" \
        -artifact_prefix=build-fuzz/ "build-fuzz/corpus-$name" "tests/fuzz/corpus/$name"
done
