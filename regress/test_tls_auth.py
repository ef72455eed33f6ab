"""TLS and AUTH with real clients: STARTTLS, SMTPS, tls-require, AUTH
PLAIN/LOGIN against a credentials table, and the STARTTLS injection
(CVE-2011-0411 class) refused. The private key is only ever read by the
parent and held by ca; the handshakes here prove ca signs for the
dispatcher."""

import os
import re
import smtplib
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

import smtpd_harness as h
from test_receive import queued, smtp

HOST = "mx.regress.test"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    senders = d / "senders"
    senders.write_text("alice alice@example.org, @alice.example\n")
    return {**h.make_test_pki(d, HOST), "senders": senders}


def config(pki):
    return (
        f'pki {HOST} cert "{pki["crt"]}"\n'
        f'pki {HOST} key "{pki["key"]}"\n'
        f'table creds file:{pki["creds"]}\n'
        f'table sendermap file:{pki["senders"]}\n'
        f"listen on 127.0.0.1 tls pki {HOST} auth-optional <creds> hostname {HOST}\n"
        f"listen on 127.0.0.1 port 465 smtps pki {HOST} auth <creds> hostname {HOST}\n"
        f"listen on 127.0.0.1 port 587 tls-require pki {HOST} auth <creds> hostname {HOST}\n"
        f"listen on 127.0.0.1 port 2587 tls-require pki {HOST} auth <creds> senders <sendermap> "
        f"hostname {HOST}\n"
        f"listen on 127.0.0.1 port 2588 tls-require pki {HOST} auth <creds> "
        f"senders <sendermap> masquerade hostname {HOST}\n"
        'action "local" mbox\n'
        'action "relay" relay\n'
        'match from local for local action "local"\n'
        'match from any auth for any action "relay"\n'
    )


def insecure():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@pytest.fixture(scope="module")
def tlsd(pki, workroot):
    inst = h.Instance(os.path.join(workroot, "tls-auth"), config(pki), name="tls-auth")
    inst.start()
    yield inst
    inst.stop()


def test_starttls_then_auth_then_relay(tlsd, pki):
    s = smtp(tlsd)
    code, ehlo = s.ehlo("client.regress")
    assert b"STARTTLS" in ehlo
    assert b"AUTH" not in ehlo, "AUTH offered before TLS"
    assert s.starttls(context=insecure())[0] == 220
    code, ehlo = s.ehlo("client.regress")
    assert b"STARTTLS" not in ehlo and b"AUTH PLAIN LOGIN" in ehlo, ehlo
    cert = s.sock.getpeercert(binary_form=True)
    want = ssl.PEM_cert_to_DER_cert(Path(pki["crt"]).read_text())
    assert cert == want, "the listener's pki certificate"
    assert s.login("alice", "secret")[0] == 235
    assert s.sendmail("alice@localhost", ["someone@remote.example"], "Subject: relayed\r\n\r\nx\r\n") == {}
    s.quit()
    msgs = [m for m, _ in queued(tlsd).values() if b"Subject: relayed" in m]
    assert len(msgs) == 1
    # OpenSMTPD's form: secure and authenticated (ESMTPSA), TLS after the id.
    assert re.search(rb"with ESMTPSA id [0-9a-f]{8} \(TLSv1\.[23]:\S+:\d+:NO\)", msgs[0]), msgs[0][:400]


def test_smtps_and_auth_login(tlsd):
    with tlsd.netns():
        s = smtplib.SMTP_SSL("127.0.0.1", 465, timeout=20, context=insecure())
    code, ehlo = s.ehlo("client.regress")
    assert code == 250 and b"STARTTLS" not in ehlo
    s.user, s.password = "alice", "secret"
    assert s.auth("LOGIN", s.auth_login)[0] == 235
    assert s.sendmail("alice@localhost", ["root@localhost"], "Subject: smtps\r\n\r\nx\r\n") == {}
    s.quit()


def test_tls_require_refuses_mail_before_starttls(tlsd):
    s = smtp(tlsd, port=587)
    s.ehlo("client.regress")
    code, text = s.docmd("MAIL FROM:<a@localhost>")
    assert code == 530, text
    s.quit()


def test_auth_required_before_mail(tlsd):
    with tlsd.netns():
        s = smtplib.SMTP_SSL("127.0.0.1", 465, timeout=20, context=insecure())
    s.ehlo("client.regress")
    code, text = s.docmd("MAIL FROM:<a@localhost>")
    assert code == 530, text
    s.quit()


def test_wrong_password_is_refused_after_a_delay(tlsd):
    s = smtp(tlsd)
    s.ehlo("c")
    s.starttls(context=insecure())
    s.ehlo("c")
    t0 = time.monotonic()
    with pytest.raises(smtplib.SMTPAuthenticationError) as e:
        s.login("alice", "wrong")
    assert e.value.smtp_code == 535
    assert time.monotonic() - t0 >= 0.9, "a failed AUTH costs the client a delay"
    # Unauthenticated: no relaying.
    code, _ = s.docmd("MAIL FROM:<a@localhost>")
    assert code == 250
    code, text = s.docmd("RCPT TO:<someone@remote.example>")
    assert 500 <= code < 600, text
    s.quit()


def test_starttls_injection_is_discarded(tlsd):
    """Bytes sent after STARTTLS in the same packet must never be read as
    commands after the handshake."""
    sock = tlsd.connect()
    f = sock.makefile("rb")
    assert f.readline().startswith(b"220 ")
    sock.sendall(b"EHLO c\r\n")
    while not f.readline().startswith(b"250 "):
        pass
    sock.sendall(b"STARTTLS\r\nRSET\r\nNOOP injected\r\n")
    assert f.readline().startswith(b"220 ")
    tls = insecure().wrap_socket(sock, server_hostname=HOST)
    tf = tls.makefile("rb")
    tls.sendall(b"EHLO after\r\n")
    first = tf.readline()
    # The first reply after the handshake answers our EHLO, not an
    # injected RSET or NOOP.
    assert first.startswith(b"250-") or first.startswith(b"250 "), first
    assert b"2.0.0" not in first, first
    tls.sendall(b"QUIT\r\n")
    tls.close()


def test_senders_table_limits_what_a_user_sends_as(tlsd):
    """`senders <table>`: an authenticated user may use only the sender
    addresses the table maps it to (OpenSMTPD's 530 otherwise); the
    listener without the option lets alice send as anyone."""
    s = smtp(tlsd, port=2587)
    s.ehlo("client.regress")
    assert s.starttls(context=insecure())[0] == 220
    s.ehlo("client.regress")
    assert s.login("alice", "secret")[0] == 235
    for sender in ["alice@example.org", "Alice+list@example.org", "anyone@alice.example"]:
        assert s.mail(sender)[0] == 250, sender
        assert s.rset()[0] == 250
    for sender in ["bob@example.org", "alice@other.example", ""]:
        code, text = s.mail(sender)
        assert (code, text) == (530, b"5.7.1 Sender rejected"), (sender, code, text)
    assert s.mail("alice@example.org")[0] == 250
    assert s.rcpt("someone@remote.example")[0] == 250
    assert s.data("Subject: as alice\r\n\r\nx\r\n")[0] == 250
    s.quit()
    s = smtp(tlsd, port=587)
    s.ehlo("client.regress")
    s.starttls(context=insecure())
    s.ehlo("client.regress")
    assert s.login("alice", "secret")[0] == 235
    assert s.mail("bob@example.org")[0] == 250, "no senders table on this listener"
    s.quit()


@pytest.fixture(scope="module")
def client_pki(tmp_path_factory):
    """A CA, a client certificate it signed, and one nobody signed."""
    d = tmp_path_factory.mktemp("client-pki")

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-nodes", "-days", "2", "-newkey", "rsa:2048", "-subj", "/CN=Regress CA",
        "-keyout", "ca.key", "-out", "ca.crt")
    ext = d / "client.ext"
    ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n")
    run("req", "-nodes", "-newkey", "rsa:2048", "-subj", "/CN=client.regress",
        "-keyout", "client.key", "-out", "client.csr")
    run("x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "client.ext", "-out", "client.crt")
    run("req", "-x509", "-nodes", "-days", "2", "-newkey", "rsa:2048", "-subj", "/CN=stranger",
        "-keyout", "stranger.key", "-out", "stranger.crt")
    return d


@pytest.fixture(scope="module")
def verifyd(pki, client_pki, workroot):
    conf = (
        f'pki {HOST} cert "{pki["crt"]}"\n'
        f'pki {HOST} key "{pki["key"]}"\n'
        f'ca regressca cert "{client_pki / "ca.crt"}"\n'
        f"listen on 127.0.0.1 port 465 smtps verify pki {HOST} ca regressca hostname {HOST}\n"
        f"listen on 127.0.0.1 port 25 tls-require verify pki {HOST} ca regressca hostname {HOST}\n"
        'action "local" mbox\n'
        'match from any for local action "local"\n'
    )
    inst = h.Instance(os.path.join(workroot, "tls-verify"), conf, name="tls-verify")
    inst.start()
    yield inst
    inst.stop()


def client_ctx(client_pki, name):
    ctx = insecure()
    if name:
        ctx.load_cert_chain(client_pki / f"{name}.crt", client_pki / f"{name}.key")
    return ctx


def test_verify_accepts_only_clients_with_a_certificate_from_the_ca(verifyd, client_pki):
    """`smtps verify` and `tls-require verify`: a client certificate signed
    by the listener's CA is required; the Received line says it was
    verified (OpenSMTPD's YES)."""
    with verifyd.netns():
        s = smtplib.SMTP_SSL("127.0.0.1", 465, timeout=20, context=client_ctx(client_pki, "client"))
    assert s.ehlo("client.regress")[0] == 250
    assert s.sendmail("a@remote.example", ["root@localhost"], "Subject: verified\r\n\r\nx\r\n") == {}
    s.quit()
    msgs = [m for m, _ in queued(verifyd).values() if b"Subject: verified" in m]
    assert len(msgs) == 1 and re.search(rb"\(TLSv1\.[23]:\S+:\d+:YES\)", msgs[0]), msgs
    for name in [None, "stranger"]:
        with pytest.raises((ssl.SSLError, ConnectionError, smtplib.SMTPServerDisconnected)):
            with verifyd.netns():
                s = smtplib.SMTP_SSL("127.0.0.1", 465, timeout=20, context=client_ctx(client_pki, name))
            # TLS 1.3: the server's refusal may arrive with the first read.
            s.ehlo("client.regress")
    s = smtp(verifyd)
    s.ehlo("client.regress")
    assert s.starttls(context=client_ctx(client_pki, "client"))[0] == 220
    assert s.ehlo("client.regress")[0] == 250
    assert s.mail("a@remote.example")[0] == 250
    s.quit()
    s = smtp(verifyd)
    s.ehlo("client.regress")
    with pytest.raises((ssl.SSLError, ConnectionError, smtplib.SMTPServerDisconnected)):
        s.starttls(context=client_ctx(client_pki, None))
        s.ehlo("client.regress")


def test_senders_masquerade_rewrites_from(tlsd):
    """`senders <table> masquerade`: the From: field shows the address the
    table allowed at MAIL FROM, the display name kept."""
    s = smtp(tlsd, port=2588)
    s.ehlo("client.regress")
    assert s.starttls(context=insecure())[0] == 220
    s.ehlo("client.regress")
    assert s.login("alice", "secret")[0] == 235
    msg = "From: Alice Example <someone-else@elsewhere.example>\r\nSubject: masked\r\n\r\nbody\r\n"
    assert s.sendmail("anyone@alice.example", ["someone@remote.example"], msg) == {}
    s.quit()
    msgs = [m for m, _ in queued(tlsd).values() if b"Subject: masked" in m]
    assert len(msgs) == 1
    assert b"\r\nFrom: Alice Example <anyone@alice.example>\r\n" in msgs[0], msgs[0][:600]
    assert b"someone-else@elsewhere.example" not in msgs[0]
