#	smtpd-rs: build, install, test, measure.
#
# Plain make: BSD make and GNU make both read this file (no GNU functions,
# no conditionals). Everything that needs root says so.
#
#	make			build smtpd and smtpctl (cargo build --release)
#	make install		install them, the man pages, rc.d script and systemd
#				unit, create users and directories
#	make install-files	the same files only (no build, no users): what a
#				package's staged install runs
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

# Where `make install` puts things. An empty RCDIR or SYSTEMDDIR leaves the
# rc.d script or the systemd unit out (the OpenBSD port sets SYSTEMDDIR=).
PREFIX ?=	/usr/local
DESTDIR ?=
SBINDIR ?=	${PREFIX}/sbin
MANDIR ?=	${PREFIX}/share/man
SYSCONFDIR ?=	/etc/mail
EXAMPLEDIR ?=	${PREFIX}/share/examples/smtpd-rs
RCDIR ?=	/etc/rc.d
SYSTEMDDIR ?=	/lib/systemd/system

CARGO ?=	cargo
# Debian's interpreter, where python3-pytest is installed.
PYTHON ?=	/usr/bin/python3
# The shared notes and tools, beside the repository.
SHARED ?=	../shared

# Extra flags for `make run`, e.g. SMTPD_FLAGS=-v.
SMTPD_FLAGS ?=

# What `make setup` installs: the tools the regress tests drive (ps, ip,
# unshare, mount, pytest, swaks), Debian's OpenSMTPD as the reference the
# differential tests and benchmarks compare against, a C toolchain for
# linking, dnsmasq (the DNS tests' and relay tests' resolver), openssl (test
# CAs and certificates) and the shared libraries of Postfix's smtp-sink and
# of its daemons (libsasl2-2 for its smtpd; bench/relay.py runs Postfix as
# a relaying MTA), which the setup script unpacks without installing
# postfix; mandoc lints
# and renders man/, mksh (ksh) runs the rc.d script, systemd has
# systemd-analyze for the unit, and bmake (BSD make) checks that
# `make install` works there.
SETUP_PACKAGES ?=	procps iproute2 util-linux mount python3 python3-pytest \
			swaks opensmtpd gcc libc6-dev dnsmasq-base openssl \
			libdb5.3 libicu72 libnsl2 libsasl2-2 mandoc mksh systemd bmake

BENCH_SCRIPTS ?=	bench/startup.py bench/config_speed.py bench/receive.py \
			bench/deliver.py bench/relay.py
BENCH_RUNS ?=		5

FUZZ_TARGETS ?=		ipc_frame config_parse smtp_server spool_envelope
# Seconds per target: a long campaign, and the smoke run CI can afford.
FUZZ_TIME ?=		3600
FUZZ_SMOKE_TIME ?=	30

.PHONY: all install install-files setup run test regress bench fuzz \
	fuzz-smoke fuzz-tool check clean

all:
	${CARGO} build --release

# Build, install the files, then the users and directories (with a DESTDIR
# the directories only: the users are the package's job).
install: all
	${MAKE} install-files
	sh scripts/create-users-and-dirs.sh ${DESTDIR}

# As OpenBSD installs OpenSMTPD: smtpctl is also sendmail, mailq, newaliases
# and makemap (hard links; it acts on the name it is called by), and
# smtpctl.8 is also sendmail.8, mailq.8 and newaliases.8. smtpctl is
# installed plain for now: its set-group-id _smtpq bit (mode 2555) comes
# with the enqueue issue. The man pages are whatever man/ holds. The rc.d
# script and the unit get SBINDIR's smtpd. An existing smtpd.conf is never
# replaced; EXAMPLEDIR keeps the default one.
install-files:
	install -d -m 0755 ${DESTDIR}${SBINDIR}
	install -m 0555 target/release/smtpd ${DESTDIR}${SBINDIR}/smtpd
	install -m 0555 target/release/smtpctl ${DESTDIR}${SBINDIR}/smtpctl
	for l in sendmail mailq newaliases makemap; do \
		ln -f ${DESTDIR}${SBINDIR}/smtpctl ${DESTDIR}${SBINDIR}/$$l; \
	done
	for f in man/*.5 man/*.8; do \
		[ -f "$$f" ] || continue; \
		s=$${f##*.}; \
		install -d -m 0755 ${DESTDIR}${MANDIR}/man$$s; \
		install -m 0444 "$$f" ${DESTDIR}${MANDIR}/man$$s/; \
	done
	if [ -f man/smtpctl.8 ]; then \
		for l in sendmail mailq newaliases; do \
			ln -f ${DESTDIR}${MANDIR}/man8/smtpctl.8 \
			    ${DESTDIR}${MANDIR}/man8/$$l.8; \
		done; \
	fi
	install -d -m 0755 ${DESTDIR}${EXAMPLEDIR}
	install -m 0444 etc/smtpd.conf ${DESTDIR}${EXAMPLEDIR}/smtpd.conf
	install -d -m 0755 ${DESTDIR}${SYSCONFDIR}
	if [ ! -e ${DESTDIR}${SYSCONFDIR}/smtpd.conf ]; then \
		install -m 0644 etc/smtpd.conf ${DESTDIR}${SYSCONFDIR}/smtpd.conf; \
	fi
	if [ -n "${RCDIR}" ]; then \
		install -d -m 0755 ${DESTDIR}${RCDIR} && \
		sed 's|/usr/sbin/smtpd|${SBINDIR}/smtpd|' rc.d/smtpd \
		    >${DESTDIR}${RCDIR}/smtpd && \
		chmod 0555 ${DESTDIR}${RCDIR}/smtpd; \
	fi
	if [ -n "${SYSTEMDDIR}" ]; then \
		install -d -m 0755 ${DESTDIR}${SYSTEMDDIR} && \
		sed 's|/usr/sbin/smtpd|${SBINDIR}/smtpd|' \
		    contrib/systemd/smtpd.service \
		    >${DESTDIR}${SYSTEMDDIR}/smtpd.service && \
		chmod 0644 ${DESTDIR}${SYSTEMDDIR}/smtpd.service; \
	fi

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
