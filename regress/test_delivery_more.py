"""Local delivery, the hard cases (issue 6): an mbox locked by another
program, an LMTP server with mixed per-recipient replies, a full disk
under a Maildir, kill -9 of the whole daemon while it delivers, and
mailboxes that are links planted by someone else.

As in test_delivery.py, the users are real system users (useradd, kept
for the next run) and every instance gets its own private /home and
/var/mail, bound over the real ones inside its mount namespace, so
nothing on the host is written. Each test has its own instance and its
own directories: a test's retries never land in another test's files.

Timing: a local temporary failure is retried at ctime + 10 s, then at
ctime + 40 s (OpenSMTPD's backoff, 10 s * retry^2). Every test needs at
most one retry. The mbox lock test is the slow one: the delivery waits
10 s for the lock before it gives up, which is already past ctime + 10,
so its retry is the one at ctime + 40 s."""

import os
import random
import re
import smtplib
import socketserver
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from test_delivery import ensure_user, private_dirs, wait_for
from test_receive import incoming, queued, smtp

ALICE, BOB, CAROL = "smtpdrs-alice", "smtpdrs-bob", "smtpdrs-carol"
SENDER = "sender@remote.example"
LMTP_PORT = 2424

CONF = (
    'listen on 127.0.0.1\n'
    'action "mbox" mbox\n'
    'action "maildir" maildir\n'
    f'action "lmtp" lmtp "127.0.0.1:{LMTP_PORT}"\n'
    'match from any for domain "mbox.test" action "mbox"\n'
    'match from any for domain "maildir.test" action "maildir"\n'
    'match from any for domain "lmtp.test" action "lmtp"\n'
)

# One line of the queue's delivery log, OpenSMTPD's mda_log form.
DELIVERY = (r"mda delivery evpid=(?P<evpid>[0-9a-f]{{16}}) from=<[^>]*> to=<{to}> .*"
            r"result=(?P<result>\w+) stat=(?P<stat>.*)$")


@pytest.fixture(scope="module")
def users():
    return {u: ensure_user(u) for u in (ALICE, BOB, CAROL)}


def start(instances, workroot, users, name, extra_binds=()):
    base = Path(workroot) / "more" / name
    home, mail = private_dirs(base, users)
    inst = instances(CONF, name=name, deliver=True,
                     binds=[(home, "/home"), (mail, "/var/mail"), *extra_binds])
    inst.base, inst.home, inst.mail = base, home, mail
    return inst


def deliveries(inst, to, since=0):
    """[(evpid, result, stat)] of the delivery lines for `to`."""
    rx = re.compile(DELIVERY.format(to=re.escape(to)))
    out = []
    for line in inst.log_since(since).split("\n"):
        m = rx.search(line)
        if m:
            out.append((m["evpid"], m["result"], m["stat"]))
    return out


def wait_delivery(inst, to, result, timeout, since=0):
    """Wait for a delivery line for `to` with `result`; return its stat."""
    m = inst.wait_log(DELIVERY.format(to=re.escape(to)).replace(r"(?P<result>\w+)", result),
                      timeout=timeout, since=since)
    return m["stat"]


def queued_with(inst, token):
    """[(message, envelopes)] of the queued messages holding `token`."""
    return [(m, n) for m, n in queued(inst).values() if token.encode() in m]


def lf(text):
    return text.replace("\r\n", "\n").encode()


# --------------------------------------------------------------------------
# 1. An mbox locked by another program

# Another mail program appending to the mbox under the fcntl lock: it
# writes half its message, says "locked", waits for a line on stdin,
# writes the other half and lets go.
LOCKER = r"""
import fcntl, os, sys
f = open(sys.argv[1], "ab")
fcntl.lockf(f, fcntl.LOCK_EX)
first, second = sys.argv[2].encode(), sys.argv[3].encode()
f.write(first); f.flush(); os.fsync(f.fileno())
print("locked", flush=True)
sys.stdin.readline()
f.write(second); f.flush(); os.fsync(f.fileno())
fcntl.lockf(f, fcntl.LOCK_UN)
f.close()
print("released", flush=True)
"""

OTHER_FIRST = ("From other@writer.example Thu Jan  1 00:00:00 2026\n"
               "Subject: written by another program\n\n"
               "first half, under the lock\n")
OTHER_SECOND = "second half, still under the lock\n\n"


def test_mbox_locked_by_another_writer_waits_and_is_retried(instances, workroot, users):
    inst = start(instances, workroot, users, "mbox-lock")
    alice = users[ALICE]
    box = inst.mail / ALICE
    # The mailbox as delivery would have made it.
    box.touch()
    os.chown(box, alice.pw_uid, alice.pw_gid)
    os.chmod(box, 0o600)
    # The other writer opens /var/mail/smtpdrs-alice as the daemon sees
    # it: inside the instance's mount namespace (the same inode as the
    # host's bound file: fcntl locks belong to the inode).
    locker = subprocess.Popen(
        ["nsenter", f"--target={inst.parent}", "--mount", "--",
         sys.executable, "-c", LOCKER, f"/var/mail/{ALICE}", OTHER_FIRST, OTHER_SECOND],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout.readline().strip() == "locked"
        rcpt = f"{ALICE}@mbox.test"
        t0 = time.monotonic()
        s = smtp(inst)
        body = ("Subject: under the lock\r\nMessage-ID: <lock@regress>\r\n\r\n"
                "line one\r\nFrom the start of a line\r\nlast line\r\n")
        assert s.sendmail(SENDER, [rcpt], body) == {}
        s.quit()
        stat_ = wait_delivery(inst, rcpt, "TempFail", timeout=25)
        waited = time.monotonic() - t0
        assert "mailbox is locked" in stat_, stat_
        assert waited >= 9, f"gave up on the lock after {waited:.1f}s, not after its 10 s wait"
        # Nothing written while the lock was held, and the message kept.
        assert box.read_bytes() == OTHER_FIRST.encode()
        assert [n for _, n in queued_with(inst, "under the lock")] == [1]
        assert deliveries(inst, rcpt) and all(r == "TempFail" for _, r, _ in deliveries(inst, rcpt))
        # The other program finishes its message and lets go.
        locker.stdin.write("go\n")
        locker.stdin.flush()
        assert locker.stdout.readline().strip() == "released"
        assert locker.wait(10) == 0
    finally:
        if locker.poll() is None:
            locker.kill()
            locker.wait()
    # The retry (ctime + 40 s: the first try ended past ctime + 10).
    wait_delivery(inst, rcpt, "Ok", timeout=45)
    got = box.read_bytes()
    other = (OTHER_FIRST + OTHER_SECOND).encode()
    assert got.startswith(other), f"the other program's message was damaged: {got[:300]!r}"
    ours = got[len(other):]
    assert ours.startswith(f"From {SENDER} ".encode()), ours[:200]
    assert ours.count(b"\nSubject: under the lock\n") == 1, "delivered exactly once"
    # Two From_ lines: the other program's message and ours, nothing else.
    assert len(re.findall(rb"(?m)^From ", got)) == 2, got
    assert ours.endswith(b"\nline one\n>From the start of a line\nlast line\n\n"), ours
    assert b"Return-Path: <sender@remote.example>\nDelivered-To: smtpdrs-alice@mbox.test\n" in ours
    assert [r for _, r, _ in deliveries(inst, rcpt)] == ["TempFail", "Ok"]
    wait_for(lambda: not queued_with(inst, "under the lock"), what="the queue to let go")
    assert not (inst.mail / f"{ALICE}.lock").exists()


# --------------------------------------------------------------------------
# 2. LMTP with mixed per-recipient replies


class LmtpServer(socketserver.ThreadingTCPServer):
    """A small LMTP server (RFC 2033). RCPT: 550 for CAROL, 250 for the
    others. After the final dot, one reply per accepted recipient: 452
    for BOB's first delivery, 250 otherwise. Records every session."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr):
        super().__init__(addr, LmtpHandler, bind_and_activate=False)
        self.lock = threading.Lock()
        self.sessions = []
        self.refused_bob = False

    def final_reply(self, rcpt):
        with self.lock:
            if rcpt == BOB and not self.refused_bob:
                self.refused_bob = True
                return "452 4.2.2 Mailbox full, try later"
        return "250 2.0.0 Delivered"


class LmtpHandler(socketserver.StreamRequestHandler):
    def reply(self, text):
        self.wfile.write(text.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self):
        srv = self.server
        sess = {"commands": [], "rcpts": [], "raw": b"", "finals": []}
        with srv.lock:
            srv.sessions.append(sess)
        self.reply("220 lmtp.regress LMTP ready")
        while True:
            line = self.rfile.readline(8192)
            if not line:
                return
            cmd = line.decode("utf-8", "replace").rstrip("\r\n")
            sess["commands"].append(cmd)
            verb = cmd[:4].upper()
            if verb == "LHLO":
                self.reply("250-lmtp.regress\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES")
            elif verb == "MAIL":
                self.reply("250 2.1.0 Ok")
            elif verb == "RCPT":
                m = re.fullmatch(r"RCPT TO:<([^>]*)>", cmd, re.I)
                who = m.group(1) if m else ""
                if who == CAROL:
                    self.reply("550 5.1.1 No such mailbox here")
                else:
                    sess["rcpts"].append(who)
                    self.reply("250 2.1.5 Ok")
            elif verb == "DATA":
                if not sess["rcpts"]:
                    self.reply("503 5.5.1 No valid recipients")
                    continue
                self.reply("354 End data with <CR><LF>.<CR><LF>")
                raw = b""
                while True:
                    l = self.rfile.readline(65536)
                    if not l:
                        return
                    if l == b".\r\n":
                        break
                    raw += l
                sess["raw"] = raw
                for who in sess["rcpts"]:
                    r = srv.final_reply(who)
                    sess["finals"].append((who, r))
                    self.reply(r)
            elif verb == "RSET":
                self.reply("250 2.0.0 Ok")
            elif verb == "QUIT":
                self.reply("221 2.0.0 Bye")
                return
            else:
                self.reply("500 5.5.2 What?")


def unstuff(raw):
    return b"".join(l[1:] if l.startswith(b".") else l for l in raw.splitlines(keepends=True))


def lmtp_server(inst):
    """An LmtpServer on 127.0.0.1:LMTP_PORT of the instance: its socket is
    made inside the instance's network namespace (where the delivery
    process connects), and served by a thread of ours."""
    with inst.netns():
        srv = LmtpServer(("127.0.0.1", LMTP_PORT))
        srv.server_bind()
        srv.server_activate()
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return srv


def test_lmtp_mixed_replies(instances, workroot, users):
    inst = start(instances, workroot, users, "lmtp")
    srv = lmtp_server(inst)
    try:
        body = ("Subject: lmtp dots\r\nMessage-ID: <lmtp@regress>\r\n\r\n"
                ".leading dot\r\n..two dots\r\n.\r\nnot. a dot\r\n. space\r\nlast line\r\n")
        rcpts = [f"{u}@lmtp.test" for u in (ALICE, BOB, CAROL)]
        s = smtp(inst)
        assert s.sendmail(SENDER, rcpts, body) == {}
        s.quit()
        wait_delivery(inst, rcpts[0], "Ok", timeout=15)
        stat_bob = wait_delivery(inst, rcpts[1], "TempFail", timeout=15)
        stat_carol = wait_delivery(inst, rcpts[2], "PermFail", timeout=15)
        assert stat_bob.startswith("452 ") and "Mailbox full" in stat_bob, stat_bob
        assert stat_carol.startswith("550 ") and "No such mailbox" in stat_carol, stat_carol
        # Bob's envelope alone stays queued, for the retry.
        wait_for(lambda: [n for _, n in queued_with(inst, "lmtp dots")] == [1],
                 what="alice's and carol's envelopes to go")
        # The retry, at ctime + 10 s.
        wait_delivery(inst, rcpts[1], "Ok", timeout=20)
        wait_for(lambda: not queued_with(inst, "lmtp dots"), what="the queue to let go")
    finally:
        srv.shutdown()
        srv.server_close()
    assert [r for _, r, _ in deliveries(inst, rcpts[0])] == ["Ok"]
    assert [r for _, r, _ in deliveries(inst, rcpts[1])] == ["TempFail", "Ok"]
    assert [r for _, r, _ in deliveries(inst, rcpts[2])] == ["PermFail"]

    with srv.lock:
        sessions = list(srv.sessions)
    for sess in sessions:
        assert sess["commands"][0].startswith("LHLO "), sess["commands"]
        assert sess["commands"][1] == f"MAIL FROM:<{SENDER}>", sess["commands"]
        assert sess["commands"][-1] == "QUIT", sess["commands"]
    # Who got the message, with which final reply.
    finals = [f for sess in sessions for f in sess["finals"]]
    assert sorted(finals) == sorted([
        (ALICE, "250 2.0.0 Delivered"),
        (BOB, "452 4.2.2 Mailbox full, try later"),
        (BOB, "250 2.0.0 Delivered"),
    ]), finals
    carol = [sess for sess in sessions if f"RCPT TO:<{CAROL}>" in sess["commands"]]
    assert len(carol) == 1 and "DATA" not in carol[0]["commands"], carol
    # Each transfer: dot-stuffed on the wire, and the message as sent once
    # the dots are taken off again.
    raws = [sess["raw"] for sess in sessions if sess["finals"]]
    assert len(raws) == 3
    for raw in raws:
        lines = raw.split(b"\r\n")
        assert b"..leading dot" in lines and b"...two dots" in lines and b".." in lines, raw
        assert b"not. a dot" in lines and b".. space" in lines, raw
        assert not re.search(rb"(?<!\r)\n", raw), "bare LF on the wire"
        data = unstuff(raw)
        assert data.endswith(body.split("\r\n\r\n", 1)[1].encode()), data
        assert b"\r\nSubject: lmtp dots\r\n" in b"\r\n" + data, data


def test_lmtp_gets_the_delivery_headers(instances, workroot, users):
    inst = start(instances, workroot, users, "lmtp-headers")
    srv = lmtp_server(inst)
    rcpt = f"{ALICE}@lmtp.test"
    try:
        s = smtp(inst)
        assert s.sendmail(SENDER, [rcpt], "Subject: headers\r\n\r\nbody\r\n") == {}
        s.quit()
        wait_delivery(inst, rcpt, "Ok", timeout=15)
    finally:
        srv.shutdown()
        srv.server_close()
    raws = [sess["raw"] for sess in srv.sessions if sess["finals"]]
    assert len(raws) == 1
    assert b"\r\nSubject: headers\r\n" in raws[0], "positive control"
    assert raws[0].startswith(f"Return-Path: <{SENDER}>\r\nDelivered-To: {rcpt}\r\n".encode()), raws[0][:200]


# --------------------------------------------------------------------------
# 3. The disk under a Maildir is full


def test_maildir_on_a_full_disk_is_retried_when_there_is_room(instances, workroot, users):
    bob = users[BOB]
    tiny = Path(workroot) / "more" / "tiny-home"
    tiny.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o",
                    f"size=64k,mode=0750,uid={bob.pw_uid},gid={bob.pw_gid}", "tmpfs", str(tiny)],
                   check=True)
    try:
        # Bob's home is the 64 KiB tmpfs (bound after /home itself).
        inst = start(instances, workroot, users, "disk-full",
                     extra_binds=[(tiny, f"/home/{BOB}")])
        rcpt = f"{BOB}@maildir.test"
        text = "Subject: too big for the disk\r\nMessage-ID: <full@regress>\r\n\r\n"
        text += "".join(f"{i:06d} " + "y" * 70 + "\r\n" for i in range(2500))  # ~190 KiB
        text += "the end\r\n"
        s = smtp(inst)
        assert s.sendmail(SENDER, [rcpt], text) == {}
        s.quit()
        stat_ = wait_delivery(inst, rcpt, "TempFail", timeout=15)
        assert "No space left on device" in stat_, stat_
        md = tiny / "Maildir"
        assert md.is_dir(), "the maildir was made before the disk filled"
        assert list((md / "tmp").iterdir()) == [], "half a message left in tmp/"
        assert list((md / "new").iterdir()) == []
        # Kept for the retry, not bounced (no second message, no PermFail).
        assert [n for _, n in queued_with(inst, "too big for the disk")] == [1]
        assert len(queued(inst)) == 1
        assert [r for _, r, _ in deliveries(inst, rcpt)] == ["TempFail"]
        # Room: the same tmpfs (the instance's bind shares it), grown.
        subprocess.run(["mount", "-o", "remount,size=1m", str(tiny)], check=True)
        wait_delivery(inst, rcpt, "Ok", timeout=20)
        files = list((md / "new").iterdir())
        assert len(files) == 1, files
        got = files[0].read_bytes()
        assert got.startswith(b"Return-Path: <sender@remote.example>\nDelivered-To: " + rcpt.encode() + b"\n")
        assert got.endswith(lf(text.split("\r\n\r\n", 1)[1])), "message damaged"
        assert b"\nSubject: too big for the disk\n" in got
        st = files[0].stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (bob.pw_uid, 0o600)
        assert list((md / "tmp").iterdir()) == []
        assert [r for _, r, _ in deliveries(inst, rcpt)] == ["TempFail", "Ok"]
        wait_for(lambda: queued(inst) == {}, what="the queue to let go")
        inst.stop()
    finally:
        subprocess.run(["umount", "-l", str(tiny)], check=False)


# --------------------------------------------------------------------------
# 4. kill -9 of every process while deliveries run


def test_kill9_during_deliveries_loses_no_acknowledged_message(instances, workroot, users):
    """Every message acknowledged with 250 is in Maildir/new at least once
    after a restart on the same spool. Duplicates are allowed: a delivery
    killed after its rename into new/ and before the queue removed the
    envelope is delivered again, which beats losing it. Files left in tmp/
    by killed deliveries are never mail: only new/ is counted."""
    rnd = random.Random()
    inst = start(instances, workroot, users, "kill9-deliver")
    rcpt = f"{ALICE}@maildir.test"
    new = inst.home / ALICE / "Maildir" / "new"
    acked, sent, lock = set(), set(), threading.Lock()
    stop = threading.Event()

    def message(token):
        return (f"Subject: {token}\r\nMessage-ID: <{token}@regress>\r\n\r\n"
                + ("z" * 70 + "\r\n") * 280 + f"end of {token}\r\n")  # ~20 KiB

    def client(n):
        # Five sessions of up to ten messages each (a new session after
        # every four messages), until the kill.
        s = None
        try:
            for i in range(10):
                if stop.is_set():
                    return
                if s is None or i % 4 == 0:
                    if s is not None:
                        s.quit()
                    s = smtp(inst)
                token = f"k9d-{n}-{i}"
                with lock:
                    sent.add(token)
                s.sendmail(SENDER, [rcpt], message(token))
                with lock:
                    acked.add(token)
            s.quit()
        except (OSError, smtplib.SMTPException):
            return  # killed mid-session: no verdict

    threads = [threading.Thread(target=client, args=(n,)) for n in range(5)]
    for t in threads:
        t.start()
    # A random moment once deliveries are under way (polled tightly: the
    # whole load takes well under a second on a fast machine).
    k = rnd.randint(5, 35)
    deadline = time.monotonic() + 30
    while len(acked) < k and any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        time.sleep(0.002)
    while not (new.is_dir() and any(new.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(rnd.uniform(0, 0.05))
    inst.kill_all(rnd)
    stop.set()
    for t in threads:
        t.join(30)
    with lock:
        acked_now, sent_now = set(acked), set(sent)
    in_new = len(list(new.iterdir()))
    inst.stop()
    assert acked_now, "nothing acknowledged before the kill"

    again = instances(CONF, name="kill9-deliver-again", deliver=True, spool=inst.spool,
                      binds=[(inst.home, "/home"), (inst.mail, "/var/mail")])
    again.wait_log(r"queue: \d+ envelopes in the queue")
    wait_for(lambda: queued(again) == {} and incoming(again) == [], timeout=40,
             what="the restarted daemon to deliver everything")
    counts = {}
    for f in new.iterdir():
        text = f.read_bytes()
        m = re.search(rb"\nSubject: (k9d-\d+-\d+)\n", text)
        assert m, f"{f.name}: not one of ours: {text[:200]!r}"
        token = m.group(1).decode()
        assert text.endswith(lf(message(token).split("\r\n\r\n", 1)[1])), f"{f.name}: incomplete in new/"
        counts[token] = counts.get(token, 0) + 1
    missing = acked_now - set(counts)
    assert not missing, f"acknowledged, never delivered: {sorted(missing)}"
    assert set(counts) <= sent_now, "delivered something never sent"
    assert "result=PermFail" not in again.log()
    tmp_left = len(list((new.parent / "tmp").iterdir()))
    dups = {t: n for t, n in counts.items() if n > 1}
    print(f"kill -9 after {len(acked_now)} acknowledged of {len(sent_now)} sent "
          f"({in_new} in new/ at the kill): "
          f"{len(counts)} delivered, {len(dups)} twice or more {dups}, {tmp_left} left in tmp/")


# --------------------------------------------------------------------------
# 5. Mailboxes that are links, planted by someone else

PASSWD_LIKE = b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"


def test_linked_mbox_is_refused(instances, workroot, users):
    """mail.local refuses a "linked or special file" (EX_OSERR, which
    OpenSMTPD counts as a temporary failure): nothing is written through
    the link, whoever the delivery runs as, and the message waits."""
    inst = start(instances, workroot, users, "mbox-links")
    victims = inst.base / "victims"
    victims.mkdir(exist_ok=True)
    os.chmod(victims, 0o755)
    alice, bob, carol = users[ALICE], users[BOB], users[CAROL]

    def victim(name, content, owner, mode):
        p = victims / name
        p.write_bytes(content)
        os.chown(p, owner.pw_uid if owner else 0, owner.pw_gid if owner else 0)
        os.chmod(p, mode)
        return p

    # root's mail is delivered as root: a symlink to a passwd-like file,
    # planted by alice.
    passwd = victim("passwd", PASSWD_LIKE, None, 0o644)
    os.symlink(passwd, inst.mail / "root")
    os.lchown(inst.mail / "root", alice.pw_uid, alice.pw_gid)
    # alice's mailbox: a hard link to a file of alice's (the user could
    # write it: only the link count refuses it).
    alice_file = victim("alice-notes", b"alice's own notes\n", alice, 0o600)
    os.link(alice_file, inst.mail / ALICE)
    # bob's mailbox: carol's symlink to a file bob can write.
    bob_file = victim("bob-profile", b"export PATH=/usr/bin\n", bob, 0o600)
    os.symlink(bob_file, inst.mail / BOB)
    os.lchown(inst.mail / BOB, carol.pw_uid, carol.pw_gid)
    # carol's mailbox: a dangling symlink into a directory carol may write.
    drop = inst.base / "carol-drop"
    drop.mkdir(exist_ok=True)
    os.chown(drop, carol.pw_uid, carol.pw_gid)
    os.symlink(drop / "created", inst.mail / CAROL)
    os.lchown(inst.mail / CAROL, bob.pw_uid, bob.pw_gid)

    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (passwd, alice_file, bob_file)}
    cases = {
        "root": "is a symbolic link, refused",
        ALICE: "has more than one link, refused",
        BOB: "is a symbolic link, refused",
        CAROL: "is a symbolic link, refused",
    }
    s = smtp(inst)
    for user in cases:
        assert s.sendmail(SENDER, [f"{user}@mbox.test"], f"Subject: via a link to {user}\r\n\r\nowned\r\n") == {}
    s.quit()
    for user, why in cases.items():
        stat_ = wait_delivery(inst, f"{user}@mbox.test", "TempFail", timeout=15)
        assert why in stat_, (user, stat_)
        assert stat_.startswith(f"/var/mail/{user}: "), stat_
    for user in cases:
        assert [r for _, r, _ in deliveries(inst, f"{user}@mbox.test")] == ["TempFail"], user
        assert [n for _, n in queued_with(inst, f"via a link to {user}")] == [1], f"{user}: not kept"
    for p, (content, mtime) in before.items():
        assert p.read_bytes() == content, f"{p} written through the link"
        assert p.stat().st_mtime_ns == mtime, p
    assert passwd.stat().st_nlink == 1 and alice_file.stat().st_nlink == 2
    assert not (drop / "created").exists() and not os.path.lexists(drop / "created")
    # The links are left as they were, and no lock files litter the spool.
    for user in ("root", BOB, CAROL):
        assert (inst.mail / user).is_symlink(), user
    assert sorted(p.name for p in inst.mail.iterdir()) == sorted(cases)
