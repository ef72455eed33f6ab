"""Relaying (issue 7): our daemon as the relaying MTA in the relay world
(relay_world.py): MX look-ups from dnsmasq through lka, the dispatcher's
SMTP client to Postfix's smtp-sink and to hostile servers, fallback past
MXs that refuse, IPv6, bounces from 5xx replies and DNS, and a smarthost
(a second instance of our daemon) with STARTTLS, a verified certificate
and AUTH. test_relay_reference.py runs the same world with OpenSMTPD 6.8;
the cases here that it covers too behave the same way.

Deliveries are not paused (`deliver=True`): the relay runs for real."""

import os
import re
import time
from pathlib import Path

import pytest

import relay_world as rw
from smtpd_harness import Instance
from test_relay_reference import message, send, strip_received, for_rcpt

pytestmark = pytest.mark.skipif(not rw.SMTP_SINK.exists(),
                                reason="the unpacked Postfix (make setup) is needed")

RELAY_CONF = (
    "listen on 127.0.0.1\n"
    'action "relay" relay\n'
    'match from local for any action "relay"\n'
)


@pytest.fixture(scope="module")
def world(workroot):
    w = rw.RelayWorld(os.path.join(workroot, "relay-world"))
    yield w
    w.close()


def relaying(request, world, workroot, host, dirname, conf, v6=True, deliver=True, args=()):
    """An instance of ours as `host` of the world (a Host, or a name to
    make one), deliveries on unless told, started; its log is shown if
    the test fails, and it is stopped when the test ends."""
    if isinstance(host, str):
        host = world.host(host, v6=v6)
    inst = Instance(os.path.join(workroot, dirname), conf, name=dirname, netns=host.netns,
                    binds=world.binds(), deliver=deliver, args=args)
    request.node._smtpd_instances.append(inst)
    request.addfinalizer(inst.stop)
    inst.start()
    inst.place = host
    return inst


@pytest.fixture(scope="module")
def relay(world, workroot):
    host = world.host("ours.test")
    inst = Instance(os.path.join(workroot, "relay-ours"), RELAY_CONF, name="relay",
                    netns=host.netns, binds=world.binds(), deliver=True)
    inst.start()
    inst.place = host
    yield inst
    inst.stop()


@pytest.fixture(autouse=True)
def _show_logs(request):
    for name in ("relay",):
        if name in request.fixturenames:
            request.node._smtpd_instances.append(request.getfixturevalue(name))


def wait_delivery(inst, rcpt, result="Ok", timeout=30.0):
    """Our `mta delivery` line for rcpt with that result."""
    return inst.wait_log(rf'mta delivery .* to=<{re.escape(rcpt)}> .* result="{result}".*',
                         timeout=timeout)


def queued_for(inst, rcpt):
    """Envelope files in the spool naming rcpt (what is still queued)."""
    root = Path(inst.spool)
    out = []
    for p in (root / "queue").rglob("*"):
        if p.is_file() and re.fullmatch(r"[0-9a-f]{16}", p.name) and rcpt.encode() in p.read_bytes():
            out.append(p)
    return out


def wait_dequeued(inst, rcpt, timeout=10.0):
    deadline = time.monotonic() + timeout
    while queued_for(inst, rcpt):
        assert time.monotonic() < deadline, f"{rcpt} still queued"
        time.sleep(0.1)


# --------------------------------------------------------------------------


def test_mx_delivery_to_smtp_sink_exactly_once(world, relay):
    sink = world.mx_sink("sink.test", "mx1.test", v6=False)
    data = message("sink")
    send(relay, "sender@ours.test", ["rcpt@sink.test"], data)
    m = wait_delivery(relay, "rcpt@sink.test")
    assert f'relay="{sink.host.v4} (mx1.test)"' in m.group(0), m.group(0)
    assert "rcpt=<->" in m.group(0), "as OpenSMTPD: the original only when it differs"
    assert f'source="{relay.place.v4}"' in m.group(0), m.group(0)
    wait_dequeued(relay, "rcpt@sink.test")
    got = for_rcpt(sink, "rcpt@sink.test")
    assert len(got) == 1, got
    assert got[0].sender == "sender@ours.test"
    assert got[0].recipients == ["rcpt@sink.test"]
    assert got[0].content.startswith(b"Received: "), "our Received: on top"
    assert strip_received(got[0].content) == data


def test_recipients_of_one_domain_share_a_transaction(world, relay):
    sink = world.mx_sink("multi.test", "mx-multi.test", v6=False)
    rcpts = [f"r{i}@multi.test" for i in range(3)]
    data = message("multi")
    send(relay, "sender@ours.test", rcpts, data)
    for r in rcpts:
        wait_delivery(relay, r)
    got = sink.wait_messages(1)
    assert len(got) == 1, got
    assert sorted(got[0].recipients) == rcpts
    assert strip_received(got[0].content) == data


def test_fallback_past_a_refusing_mx_and_a_421_banner(world, relay):
    world.refuser("refuse.test")
    busy = world.hostile("busy.test", "tempfail", at="banner")
    sink = world.smtp_sink("mx2.test")
    world.mx("fallback.test", ("refuse.test", 10), ("busy.test", 20), ("mx2.test", 30))
    data = message("fallback")
    send(relay, "sender@ours.test", ["rcpt@fallback.test"], data)
    m = wait_delivery(relay, "rcpt@fallback.test")
    assert "(mx2.test)" in m.group(0), m.group(0)
    log = relay.log()
    assert re.search(r"mta connecting address=smtp://\S+ host=refuse.test", log)
    assert re.search(r"mta error reason=\"[^\"]*[Rr]efused", log), "the refusal is logged"
    assert busy.wait_event(lambda e: e["ev"] == "close")
    got = for_rcpt(sink, "rcpt@fallback.test")
    assert len(got) == 1 and strip_received(got[0].content) == data


def test_ipv6_only_mx(world, relay):
    sink = world.mx_sink("six.test", "mx6.test", v4=False)
    data = message("six")
    send(relay, "sender@ours.test", ["rcpt@six.test"], data)
    m = wait_delivery(relay, "rcpt@six.test")
    assert f'relay="[{sink.host.v6}] (mx6.test)"' in m.group(0), m.group(0)
    got = sink.wait_messages(1)
    assert strip_received(got[0].content) == data


@pytest.fixture(scope="module")
def bounces(world):
    """Where bounces to senders@bounce.test arrive."""
    sink = world.mx_sink("bounce.test", "mx-bounce.test", v6=False)
    return sink


def bounce_for(sink, token, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        got = [m for m in sink.messages() if token.encode() in m.content and m.sender == ""]
        if got:
            return got
        assert time.monotonic() < deadline, f"no bounce mentioning {token}"
        time.sleep(0.2)


def test_a_5xx_recipient_bounces_with_the_reply_quoted(world, relay, bounces):
    bad = world.hostile("h550.test", "reject", at="rcpt", args=("--code", "550"))
    world.mx("reject.test", ("h550.test", 10))
    send(relay, "someone@bounce.test", ["rcpt@reject.test"], message("reject"))
    m = wait_delivery(relay, "rcpt@reject.test", result="PermFail")
    assert 'stat="550' in m.group(0), m.group(0)
    (b,) = bounce_for(bounces, "rcpt@reject.test")
    assert b.recipients == ["someone@bounce.test"]
    assert b"550" in b.content
    assert b"Content-Type: message/delivery-status" in b.content
    assert any(c.upper().startswith(b"RCPT") for c in bad.commands())
    wait_dequeued(relay, "rcpt@reject.test")


def test_a_null_mx_and_a_missing_domain_bounce_at_once(world, relay, bounces):
    world.dns_option("--mx-host=nullmx.test,.,0")
    send(relay, "someone@bounce.test", ["rcpt@nullmx.test"], message("nullmx"))
    send(relay, "someone@bounce.test", ["rcpt@nowhere-at-all.test"], message("nowhere"))
    m = wait_delivery(relay, "rcpt@nullmx.test", result="PermFail")
    assert "does not accept mail" in m.group(0), m.group(0)
    m = wait_delivery(relay, "rcpt@nowhere-at-all.test", result="PermFail")
    assert "does not exist" in m.group(0), m.group(0)
    bounce_for(bounces, "rcpt@nullmx.test")
    bounce_for(bounces, "rcpt@nowhere-at-all.test")


# Hostile servers (A12): each ends in a retry or a bounce of that envelope
# with a log line; nothing they send reaches a queue file, a DSN header or
# a log line as a line of its own; the daemon goes on relaying.
HOSTILE = [
    ("long-line", "ehlo", ()),
    ("endless", "ehlo", ("--max-seconds", "20")),
    ("ctl", "ehlo", ()),
    ("early", "mail", ()),
    ("tempfail", "rcpt", ()),
    ("tempfail", "dot", ()),
    ("inject", "rcpt", ()),
    ("inject", "mail", ("--code", "451")),
]


@pytest.mark.parametrize("mode,at,args", HOSTILE, ids=[f"{m}-{a}-{len(x)}" for m, a, x in HOSTILE])
def test_hostile_server(world, relay, bounces, mode, at, args):
    tag = f"{mode}-{at}-{len(args)}"
    name = f"h-{tag}.test"
    world.hostile(name, mode, at=at, args=args)
    domain = f"d-{tag}.test"
    world.mx(domain, (name, 10))
    offset = relay.log_size()
    send(relay, "someone@bounce.test", [f"rcpt@{domain}"], message(tag.replace("-", "")))
    m = relay.wait_log(rf'mta delivery .* to=<rcpt@{re.escape(domain)}> .* result="(TempFail|PermFail)"',
                       timeout=40, since=offset)
    log = relay.log()[offset:]
    for forged in ("type: mda", "mda-exec", "X-Injected", "errorline", "dispatcher: local"):
        for line in log.splitlines():
            assert not line.startswith(forged), f"injected log line: {line!r}"
    for env in queued_for(relay, f"rcpt@{domain}"):
        text = env.read_bytes()
        assert b"/tmp/smtpd-rs-injected" not in text, "reply text in an envelope"
    assert not Path("/tmp/smtpd-rs-injected").exists()
    if m.group(1) == "PermFail":
        for b in bounce_for(bounces, f"rcpt@{domain}"):
            header = b.content.split(b"\r\n\r\n", 1)[0]
            assert b"X-Injected" not in header and b"Subject: injected" not in header


def test_the_daemon_relays_on_after_the_hostile_ones(world, relay):
    sink = world.mx_sink("after.test", "mx-after.test", v6=False)
    send(relay, "sender@ours.test", ["rcpt@after.test"], message("after"))
    wait_delivery(relay, "rcpt@after.test")
    assert len(for_rcpt(sink, "rcpt@after.test")) == 1


# --------------------------------------------------------------------------
# A smarthost: a second instance of our daemon, STARTTLS with a test CA and
# AUTH, as `relay host smtp+tls://label@host:587 auth <secrets> tls`.


def test_smarthost_with_verified_starttls_and_auth(request, world, workroot):
    from test_receive import queued
    smart = world.smarthost("smart-ours.test", os.path.join(workroot, "relay-ours-smarthost"),
                            args=["-P", "mta"])
    request.node._smtpd_instances.append(smart)
    secrets = Path(workroot) / "relay-ours-secrets"
    secrets.write_text("smart relayuser:secret\n")
    os.chmod(secrets, 0o640)
    conf = (
        f"table secrets file:{secrets}\n"
        f'ca testca cert "{smart.ca.cert}"\n'
        "listen on 127.0.0.1\n"
        'action "smarthost" relay host smtp+tls://smart@smart-ours.test:587 '
        "auth <secrets> tls ca testca\n"
        'match from local for any action "smarthost"\n'
    )
    inst = relaying(request, world, workroot, "ours2.test", "relay-ours-2", conf)
    data = message("smart")
    send(inst, "sender@ours2.test", ["rcpt@elsewhere.test"], data)
    m = wait_delivery(inst, "rcpt@elsewhere.test")
    assert "(smart-ours.test)" in m.group(0), m.group(0)
    assert re.search(r"mta tls ciphers=TLSv1\.[23]", inst.log())
    msgs = [msg for msg, _ in queued(smart).values() if b"Subject: relay world smart" in msg]
    assert len(msgs) == 1
    assert re.search(rb"with ESMTPSA id [0-9a-f]{8} \(TLSv1\.[23]:", msgs[0]), msgs[0][:600]
    assert strip_received(msgs[0]) == data


def test_a_smarthost_with_an_untrusted_certificate_is_not_used(request, world, workroot):
    """`tls` verifies: a certificate from another CA fails the session
    before AUTH (the engine sends credentials only after TLS is up), the
    mail stays queued (TempFail) and never reaches the smarthost."""
    smart = world.smarthost("smart-other.test", os.path.join(workroot, "relay-ours-other"),
                            args=["-P", "mta"])
    request.node._smtpd_instances.append(smart)
    other = rw.TestCA(Path(workroot) / "relay-ours-other-ca")
    secrets = Path(workroot) / "relay-ours-secrets-2"
    secrets.write_text("smart relayuser:secret\n")
    os.chmod(secrets, 0o640)
    conf = (
        f"table secrets file:{secrets}\n"
        f'ca otherca cert "{other.cert}"\n'
        "listen on 127.0.0.1\n"
        'action "smarthost" relay host smtp+tls://smart@smart-other.test:587 '
        "auth <secrets> tls ca otherca\n"
        'match from local for any action "smarthost"\n'
    )
    inst = relaying(request, world, workroot, "ours3.test", "relay-ours-3", conf)
    send(inst, "sender@ours3.test", ["rcpt@elsewhere.test"], message("untrusted"))
    m = wait_delivery(inst, "rcpt@elsewhere.test", result="TempFail")
    assert "tls" in m.group(0).lower() or "certificate" in m.group(0).lower(), m.group(0)
    from test_receive import queued
    assert not [m for m, _ in queued(smart).values() if b"relay world untrusted" in m]
    assert queued_for(inst, "rcpt@elsewhere.test"), "kept for a retry"



def test_a_silent_server_and_a_stalled_tls_handshake_time_out(world, relay, bounces):
    """A server that never sends its banner and one that takes STARTTLS
    and then never completes the handshake: each try ends after the
    greeting timeout (60 s) with a TempFail and a log line, and meanwhile
    other mail is relayed. One address each (IPv4), both at once."""
    silent = world.hostile("h-silent.test", "silent", v6=False)
    stall = world.hostile("h-stall.test", "tls-stall", v6=False)
    world.mx("silent.test", ("h-silent.test", 10))
    world.mx("stall.test", ("h-stall.test", 10))
    sink = world.mx_sink("meanwhile.test", "mx-meanwhile.test", v6=False)
    offset = relay.log_size()
    start = time.monotonic()
    send(relay, "someone@bounce.test", ["rcpt@silent.test"], message("silent"))
    send(relay, "someone@bounce.test", ["rcpt@stall.test"], message("stall"))
    send(relay, "sender@ours.test", ["rcpt@meanwhile.test"], message("meanwhile"))
    relay.wait_log(r'mta delivery .* to=<rcpt@meanwhile.test> .* result="Ok"', timeout=20, since=offset)
    assert len(for_rcpt(sink, "rcpt@meanwhile.test")) == 1
    assert time.monotonic() - start < 30, "the stalled peers held up other mail"
    for domain, why in (("silent.test", "timeout"), ("stall.test", "timeout")):
        m = relay.wait_log(rf'mta delivery .* to=<rcpt@{domain}> .* result="TempFail" stat="[^"]*{why}',
                           timeout=120, since=offset)
        assert m
    assert stall.wait_event(lambda e: e["ev"] == "stall")
    assert queued_for(relay, "rcpt@silent.test") and queued_for(relay, "rcpt@stall.test")
    assert silent.wait_event(lambda e: e["ev"] == "connect")


def test_a_relay_presents_its_client_certificate_signed_in_ca(request, world, workroot):
    """`relay ... pki NAME`: the destination (our daemon, `tls-require
    verify`) takes only certificates from its CA; the relay's key is in
    its ca role, which signs the handshake for the dispatcher."""
    ca = rw.TestCA(Path(workroot) / "relay-client-ca")
    dest_host = world.host("verify-dest.test")
    crt, key = ca.issue("verify-dest.test")
    dest_conf = (
        f'pki verify-dest.test cert "{crt}"\npki verify-dest.test key "{key}"\n'
        f'ca clients cert "{ca.cert}"\n'
        + "".join(f"listen on {a} tls-require verify pki verify-dest.test ca clients\n"
                  for a in dest_host.addrs)
        + 'action "keep" relay\nmatch from any for any action "keep"\n'
    )
    dest = relaying(request, world, workroot, dest_host, "relay-verify-dest", dest_conf,
                    deliver=False, args=["-P", "mta"])
    ccrt, ckey = ca.issue("client.ours4.test", usage="clientAuth")
    conf = (
        f'pki client cert "{ccrt}"\npki client key "{ckey}"\n'
        f'ca testca cert "{ca.cert}"\n'
        "listen on 127.0.0.1\n"
        'action "out" relay host smtp+tls://verify-dest.test pki client tls ca testca\n'
        'match from local for any action "out"\n'
    )
    inst = relaying(request, world, workroot, "ours4.test", "relay-ours-4", conf)
    from test_receive import queued
    data = message("clientcert")
    send(inst, "sender@ours4.test", ["rcpt@anywhere.test"], data)
    wait_delivery(inst, "rcpt@anywhere.test")
    msgs = [m for m, _ in queued(dest).values() if b"relay world clientcert" in m]
    assert len(msgs) == 1
    # The destination verified the certificate: its Received says YES.
    assert re.search(rb"\(TLSv1\.[23]:[A-Z0-9_]+:\d+:YES\)", msgs[0]), msgs[0][:600]


def test_src_and_helo_src_choose_the_source_address_and_greeting(request, world, workroot):
    """`src <table>`: connect from the table's address of the target's
    family (here a second address of the host); `helo-src <table>`: greet
    with the name that address maps to."""
    dest = world.hostile("h-src.test", "accept", v6=False)
    world.mx("src.test", ("h-src.test", 10))
    host = world.host("ours5.test", v6=False)
    extra = "192.0.2.250"
    host.sh(["ip", "addr", "add", f"{extra}/24", "dev", "world0"])
    conf = (
        f"table srcs {{ {extra} }}\n"
        f"table helos {{ {extra} = helo-from-src.test }}\n"
        "listen on 127.0.0.1\n"
        'action "out" relay src <srcs> helo-src <helos>\n'
        'match from local for any action "out"\n'
    )
    inst = relaying(request, world, workroot, host, "relay-ours-5", conf)
    send(inst, "sender@ours5.test", ["rcpt@src.test"], message("src"))
    m = wait_delivery(inst, "rcpt@src.test")
    assert f'source="{extra}"' in m.group(0), m.group(0)
    ev = dest.wait_event(lambda e: e["ev"] == "connect")
    assert ev["peer"] == extra, ev
    assert b"EHLO helo-from-src.test" in dest.commands()


def test_a_temporary_failure_is_retried_on_the_relay_backoff(world, relay):
    """After a 4xx the envelope stays queued with its error and retry
    count, its next try OpenSMTPD's relay backoff away (400 s after the
    first); `smtpctl schedule` makes the mta try it again now."""
    from test_smtpctl import ok
    bad = world.hostile("h-retry.test", "tempfail", at="rcpt", v6=False)
    world.mx("retry.test", ("h-retry.test", 10))
    send(relay, "sender@ours.test", ["rcpt@retry.test"], message("retry"))
    wait_delivery(relay, "rcpt@retry.test", result="TempFail")

    def line():
        lines = [l for l in ok(relay, "show", "queue").splitlines() if "rcpt@retry.test" in l]
        assert len(lines) == 1, lines
        return lines[0].split("|")

    f = line()
    deadline = time.monotonic() + 10
    while f[11] != "pending":  # the outcome reaches the scheduler just after the log line
        assert time.monotonic() < deadline, f
        time.sleep(0.1)
        f = line()
    assert f[2] == "mta" and f[10] == "1", f
    assert 380 <= int(f[12]) <= 400, f"next try in {f[12]} s, not the relay backoff"
    assert "421" in f[13], f
    connects = len([e for e in bad.events() if e["ev"] == "connect"])
    assert ok(relay, "schedule", f[0]) == "1 envelope scheduled\n"
    bad.wait_event(lambda e: e["ev"] == "connect" and e["conn"] > connects, timeout=20)
    deadline = time.monotonic() + 20
    while line()[10] != "2":
        assert time.monotonic() < deadline, line()
        time.sleep(0.1)
    f = line()
    # The second step of the backoff: 400 s x 2^2 from ctime.
    assert int(f[12]) > 1200, f


def test_srs_rewrites_forwarded_senders_and_routes_their_bounces_back(request, world, workroot):
    """`srs key` + `relay ... srs`: mail an alias forwards to another
    domain leaves with an SRS0 sender at the alias's domain; a bounce to
    that address is sent to the original sender. A forged one is not."""
    far = world.mx_sink("far.test", "mx-far.test", v6=False)
    origin = world.mx_sink("origin.test", "mx-origin.test", v6=False)
    conf = (
        "srs key s3cr3t\n"
        "table aliases { fwd = someone@far.test }\n"
        "listen on 127.0.0.1\n"
        'action "local" mbox alias <aliases>\n'
        'action "out" relay srs\n'
        'match from local for domain "local.test" action "local"\n'
        'match from local for any action "out"\n'
    )
    inst = relaying(request, world, workroot, "ours6.test", "relay-ours-srs", conf, v6=False)
    send(inst, "orig@origin.test", ["fwd@local.test"], message("srs"))
    wait_delivery(inst, "someone@far.test")
    (got,) = far.wait_messages(1)
    assert re.fullmatch(r"SRS0=[A-Za-z0-9+_]{4}=[A-Z2-7]{2}=origin\.test=orig@local\.test", got.sender), got.sender
    assert got.recipients == ["someone@far.test"]

    # The far side bounces to the SRS sender: it goes to orig@origin.test.
    send(inst, "", [got.sender], message("srsbounce"))
    wait_delivery(inst, "orig@origin.test")
    (b,) = origin.wait_messages(1)
    assert b.recipients == ["orig@origin.test"] and b.sender == ""

    # A forged SRS address (wrong hash) is not decoded: nobody local
    # has that name, so it is refused.
    forged = "SRS0=AAAA" + got.sender[9:]
    with inst.netns():
        import smtplib
        s = smtplib.SMTP("127.0.0.1", 25, timeout=10)
        try:
            s.ehlo()
            s.mail("")
            code, _ = s.rcpt(forged)
            assert code >= 500, code
        finally:
            s.quit()
    assert "SRS failed to decode" in inst.log()


def test_a_domain_table_picks_the_relay_host_per_domain(request, world, workroot):
    """`relay domain <table>`: mail for a listed domain goes to its host
    (no MX is asked); other domains go by MX."""
    special = world.smtp_sink("special-gw.test", v6=False)
    plain = world.mx_sink("plain.test", "mx-plain.test", v6=False)
    # mapped.test has no MX at all: only the table can route it.
    conf = (
        'table routes { mapped.test = "smtp://special-gw.test:25" }\n'
        "listen on 127.0.0.1\n"
        'action "out" relay domain <routes>\n'
        'match from local for any action "out"\n'
    )
    inst = relaying(request, world, workroot, "ours7.test", "relay-ours-domain", conf, v6=False)
    send(inst, "sender@ours7.test", ["a@mapped.test", "b@plain.test"], message("domains"))
    wait_delivery(inst, "a@mapped.test")
    wait_delivery(inst, "b@plain.test")
    assert [m.recipients for m in special.wait_messages(1)] == [["a@mapped.test"]]
    assert [m.recipients for m in plain.wait_messages(1)] == [["b@plain.test"]]
