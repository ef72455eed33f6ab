"""Our SMTP session log lines next to OpenSMTPD 6.8's (Debian's
/usr/sbin/smtpd): the same client sessions played against both.

Log parsers written for OpenSMTPD (logwatch, fail2ban filters, admins'
greps) read `<sessid> smtp <event> key=value ...` lines. Each daemon runs
in its own namespaces (smtpd_harness.Instance; OpenSMTPD is started by the
same harness with its own binary and, like ours, with -d -v -P mda: local
deliveries paused, so the queue keeps what was received), each session is
played against one daemon after the other, and the `smtp` lines of each
session are compared: the same events in the same order, each with the
same field names in the same order, and the same values once what must
differ has been normalised (`normalise` says what and why). Where we
differ on purpose, `INTENDED` and `INTENDED_CODES` say so.

Debian's OpenSMTPD 6.8 cannot finish a TLS handshake here (built against
OpenSSL 3, its privilege-separated RSA and ECDSA key engines fail:
"EVP lib", "missing private key"), and it offers AUTH only over TLS. So
the TLS and AUTH lines are checked against ours alone: their formats as
OpenSMTPD 6.8's smtp_session.c writes them, and the cipher as the
client's OpenSSL names it.
"""

import os
import re
import smtplib
import ssl
import time
from pathlib import Path

import pytest

import smtpd_harness as h

OPENSMTPD = Path("/usr/sbin/smtpd")
HOST = "mx.regress.test"
# Recipients both daemons accept: local users on any Debian.
RCPTS = ["root@localhost", "daemon@localhost"]
# Small enough to break in a test, big enough for every other message.
MAX_SIZE = 4096

# Our deliberate differences, field by field.
INTENDED = {
    # OpenSMTPD writes the client's reverse-DNS name (here "localhost",
    # from /etc/hosts); we do no reverse lookups yet and write the
    # address, as OpenSMTPD itself does when the lookup fails.
    ("connected", "host"): "the address: no reverse DNS yet",
}

# Replies whose code we chose differently: (session, OpenSMTPD's, ours).
INTENDED_CODES = {
    # RFC 1870 section 6 and RFC 5321 4.5.3.1.10: a message over the
    # size limit gets 552; OpenSMTPD 6.8 answers 554.
    ("too_big", "554"): "552",
}

pytestmark = pytest.mark.skipif(not OPENSMTPD.exists(), reason="Debian's opensmtpd is not installed")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    aliases = d / "aliases"
    aliases.write_text("team: root, daemon\n")
    return {**h.make_test_pki(d, HOST), "aliases": aliases}


def config(pki):
    """One config for both daemons: a plain listener, and one that offers
    STARTTLS, and AUTH once secured."""
    return (
        f'pki {HOST} cert "{pki["crt"]}"\n'
        f'pki {HOST} key "{pki["key"]}"\n'
        f'table creds file:{pki["creds"]}\n'
        f'table aliases file:{pki["aliases"]}\n'
        f"smtp max-message-size {MAX_SIZE}\n"
        f"listen on 127.0.0.1 hostname {HOST}\n"
        f"listen on 127.0.0.1 port 587 tls pki {HOST} auth <creds> hostname {HOST}\n"
        f"listen on 127.0.0.1 port 465 smtps pki {HOST} hostname {HOST}\n"
        'action "local" mbox alias <aliases>\n'
        'match from local for local action "local"\n'
    )


def client(inst, port=25):
    with inst.netns():
        s = smtplib.SMTP(timeout=20)
        s.connect("127.0.0.1", port)
    s._host = "127.0.0.1"
    return s


def insecure(tls12=False):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


# ---- the sessions; each returns what the client saw that a line must show


def two_recipients(inst):
    s = client(inst)
    s.ehlo("client.regress")
    assert s.sendmail("alice@localhost", RCPTS, "Subject: two\r\n\r\nhello\r\n.dot\r\n") == {}
    s.quit()


def helo_null_sender(inst):
    s = client(inst)
    s.helo("client.regress")
    assert s.sendmail("<>", RCPTS[:1], "Subject: null sender\r\n\r\nbounce\r\n") == {}
    s.quit()


def rejected_recipient(inst):
    s = client(inst)
    s.ehlo("client.regress")
    assert s.mail("alice@localhost")[0] == 250
    assert s.rcpt("someone@remote.example")[0] == 550
    assert s.rcpt("root@localhost")[0] == 250
    assert s.rset()[0] == 250
    s.quit()


def bad_commands(inst):
    s = client(inst)
    assert s.docmd("MAIL FROM:<alice@localhost>")[0] == 503
    s.ehlo("client.regress")
    assert s.docmd("FROB", "x y")[0] == 500
    assert s.docmd("DATA")[0] == 503
    s.quit()


def control_character(inst):
    """A command with a control character: refused, and logged with the
    byte escaped (each daemon its own way; see `unescape`)."""
    s = client(inst)
    s.ehlo("client.regress")
    assert s.docmd("NOOP\x01")[0] == 500
    s.quit()


def too_big(inst):
    """Refused after its final dot. (HELO: with EHLO, smtplib declares
    SIZE= at MAIL, which we refuse there and OpenSMTPD 6.8 only after
    the dot.)"""
    s = client(inst)
    s.helo("client.regress")
    with pytest.raises(smtplib.SMTPDataError):
        s.sendmail("alice@localhost", RCPTS[:1], "Subject: big\r\n\r\n" + "x" * MAX_SIZE + "\r\n")
    s.quit()


def alias_expands(inst):
    """One RCPT, two envelopes: nrcpt counts the RCPT, and its one
    `envelope` line names one of the two."""
    s = client(inst)
    s.ehlo("client.regress")
    assert s.sendmail("alice@localhost", ["team@localhost"], "Subject: team\r\n\r\nhi\r\n") == {}
    s.quit()


def line_too_long(inst):
    c = h.Client(inst.connect())
    assert c.line().startswith("220 ")
    # Exactly the limit of both (65535 bytes without a line end): the
    # server reads it all before it closes, so no reset loses the reply.
    c.sock.sendall(b"x" * 65535)
    assert c.line().startswith("500 ")
    assert c.at_eof()
    c.close()


def client_disconnects(inst):
    s = client(inst)
    s.ehlo("client.regress")
    assert s.mail("alice@localhost")[0] == 250
    assert s.rcpt("root@localhost")[0] == 250
    s.sock.close()


def starttls_and_auth(inst, tls12=False):
    s = client(inst, port=587)
    s.ehlo("client.regress")
    assert s.starttls(context=insecure(tls12))[0] == 220
    name, version, bits = s.sock.cipher()
    s.ehlo("client.regress")
    # smtplib tries PLAIN, then LOGIN: two failures.
    with pytest.raises(smtplib.SMTPAuthenticationError):
        s.login("alice", "wrong")
    s.user, s.password = "alice", "secret"
    assert s.auth("LOGIN", s.auth_login)[0] == 235
    s.quit()
    return f"{version}:{name}:{bits}"


def smtps(inst):
    with inst.netns():
        s = smtplib.SMTP_SSL("127.0.0.1", 465, timeout=20, context=insecure())
    name, version, bits = s.sock.cipher()
    s.ehlo("client.regress")
    s.quit()
    return f"{version}:{name}:{bits}"


# Played against both daemons, compared line by line.
COMPARED = [two_recipients, helo_null_sender, rejected_recipient, bad_commands,
            control_character, too_big, alias_expands, line_too_long, client_disconnects]

# The line each session is there to produce: it must be in both logs (a
# scenario that produced nothing in either would compare equal).
EXERCISES = {
    "two_recipients": "envelope",
    "helo_null_sender": "envelope",
    "rejected_recipient": "failed-command",
    "bad_commands": "failed-command",
    "control_character": "failed-command",
    "too_big": "failed-command",
    "alias_expands": "envelope",
    "line_too_long": "bad-input",
    "client_disconnects": "disconnected",
}

LINE = re.compile(r"([0-9a-f]{16}) smtp (\S+)(.*)")
FIELD = re.compile(r' ([a-z-]+)=("(?:[^"\\]|\\.)*"|[^ "]\S*)')


def fields(rest, line):
    """[(key, value)] of ` key=value key="value" ...`; the whole text must
    be fields."""
    out, pos = [], 0
    for m in FIELD.finditer(rest):
        assert m.start() == pos, f"not key=value at {rest[pos:]!r} in {line!r}"
        out.append((m.group(1), m.group(2)))
        pos = m.end()
    assert pos == len(rest), f"not key=value at {rest[pos:]!r} in {line!r}"
    return out


def session_lines(inst, n):
    """The `smtp` lines of the first n sessions, in order of connection:
    [[(event, [(key, value)]), ...], ...], once each has its
    `disconnected` line. A session id is 16 hex digits in both."""
    deadline = time.monotonic() + 10
    while True:
        ids, per = [], {}
        for line in inst.log_lines():
            m = LINE.fullmatch(line)
            if not m:
                continue
            sid, event, rest = m.groups()
            if event == "connected":
                ids.append(sid)
            per.setdefault(sid, []).append((event, fields(rest, line)))
        ended = [sid for sid in ids[:n] if per[sid][-1][0] == "disconnected"]
        if len(ended) == n:
            return [per[sid] for sid in ids[:n]]
        if time.monotonic() > deadline:
            raise AssertionError(f"{inst.name}: {len(ended)} of {n} sessions ended:\n{inst.log()}")
        time.sleep(0.05)


def wait_listening(inst, ports):
    """Until the instance listens on every port (OpenSMTPD says it is
    starting before its dispatcher listens), seen in /proc, not by
    connecting: a probe would be a session in the log."""
    want = {f"{p:04X}" for p in ports}
    deadline = time.monotonic() + h.START_TIMEOUT
    while True:
        with open(f"/proc/{inst.parent}/net/tcp") as f:
            next(f)
            listening = {line.split()[1].split(":")[1] for line in f if line.split()[3] == "0A"}
        if want <= listening:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{inst.name}: not listening on {ports}:\n{inst.log()}")
        time.sleep(0.05)


def queue_contents(inst):
    """{msgid: (size of the message file, {evpid, ...})}: the same layout
    in both spools (queue/BUCKET/MSGID/message and one file per
    envelope)."""
    out = {}
    qdir = inst.spool / "queue"
    for m in qdir.glob("*/*"):
        envs = {e.name for e in m.iterdir() if re.fullmatch(r"[0-9a-f]{16}", e.name)}
        out[m.name] = ((m / "message").stat().st_size, envs)
    return out


def unescape(value):
    """A quoted value's bytes: OpenSMTPD writes control bytes the way
    strnvis(3) does (`\\^A`), we as `\\x01` (and quotes and backslashes
    too, which must never end a field). What was sent must be the same."""
    def one(m):
        e = m.group(0)
        if e.startswith("\\x"):
            return chr(int(e[2:], 16))
        if e.startswith("\\^"):
            return chr(ord(e[2]) ^ 0x40)
        return e[1]
    return re.sub(r"\\x[0-9a-f]{2}|\\\^.|\\.", one, value)


def normalise(event, fields, queue, state):
    """The fields with what must differ between two daemons replaced by
    what it stands for, once checked against that daemon itself:
    - msgid: random; it must name a message in this daemon's queue;
    - size: the bytes written to the queue, Received line included, as
      OpenSMTPD counts them; each daemon's Received line (and line ends:
      OpenSMTPD stores LF, we CRLF) differ, so it must equal the size of
      this daemon's own queued message file;
    - evpid: random; its high half is the message's msgid and it must be
      an envelope of that message in the queue;
    - result: the reply; the code must match, the text is the protocol
      engine's (ours adds enhanced status codes where OpenSMTPD 6.8 has
      none, and lka words its refusals its own way);
    - command: compared unescaped (`unescape`);
    - host: see INTENDED.
    Everything else must be equal: from, to, nrcpt, proto, reason,
    address."""
    out = []
    for key, value in fields:
        if key == "msgid":
            assert value in queue, f"msgid={value} not in the queue {sorted(queue)}"
            state["msgid"] = value
            value = "<msgid>"
        elif key == "size":
            want = queue[state["msgid"]][0]
            assert int(value) == want, f"size={value}, the queued message has {want} bytes"
            value = "<size of the queued message>"
        elif key == "evpid":
            msgid = state["msgid"]
            assert value[:8] == msgid and value in queue[msgid][1], (
                f"evpid={value}: not an envelope of {msgid} {sorted(queue[msgid][1])}")
            value = "<evpid>"
        elif key == "command":
            value = unescape(value)
        elif key == "result":
            assert re.fullmatch(r'"[245]\d\d( .*)?"', value), value
            value = value[1:4]
        elif (event, key) in INTENDED:
            if key == "host":
                assert value, "an empty host="
            value = f"<{INTENDED[(event, key)]}>"
        out.append((key, value))
    return out


@pytest.fixture(scope="module")
def played(pki, workroot, smtpd_bin):
    """Both daemons started, every session played against each; their
    lines and queues. The daemons stay up until the module's tests end."""
    conf = config(pki)
    ref = h.Instance(os.path.join(workroot, "log-compat-opensmtpd"), conf, name="opensmtpd")
    ref.bin = OPENSMTPD
    ours = h.Instance(os.path.join(workroot, "log-compat-ours"), conf, name="smtpd-rs")
    try:
        ref.start(wait_ready=False)
        ref.wait_log(r"OpenSMTPD \S+ starting", timeout=h.START_TIMEOUT)
        wait_listening(ref, (25, 587, 465))
        ref.record_tree()
        ours.start()
        tls = []
        for inst in (ref, ours):
            for n, play in enumerate(COMPARED, 1):
                play(inst)
                # One session at a time, and its lines all in: the
                # sessions' lines never interleave.
                session_lines(inst, n)
        for tls12 in (False, True):
            tls.append(starttls_and_auth(ours, tls12))
            session_lines(ours, len(COMPARED) + len(tls))
        tls.append(smtps(ours))
        session_lines(ours, len(COMPARED) + len(tls))
    except Exception as e:
        ref.stop()
        ours.stop()
        # A module fixture's failure shows no instance log by itself.
        raise AssertionError(f"{e}\n--- opensmtpd:\n{ref.log()}\n--- smtpd-rs:\n{ours.log()}") from e
    try:
        yield {
            "ref": ref,
            "ours": ours,
            "ref_lines": session_lines(ref, len(COMPARED)),
            "our_lines": session_lines(ours, len(COMPARED) + len(tls)),
            "ref_queue": queue_contents(ref),
            "our_queue": queue_contents(ours),
            "ciphers": tls,
        }
    finally:
        ref.stop()
        ours.stop()


@pytest.fixture
def logs_on_failure(request, played):
    request.node._smtpd_instances += [played["ref"], played["ours"]]
    return played


@pytest.mark.parametrize("index", range(len(COMPARED)), ids=[f.__name__ for f in COMPARED])
def test_same_lines_as_opensmtpd(logs_on_failure, index):
    p = logs_on_failure
    sessions = []
    for lines, queue in ((p["ref_lines"][index], p["ref_queue"]),
                         (p["our_lines"][index], p["our_queue"])):
        state = {}
        sessions.append([(event, normalise(event, f, queue, state)) for event, f in lines])
    ref, ours = sessions
    name = COMPARED[index].__name__
    ref = [(e, [(k, INTENDED_CODES.get((name, v), v) if k == "result" else v) for k, v in f])
           for e, f in ref]
    assert EXERCISES[name] in [e for e, _ in ref], "the session's point"
    assert [e for e, _ in ours] == [e for e, _ in ref], "the events, in order"
    for (event, want), (_, got) in zip(ref, ours):
        assert [k for k, _ in got] == [k for k, _ in want], f"the fields of {event}, in order"
        assert got == want, f"the values of {event}"


def test_every_message_and_envelope_is_logged(logs_on_failure):
    """Each daemon logs one `message` line per queued message and one
    `envelope` line per RCPT: nothing queued goes unlogged."""
    for lines, queue in ((logs_on_failure["ref_lines"], logs_on_failure["ref_queue"]),
                         (logs_on_failure["our_lines"], logs_on_failure["our_queue"])):
        flat = [(e, dict(f)) for session in lines for e, f in session]
        assert sorted(f["msgid"] for e, f in flat if e == "message") == sorted(queue)
        assert sum(int(f["nrcpt"]) for e, f in flat if e == "message") == \
            sum(1 for e, _ in flat if e == "envelope") == 4
        # team@localhost made two envelopes.
        assert sum(len(evps) for _, evps in queue.values()) == 5


def test_tls_and_auth_lines(logs_on_failure):
    """The lines OpenSMTPD 6.8 writes for STARTTLS and AUTH
    (smtp_session.c: smtp_io IO_TLSREADY, the IMSG_SMTP_AUTHENTICATE
    answer, smtp_reply's failed-command in the AUTH states), in order:
    the cipher as OpenSSL names it (`ssl_to_text`: version:cipher:bits,
    here read from the client's own OpenSSL), each failure's
    `authentication` line before the 535 it causes, and the user name
    unquoted."""
    sessions = logs_on_failure["our_lines"][len(COMPARED):]
    ciphers = logs_on_failure["ciphers"]
    assert len(sessions) == len(ciphers) == 3
    for session, cipher in zip(sessions[:2], ciphers[:2]):
        got = [(e, [(k, v) for k, v in f if k != "address" and k != "host"]) for e, f in session]
        assert got == [
            ("connected", []),
            ("tls", [("ciphers", cipher)]),
            ("authentication", [("user", "alice"), ("result", "permfail")]),
            ("failed-command", [("command", '"AUTH PLAIN (...)"'),
                                ("result", '"535 5.7.8 Authentication failed"')]),
            ("authentication", [("user", "alice"), ("result", "permfail")]),
            ("failed-command", [("command", '"AUTH LOGIN (password)"'),
                                ("result", '"535 5.7.8 Authentication failed"')]),
            ("authentication", [("user", "alice"), ("result", "ok")]),
            ("disconnected", [("reason", "quit")]),
        ]
    assert ciphers[1].startswith("TLSv1.2:")
    # SMTPS: the handshake comes first, then the session as any other.
    got = [(e, [(k, v) for k, v in f if k != "address" and k != "host"]) for e, f in sessions[2]]
    assert got == [
        ("connected", []),
        ("tls", [("ciphers", ciphers[2])]),
        ("disconnected", [("reason", "quit")]),
    ]
