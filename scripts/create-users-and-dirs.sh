#!/bin/sh
# Create what smtpd needs outside its binary, where it is missing:
#   users  _smtpd (most roles) and _smtpq (the queue): system users with
#          their own group, no login shell, home /var/empty;
#   dirs   /var/empty       root:0 0755, empty (the chroot of most roles)
#          /var/spool/smtpd root:0 0711 (the queue's chroot; smtpd makes
#                           its subdirectories itself, as OpenSMTPD does)
#          /var/spool/smtpd/offline root:_smtpq 0770 (sendmail's offline
#                           queue, as smtpd makes it, so sendmail works
#                           before smtpd first ran; not with a DESTDIR)
#          /etc/mail        root:0 0755 (smtpd.conf, aliases; lka reads
#                           :include: files only there).
# Idempotent: existing users are kept; existing dirs get the right owner and
# mode. Called by `make install` and `make setup`.
#
# Usage: create-users-and-dirs.sh [DESTDIR]
# With a DESTDIR (a staged install for a package), the dirs are made under it
# and no user is created: that is the package's post-install job.
set -eu

destdir=${1:-}
prog=create-users-and-dirs

if [ "$(id -u)" -ne 0 ]; then
	echo "$prog: must run as root" >&2
	exit 1
fi

nologin=/usr/bin/false
for f in /usr/sbin/nologin /sbin/nologin; do
	if [ -x "$f" ]; then nologin=$f; break; fi
done

# make_user NAME COMMENT
make_user() {
	if id "$1" >/dev/null 2>&1; then
		return 0
	fi
	if ! grep -q "^$1:" /etc/group; then
		groupadd -r "$1"
	fi
	useradd -r -g "$1" -d /var/empty -M -s "$nologin" -c "$2" "$1"
	echo "$prog: created user $1 ($(id "$1"))"
}

# make_dir PATH MODE
make_dir() {
	mkdir -p "$destdir$1"
	chown 0:0 "$destdir$1"
	chmod "$2" "$destdir$1"
}

if [ -z "$destdir" ]; then
	make_user _smtpd "smtpd-rs daemon"
	make_user _smtpq "smtpd-rs queue"
else
	echo "$prog: DESTDIR set: not creating users _smtpd and _smtpq (the package must)"
fi

make_dir /var/empty 0755
make_dir /var/spool/smtpd 0711
make_dir /etc/mail 0755
if [ -z "$destdir" ]; then
	mkdir -p /var/spool/smtpd/offline
	chown 0:_smtpq /var/spool/smtpd/offline
	chmod 0770 /var/spool/smtpd/offline
fi

# A chroot with something in it is no longer an empty one.
if [ -n "$(ls -A "$destdir/var/empty")" ]; then
	echo "$prog: $destdir/var/empty is not empty; smtpd's roles chroot into it:" >&2
	ls -lA "$destdir/var/empty" >&2
	exit 1
fi
