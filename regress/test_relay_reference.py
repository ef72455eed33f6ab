"""The relay world (relay_world.py) checked with OpenSMTPD 6.8, the
reference, as the relaying MTA: Debian's /usr/sbin/smtpd runs in a host of
the world (its own mount namespace, spool and /var/run, the world's
resolver) and relays what smtplib gives it, by MX, to Postfix's smtp-sink,
past an MX that refuses connections and one that answers 421 at once, over
IPv6, into a hostile server (421 after RCPT), and through a
smarthost that is a second instance of our own daemon (STARTTLS with a test
CA, then AUTH). The same fixtures serve the tests of our own SMTP client.

Only cases that complete within seconds are run: OpenSMTPD waits minutes
before a retry unless told (`smtpctl schedule all`)."""

import os
import re
import smtplib
import socket
import time
from pathlib import Path

import pytest

import relay_world as rw

pytestmark = pytest.mark.skipif(
    not (rw.OPENSMTPD.exists() and rw.SMTP_SINK.exists()),
    reason="Debian's opensmtpd and the unpacked Postfix (make setup) are needed")

RELAY_CONF = (
    "listen on 127.0.0.1\n"
    'action "relay" relay\n'
    'match from local for any action "relay"\n'
)


def message(token, extra=""):
    """A complete message (its own Date and Message-ID, so the relay adds
    nothing but its Received), CRLF line ends, a line that needs
    dot-stuffing, 8-bit-free."""
    return (
        f"From: Sender <sender@relay.test>\r\n"
        f"To: rcpt@{token}.test\r\n"
        f"Subject: relay world {token}\r\n"
        f"Date: Sun, 29 Nov 2026 12:00:00 +0000\r\n"
        f"Message-ID: <{token}@relay.test>\r\n"
        f"{extra}"
        f"\r\n"
        f"first line of {token}\r\n"
        f".a line that starts with a dot\r\n"
        f"{'long line ' * 90}\r\n"
        f"last line\r\n"
    ).encode()


def strip_received(content):
    """The message without the Received: fields at the top of its header
    (each with its continuation lines)."""
    lines = content.split(b"\r\n")
    out, skipping, in_header = [], False, True
    for line in lines:
        if in_header and line == b"":
            in_header = False
        if in_header and line[:1] in (b" ", b"\t") and skipping:
            continue
        skipping = in_header and line.lower().startswith(b"received:")
        if not skipping:
            out.append(line)
    return b"\r\n".join(out)


@pytest.fixture(scope="module")
def world(workroot):
    w = rw.RelayWorld(os.path.join(workroot, "relay-reference-world"))
    yield w
    w.close()


@pytest.fixture(scope="module")
def reference(world, workroot):
    host = world.host("relay.test")
    ref = rw.Reference(os.path.join(workroot, "relay-reference"), RELAY_CONF, name="opensmtpd-relay",
                       netns=host.netns, binds=world.binds())
    ref.start()
    ref.place = host
    yield ref
    ref.stop()


@pytest.fixture(autouse=True)
def _show_logs(request):
    """The logs of the module's daemons are shown if a test fails."""
    for name in ("reference", "smarthost"):
        if name in request.fixturenames:
            request.node._smtpd_instances.append(request.getfixturevalue(name))


def send(inst, sender, rcpts, data):
    s = smtp_to(inst)
    assert s.sendmail(sender, rcpts, data) == {}
    s.quit()


def smtp_to(inst, port=25):
    with inst.netns():
        return smtplib.SMTP("127.0.0.1", port, timeout=30)


def wait_delivery(ref, rcpt, result="Ok", timeout=30.0):
    """OpenSMTPD's `mta delivery` line for rcpt with that result."""
    return ref.wait_log(rf'mta delivery .* to=<{re.escape(rcpt)}> .* result="{result}".*', timeout=timeout)


def queue_lines(ref, rcpt):
    return [l for l in ref.smtpctl("show", "queue").splitlines() if rcpt in l]


def wait_gone(ref, rcpt, timeout=10.0):
    deadline = time.monotonic() + timeout
    while queue_lines(ref, rcpt):
        assert time.monotonic() < deadline, f"{rcpt} still queued: {queue_lines(ref, rcpt)}"
        time.sleep(0.1)


def for_rcpt(sink, rcpt):
    return [m for m in sink.messages() if rcpt in m.recipients]


# --------------------------------------------------------------------------


def test_world_dns_answers_what_the_test_declared(world):
    world.host("dnscheck.test", v6=False)
    world.mx("dnscheck-domain.test", ("dnscheck.test", 5))
    assert world.query("dnscheck-domain.test", "MX") == (0, 1)
    assert world.query("dnscheck.test", "A") == (0, 1)
    assert world.query("dnscheck.test", "AAAA")[1] == 0, "a host without IPv6 has no AAAA"
    assert world.query("unknown.test", "A") == (3, 0), "NXDOMAIN below .test"
    assert world.query("10.2.0.192.in-addr.arpa", "PTR")[0] in (0, 3)
    rcode, _ = world.query("example.com", "A")
    assert rcode != 0, "no upstream: nothing outside the world resolves"


def test_mx_delivery_to_smtp_sink_exactly_once(world, reference):
    sink = world.mx_sink("sink.test", "mx1.test", v6=False)
    data = message("sink")
    send(reference, "sender@relay.test", ["rcpt@sink.test"], data)
    m = wait_delivery(reference, "rcpt@sink.test")
    assert 'relay="192.0.2.' in m.group(0) and "(mx1.test)" in m.group(0), m.group(0)
    wait_gone(reference, "rcpt@sink.test")
    # OpenSMTPD is done with it (delivered, dequeued): nothing more can come.
    got = for_rcpt(sink, "rcpt@sink.test")
    assert len(got) == 1, got
    assert got[0].sender == "sender@relay.test"
    assert got[0].recipients == ["rcpt@sink.test"]
    assert got[0].client == reference.place.v4
    assert got[0].content.startswith(b"Received: "), "the relay adds its Received: on top"
    assert strip_received(got[0].content) == data


def test_fallback_past_a_refusing_mx(world, reference):
    refuser = world.refuser("refuse.test")
    sink = world.smtp_sink("mx2.test")
    world.mx("fallback.test", ("refuse.test", 10), ("mx2.test", 20))
    data = message("fallback")
    send(reference, "sender@relay.test", ["rcpt@fallback.test"], data)
    m = wait_delivery(reference, "rcpt@fallback.test")
    assert "(mx2.test)" in m.group(0), m.group(0)
    log = reference.log()
    assert re.search(r"mta connecting address=smtp://(\[?)(%s|%s)(\]?):25 host=refuse.test"
                     % (re.escape(refuser.v4), re.escape(refuser.v6)), log), "the first MX was tried"
    assert "mta error reason=IO Error: Connection refused" in log
    wait_gone(reference, "rcpt@fallback.test")
    got = for_rcpt(sink, "rcpt@fallback.test")
    assert len(got) == 1 and strip_received(got[0].content) == data


def test_fallback_past_a_421_banner(world, reference):
    busy = world.hostile("busy.test", "tempfail", at="banner")
    sink = world.smtp_sink("mx3.test")
    world.mx("busy-first.test", ("busy.test", 10), ("mx3.test", 20))
    data = message("busy-first")
    send(reference, "sender@relay.test", ["rcpt@busy-first.test"], data)
    m = wait_delivery(reference, "rcpt@busy-first.test")
    assert "(mx3.test)" in m.group(0), m.group(0)
    assert busy.wait_event(lambda e: e["ev"] == "close" and e["reason"] == "tempfail")
    got = for_rcpt(sink, "rcpt@busy-first.test")
    assert len(got) == 1 and strip_received(got[0].content) == data


def test_ipv6_only_mx(world, reference):
    sink = world.mx_sink("six.test", "mx6.test", v4=False)
    data = message("six")
    send(reference, "sender@relay.test", ["rcpt@six.test"], data)
    m = wait_delivery(reference, "rcpt@six.test")
    assert f'relay="[{sink.host.v6}] (mx6.test)"' in m.group(0), m.group(0)
    got = sink.wait_messages(1)
    assert got[0].client == f"ipv6:{reference.place.v6}"
    assert strip_received(got[0].content) == data


def test_hostile_421_after_rcpt_is_a_tempfail_and_retried(world, reference):
    bad = world.hostile("h421.test", "tempfail", at="rcpt")
    world.mx("tempfail.test", ("h421.test", 10))
    send(reference, "sender@relay.test", ["rcpt@tempfail.test"], message("tempfail"))
    m = wait_delivery(reference, "rcpt@tempfail.test", result="TempFail")
    assert "421 4.3.2 hostile" in m.group(0), m.group(0)
    cmds = bad.commands()
    assert b"RCPT TO:<rcpt@tempfail.test>" in cmds, cmds
    assert not any(c.upper().startswith(b"DATA") for c in cmds), "no DATA after a 421"
    assert queue_lines(reference, "rcpt@tempfail.test"), "kept in the queue for a retry"
    # No waiting minutes for the retry: the reference's scheduler is told.
    before = len([e for e in bad.events() if e["ev"] == "connect"])
    reference.smtpctl("schedule", "all")
    bad.wait_event(lambda e: e["ev"] == "connect" and e["conn"] > before, timeout=30)
    assert queue_lines(reference, "rcpt@tempfail.test"), "still queued after the second 421"


# --------------------------------------------------------------------------
# A smarthost: a second instance of our own daemon, STARTTLS (a test CA) and
# AUTH required, as the reference's `relay host smtp+tls://...`.


@pytest.fixture(scope="module")
def smarthost(world, workroot, smtpd_bin):
    # Relaying paused (-P mta): what it accepts stays in its queue to be
    # looked at.
    return world.smarthost("smarthost.test", os.path.join(workroot, "relay-smarthost"),
                           args=["-P", "mta"])


def opensmtpd_name():
    """The name OpenSMTPD gives itself: /etc/mailname's first line, or the
    host name."""
    try:
        with open("/etc/mailname") as f:
            name = f.readline().strip()
            if name:
                return name
    except FileNotFoundError:
        pass
    return socket.gethostname()


def test_smarthost_with_starttls_and_auth(request, world, smarthost, workroot):
    from test_receive import queued
    secrets = Path(workroot) / "relay-reference-secrets"
    secrets.write_text(f"smart relayuser:{smarthost.users['relayuser']}\n")
    os.chmod(secrets, 0o640)
    conf = (
        f"table secrets file:{secrets}\n"
        # OpenSMTPD verifies a relay's certificate with the CA of its own
        # name (smtpd.conf(5): `ca caname cert cafile`).
        f'ca {opensmtpd_name()} cert "{smarthost.ca.cert}"\n'
        "listen on 127.0.0.1\n"
        'action "smarthost" relay host smtp+tls://smart@smarthost.test:587 auth <secrets> tls\n'
        'match from local for any action "smarthost"\n'
    )
    host = world.host("relay2.test")
    ref = rw.Reference(os.path.join(workroot, "relay-reference-smarthost"), conf,
                       name="opensmtpd-smarthost", netns=host.netns, binds=world.binds())
    request.node._smtpd_instances.append(ref)
    try:
        ref.start()
        data = message("smart")
        send(ref, "sender@relay2.test", ["rcpt@elsewhere.test"], data)
        m = wait_delivery(ref, "rcpt@elsewhere.test", timeout=30)
        assert "(smarthost.test)" in m.group(0), m.group(0)
        msgs = [msg for msg, _ in queued(smarthost).values() if b"Subject: relay world smart" in msg]
        assert len(msgs) == 1
        # Our daemon's Received: says it came over TLS, authenticated.
        assert re.search(rb"with ESMTPSA id [0-9a-f]{8} \(TLSv1\.[23]:", msgs[0]), msgs[0][:600]
        assert strip_received(msgs[0]) == data
    finally:
        ref.stop()

