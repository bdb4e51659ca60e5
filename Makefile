# sheaf — one Makefile, wildcard sources. `make V=1` shows full commands,
# `make SANITIZE=1` builds with ASan + UBSan into build-san/.
CC      ?= gcc
PREFIX  ?= /usr/local
WERROR  ?= -Werror
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 -Wall -Wextra $(WERROR) -Wshadow -Wno-unused-parameter \
           -fPIC -D_GNU_SOURCE -Iinclude -Isrc/lib -MMD -MP
LDLIBS  += -luring -lpthread

ifeq ($(SANITIZE),1)
BUILD   ?= build-san
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
else
BUILD   ?= build
endif

ifeq ($(V),1)
Q :=
else
Q := @
endif

LIB_SRC  := $(wildcard src/lib/*.c)
CLI_SRC  := $(wildcard src/cli/*.c)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
# unit tests may link the CLI's parsers and stream code, never main.c
CLI_LIBOBJ := $(filter-out $(BUILD)/src/cli/main.o,$(CLI_OBJ))
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

all: $(BUILD)/sheaf $(BUILD)/libsheaf.a $(BUILD)/libsheaf.so $(BUILD)/sheaf.pc

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/libsheaf.a: $(LIB_OBJ)
	@$(if $(Q),echo "  AR      $@")
	$(Q)$(AR) rcs $@ $^

$(BUILD)/libsheaf.so: $(LIB_OBJ)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) -shared $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/sheaf: $(CLI_OBJ) $(BUILD)/libsheaf.a
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libsheaf.a $(LDLIBS) -lm

$(BUILD)/sheaf.pc: Makefile
	@mkdir -p $(BUILD)
	$(Q)printf 'prefix=%s\nlibdir=$${prefix}/lib\nincludedir=$${prefix}/include\n\nName: sheaf\nDescription: io_uring send/recv bundles over shared provided-buffer pools\nVersion: 0.1.0\nRequires.private: liburing\nLibs: -L$${libdir} -lsheaf\nCflags: -I$${includedir}\n' '$(PREFIX)' > $@

$(BUILD)/tests/%: tests/unit/%.c $(CLI_LIBOBJ) $(BUILD)/libsheaf.a
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -Isrc/cli -o $@ $< $(CLI_LIBOBJ) $(BUILD)/libsheaf.a $(LDLIBS) -lcmocka -lm

unit: $(UNIT_BIN)

# Packages the build, the tests and the benchmark need (Debian names).
DEPS_PKGS := gcc make pkg-config liburing-dev libcmocka-dev gnuplot-nox iproute2 haproxy socat \
             python3
deps:
	@sh tests/deps.sh $(DEPS_PKGS)

# make test: unit tests, end-to-end tests, then the same under ASan + UBSan.
test: deps
	@$(MAKE) --no-print-directory all unit
	@$(MAKE) --no-print-directory SANITIZE=1 all unit
	@sh tests/run.sh

run: deps all
	$(BUILD)/sheaf bench --quick

bench: deps all
	SHEAF=$(BUILD)/sheaf sh bench/run.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include
	install -m 755 $(BUILD)/sheaf $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(BUILD)/libsheaf.a $(BUILD)/libsheaf.so $(DESTDIR)$(PREFIX)/lib/
	install -m 644 $(BUILD)/sheaf.pc $(DESTDIR)$(PREFIX)/lib/pkgconfig/
	install -m 644 include/sheaf.h $(DESTDIR)$(PREFIX)/include/

clean:
	rm -rf build build-san

.PHONY: all unit deps test run bench install clean
-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
