# sheaf — one Makefile, wildcard sources. `make V=1` shows full commands,
# `make SANITIZE=1` builds with ASan + UBSan into build-san/.
CC      ?= gcc
PREFIX  ?= /usr/local
WERROR  ?= -Werror
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 -Wall -Wextra $(WERROR) -Wshadow -Wno-unused-parameter \
           -fPIC -D_GNU_SOURCE -Iinclude -Isrc/lib -MMD -MP
LDLIBS  += -luring -lpthread

# libsheaf.so.$(VERSION), with the soname libsheaf.so.$(SOVERSION) (bump it when
# the ABI breaks); it exports only what src/lib/libsheaf.map lists.
VERSION   := 0.1.0
SOVERSION := 0
SONAME    := libsheaf.so.$(SOVERSION)
SO_REAL   := libsheaf.so.$(VERSION)
LIB_MAP   := src/lib/libsheaf.map
SO_LDFLAGS := -Wl,-soname,$(SONAME) -Wl,--version-script,$(LIB_MAP)

ifeq ($(SANITIZE),1)
BUILD   ?= build-san
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
else
BUILD   ?= build
# every symbol the library uses must come from liburing, libpthread or libc
# (not under SANITIZE: clang leaves the sanitizer runtime out of -shared links)
SO_LDFLAGS += -Wl,--no-undefined
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
# standalone programs that check the kernel behaviour the data path relies on
KERN_SRC := $(wildcard tests/kernel/*.c)
KERN_BIN := $(KERN_SRC:tests/kernel/%.c=$(BUILD)/tests/kernel_%)

# examples/: small programs using only sheaf.h (make test also builds them
# against an installed copy, with pkg-config)
EX_SRC   := $(wildcard examples/*.c)
EX_BIN   := $(EX_SRC:examples/%.c=$(BUILD)/examples/%)
MAN3     := $(wildcard man/man3/*.3)

all: $(BUILD)/sheaf $(BUILD)/libsheaf.a $(BUILD)/libsheaf.so $(BUILD)/sheaf.pc $(EX_BIN)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/libsheaf.a: $(LIB_OBJ)
	@$(if $(Q),echo "  AR      $@")
	$(Q)$(AR) rcs $@ $^

$(BUILD)/$(SO_REAL): $(LIB_OBJ) $(LIB_MAP)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) -shared $(LDFLAGS) $(SO_LDFLAGS) -o $@ $(LIB_OBJ) $(LDLIBS)

# libsheaf.so -> libsheaf.so.0 -> libsheaf.so.0.1.0
$(BUILD)/$(SONAME): $(BUILD)/$(SO_REAL)
	$(Q)ln -sf $(SO_REAL) $@

$(BUILD)/libsheaf.so: $(BUILD)/$(SONAME)
	$(Q)ln -sf $(SONAME) $@

$(BUILD)/sheaf: $(CLI_OBJ) $(BUILD)/libsheaf.a
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libsheaf.a $(LDLIBS) -lm

$(BUILD)/examples/%: examples/%.c examples/example.h include/sheaf.h $(BUILD)/libsheaf.a
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libsheaf.a $(LDLIBS)

# static linking needs liburing and libpthread too: Requires.private and
# Libs.private say so (pkg-config --static)
$(BUILD)/sheaf.pc: Makefile
	@mkdir -p $(BUILD)
	$(Q)printf 'prefix=%s\nlibdir=$${prefix}/lib\nincludedir=$${prefix}/include\n\nName: sheaf\nDescription: io_uring send/recv bundles over shared provided-buffer pools\nVersion: %s\nRequires.private: liburing\nLibs: -L$${libdir} -lsheaf\nLibs.private: -lpthread\nCflags: -I$${includedir}\n' '$(PREFIX)' '$(VERSION)' > $@

$(BUILD)/tests/%: tests/unit/%.c $(CLI_LIBOBJ) $(BUILD)/libsheaf.a
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -Isrc/cli -o $@ $< $(CLI_LIBOBJ) $(BUILD)/libsheaf.a $(LDLIBS) -lcmocka -lm

$(BUILD)/tests/kernel_%: tests/kernel/%.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< -luring -lpthread

unit: $(UNIT_BIN) $(KERN_BIN)

# libFuzzer harnesses, one per parser (fuzz/fuzz_*.c), built with clang into
# build-fuzz/ against every CLI and library object (but main.c), with ASan
# and UBSan; fuzz/no_dns.c keeps host names from reaching DNS. `make fuzz`
# runs each for FUZZ_SECONDS; make test runs each over its seed corpus.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_BUILD   := build-fuzz
FUZZ_CFLAGS  := -g -O1 -std=gnu11 -Wall -Wextra $(WERROR) -Wno-unused-parameter \
                -Wno-missing-field-initializers \
                -fsanitize=address,undefined -fno-sanitize-recover=all \
                -fno-omit-frame-pointer -D_GNU_SOURCE -Iinclude -Isrc/lib -Isrc/cli -MMD -MP
FUZZ_SRC     := $(wildcard fuzz/fuzz_*.c)
FUZZ_BIN     := $(FUZZ_SRC:fuzz/%.c=$(FUZZ_BUILD)/%)
FUZZ_OBJ     := $(patsubst %.c,$(FUZZ_BUILD)/%.o,$(filter-out src/cli/main.c,$(CLI_SRC)) \
                $(LIB_SRC) fuzz/no_dns.c)

$(FUZZ_BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZCC  $<")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(FUZZ_BUILD)/fuzz_%: fuzz/fuzz_%.c $(FUZZ_OBJ)
	@$(if $(Q),echo "  FUZZLD  $@")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -Wl,--wrap=getaddrinfo -o $@ $< \
		$(FUZZ_OBJ) -luring -lpthread -lm

fuzz-bin: $(FUZZ_OBJ) $(FUZZ_BIN)

fuzz: fuzz-bin
	@sh fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_BIN)

# Packages the build, the tests and the benchmark need (Debian names).
DEPS_PKGS := gcc make pkg-config liburing-dev libcmocka-dev gnuplot-nox iproute2 haproxy socat \
             python3 clang valgrind
deps:
	@sh tests/deps.sh $(DEPS_PKGS)

# make test: unit tests, end-to-end tests, then the same under ASan + UBSan.
test: deps
	@$(MAKE) --no-print-directory all unit
	@$(MAKE) --no-print-directory SANITIZE=1 all unit
	@if command -v $(FUZZ_CC) >/dev/null; then $(MAKE) --no-print-directory fuzz-bin; fi
	@sh tests/run.sh

run: deps all
	$(BUILD)/sheaf bench --quick

bench: deps all
	SHEAF=$(BUILD)/sheaf sh bench/run.sh

# make soak: tests/soak.sh for SOAK_SECONDS (default 600) over every io mode;
# make test runs 60 s of it (bundle, epoll) on the sanitizer build.
SOAK_SECONDS ?= 600
soak: deps all
	SHEAF=$(BUILD)/sheaf SOAK_SECONDS=$(SOAK_SECONDS) bash tests/soak.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include
	install -m 755 $(BUILD)/sheaf $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(BUILD)/libsheaf.a $(BUILD)/$(SO_REAL) $(DESTDIR)$(PREFIX)/lib/
	ln -sf $(SO_REAL) $(DESTDIR)$(PREFIX)/lib/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(PREFIX)/lib/libsheaf.so
	sed 's|^prefix=.*|prefix=$(PREFIX)|' $(BUILD)/sheaf.pc > $(DESTDIR)$(PREFIX)/lib/pkgconfig/sheaf.pc
	install -m 644 include/sheaf.h $(DESTDIR)$(PREFIX)/include/
	install -d $(DESTDIR)$(PREFIX)/share/man/man3
	$(if $(MAN3),install -m 644 $(MAN3) $(DESTDIR)$(PREFIX)/share/man/man3/)

clean:
	rm -rf build build-san build-fuzz

.PHONY: all unit deps test run bench soak install clean fuzz fuzz-bin
-include $(shell find $(BUILD) $(FUZZ_BUILD) -name '*.d' 2>/dev/null)
