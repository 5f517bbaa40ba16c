# smtpgate - see README.md.  `make run` and `make test` are the two commands.

PREFIX  ?= /usr/local
DESTDIR ?=
CC      ?= cc
VERSION := 0.1.0

# Every Debian package the build, the tests and the benchmarks use: the one list.
DEB_PACKAGES := build-essential pkg-config libev-dev libssl-dev libpcre2-dev \
	libmaxminddb-dev check libhiredis-dev redis-server swaks libnet-ssleay-perl \
	postfix libmaxmind-db-writer-perl mmdb-bin openssl python3 haproxy procps
# Only `make fuzz` needs these (libFuzzer comes with clang's runtime).
DEB_PACKAGES_FUZZ := clang libclang-rt-14-dev

WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
	-Wformat=2 -Wno-format-nonliteral
ifeq ($(CI),true)
WARN    += -Werror
endif
CFLAGS  ?= -O2 -g
# What the code needs, kept apart from CFLAGS so `make CFLAGS=...` cannot drop it.
SG_CFLAGS := -std=c11 -D_GNU_SOURCE $(WARN) -Iinclude -DSMTPGATE_VERSION='"$(VERSION)"'
LDLIBS  := -lev -lssl -lcrypto -lpcre2-8 -lmaxminddb -lm
CHECK_LIBS := $(shell pkg-config --libs check 2>/dev/null || echo -lcheck -lsubunit -lrt -lpthread -lm)

BUILD   ?= build
LIB_SRC := $(filter-out proxy/main.c,$(wildcard proxy/*.c)) $(wildcard filters/*.c)
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
UNIT_SRC := $(wildcard tests/unit/*.c)
UNIT_OBJ := $(UNIT_SRC:%.c=$(BUILD)/%.o)

.PHONY: all deps install-packages run test unit integration asan valgrind demo bench install clean fuzz

all: $(BUILD)/smtpgate

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(SG_CFLAGS) $(CFLAGS) -MMD -MP -c -o $@ $<

-include $(LIB_OBJ:.o=.d) $(UNIT_OBJ:.o=.d) $(BUILD)/proxy/main.d

$(BUILD)/libsmtpgate.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/smtpgate: $(BUILD)/proxy/main.o $(BUILD)/libsmtpgate.a
	$(CC) $(SG_CFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/check_unit: $(UNIT_OBJ) $(BUILD)/libsmtpgate.a
	$(CC) $(SG_CFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(CHECK_LIBS) $(LDLIBS)

# Installs only what is missing, so a machine that has everything is not touched.
deps:
	@$(MAKE) --no-print-directory install-packages PACKAGES="$(DEB_PACKAGES)"

install-packages:
	@missing=$$(for p in $(PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		echo "postfix postfix/main_mailer_type select No configuration" | $$SUDO debconf-set-selections && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

run: deps all
	./$(BUILD)/smtpgate -c etc/smtpgate.conf

unit: $(BUILD)/check_unit
	CK_FORK=yes ./$(BUILD)/check_unit

integration: $(BUILD)/smtpgate
	python3 tests/integration/run.py --binary ./$(BUILD)/smtpgate

test: deps
	$(MAKE) all $(BUILD)/check_unit
	$(MAKE) unit
	$(MAKE) integration

# The whole suite, unit and integration, under AddressSanitizer + UBSan.
asan: deps
	$(MAKE) BUILD=build-asan CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
		LDFLAGS="-fsanitize=address,undefined" all build-asan/check_unit
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		CK_FORK=no ./build-asan/check_unit
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		python3 tests/integration/run.py --binary ./build-asan/smtpgate --asan

# The integration tests with every smtpgate under valgrind (slow; leaks fail).
valgrind: deps all
	rm -rf /tmp/smtpgate-valgrind
	SMTPGATE_VALGRIND_DIR=/tmp/smtpgate-valgrind SMTPGATE_REAL_BINARY=$(CURDIR)/$(BUILD)/smtpgate \
		python3 tests/integration/run.py \
		--binary tests/valgrind/smtpgate || true
	sh tests/valgrind/check

demo: deps all
	sh tests/demo.sh ./$(BUILD)/smtpgate

bench: deps all
	tests/bench/run ./$(BUILD)/smtpgate

fuzz:
	@$(MAKE) --no-print-directory install-packages PACKAGES="$(DEB_PACKAGES_FUZZ)"
	$(MAKE) -C tests/fuzz run

install: all
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/share/man/man8 \
		$(DESTDIR)$(PREFIX)/share/man/man5 $(DESTDIR)/etc/smtpgate
	install -m 755 $(BUILD)/smtpgate $(DESTDIR)$(PREFIX)/sbin/smtpgate
	install -m 644 etc/smtpgate.8 $(DESTDIR)$(PREFIX)/share/man/man8/smtpgate.8
	install -m 644 etc/smtpgate.conf.5 $(DESTDIR)$(PREFIX)/share/man/man5/smtpgate.conf.5
	install -d $(DESTDIR)/etc/systemd/system
	sed 's|/usr/local/sbin/|$(PREFIX)/sbin/|g' etc/smtpgate.service > $(DESTDIR)/etc/systemd/system/smtpgate.service
	[ -e $(DESTDIR)/etc/smtpgate/smtpgate.conf ] || \
		install -m 644 etc/smtpgate.conf $(DESTDIR)/etc/smtpgate/smtpgate.conf

clean:
	rm -rf build build-asan
