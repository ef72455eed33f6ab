"""The relay world's own peers do what they claim (relay_world.py,
hostile_smtp.py): each hostile mode is met by a plain socket client from
another host of the world, so that a relay test that survives one has
survived the real thing. And a daemon joins the world both ways: started
in a host, or attached later, with the world's resolver either way."""

import os
import smtplib
import socket
import ssl

import pytest

import relay_world as rw
import smtpd_harness as h


@pytest.fixture(scope="module")
def world(workroot):
    w = rw.RelayWorld(os.path.join(workroot, "relay-world-selftest"))
    w.client = w.host("client.test")
    yield w
    w.close()


class Peer:
    """A raw client: reads whatever the server sends, as bytes."""

    def __init__(self, world, server, port=25, v6=False):
        addr = server.host.v6 if v6 else server.host.v4
        self.sock = world.client.connect(addr, port, timeout=5)
        self.buf = b""

    def read_until(self, pred, limit=1 << 20):
        while not pred(self.buf):
            chunk = self.sock.recv(65536)
            if not chunk or len(self.buf) > limit:
                return self.buf
            self.buf += chunk
        return self.buf

    def reply(self):
        """One complete reply (through the line whose 4th byte is a
        space), as bytes; consumed."""
        def done(b):
            for line in b.split(b"\r\n")[:-1]:
                if line[3:4] == b" ":
                    return True
            return False
        self.read_until(done)
        lines, out = self.buf.split(b"\r\n"), []
        for i, line in enumerate(lines[:-1]):
            out.append(line)
            if line[3:4] == b" ":
                self.buf = b"\r\n".join(lines[i + 1:])
                return b"\r\n".join(out) + b"\r\n"
        raise AssertionError(f"no complete reply: {self.buf[:200]!r}")

    def cmd(self, line):
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def close(self):
        self.sock.close()


def test_accept_keeps_the_data_byte_exact(world):
    srv = world.hostile("accept.test", "accept")
    with world.client.netns_ctx():
        s = smtplib.SMTP(srv.host.v6, 25, timeout=5)
    s.sendmail("a@client.test", ["b@accept.test"], b"Subject: x\r\n\r\n.dot\r\nbare\rcr\r\n")
    s.quit()
    ev = srv.wait_event(lambda e: e["ev"] == "close")
    assert srv.messages() == [b"Subject: x\r\n\r\n..dot\r\nbare\rcr\r\n"], "raw, dot-stuffed"
    assert b"rcpt to:<b@accept.test>" in [c.lower() for c in srv.commands()]
    assert ev["reason"] == "quit"


def test_long_line(world):
    srv = world.hostile("long.test", "long-line", args=["--size", "5000"])
    p = Peer(world, srv)
    assert p.reply().startswith(b"220 ")
    r = p.cmd(b"EHLO client.test")
    first = r.split(b"\r\n")[0]
    assert len(first) == 5004 and first.startswith(b"250-xxx"), len(first)
    assert r.endswith(b"250 ENHANCEDSTATUSCODES\r\n")
    p.close()


def test_endless_multiline(world):
    srv = world.hostile("endless.test", "endless", args=["--max-seconds", "20"])
    p = Peer(world, srv)
    p.reply()
    p.sock.sendall(b"EHLO client.test\r\n")
    got = p.read_until(lambda b: len(b) > 4 << 20, limit=8 << 20)
    assert len(got) > 4 << 20
    assert all(line.startswith(b"250-") for line in got.split(b"\r\n")[:-1]), "never a last line"
    p.close()


def test_control_characters_inside_replies(world):
    srv = world.hostile("ctl.test", "ctl", at="mail")
    p = Peer(world, srv)
    p.reply()
    p.cmd(b"EHLO client.test")
    r = p.cmd(b"MAIL FROM:<a@client.test>")
    assert b"bare\rCR" in r and b"NUL\0inside" in r and b"bare\nLF" in r, r
    assert r.endswith(b"250 2.1.0 Ok\r\n")
    p.close()


def test_early_reply_comes_before_the_command(world):
    srv = world.hostile("early.test", "early", at="mail")
    p = Peer(world, srv)
    p.reply()
    p.sock.sendall(b"EHLO client.test\r\n")
    ehlo = p.reply()
    assert ehlo.startswith(b"250-early.test")
    # The next reply is there before MAIL is sent.
    early = p.reply()
    assert b"early reply to a command not sent yet" in early
    assert not any(c.startswith(b"MAIL") for c in srv.commands())
    p.close()


def test_tempfail_after_data_closes(world):
    srv = world.hostile("t421.test", "tempfail", at="data")
    p = Peer(world, srv)
    p.reply()
    p.cmd(b"EHLO client.test")
    p.cmd(b"MAIL FROM:<a@client.test>")
    p.cmd(b"RCPT TO:<b@t421.test>")
    assert p.cmd(b"DATA").startswith(b"421 ")
    assert p.sock.recv(10) == b"", "closed after the 421"
    p.close()


def test_reject_at_banner_then_503(world):
    srv = world.hostile("r554.test", "reject")
    p = Peer(world, srv)
    assert p.reply().startswith(b"554 ")
    assert p.cmd(b"EHLO client.test").startswith(b"503 ")
    assert p.cmd(b"QUIT").startswith(b"221 ")
    p.close()


def test_tls_stall_never_completes_the_handshake(world):
    srv = world.hostile("stall.test", "tls-stall", args=["--max-seconds", "30"])
    p = Peer(world, srv)
    p.reply()
    assert b"STARTTLS" in p.cmd(b"EHLO client.test")
    assert p.cmd(b"STARTTLS").startswith(b"220 ")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    p.sock.settimeout(1.0)
    with pytest.raises(socket.timeout):
        ctx.wrap_socket(p.sock, server_hostname="stall.test")
    srv.wait_event(lambda e: e["ev"] == "tls")  # it got the ClientHello
    p.close()


def test_silent_sends_no_banner(world):
    srv = world.hostile("silent.test", "silent", args=["--max-seconds", "30"])
    p = Peer(world, srv)
    p.sock.settimeout(1.0)
    with pytest.raises(socket.timeout):
        p.sock.recv(1)
    p.close()


def test_inject_puts_envelope_text_in_a_multiline_reply(world):
    srv = world.hostile("inject.test", "inject", v4=False)
    p = Peer(world, srv, v6=True)
    p.reply()
    p.cmd(b"EHLO client.test")
    p.cmd(b"MAIL FROM:<a@client.test>")
    p.sock.sendall(b"RCPT TO:<b@inject.test>\r\n")
    r = p.read_until(lambda b: b"553 5.0.0" in b)
    assert b"553-\ntype: mda\n" in r and b"\r\nSubject: injected\r\n" in r, r
    p.close()


def test_smtp_sink_and_dns(world):
    sink = world.smtp_sink("sink.test")
    world.mx("sinkdomain.test", ("sink.test", 10))
    assert world.query("sinkdomain.test", "MX") == (0, 1)
    assert world.query("sink.test", "AAAA") == (0, 1)
    for addr in sink.host.addrs:
        with world.client.netns_ctx():
            s = smtplib.SMTP(addr, 25, timeout=5)
        s.sendmail("a@client.test", ["b@sinkdomain.test"], f"Subject: {addr}\r\n\r\n.x\r\n")
        s.quit()
    got = sorted(sink.wait_messages(2), key=lambda m: m.client)
    assert [m.client for m in got] == [world.client.v4, f"ipv6:{world.client.v6}"]
    assert got[0].content == f"Subject: {sink.host.v4}\r\n\r\n.x\r\n".encode()
    assert got[0].recipients == ["b@sinkdomain.test"]


def test_a_daemon_attached_later_uses_the_world(world, instances):
    inst = instances()
    place = world.attach(inst, name="attached.test")
    assert place.v4 == rw.v4_addr(place.index) and world.query("attached.test", "A") == (0, 1)
    with open(f"/proc/{inst.parent}/net/if_inet6") as f:
        assert any(line.split()[-1] == rw.IFACE for line in f)
    # Both ways over the new link: the world's DNS server from the
    # daemon's namespace, and a host of the world into it.
    for addr, fam in ((rw.v4_addr(rw.DNS_INDEX), socket.AF_INET), (rw.v6_addr(rw.DNS_INDEX), socket.AF_INET6)):
        with inst.netns():
            u = socket.socket(fam, socket.SOCK_DGRAM)
        with u:
            u.settimeout(2)
            u.sendto(bytes.fromhex("12340100000100000000000002") + b"ns\x04test\x00\x00\x01\x00\x01",
                     (addr, 53))
            assert u.recv(512)[:2] == b"\x12\x34"
    with inst.netns():
        ls = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    with ls:
        ls.bind((place.v6, 2600))
        ls.listen(1)
        world.client.connect(place.v6, 2600, timeout=2).close()


def test_a_daemon_started_in_a_host_has_the_worlds_resolver(world, workroot, smtpd_bin):
    host = world.host("inside.test")
    inst = h.Instance(os.path.join(workroot, "relay-world-inside"),
                      h.config(f"listen on {host.v4} port 25", f"listen on {host.v6} port 25"),
                      name="inside", netns=host.netns, binds=world.binds())
    try:
        inst.start()
        with open(f"/proc/{inst.parent}/root/etc/resolv.conf") as f:
            assert f"nameserver {rw.v4_addr(rw.DNS_INDEX)}" in f.read()
        for addr in host.addrs:
            p = world.client.connect(addr, 25, timeout=5)
            assert p.recv(512).startswith(b"220 ")
            p.close()
    finally:
        inst.stop()


def test_close_leaves_nothing_behind(relay_world_factory):
    w = relay_world_factory("closing")
    sink = w.smtp_sink("gone.test")
    bad = w.hostile("gone2.test", "silent")
    procs = [w.switch, w.ns.holder, sink.host.holder, bad.host.holder, bad.proc] + sink.procs
    pgids = [p.pid for p in procs]
    assert all(rw._group(g) for g in pgids)
    w.close()
    assert [g for g in pgids if rw._group(g)] == [], "a peer or a namespace holder survived"
    assert all(p.poll() is not None for p in procs)
