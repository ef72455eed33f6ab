"""Receiving mail: real clients (smtplib, raw sockets) against the real
daemon in its own namespaces, checked from outside: replies, and what the
spool holds afterwards.

The spool is read through the instance's mount namespace
(/proc/PARENT/root/var/spool/smtpd), as the queue role itself sees it."""

import os
import random
import re
import smtplib
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

import smtpd_harness as h

LOCAL_RULES = 'action "local" mbox\nmatch from local for local action "local"\n'


def conf(*lines, rules=LOCAL_RULES):
    return "".join(line + "\n" for line in lines) + rules


def spool_root(inst):
    """The spool as the queue role sees it: the bind-mounted directory
    itself, or for a tmpfs spool, through the daemon's mount namespace."""
    if inst.spool_size is None:
        return inst.spool
    return Path(f"/proc/{inst.parent}/root/var/spool/smtpd")


def queued(inst_or_root):
    """{msgid: (message bytes, number of envelopes)} for every message
    committed to the queue."""
    root = inst_or_root if isinstance(inst_or_root, Path) else spool_root(inst_or_root)
    out = {}
    qdir = root / "queue"
    if not qdir.is_dir():
        return out
    for bucket in sorted(qdir.iterdir()):
        for m in sorted(bucket.iterdir()):
            msg = (m / "message").read_bytes()
            # Beside the message file, one file per envelope (its evpid).
            envs = [e for e in m.iterdir() if re.fullmatch(r"[0-9a-f]{16}", e.name)]
            out[m.name] = (msg, len(envs))
    return out


def incoming(inst):
    d = spool_root(inst) / "incoming"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def smtp(inst, port=25, host="127.0.0.1", source=None):
    with inst.netns():
        s = smtplib.SMTP(timeout=20, source_address=(source, 0) if source else None)
        s.connect(host, port)
    s._host = host  # smtplib names the TLS server after it (STARTTLS)
    return s


def body(token, size=0):
    text = f"Subject: {token}\r\nMessage-ID: <{token}@regress>\r\n\r\n{token}\r\n"
    if size:
        text += ("x" * 70 + "\r\n") * (size // 72)
    return text


def test_a_message_is_accepted_and_queued(instances):
    inst = instances(conf("listen on 127.0.0.1"))
    s = smtp(inst)
    code, ehlo = s.ehlo("client.regress")
    assert code == 250
    for ext in (b"8BITMIME", b"ENHANCEDSTATUSCODES", b"SIZE", b"PIPELINING", b"CHUNKING", b"SMTPUTF8", b"DSN"):
        assert ext in ehlo, ehlo
    refused = s.sendmail("alice@localhost", ["root@localhost", "daemon@localhost"], body("first-message"))
    assert refused == {}
    s.quit()
    q = queued(inst)
    assert len(q) == 1, q
    msg, nenv = next(iter(q.values()))
    assert nenv == 2
    assert b"first-message" in msg
    assert msg.startswith(b"Received: from client.regress"), msg[:200]
    assert incoming(inst) == []
    inst.wait_log(r"smtp message msgid=[0-9a-f]{8} size=\d+ nrcpt=2 proto=ESMTP")


def test_pipelined_transaction_in_one_write(instances):
    inst = instances(conf("listen on 127.0.0.1"))
    c = h.Client(inst.connect())
    assert c.line().startswith("220 ")
    c.sock.sendall(b"EHLO x\r\nMAIL FROM:<a@localhost>\r\nRCPT TO:<root@localhost>\r\nRCPT TO:<nobody@remote.example>\r\nDATA\r\n")
    # Five final replies: EHLO, MAIL, RCPT, RCPT, DATA (EHLO's 250- lines
    # are continuation lines).
    replies = []
    while len(replies) < 5:
        line = c.line()
        assert line, f"connection closed after {replies}"
        if not line.startswith("250-"):
            replies.append(line)
    assert replies[0].startswith("250 "), replies  # EHLO's last line
    assert replies[1].startswith("250 "), replies  # MAIL
    assert replies[2].startswith("250 "), replies  # RCPT local
    assert replies[3][:1] == "5", replies  # RCPT remote: refused
    assert replies[4].startswith("354"), replies
    c.sock.sendall(b"Subject: piped\r\n\r\npiped\r\n.\r\nQUIT\r\n")
    assert c.line().startswith("250 ")
    assert c.line().startswith("221 ")
    q = queued(inst)
    assert [n for _, n in q.values()] == [1]


@pytest.mark.parametrize("sequence", [
    b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r", b"\n.\r", b"\r.\r\n",
])
def test_smuggling_never_ends_a_message(instances, sequence):
    inst = instances(conf("listen on 127.0.0.1"))
    c = h.Client(inst.connect())
    c.line()
    c.sock.sendall(b"EHLO x\r\nMAIL FROM:<a@localhost>\r\nRCPT TO:<root@localhost>\r\nDATA\r\n")
    while not c.line().startswith("354"):
        pass
    smuggled = (b"Subject: outer\r\n\r\nouter" + sequence +
                b"MAIL FROM:<evil@localhost>\r\nRCPT TO:<root@localhost>\r\nDATA\r\nSubject: smuggled\r\n\r\ninner\r\n.\r\n")
    c.sock.sendall(smuggled)
    first = c.line()
    c.sock.sendall(b"QUIT\r\n")
    rest = []
    while True:
        line = c.line()
        if line is None or line == "":
            break
        rest.append(line)
        if line.startswith("221"):
            break
    q = queued(inst)
    # Either the whole thing is one message (the smuggled text is data), or
    # it was refused: never two messages.
    assert len(q) <= 1, (first, rest, q)
    if first.startswith("250"):
        assert len(q) == 1
        msg = next(iter(q.values()))[0]
        assert b"smuggled" in msg and b"outer" in msg
    else:
        assert first[:1] == "5" and q == {}, (first, q)


def test_size_limit_is_enforced_at_mail_and_after_the_dot(instances):
    inst = instances(conf("smtp max-message-size 10K", "listen on 127.0.0.1"))
    s = smtp(inst)
    # SIZE= over the limit: refused at MAIL (RFC 1870), as smtplib sends it.
    with pytest.raises(smtplib.SMTPSenderRefused) as e:
        s.sendmail("a@localhost", ["root@localhost"], body("big", 20000))
    assert e.value.smtp_code == 552
    # Without SIZE=: counted while streaming, refused after the dot.
    s.rset()
    assert s.docmd("MAIL FROM:<a@localhost>")[0] == 250
    assert s.rcpt("root@localhost")[0] == 250
    code, text = s.data(body("big", 20000).encode())
    assert code == 552, text
    # The session goes on.
    assert s.sendmail("a@localhost", ["root@localhost"], body("small")) == {}
    s.quit()
    assert len(queued(inst)) == 1
    assert incoming(inst) == []


def test_limits_on_raw_input(instances):
    inst = instances(conf("listen on 127.0.0.1"))
    c = h.Client(inst.connect())
    c.line()
    c.sock.sendall(b"NOOP " + b"a" * 70000 + b"\r\n")
    reply = c.line()
    assert reply[:1] in "45", reply
    # The daemon serves the next client.
    s = smtp(inst)
    assert s.noop()[0] == 250
    s.quit()


REMOTE_RULES = (
    'action "local" mbox\n'
    'match from any for domain "example.com" action "local"\n'
    'match from local for local action "local"\n'
)

# A13: every classic relay trick, sent by a client that is not local, to a
# server that accepts mail for example.com only.
TRICKS = [
    "user%evil.org@example.com",
    "user@evil.org@example.com",
    '"user@evil.org"@example.com',
    '"user%evil.org"@example.com',
    "evil.org!user@example.com",
    "@example.com:user@evil.org",
    "@example.com,@other.example:user@evil.org",
    "user@evil.org",
    "user@example.com.evil.org",
    "user@evil.org.",
    "user@[192.0.2.1]",
    "user@[127.0.0.1]",
    "user@localhost",
    "user@EVIL.ORG",
    "user%evil.org",
    "\"user\"@evil.org",
]


@pytest.fixture
def remote(instances):
    """An instance on all addresses, and a client address that is not
    local: 192.0.2.0/24 on the namespace's loopback (documentation range,
    inside the test's own network namespace)."""
    inst = instances(conf("listen on 0.0.0.0", rules=REMOTE_RULES))
    with inst.netns():
        for addr in ("192.0.2.1/24", "192.0.2.10/24"):
            subprocess.run(["ip", "addr", "add", addr, "dev", "lo"], check=True)
    return inst


def test_remote_client_gets_its_domain_and_nothing_else(remote):
    s = smtp(remote, host="192.0.2.1", source="192.0.2.10")
    s.ehlo("remote.test")
    assert s.mail("a@remote.test")[0] == 250
    assert s.rcpt("root@example.com")[0] == 250, "positive control"
    for addr in TRICKS:
        code, text = s.rcpt(addr)
        assert 500 <= code < 600, f"{addr}: {code} {text}"
    s.quit()
    remote.wait_log(r"smtp .*")


def _load_and_kill(inst, acked, refused, lock, rnd):
    """20 sessions sending 2 KiB messages without pause; SIGKILL of every
    process of the instance at a random moment while they do."""
    stop = threading.Event()

    def client(n):
        i = 0
        while not stop.is_set() and i < 2000:
            token = f"k9-{inst.name}-{n}-{i}"
            i += 1
            try:
                s = smtp(inst)
                s.sendmail("a@localhost", ["root@localhost"], body(token, 2000))
                with lock:
                    acked.add(token)
                s.quit()
            except smtplib.SMTPResponseException:
                with lock:
                    refused.add(token)
            except (OSError, smtplib.SMTPException):
                return  # killed mid-session: no verdict either way

    before = len(acked)
    threads = [threading.Thread(target=client, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    # Kill at a random moment once the load is flowing (a slow machine
    # must not turn this into a kill before anything happened).
    deadline = time.monotonic() + 20
    while len(acked) == before and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(rnd.uniform(0.02, 0.5))
    inst.kill_all(rnd)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    inst.stop()


def test_kill9_of_everything_loses_no_acknowledged_message(instances):
    rnd = random.Random()
    acked, refused, lock = set(), set(), threading.Lock()
    spool = None
    for round_ in range(3):
        inst = instances(conf("listen on 127.0.0.1"), name=f"kill9-{round_}", spool=spool)
        spool = inst.spool
        before = len(acked)
        _load_and_kill(inst, acked, refused, lock, rnd)
        assert len(acked) > before, f"round {round_}: nothing acknowledged before the kill"
    print(f"kill -9: 3 rounds, {len(acked)} acknowledged, {len(refused)} refused")
    # Restart on the same spool: recovery must keep every acknowledged
    # message, once, whole, and clean what was never acknowledged.
    again = instances(conf("listen on 127.0.0.1"), name="kill9-final", spool=spool)
    again.wait_log(r"queue: \d+ envelopes in the queue")
    tokens = {}
    for msg, nenv in queued(again).values():
        m = re.search(rb"Subject: (k9-\S+)", msg)
        assert m, msg[:300]
        t = m.group(1).decode()
        tokens[t] = tokens.get(t, 0) + 1
        assert nenv == 1
        assert msg.rstrip().endswith(b"x" * 70), f"{t}: message truncated"
    missing = acked - set(tokens)
    assert not missing, f"acknowledged but lost: {sorted(missing)[:20]} ({len(missing)})"
    assert all(n == 1 for n in tokens.values()), {t: n for t, n in tokens.items() if n > 1}
    assert not (refused & set(tokens)), "refused but kept"
    assert incoming(again) == []
    # The restarted daemon is whole and serving.
    s = smtp(again)
    assert s.noop()[0] == 250
    s.quit()
    assert "lost child" not in again.log(), again.log()


def test_disk_full_is_a_tempfail_and_loses_nothing(instances):
    inst = instances(conf("listen on 127.0.0.1"), spool_size="256k")
    acked = []
    s = smtp(inst)
    code = None
    for i in range(200):
        token = f"full-{i}"
        try:
            s.sendmail("a@localhost", ["root@localhost"], body(token, 8000))
            acked.append(token)
        except smtplib.SMTPResponseException as e:
            code = e.smtp_code
            break
    assert code is not None and 400 <= code < 500, f"no tempfail after {len(acked)} messages"
    assert acked, "nothing fit at all"
    q = queued(inst)
    found = {re.search(rb"Subject: (full-\d+)", m).group(1).decode() for m, _ in q.values()}
    assert set(acked) <= found
    # Still serving.
    assert s.noop()[0] == 250
    s.quit()


def test_date_and_message_id_are_added_for_local_senders(instances):
    inst = instances(conf("listen on 127.0.0.1"))
    s = smtp(inst)
    assert s.sendmail("a@localhost", ["root@localhost"], "Subject: bare\r\n\r\nbody\r\n") == {}
    assert s.sendmail("a@localhost", ["root@localhost"],
                      "Subject: full\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
                      "Message-ID: <given@client>\r\n\r\nbody\r\n") == {}
    s.quit()
    msgs = {re.search(rb"Subject: (\w+)", m).group(1): m for m, _ in queued(inst).values()}
    bare = msgs[b"bare"]
    head, _, body = bare.partition(b"\r\n\r\n")
    assert re.search(rb"\r\nDate: \w{3}, \d+ \w{3} \d{4} \d\d:\d\d:\d\d \+0000\r\n", head + b"\r\n"), bare
    assert re.search(rb"\r\nMessage-Id: <[^>]+@[^>]+>", head), bare
    assert body == b"body\r\n"
    full = msgs[b"full"]
    assert full.count(b"Date:") == 1 and full.count(b"Message-I") == 1, full


def test_ipv6_listener_and_client(instances):
    """`listen on ::1` and `listen on localhost` (both families): a client
    over IPv6 is served, its address logged and put in Received: as
    OpenSMTPD writes it ([::1]); the IPv4 listener stays separate."""
    inst = instances(conf("listen on ::1\nlisten on 127.0.0.1 port 2525"))
    s = smtp(inst, host="::1")
    assert s.ehlo("v6.client")[0] == 250
    assert s.sendmail("a@localhost", ["root@localhost"], "Subject: over v6\r\n\r\nx\r\n") == {}
    s.quit()
    msg = [m for m, _ in queued(inst).values() if b"Subject: over v6" in m]
    assert len(msg) == 1
    # OpenSMTPD's sa_to_text writes an IPv6 address in brackets.
    assert re.search(rb"Received: from v6\.client \(\S* \[::1\]\)", msg[0]), msg[0][:300]
    inst.wait_log(r"smtp connected address=\[?::1\]? ")
    with pytest.raises(OSError):
        smtp(inst, host="::1", port=2525)
    assert smtp(inst, port=2525).noop()[0] == 250
