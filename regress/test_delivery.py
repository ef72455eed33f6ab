"""Local delivery for real: a message sent with smtplib ends up in a real
user's mbox, Maildir or mda, written as that user (owner, mode), and the
queue lets go of it. Unknown users fail for good; a temporary failure is
retried by the scheduler after its backoff.

The users are real system users this module creates (useradd, once; they
are kept for the next run). Their homes and /var/mail are private
directories bound over /home and /var/mail inside the instance's mount
namespace, so nothing on the host is written."""

import os
import pwd
import re
import stat
import subprocess
import time
from pathlib import Path

import pytest

import smtpd_harness as h
from test_receive import queued, smtp

USERS = ("smtpdrs-alice", "smtpdrs-bob")


def ensure_user(name):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        nologin = next((p for p in ("/usr/sbin/nologin", "/sbin/nologin") if os.path.exists(p)), "/bin/false")
        subprocess.run(["useradd", "-M", "-U", "-d", f"/home/{name}", "-s", nologin, name],
                       check=True, capture_output=True)
        return pwd.getpwnam(name)


@pytest.fixture(scope="module")
def users():
    return {u: ensure_user(u) for u in USERS}


MDA_SCRIPT = """#!/bin/sh
# Writes what it gets as the user, in the user's home.
cat > "$HOME/mda.out"
env | sort > "$HOME/mda.env"
id -u > "$HOME/mda.uid"
"""

# Fails once with EX_TEMPFAIL, then delivers: the scheduler must retry.
TEMPFAIL_ONCE = """#!/bin/sh
if [ ! -e "$HOME/tried-once" ]; then
    touch "$HOME/tried-once"
    echo "not now" >&2
    exit 75
fi
cat > "$HOME/retried.out"
"""


@pytest.fixture(scope="module")
def deliveryd(users, workroot):
    base = Path(workroot) / "delivery"
    home, mail = base / "home", base / "mail"
    for d in (home, mail):
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o755)
    for name, pw in users.items():
        d = home / name
        d.mkdir(exist_ok=True)
        os.chown(d, pw.pw_uid, pw.pw_gid)
        os.chmod(d, 0o750)
    scripts = base / "bin"
    scripts.mkdir(exist_ok=True)
    os.chmod(scripts, 0o755)
    for name, text in (("mda.sh", MDA_SCRIPT), ("tempfail-once.sh", TEMPFAIL_ONCE)):
        p = scripts / name
        p.write_text(text)
        os.chmod(p, 0o755)
    conf = (
        'listen on 127.0.0.1\n'
        'action "mbox" mbox\n'
        'action "maildir" maildir\n'
        'action "junk" maildir "~/Mail/inbox" junk\n'
        f'action "mda" mda "{scripts / "mda.sh"}"\n'
        f'action "retry" mda "{scripts / "tempfail-once.sh"}"\n'
        'match from any for domain "mbox.test" action "mbox"\n'
        'match from any for domain "maildir.test" action "maildir"\n'
        'match from any for domain "junk.test" action "junk"\n'
        'match from any for domain "mda.test" action "mda"\n'
        'match from any for domain "retry.test" action "retry"\n'
    )
    inst = h.Instance(base / "smtpd", conf, name="delivery", deliver=True,
                      binds=[(home, "/home"), (mail, "/var/mail")])
    inst.start()
    inst.home, inst.mail = home, mail
    yield inst
    inst.stop()


def send(inst, rcpt, subject, sender="sender@remote.example", extra=""):
    s = smtp(inst)
    body = f"Subject: {subject}\r\n{extra}\r\nline one\r\nFrom the start of a line\r\n"
    assert s.sendmail(sender, [rcpt], body) == {}
    s.quit()


def wait_for(pred, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def gone_from_queue(inst, subject):
    return not any(subject.encode() in m for m, _ in queued(inst).values())


def test_mbox_is_written_as_the_user(deliveryd, users):
    send(deliveryd, "smtpdrs-alice@mbox.test", "to mbox")
    box = deliveryd.mail / "smtpdrs-alice"
    text = wait_for(lambda: box.exists() and b"to mbox" in box.read_bytes() and box.read_bytes(),
                    what="the mbox")
    st = box.stat()
    alice = users["smtpdrs-alice"]
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (alice.pw_uid, alice.pw_gid, 0o600)
    assert text.startswith(b"From sender@remote.example "), text[:80]
    assert b"\r\n" not in text, "mbox lines end in LF"
    assert b"Return-Path: <sender@remote.example>\n" in text
    assert b"Delivered-To: smtpdrs-alice@mbox.test\n" in text
    assert b"\n>From the start of a line\n" in text, "From_ escaped"
    wait_for(lambda: gone_from_queue(deliveryd, "to mbox"), what="the queue to let go")
    deliveryd.wait_log(r"mda delivery evpid=[0-9a-f]{16} from=<sender@remote\.example> "
                       r"to=<smtpdrs-alice@mbox\.test> user=smtpdrs-alice delay=\d+s result=Ok stat=Delivered")


def test_maildir_file_is_the_users_and_in_new(deliveryd, users):
    send(deliveryd, "smtpdrs-bob@maildir.test", "to maildir")
    new = deliveryd.home / "smtpdrs-bob" / "Maildir" / "new"
    files = wait_for(lambda: new.is_dir() and list(new.iterdir()), what="a file in Maildir/new")
    assert len(files) == 1
    st = files[0].stat()
    bob = users["smtpdrs-bob"]
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (bob.pw_uid, 0o600)
    text = files[0].read_bytes()
    assert b"Subject: to maildir\n" in text and b"\r" not in text
    assert not list((new.parent / "tmp").iterdir())
    wait_for(lambda: gone_from_queue(deliveryd, "to maildir"), what="the queue to let go")


def test_maildir_junk_goes_to_the_junk_folder(deliveryd):
    send(deliveryd, "smtpdrs-bob@junk.test", "spam", extra="X-Spam: yes\r\n")
    junk = deliveryd.home / "smtpdrs-bob" / "Mail" / "inbox" / ".Junk" / "new"
    files = wait_for(lambda: junk.is_dir() and list(junk.iterdir()), what="a file in .Junk/new")
    assert b"Subject: spam" in files[0].read_bytes()


def test_mda_runs_as_the_user_with_the_envelope_in_its_environment(deliveryd, users):
    send(deliveryd, "smtpdrs-alice+tag@mda.test", "to mda")
    home = deliveryd.home / "smtpdrs-alice"
    wait_for(lambda: (home / "mda.uid").exists() and (home / "mda.uid").read_text().strip(), what="the mda")
    assert int((home / "mda.uid").read_text()) == users["smtpdrs-alice"].pw_uid
    env = dict(line.split("=", 1) for line in (home / "mda.env").read_text().splitlines() if "=" in line)
    assert env["SENDER"] == "sender@remote.example"
    assert env["RECIPIENT"] == "smtpdrs-alice+tag@mda.test"
    assert env["EXTENSION"] == "tag"
    assert env["USER"] == "smtpdrs-alice" and env["HOME"] == "/home/smtpdrs-alice"
    out = (home / "mda.out").read_bytes()
    assert b"Subject: to mda\n" in out
    assert (home / "mda.out").stat().st_uid == users["smtpdrs-alice"].pw_uid


def test_unknown_user_fails_for_good(deliveryd):
    send(deliveryd, "no-such-user-here@mbox.test", "to nobody")
    deliveryd.wait_log(r"mda delivery .*to=<no-such-user-here@mbox\.test> .*result=PermFail "
                       r"stat=.*Invalid recipient", timeout=15)
    wait_for(lambda: gone_from_queue(deliveryd, "to nobody"), what="the queue to let go")


def test_temporary_failure_is_retried_after_the_backoff(deliveryd):
    """OpenSMTPD's local backoff: the first retry 10 s after arrival."""
    home = deliveryd.home / "smtpdrs-bob"
    start = time.monotonic()
    send(deliveryd, "smtpdrs-bob@retry.test", "retry me")
    deliveryd.wait_log(r"mda delivery .*to=<smtpdrs-bob@retry\.test> .*result=TempFail", timeout=15)
    assert any(b"retry me" in m for m, _ in queued(deliveryd).values()), "kept for the next try"
    out = wait_for(lambda: (home / "retried.out").exists() and (home / "retried.out").read_bytes(),
                   timeout=30, what="the retry")
    assert b"Subject: retry me" in out
    assert time.monotonic() - start >= 9, "retried before the backoff"
    wait_for(lambda: gone_from_queue(deliveryd, "retry me"), what="the queue to let go")
