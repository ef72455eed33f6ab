"""swaks, the SMTP swiss army knife, against the daemon: plain ESMTP,
PIPELINING, STARTTLS, AUTH PLAIN over TLS, SMTPS; and CHUNKING (BDAT),
which swaks does not speak, over a raw socket."""

import os
import re
import shutil
import subprocess

import pytest

import smtpd_harness as h
from test_receive import queued
from test_tls_auth import HOST, config as tls_config, pki  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is installed by `make setup`")


@pytest.fixture(scope="module")
def server(pki, workroot):  # noqa: F811
    inst = h.Instance(os.path.join(workroot, "swaks"), tls_config(pki), name="swaks")
    inst.start()
    yield inst
    inst.stop()


def swaks(inst, *args):
    cmd = ["nsenter", f"--net=/proc/{inst.parent}/ns/net", "swaks", "--server", "127.0.0.1",
           "--from", "a@localhost", "--helo", "swaks.regress", "--timeout", "20", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name, args", [
    ("plain", ["--to", "root@localhost"]),
    ("pipeline", ["--to", "root@localhost", "--pipeline"]),
    ("starttls", ["--to", "root@localhost", "--tls"]),
    ("auth-plain", ["--to", "someone@remote.example", "--tls", "--auth", "PLAIN",
                    "--auth-user", "alice", "--auth-password", "secret"]),
    ("auth-login", ["--to", "someone@remote.example", "--tls", "--auth", "LOGIN",
                    "--auth-user", "alice", "--auth-password", "secret"]),
    ("smtps", ["--to", "root@localhost", "--port", "465", "--tls-on-connect", "--auth", "PLAIN",
               "--auth-user", "alice", "--auth-password", "secret"]),
])
def test_swaks_delivers(server, name, args):
    token = f"swaks-{name}"
    r = swaks(server, "--header", f"Subject: {token}", *args)
    assert r.returncode == 0, r.stdout + r.stderr
    # swaks marks replies "<-" in the clear, "<~" over TLS.
    assert re.search(r"^<[-~]  250 2\.0\.0 [0-9a-f]{8} ", r.stdout, re.M), r.stdout
    found = [m for m, _ in queued(server).values() if token.encode() in m]
    assert len(found) == 1, f"{token}: {len(found)} queued"


def test_swaks_relay_without_auth_is_refused(server):
    r = swaks(server, "--to", "someone@remote.example")
    assert r.returncode != 0
    assert re.search(r"^<\*\*\s+550 ", r.stdout, re.M), r.stdout


def test_bdat_chunking(server):
    c = h.Client(server.connect())
    assert c.line().startswith("220 ")
    c.sock.sendall(b"EHLO raw\r\nMAIL FROM:<a@localhost>\r\nRCPT TO:<root@localhost>\r\n")
    lines = []
    while len(lines) < 3:
        line = c.line()
        if line.startswith("250-"):
            continue
        lines.append(line)
    assert all(l.startswith("250 ") for l in lines), lines
    part1 = b"Subject: chunked\r\n\r\nfirst "
    part2 = b"second\r\n.not-a-terminator\r\n"
    c.sock.sendall(b"BDAT %d\r\n" % len(part1) + part1)
    assert c.line().startswith("250 ")
    c.sock.sendall(b"BDAT %d LAST\r\n" % len(part2) + part2)
    assert re.match(r"250 2\.0\.0 ", c.line())
    c.sock.sendall(b"QUIT\r\n")
    c.close()
    found = [m for m, _ in queued(server).values() if b"Subject: chunked" in m]
    assert len(found) == 1
    assert found[0].endswith(b"first second\r\n.not-a-terminator\r\n"), found[0][-80:]
