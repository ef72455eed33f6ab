#	smtpd-rs: build, install, test, measure.
#
# Plain make: BSD make and GNU make both read this file (no GNU functions,
# no conditionals). Everything that needs root says so.
#
#	make			build smtpd and smtpctl (cargo build --release)
#	make install		install them, create users and directories
#	make setup		(root, Debian) install every package the tests use
#	make run		run smtpd in the foreground on etc/smtpd.conf
#	make test		setup, cargo test, make regress
#	make regress		(root) the integration tests in regress/
#	make bench		start-up, receive rate, CPU, memory, latency and the
#				disk's fsync rate, side by side with OpenSMTPD
#	make fuzz		long cargo-fuzz campaign over FUZZ_TARGETS
#	make fuzz-smoke		each fuzz target for FUZZ_SMOKE_TIME seconds
#	make check		rustfmt, clippy, and the OpenBSD type-check
#	make clean

PREFIX ?=	/usr/local
DESTDIR ?=
SBINDIR ?=	${PREFIX}/sbin
SYSCONFDIR ?=	/etc/mail

CARGO ?=	cargo
# Debian's interpreter, where python3-pytest is installed.
PYTHON ?=	/usr/bin/python3
# The shared notes and tools, beside the repository.
SHARED ?=	../shared

# Extra flags for `make run`, e.g. SMTPD_FLAGS=-v.
SMTPD_FLAGS ?=

# What `make setup` installs: the tools the regress tests drive (ps, ip,
# unshare, mount, pytest, swaks), Debian's OpenSMTPD as the reference the
# differential tests and benchmarks compare against, and a C toolchain for
# linking.
SETUP_PACKAGES ?=	procps iproute2 util-linux mount python3 python3-pytest \
			swaks opensmtpd gcc libc6-dev dnsmasq-base

BENCH_SCRIPTS ?=	bench/startup.py bench/config_speed.py bench/receive.py \
			bench/deliver.py
BENCH_RUNS ?=		5

FUZZ_TARGETS ?=		ipc_frame config_parse smtp_server spool_envelope
# Seconds per target: a long campaign, and the smoke run CI can afford.
FUZZ_TIME ?=		3600
FUZZ_SMOKE_TIME ?=	30

.PHONY: all install setup run test regress bench fuzz fuzz-smoke fuzz-tool \
	check clean

all:
	${CARGO} build --release

# smtpctl is installed plain for now: its set-group-id _smtpq bit and the
# sendmail, mailq, newaliases and makemap links to it come with the enqueue
# issue; the man pages with theirs. An existing smtpd.conf is never replaced.
install: all
	install -d -m 0755 ${DESTDIR}${SBINDIR}
	install -m 0555 target/release/smtpd ${DESTDIR}${SBINDIR}/smtpd
	install -m 0555 target/release/smtpctl ${DESTDIR}${SBINDIR}/smtpctl
	install -d -m 0755 ${DESTDIR}${SYSCONFDIR}
	if [ ! -e ${DESTDIR}${SYSCONFDIR}/smtpd.conf ]; then \
		install -m 0644 etc/smtpd.conf ${DESTDIR}${SYSCONFDIR}/smtpd.conf; \
	fi
	sh scripts/create-users-and-dirs.sh ${DESTDIR}

setup:
	sh scripts/setup-debian.sh ${SETUP_PACKAGES}

# The parent re-executes its own binary for each role, so it is started by
# its absolute path.
run: all
	exec "$$(pwd)/target/release/smtpd" -d ${SMTPD_FLAGS} -f etc/smtpd.conf

test: setup all
	${CARGO} test
	${MAKE} regress

# pytest exits 5 when it collects no test; that is reported, not failed.
regress: all
	@if [ "$$(id -u)" -ne 0 ]; then \
		echo "regress: the tests start the daemon as root: run as root"; \
		exit 1; \
	fi
	@if [ ! -d regress ]; then echo "regress: no regress/ directory yet"; exit 0; fi; \
	rc=0; ${PYTHON} -m pytest -q regress/ || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "regress: no tests collected"; rc=0; fi; \
	exit $$rc

bench: setup all
	@for s in ${BENCH_SCRIPTS}; do \
		echo "== $$s"; \
		${PYTHON} $$s --runs ${BENCH_RUNS} || exit 1; \
	done

# cargo-fuzz comes from crates.io; its sanitizer flags need RUSTC_BOOTSTRAP
# on a stable toolchain.
fuzz-tool:
	@if [ ! -d fuzz ]; then echo "fuzz: no fuzz/ directory yet"; exit 1; fi
	@${CARGO} fuzz --version >/dev/null 2>&1 || \
		${CARGO} install --locked cargo-fuzz

fuzz: fuzz-tool
	@for t in ${FUZZ_TARGETS}; do \
		echo "== fuzz $$t for ${FUZZ_TIME} s"; \
		RUSTC_BOOTSTRAP=1 ${CARGO} fuzz run $$t -- \
			-max_total_time=${FUZZ_TIME} || exit 1; \
	done

# The fuzzer's progress goes to fuzz/target/smoke-TARGET.log; its last line
# (or, on a failure, the last 60, with the crashing input's path) is shown.
fuzz-smoke: fuzz-tool
	RUSTC_BOOTSTRAP=1 ${CARGO} fuzz build
	@for t in ${FUZZ_TARGETS}; do \
		log=fuzz/target/smoke-$$t.log; \
		echo "== fuzz-smoke $$t for ${FUZZ_SMOKE_TIME} s (log: $$log)"; \
		if RUSTC_BOOTSTRAP=1 ${CARGO} fuzz run $$t -- \
		    -max_total_time=${FUZZ_SMOKE_TIME} >$$log 2>&1; then \
			tail -n 1 $$log; \
		else \
			tail -n 60 $$log; \
			echo "fuzz-smoke: $$t failed"; \
			exit 1; \
		fi; \
	done

check:
	${CARGO} fmt --check
	${CARGO} clippy --all-targets -- -D warnings
	${SHARED}/tools/check-openbsd

clean:
	${CARGO} clean
	rm -rf fuzz/target
