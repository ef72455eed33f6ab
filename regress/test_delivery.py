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


def private_dirs(base, users):
    """A private /home (one 0750 home per user, the user's) and /var/mail
    (root's, 0755: users cannot create dotlocks there, as on a system
    whose spool is writable by group mail only)."""
    home, mail = base / "home", base / "mail"
    for d in (home, mail):
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o755)
    for name, pw in users.items():
        d = home / name
        d.mkdir(exist_ok=True)
        os.chown(d, pw.pw_uid, pw.pw_gid)
        os.chmod(d, 0o750)
    return home, mail


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
    home, mail = private_dirs(base, users)
    scripts = base / "bin"
    scripts.mkdir(exist_ok=True)
    os.chmod(scripts, 0o755)
    for name, text in (("mda.sh", MDA_SCRIPT), ("tempfail-once.sh", TEMPFAIL_ONCE)):
        p = scripts / name
        p.write_text(text)
        os.chmod(p, 0o755)
    conf = (
        'listen on 127.0.0.1\n'
        'bounce warn-interval 5s\n'
        'action "mbox" mbox\n'
        'action "maildir" maildir\n'
        'action "junk" maildir "~/Mail/inbox" junk\n'
        f'action "mda" mda "{scripts / "mda.sh"}"\n'
        f'action "retry" mda "{scripts / "tempfail-once.sh"}"\n'
        'action "fail" mda "exit 1"\n'
        'action "later" mda "exit 75"\n'
        'action "fmt" mda "echo %{sender} %{rcpt.domain} > %{user.directory}/fmt.out"\n'
        'match from any for domain "mbox.test" action "mbox"\n'
        'match from any for domain "maildir.test" action "maildir"\n'
        'match from any for domain "junk.test" action "junk"\n'
        'match from any for domain "mda.test" action "mda"\n'
        'match from any for domain "retry.test" action "retry"\n'
        'match from any for domain "fail.test" action "fail"\n'
        'match from any for domain "later.test" action "later"\n'
        'match from any for domain "fmt.test" action "fmt"\n'
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
                       r"to=<smtpdrs-alice@mbox\.test> rcpt=<smtpdrs-alice@mbox\.test> user=smtpdrs-alice "
                       r"delay=\d+s result=Ok stat=Delivered")


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


def test_a_message_that_came_around_is_a_loop(deliveryd):
    """OpenSMTPD's mda_check_loop: a Delivered-To header naming this
    destination fails the delivery for good instead of delivering again."""
    send(deliveryd, "smtpdrs-alice@maildir.test", "looping",
         extra="Delivered-To: smtpdrs-alice@maildir.test\r\n")
    deliveryd.wait_log(r"mda delivery .*to=<smtpdrs-alice@maildir\.test> .*result=PermFail stat=Loop detected")
    new = deliveryd.home / "smtpdrs-alice" / "Maildir" / "new"
    assert not (new.is_dir() and any(b"looping" in f.read_bytes() for f in new.iterdir()))


def test_unknown_user_is_refused_at_rcpt(deliveryd):
    """As OpenSMTPD: lka looks the user up when the recipient is given, so
    an unknown one gets 550 5.1.1 and never reaches the queue."""
    s = smtp(deliveryd)
    s.ehlo("client.regress")
    assert s.mail("sender@remote.example")[0] == 250
    code, text = s.rcpt("no-such-user-here@mbox.test")
    assert (code, text) == (550, b"5.1.1 Invalid recipient"), (code, text)
    assert s.rcpt("smtpdrs-alice@mbox.test")[0] == 250
    s.quit()


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


PIPE_SCRIPT = """#!/bin/sh
# An alias's |command: runs as _smtpd, writes where the test can look.
cat > "$1/piped.out"
id -un > "$1/piped.user"
"""


@pytest.fixture(scope="module")
def aliasd(users, workroot):
    """aliases(5) for real: an alias table file, an :include: file under
    /etc/mail (where lka may read), a pipe and a file target run as the
    daemon's user, a loop, an error: item."""
    os.makedirs("/etc/mail", exist_ok=True)  # make setup creates it too
    base = Path(workroot) / "aliases"
    home, mail, etc, drop = base / "home", base / "mail", base / "etc-mail", base / "drop"
    for d in (home, mail, etc, drop):
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o755)
    os.chmod(drop, 0o777)
    for name, pw in users.items():
        (home / name).mkdir(exist_ok=True)
        os.chown(home / name, pw.pw_uid, pw.pw_gid)
    smtpd_pw = pwd.getpwnam("_smtpd")
    archive = mail / "archive"
    archive.write_bytes(b"")
    os.chown(archive, smtpd_pw.pw_uid, smtpd_pw.pw_gid)
    os.chmod(archive, 0o600)
    pipe = base / "pipe.sh"
    pipe.write_text(PIPE_SCRIPT)
    os.chmod(pipe, 0o755)
    (etc / "list.inc").write_text("# members\nsmtpdrs-alice\n")
    (etc / "aliases").write_text(
        "team: smtpdrs-alice, smtpdrs-bob\n"
        "list: :include:/etc/mail/list.inc\n"
        "loop1: loop2\n"
        "loop2: loop1\n"
        f'piped: "|{pipe} {drop}"\n'
        "archive: /var/mail/archive\n"
        "gone: error:550 5.1.1 This user is gone\n"
        "chain1: chain2\n"
        "chain2: smtpdrs-bob\n"
    )
    conf = (
        'listen on 127.0.0.1\n'
        'table aliases file:/etc/mail/aliases\n'
        'action "local" mbox alias <aliases>\n'
        'match from any for domain "alias.test" action "local"\n'
    )
    inst = h.Instance(base / "smtpd", conf, name="aliases", deliver=True,
                      binds=[(home, "/home"), (mail, "/var/mail"), (etc, "/etc/mail")])
    inst.start()
    inst.home, inst.mail, inst.drop = home, mail, drop
    yield inst
    inst.stop()


def mbox_has(inst, user, subject):
    box = inst.mail / user
    return box.exists() and subject.encode() in box.read_bytes()


def test_alias_to_two_users_delivers_to_both(aliasd):
    send(aliasd, "team@alias.test", "to the team")
    for u in USERS:
        wait_for(lambda: mbox_has(aliasd, u, "to the team"), what=f"{u}'s mbox")
    text = (aliasd.mail / "smtpdrs-bob").read_bytes()
    assert text.count(b"Subject: to the team") == 1


def test_alias_chain_and_include(aliasd):
    send(aliasd, "chain1@alias.test", "via a chain")
    wait_for(lambda: mbox_has(aliasd, "smtpdrs-bob", "via a chain"), what="bob's mbox")
    send(aliasd, "list@alias.test", "via an include")
    wait_for(lambda: mbox_has(aliasd, "smtpdrs-alice", "via an include"), what="alice's mbox")


def test_alias_pipe_and_file_run_as_the_daemon_user(aliasd):
    send(aliasd, "piped@alias.test", "through a pipe")
    out = wait_for(lambda: (aliasd.drop / "piped.user").exists() and (aliasd.drop / "piped.user").read_text(),
                   what="the pipe")
    assert out.strip() == "_smtpd"
    assert b"Subject: through a pipe" in (aliasd.drop / "piped.out").read_bytes()
    send(aliasd, "archive@alias.test", "into a file")
    wait_for(lambda: b"into a file" in (aliasd.mail / "archive").read_bytes(), what="the archive file")
    assert (aliasd.mail / "archive").read_bytes().startswith(b"From sender@remote.example ")


def test_alias_loop_and_error_items_are_refused_at_rcpt(aliasd):
    s = smtp(aliasd)
    s.ehlo("client.regress")
    assert s.mail("sender@remote.example")[0] == 250
    assert s.rcpt("loop1@alias.test") == (524, b"5.2.4 Mailing list expansion problem")
    assert s.rcpt("gone@alias.test") == (550, b"5.1.1 This user is gone")
    assert s.rcpt("team@alias.test")[0] == 250
    s.quit()


def rcpt_reply(inst, rcpt):
    s = smtp(inst)
    s.ehlo("client.regress")
    assert s.mail("sender@remote.example")[0] == 250
    reply = s.rcpt(rcpt)
    s.quit()
    return reply


@pytest.fixture
def bob_forward(deliveryd, users):
    """bob's ~/.forward, removed after the test."""
    path = deliveryd.home / "smtpdrs-bob" / ".forward"
    yield path
    if path.is_symlink() or path.exists():
        path.unlink()


def test_forward_is_followed(deliveryd, users, bob_forward):
    bob = users["smtpdrs-bob"]
    bob_forward.write_text("# to alice, and a copy for me\n\\smtpdrs-bob, smtpdrs-alice\n")
    os.chown(bob_forward, bob.pw_uid, bob.pw_gid)
    os.chmod(bob_forward, 0o644)
    send(deliveryd, "smtpdrs-bob@mbox.test", "forwarded by bob")
    for u in USERS:
        wait_for(lambda: (deliveryd.mail / u).exists()
                 and b"forwarded by bob" in (deliveryd.mail / u).read_bytes(), what=f"{u}'s mbox")


SECRET = b"root:$6$NOT-A-REAL-HASH-BUT-SECRET:19000:0:99999:7:::\n"


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "group-writable", "other-owner"])
def test_unsafe_forward_is_never_read(deliveryd, users, bob_forward, kind):
    """A .forward planted to leak a file (a symlink or hard link to a
    shadow-like file), or one others may write or own, is refused: the
    recipient is deferred or refused (OpenSMTPD: 524 5.2.4), and the
    secret never reaches a mailbox or the log."""
    bob, alice = users["smtpdrs-bob"], users["smtpdrs-alice"]
    secret = deliveryd.home / "smtpdrs-bob" / f"shadow-{kind}"
    secret.write_bytes(SECRET)
    os.chmod(secret, 0o600)
    try:
        if kind == "symlink":
            bob_forward.symlink_to(secret)
        elif kind == "hardlink":
            os.chown(secret, bob.pw_uid, bob.pw_gid)
            os.link(secret, bob_forward)
        else:
            bob_forward.write_text("smtpdrs-alice\n")
            owner = alice if kind == "other-owner" else bob
            os.chown(bob_forward, owner.pw_uid, owner.pw_gid)
            os.chmod(bob_forward, 0o664 if kind == "group-writable" else 0o644)
        code, text = rcpt_reply(deliveryd, "smtpdrs-bob@mbox.test")
        assert (code, text) == (524, b"5.2.4 Mailing list expansion problem"), (kind, code, text)
        for box in deliveryd.mail.iterdir():
            assert b"NOT-A-REAL-HASH" not in box.read_bytes(), box
        assert "NOT-A-REAL-HASH" not in deliveryd.log()
        deliveryd.wait_log(r"forward")
    finally:
        secret.unlink()


def test_a_failed_delivery_bounces_once_to_the_sender(deliveryd):
    """A permanent failure after acceptance (here an mda that exits 1)
    sends one RFC 3464 report from MAILER-DAEMON to the sender, with the
    failed recipient, its status and the original headers."""
    send(deliveryd, "smtpdrs-alice@fail.test", "will bounce", sender="smtpdrs-bob@mbox.test")
    deliveryd.wait_log(r"mda delivery .*to=<smtpdrs-alice@fail\.test> .*result=PermFail")
    box = deliveryd.mail / "smtpdrs-bob"
    text = wait_for(lambda: box.exists() and b"Subject: will bounce" in box.read_bytes() and box.read_bytes(),
                    what="the bounce in the sender's mbox")
    report = text[text.rindex(b"From MAILER-DAEMON "):] if b"From MAILER-DAEMON " in text else b""
    assert report, text[-2000:]
    assert b"Subject: Delivery status notification: failed" in report
    assert b"Content-Type: multipart/report" in report and b"report-type=delivery-status" in report
    assert b"Final-Recipient: rfc822; smtpdrs-alice@fail.test" in report
    assert b"Action: failed" in report and b"Status: 5." in report
    assert report.count(b"Subject: will bounce") == 1, "the original headers, once"
    wait_for(lambda: gone_from_queue(deliveryd, "will bounce"), what="the queue to let go")
    time.sleep(1)
    assert box.read_bytes().count(b"From MAILER-DAEMON ") == text.count(b"From MAILER-DAEMON "), "one bounce"


def test_no_bounce_for_the_null_sender(deliveryd):
    before = {p.name: p.read_bytes() for p in deliveryd.mail.iterdir()}
    s = smtp(deliveryd)
    assert s.sendmail("<>", ["smtpdrs-alice@fail.test"], "Subject: from nobody\r\n\r\nx\r\n") == {}
    s.quit()
    deliveryd.wait_log(r"mda delivery .*from=<> to=<smtpdrs-alice@fail\.test> .*result=PermFail")
    wait_for(lambda: gone_from_queue(deliveryd, "from nobody"), what="the queue to let go")
    time.sleep(1)
    after = {p.name: p.read_bytes() for p in deliveryd.mail.iterdir()}
    assert after == before, "nothing delivered anywhere"


def test_a_delayed_message_gets_one_delay_notice(deliveryd):
    """`bounce warn-interval 5s`: a message still queued past 5 s (its mda
    keeps failing temporarily) earns its sender one 'delayed' report, and
    stays queued."""
    send(deliveryd, "smtpdrs-alice@later.test", "slow one", sender="smtpdrs-bob@mbox.test")
    box = deliveryd.mail / "smtpdrs-bob"

    def notice():
        if not box.exists():
            return None
        t = box.read_bytes()
        i = t.find(b"Subject: Delivery status notification: delayed")
        return t if i >= 0 and b"Subject: slow one" in t[i:] else None

    text = wait_for(notice, timeout=20, what="the delay notice")
    assert b"Action: delayed" in text and b"Status: 4." in text
    assert any(b"slow one" in m for m, _ in queued(deliveryd).values()), "still queued"


@pytest.fixture(scope="module")
def virtd(users, workroot):
    """Virtual domains as OpenSMTPD configs have them: a virtual table, one
    system user that owns every virtual mailbox (`user`), Maildirs named
    after the destination; and a userbase table of users with no passwd
    entry (their uid is alice's, their home a directory of the table's)."""
    os.makedirs("/etc/mail", exist_ok=True)
    base = Path(workroot) / "virtual"
    home, etc = base / "home", base / "etc-mail"
    for d in (home, etc):
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o755)
    bob, alice = users["smtpdrs-bob"], users["smtpdrs-alice"]
    for name, pw in users.items():
        (home / name).mkdir(exist_ok=True)
        os.chown(home / name, pw.pw_uid, pw.pw_gid)
    vhome = home / "vuser-home"
    vhome.mkdir(exist_ok=True)
    os.chown(vhome, alice.pw_uid, alice.pw_gid)
    (etc / "virtuals").write_text(
        "sales@virt.test staff@virt.test\n"
        "staff@virt.test smtpdrs-bob\n"
        "@virt.test error:550 5.1.1 No such virtual user\n"
    )
    (etc / "vbase").write_text(f"vuser {alice.pw_uid}:{alice.pw_gid}:/home/vuser-home\n")
    conf = (
        'listen on 127.0.0.1\n'
        'table virtuals file:/etc/mail/virtuals\n'
        'table vbase file:/etc/mail/vbase\n'
        'action "virt" maildir "/home/smtpdrs-bob/vmail/%{dest.domain}/%{dest.user}" '
        'virtual <virtuals> user smtpdrs-bob\n'
        'action "vb" maildir userbase <vbase>\n'
        'match from any for domain "virt.test" action "virt"\n'
        'match from any for domain "vb.test" action "vb"\n'
    )
    inst = h.Instance(base / "smtpd", conf, name="virtual", deliver=True,
                      binds=[(home, "/home"), (etc, "/etc/mail")])
    inst.start()
    inst.home = home
    yield inst
    inst.stop()


def test_virtual_domain_delivers_as_its_user_into_named_maildirs(virtd, users):
    send(virtd, "sales@virt.test", "for sales")
    new = virtd.home / "smtpdrs-bob" / "vmail" / "virt.test" / "staff" / "new"
    files = wait_for(lambda: new.is_dir() and list(new.iterdir()), what="the virtual Maildir")
    assert b"Subject: for sales" in files[0].read_bytes()
    assert files[0].stat().st_uid == users["smtpdrs-bob"].pw_uid
    assert rcpt_reply(virtd, "nobody@virt.test") == (550, b"5.1.1 No such virtual user")


def test_userbase_user_without_a_passwd_entry(virtd, users):
    send(virtd, "vuser@vb.test", "for a userbase user")
    new = virtd.home / "vuser-home" / "Maildir" / "new"
    files = wait_for(lambda: new.is_dir() and list(new.iterdir()), what="the userbase user's Maildir")
    assert b"Subject: for a userbase user" in files[0].read_bytes()
    assert files[0].stat().st_uid == users["smtpdrs-alice"].pw_uid
    assert rcpt_reply(virtd, "ghost@vb.test")[0] == 550


def test_notify_success_gets_a_delivered_report(deliveryd):
    """RCPT ... NOTIFY=SUCCESS: once delivered, the sender gets one report
    whose Action is delivered; ORCPT and ENVID are carried into it."""
    s = smtp(deliveryd)
    s.ehlo("client.regress")
    assert s.mail("smtpdrs-bob@mbox.test", ["RET=HDRS", "ENVID=track-42"])[0] == 250
    assert s.rcpt("smtpdrs-alice@maildir.test", ["NOTIFY=SUCCESS", "ORCPT=rfc822;alice@orig.test"])[0] == 250
    assert s.data("Subject: track me\r\n\r\nx\r\n")[0] == 250
    s.quit()
    box = deliveryd.mail / "smtpdrs-bob"

    def report():
        t = box.read_bytes() if box.exists() else b""
        i = t.find(b"Subject: Delivery status notification: delivered")
        return t[i:] if i >= 0 else None

    text = wait_for(report, what="the delivered report")
    assert b"Action: delivered" in text and b"Status: 2." in text
    assert b"Original-Envelope-Id: track-42" in text
    assert b"Original-Recipient: rfc822;alice@orig.test" in text


def test_mda_formats_expand_as_data(deliveryd, users):
    """%{...} in an mda command (OpenSMTPD's formats, as dovecot-lda configs
    use them) expand to the envelope's values without ever being parsed
    by the shell: a sender full of shell syntax arrives as itself."""
    # Every shell-special character the address syntax lets through.
    sender = "q'&touch&'*?{a}~#x@remote.example"
    s = smtp(deliveryd)
    assert s.sendmail(sender, ["smtpdrs-alice@fmt.test"], "Subject: fmt\r\n\r\nx\r\n") == {}
    s.quit()
    out = deliveryd.home / "smtpdrs-alice" / "fmt.out"
    text = wait_for(lambda: out.exists() and out.read_text(), what="the mda's output")
    assert text == f"{sender} fmt.test\n", text
    assert not (deliveryd.home / "smtpdrs-alice" / "touch").exists()
