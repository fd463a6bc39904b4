# Longmen - build, run, test, bench.
#   make run        install missing Debian packages, build, start on 127.0.0.1:8080
#   make test       install, build, run every test (ends with "N passed, N failed")
#   make test-asan  the same suite under ASan+UBSan
#   make tsan       the threaded tests under ThreadSanitizer (slow; not in make test)
# Everything built goes under $(O) (default build/): plugins to $(O)/plugins/<name>.so.

O        ?= build
CC       ?= cc
OPT      ?= -O2 -g
WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2
CFLAGS   += -std=c11 $(OPT) $(WARN) -D_GNU_SOURCE -fno-strict-aliasing $(SAN)
LDFLAGS  += $(SAN)
PKGS     := evhtp libcurl jansson libevent_pthreads libcrypto sqlite3 lua5.4 libpq hiredis
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -levent -lpthread -ldl
PLUGIN_DIR ?= $(O)/plugins

DEBS := build-essential pkg-config libevhtp-dev libevent-dev libcurl4-openssl-dev \
        libjansson-dev liblua5.4-dev libssl-dev libsqlite3-dev libpq-dev postgresql \
        python3 curl clang-format \
        libhiredis-dev redis-server \
        chromium fonts-wqy-microhei

# Every kernel/<layer>/*.c is part of the gateway; folders are listed in
# kernel/LAYERS. libkernel.a is everything but main() and the plugin test kit
# (unit tests and fuzz targets link it); liblmtest.a is the kit alone.
KERNEL_SRCS := $(filter-out kernel/kit/%,$(wildcard kernel/*/*.c))
# ... plus the web console's files, embedded by a generated C file.
KERNEL_OBJS := $(KERNEL_SRCS:%.c=$(O)/%.o) $(O)/gen/console_assets.o
# The JSON scanner (sdk/lmjscan.h) serves the kernel's pass-through path too.
KERNEL_OBJS += $(O)/sdk/jscan.o $(O)/sdk/jparse.o $(O)/sdk/jdump.o
LIB_OBJS    := $(filter-out $(O)/kernel/server/main.o,$(KERNEL_OBJS))
# The kit needs Jansson and libc only (sdk/README.md gives the link line).
KIT_SRCS    := core/buf core/b64 core/clock core/log core/errors core/mask conf/chan plugin/host plugin/emit_raw \
               plugin/plugin plugin/side plugin/frame plugin/endpoints proto/canon proto/stream proto/response proto/endpoint kit/lmtest \
               kit/check
KIT_OBJS    := $(KIT_SRCS:%=$(O)/kernel/%.o) $(O)/sdk/jscan.o $(O)/sdk/jdump.o

PLUGINS      := $(patsubst plugins/%/,%,$(sort $(dir $(wildcard plugins/*/*.c))))
PLUGIN_SOS   := $(PLUGINS:%=$(PLUGIN_DIR)/%.so)
TEST_PLUGINS := $(patsubst tests/plugins/%.c,$(O)/test-plugins/%.so,$(filter-out tests/plugins/verplug.c,$(wildcard tests/plugins/*.c))) \
                $(O)/test-plugins/verplug_v1.so $(O)/test-plugins/verplug_v2.so
UNIT_SRCS    := $(wildcard tests/unit/test_*.c)
# fuzz_plugin.c is built once per plugin (test_fuzz_plugin_<name>).
FUZZ_SRCS    := $(filter-out tests/fuzz/fuzz_plugin.c,$(wildcard tests/fuzz/fuzz_*.c))
UNIT_BINS    := $(UNIT_SRCS:tests/unit/%.c=$(O)/tests/%) \
                $(FUZZ_SRCS:tests/fuzz/fuzz_%.c=$(O)/tests/test_fuzz_%) \
                $(PLUGINS:%=$(O)/tests/test_fuzz_plugin_%)

PLUGIN_CFLAGS := -std=c11 $(OPT) $(WARN) -fPIC -fvisibility=hidden -I sdk $(SAN)
# The plugin helper library (sdk/lmsdk.h), linked statically into each plugin.
SDK_SRCS := $(wildcard sdk/lib/*.c)
SDK_OBJS := $(SDK_SRCS:sdk/lib/%.c=$(O)/sdk/%.o)
SDK_LIB  := $(O)/liblmsdk.a
PLUGIN_LDFLAGS := -shared -Wl,-z,defs $(SAN)

FORMAT_FILES = $(wildcard kernel/*/*.[ch] sdk/*.h sdk/lib/*.c plugins/*/*.[ch] tests/unit/*.[ch] tests/plugins/*.c tests/fuzz/*.c)

.PHONY: plugin test-plugin all plugins unit test test-asan tsan run deps bench fuzz clean format format-check check-config

all: $(O)/longmen $(O)/liblmtest.a $(SDK_LIB) plugins $(TEST_PLUGINS)

plugins: $(PLUGIN_SOS)

KERNEL_HDRS := $(wildcard kernel/*/*.h) sdk/longmen.h sdk/lmjscan.h
KERNEL_INC  := -I kernel -I sdk

$(O)/kernel/%.o: kernel/%.c $(KERNEL_HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(KERNEL_INC) $(PKG_CFLAGS) -c -o $@ $<

$(O)/kernel/kit/%.o: kernel/kit/%.c sdk/lmtest.h $(KERNEL_HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(KERNEL_INC) $(PKG_CFLAGS) -c -o $@ $<

# The web console (console/, docs/console.md) is compiled into the binary.
$(O)/gen/console_assets.c: scripts/embed_console.py $(wildcard console/*)
	@mkdir -p $(dir $@)
	python3 scripts/embed_console.py console $@

$(O)/gen/console_assets.o: $(O)/gen/console_assets.c kernel/admin/console_assets.h
	$(CC) $(CFLAGS) $(KERNEL_INC) -c -o $@ $<

$(O)/longmen: $(KERNEL_OBJS)
	$(CC) $(LDFLAGS) -rdynamic -o $@ $^ $(PKG_LIBS)

$(O)/libkernel.a: $(LIB_OBJS)
	rm -f $@ && ar rcs $@ $^

$(O)/liblmtest.a: $(KIT_OBJS)
	rm -f $@ && ar rcs $@ $^

$(O)/sdk/%.o: sdk/lib/%.c sdk/lmsdk.h sdk/longmen.h sdk/lmjscan.h
	@mkdir -p $(dir $@)
	$(CC) $(PLUGIN_CFLAGS) -c -o $@ $<

$(SDK_LIB): $(SDK_OBJS)
	rm -f $@ && ar rcs $@ $^

# The OpenAI-compatible base (sdk/lmoai.h) is part of the library too.
$(SDK_OBJS) $(PLUGIN_SOS): sdk/lmoai.h

# One folder per plugin: plugins/<name>/*.c -> $(PLUGIN_DIR)/<name>.so
.SECONDEXPANSION:
$(PLUGIN_DIR)/%.so: $$(wildcard plugins/%/*.c) $$(wildcard plugins/%/*.h) sdk/longmen.h sdk/lmsdk.h $(SDK_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(PLUGIN_CFLAGS) $(PLUGIN_LDFLAGS) -o $@ $(filter %.c,$^) $(SDK_LIB) -ljansson

# Two builds of one source: the hot-reload tests swap v1 for v2.
$(O)/test-plugins/verplug_v%.so: tests/plugins/verplug.c sdk/longmen.h
	@mkdir -p $(dir $@)
	$(CC) $(PLUGIN_CFLAGS) -DVERPLUG_VERSION=$* $(PLUGIN_LDFLAGS) -o $@ $< -ljansson

$(O)/test-plugins/%.so: tests/plugins/%.c sdk/longmen.h
	@mkdir -p $(dir $@)
	$(CC) $(PLUGIN_CFLAGS) $(PLUGIN_LDFLAGS) -o $@ $< -ljansson

$(O)/tests/%: tests/unit/%.c $(O)/liblmtest.a $(O)/libkernel.a tests/unit/t.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -I sdk -I kernel $(PKG_CFLAGS) -o $@ $< $(O)/liblmtest.a $(O)/libkernel.a $(PKG_LIBS)

# The helper library's own test links it as a plugin does.
$(O)/tests/test_lmsdk: tests/unit/test_lmsdk.c $(SDK_LIB) $(O)/liblmtest.a tests/unit/t.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -I sdk -o $@ $< $(O)/liblmtest.a $(SDK_LIB) -ljansson

# The OpenAI-compatible base is tested directly too, linked the same way.
$(O)/tests/test_lmoai: tests/unit/test_lmoai.c $(SDK_LIB) $(O)/liblmtest.a tests/unit/t.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -I sdk -o $@ $< $(O)/liblmtest.a $(SDK_LIB) -ljansson

# Plugin tests link as a plugin author's would: the kit, Jansson, libc.
$(O)/tests/test_plugin_%: tests/unit/test_plugin_%.c $(O)/liblmtest.a tests/unit/t.h tests/unit/plugin_t.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -I sdk -o $@ $< $(O)/liblmtest.a -ljansson

# Fuzz targets also run in the suite: corpus replay plus deterministic mutations.
$(O)/tests/test_fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/replay.c $(O)/liblmtest.a $(O)/libkernel.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -I sdk -I kernel $(PKG_CFLAGS) -o $@ $< tests/fuzz/replay.c $(O)/liblmtest.a $(O)/libkernel.a $(PKG_LIBS)

# One plugin parser target per plugin; like a plugin's own test it needs the
# kit and Jansson only, and loads $(PLUGIN_DIR)/<name>.so when it runs.
$(O)/tests/test_fuzz_plugin_%: tests/fuzz/fuzz_plugin.c tests/fuzz/replay.c $(O)/liblmtest.a | $(PLUGIN_DIR)/%.so
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DFUZZ_PLUGIN='"$*"' -I sdk -o $@ $< tests/fuzz/replay.c $(O)/liblmtest.a -ljansson

unit: $(UNIT_BINS) plugins $(TEST_PLUGINS)
	@O=$(O) tests/run.sh unit

# make plugin NAME=foo: a new provider plugin and its kit test from the
# template (sdk/template/*.in, on the OpenAI-compatible base sdk/lmoai.h).
# DEST=dir writes plugins/ and tests/unit/ under dir instead of the repo.
DEST ?= .
plugin:
	@test -n "$(NAME)" || { echo "usage: make plugin NAME=foo [DEST=dir]"; exit 2; }
	@echo "$(NAME)" | grep -Eq '^[a-z][a-z0-9_]*$$' || { echo "NAME must match [a-z][a-z0-9_]*"; exit 2; }
	@test ! -e $(DEST)/plugins/$(NAME) || { echo "$(DEST)/plugins/$(NAME) already exists"; exit 2; }
	mkdir -p $(DEST)/plugins/$(NAME) $(DEST)/tests/unit
	sed 's/@NAME@/$(NAME)/g' sdk/template/plugin.c.in > $(DEST)/plugins/$(NAME)/$(NAME).c
	sed 's/@NAME@/$(NAME)/g' sdk/template/test.c.in > $(DEST)/tests/unit/test_plugin_$(NAME).c
	@echo "created plugins/$(NAME)/$(NAME).c and tests/unit/test_plugin_$(NAME).c; run: make test-plugin NAME=$(NAME)"

# make test-plugin NAME=foo: build plugins/foo into foo.so and run its kit
# test, tests/unit/test_plugin_foo.c.
test-plugin:
	@test -n "$(NAME)" || { echo "usage: make test-plugin NAME=foo"; exit 2; }
	@test -f tests/unit/test_plugin_$(NAME).c || { echo "no tests/unit/test_plugin_$(NAME).c"; exit 2; }
	$(MAKE) $(PLUGIN_DIR)/$(NAME).so $(O)/tests/test_plugin_$(NAME)
	PLUGIN_DIR=$(PLUGIN_DIR) $(O)/tests/test_plugin_$(NAME)

deps:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing Debian packages:$$missing (run as root: apt-get install$$missing)"; exit 1; fi; \
	fi

test: deps
	$(MAKE) all $(UNIT_BINS)
	@O=$(O) PLUGIN_DIR=$(PLUGIN_DIR) tests/run.sh all

test-asan: deps
	$(MAKE) O=build-asan PLUGIN_DIR=build-asan/plugins OPT="-O1 -g -fno-omit-frame-pointer" \
	  SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined" all build-asan/tests/.stamp
	@O=build-asan PLUGIN_DIR=build-asan/plugins LM_SANITIZER=1 \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  tests/run.sh all

# ThreadSanitizer over the threaded parts: the store's writer and checkpoint
# threads, side values, metrics, lm.shared, the workers' mailboxes, and
# integration tests with several workers and the store. Any "WARNING: ThreadSanitizer" fails it (tests/run.sh).
TSAN_UNIT := test_store test_side test_metrics test_lua test_front_mail
TSAN_INTEGRATION := test_governance.py test_reload.py test_side.py test_soak.py
tsan: deps
	$(MAKE) O=build-tsan PLUGIN_DIR=build-tsan/plugins OPT="-O1 -g -fno-omit-frame-pointer" \
	  SAN="-fsanitize=thread" all $(TSAN_UNIT:%=build-tsan/tests/%)
	@O=build-tsan PLUGIN_DIR=build-tsan/plugins LM_SANITIZER=1 SOAK_SECONDS=$${SOAK_SECONDS:-30} \
	  TEST_TIMEOUT=$${TEST_TIMEOUT:-900} TSAN_OPTIONS="halt_on_error=0 second_deadlock_stack=1 $${TSAN_OPTIONS:-}" \
	  ONLY="$(TSAN_UNIT) $(TSAN_INTEGRATION)" tests/run.sh all

$(O)/tests/.stamp: $(UNIT_BINS)
	@touch $@

run: deps
	$(MAKE) all
	./$(O)/longmen -c plugins.conf

check-config: all
	./$(O)/longmen -t -c plugins.conf

bench: deps all
	tests/bench/run.sh

fuzz: deps
	tests/fuzz/run.sh

format:
	clang-format -i $(FORMAT_FILES)

format-check:
	clang-format --dry-run --Werror $(FORMAT_FILES)

clean:
	rm -rf build build-*/
