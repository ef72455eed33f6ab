#!/bin/sh
# Install every Debian package that smtpd-rs's tests and benchmarks need, then
# create its users and directories. Run as root on Debian 12; idempotent: a
# second run installs nothing and asks no repository.
#
# Debian's opensmtpd is installed as the reference the differential tests and
# benchmarks compare against, never as a service: a policy-rc.d forbids
# starting it while apt runs, and afterwards it is stopped (if running) and
# disabled, since it would take the port, /var/run/smtpd.sock and
# /var/spool/smtpd that smtpd-rs uses.
#
# Postfix's smtp-sink (the relay tests' destination MX) comes from Debian's
# postfix package, which conflicts with opensmtpd (both are MTAs): it is not
# installed but downloaded (apt-get download) and unpacked with dpkg-deb -x
# into $PEERS_DIR/postfix (default /opt/smtpd-rs-peers/postfix), where the
# tests run it with LD_LIBRARY_PATH=$PEERS_DIR/postfix/usr/lib/postfix. Its
# other shared libraries are in SETUP_PACKAGES. Nothing of it is configured
# or started.
#
# Usage: setup-debian.sh [PACKAGE...]   (the Makefile passes SETUP_PACKAGES)
set -eu

prog=setup
here=$(cd "$(dirname "$0")" && pwd)

if [ "$(id -u)" -ne 0 ]; then
	echo "$prog: must run as root" >&2
	exit 1
fi
if [ "$#" -eq 0 ]; then
	echo "usage: $0 PACKAGE..." >&2
	exit 2
fi

missing=
for p in "$@"; do
	if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" != installed ]; then
		missing="$missing $p"
	fi
done

if [ -n "$missing" ]; then
	echo "$prog: installing$missing"
	# Forbid service starts during the install (policy-rc.d(8), honoured by
	# invoke-rc.d and deb-systemd-invoke); put back whatever was there.
	policy=/usr/sbin/policy-rc.d
	saved=
	if [ -e "$policy" ]; then
		saved=$(mktemp)
		cp -p "$policy" "$saved"
	fi
	restore() {
		if [ -n "$saved" ]; then
			mv -f "$saved" "$policy"
		else
			rm -f "$policy"
		fi
	}
	trap restore EXIT
	trap 'exit 130' INT TERM
	printf '#!/bin/sh\n# smtpd-rs setup: no service starts while apt runs\nexit 101\n' >"$policy"
	chmod 0755 "$policy"

	export DEBIAN_FRONTEND=noninteractive
	apt="apt-get -q -y -o DPkg::Lock::Timeout=600"
	$apt update
	# shellcheck disable=SC2086
	$apt install --no-install-recommends $missing
	restore
	trap - EXIT INT TERM
else
	echo "$prog: packages already installed: $*"
fi

# Debian's OpenSMTPD: never running, never started at boot.
if [ -x /usr/sbin/smtpd ] && dpkg-query -W opensmtpd >/dev/null 2>&1; then
	pidfile=/run/smtpd.pid
	if [ -d /run/systemd/system ]; then
		systemctl stop opensmtpd.service 2>/dev/null || true
	fi
	if [ -f "$pidfile" ] &&
	    start-stop-daemon --status --pidfile "$pidfile" --exec /usr/sbin/smtpd; then
		echo "$prog: stopping Debian's opensmtpd (pid $(cat "$pidfile"))"
		start-stop-daemon --stop --quiet --pidfile "$pidfile" \
		    --exec /usr/sbin/smtpd --retry TERM/10/KILL/5
	fi
	if command -v systemctl >/dev/null 2>&1 &&
	    systemctl is-enabled --quiet opensmtpd.service 2>/dev/null; then
		systemctl disable --quiet opensmtpd.service
		echo "$prog: disabled opensmtpd.service"
	fi
	if ls /etc/rc[2345].d/S*opensmtpd >/dev/null 2>&1; then
		update-rc.d opensmtpd disable >/dev/null 2>&1
		echo "$prog: disabled /etc/init.d/opensmtpd"
	fi
fi

# Postfix, unpacked only: the relay tests' smtp-sink.
peers=${PEERS_DIR:-/opt/smtpd-rs-peers}
sink=$peers/postfix/usr/sbin/smtp-sink
if [ -x "$sink" ]; then
	echo "$prog: $sink already unpacked"
else
	echo "$prog: unpacking Debian's postfix into $peers/postfix (not installing it)"
	dl=$(mktemp -d)
	chown _apt "$dl" 2>/dev/null || true # apt downloads as _apt
	apt="apt-get -q -o DPkg::Lock::Timeout=600"
	(cd "$dl" && $apt download postfix) ||
	    { $apt update && (cd "$dl" && $apt download postfix); }
	rm -rf "$peers/postfix.new"
	mkdir -p "$peers"
	dpkg-deb -x "$dl"/postfix_*.deb "$peers/postfix.new"
	rm -rf "$dl" "$peers/postfix"
	mv "$peers/postfix.new" "$peers/postfix"
	if LD_LIBRARY_PATH="$peers/postfix/usr/lib/postfix" ldd "$sink" |
	    grep "not found" >&2; then
		echo "$prog: $sink misses the shared libraries above" >&2
		exit 1
	fi
fi

"$here/create-users-and-dirs.sh"
echo "$prog: done"
