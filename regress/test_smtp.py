"""SMTP as a client sees it today: a banner, 221 to QUIT, 421-and-close to
anything else, and OpenSMTPD-style log lines. Uses the shared instance."""

import re
import socket

import pytest

import smtpd_harness as h

CONNECTED = r"([0-9a-f]{16}) smtp connected address=127\.0\.0\.1 host=127\.0\.0\.1(?![\w.])"


def _session(daemon, port=25):
    """A new session, and the log offset after which its lines are."""
    offset = daemon.settle_sessions()
    c = h.Client(daemon.connect(port=port))
    return c, offset


def test_banner_names_the_listener_hostname(daemon):
    c, _ = _session(daemon)
    try:
        assert c.line() == f"220 {h.SHARED_HOSTNAME} ESMTP smtpd-rs"
    finally:
        c.close()


def test_banner_without_hostname_names_the_machine(daemon):
    c, _ = _session(daemon, port=2525)
    try:
        assert c.line() == f"220 {socket.gethostname()} ESMTP smtpd-rs"
    finally:
        c.close()


def test_quit(daemon):
    c, offset = _session(daemon)
    try:
        assert c.line().startswith("220 ")
        c.send("QUIT")
        assert c.line() == "221 2.0.0 Bye"
        assert c.at_eof(), "the server did not close after 221"
    finally:
        c.close()
    sid = daemon.wait_log(CONNECTED, since=offset).group(1)
    daemon.wait_log(rf"{sid} smtp disconnected reason=quit(?!\w)", since=offset)


def test_quit_is_case_insensitive(daemon):
    c, _ = _session(daemon)
    try:
        assert c.line().startswith("220 ")
        c.send("quit")
        assert c.line() == "221 2.0.0 Bye"
        assert c.at_eof()
    finally:
        c.close()


@pytest.mark.parametrize("command, reply", [
    ("HELO regress.test", r"250 "),
    ("EHLO regress.test", r"250[ -]"),
    ("NOOP", r"250 2\.0\.0 "),
    ("MAIL FROM:<a@regress.test>", r"503 5\.5\.1 "),
    ("QUITX", r"500 5\.5\.1 "),
    ("", r"500 5\.5\.1 "),
    ("VRFY root", r"252 2\.\d\.\d "),
    ("EXPN staff", r"502 5\.\d\.\d "),
    ("HELP", r"214[ -]"),
])
def test_commands_get_their_reply_and_the_session_goes_on(daemon, command, reply):
    c, offset = _session(daemon)
    try:
        assert c.line().startswith("220 ")
        c.send(command)
        line = c.line()
        assert line is not None and re.match(reply, line), repr(line)
        while line.startswith(("250-", "214-")):
            line = c.line()
        c.send("QUIT")
        assert c.line().startswith("221 ")
        assert c.at_eof()
    finally:
        c.close()
    sid = daemon.wait_log(CONNECTED, since=offset).group(1)
    daemon.wait_log(rf"{sid} smtp disconnected reason=quit(?!\w)", since=offset)


def test_too_many_errors_get_421_and_close(daemon):
    c, offset = _session(daemon)
    try:
        assert c.line().startswith("220 ")
        line = ""
        for _ in range(20):
            c.send("BOGUS")
            line = c.line()
            if line is None or line.startswith("421"):
                break
        assert line and re.match(r"421 4\.\d\.\d ", line), repr(line)
        assert c.at_eof(), "the server did not close after 421"
    finally:
        c.close()
    sid = daemon.wait_log(CONNECTED, since=offset).group(1)
    # OpenSMTPD calls every end after its own last reply `quit`.
    daemon.wait_log(rf"{sid} smtp disconnected reason=quit(?!\w)", since=offset)


def test_client_disconnect_is_logged(daemon):
    c, offset = _session(daemon)
    assert c.line().startswith("220 ")
    c.close()
    sid = daemon.wait_log(CONNECTED, since=offset).group(1)
    daemon.wait_log(rf"{sid} smtp disconnected reason=disconnect(?!\w)", since=offset)


def test_session_ids_differ(daemon):
    ids = []
    for _ in range(3):
        c, offset = _session(daemon)
        assert c.line().startswith("220 ")
        c.send("QUIT")
        assert c.line() == "221 2.0.0 Bye"
        c.close()
        ids.append(daemon.wait_log(CONNECTED, since=offset).group(1))
    assert len(set(ids)) == 3, ids


def test_overlong_line_is_refused_and_daemon_stays_up(daemon):
    """A5/A6: a line beyond 65535 bytes ends that session, not the daemon."""
    c, _ = _session(daemon)
    try:
        assert c.line().startswith("220 ")
        try:
            c.sock.sendall(b"X" * 70000)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = c.line()
        assert reply is not None and reply[:1] in ("4", "5"), repr(reply)
    finally:
        c.close()
    c, _ = _session(daemon)
    try:
        assert c.line().startswith("220 ")
    finally:
        c.close()


def test_peer_text_is_not_logged_raw(daemon):
    """A15: nothing a client sends can start a log line of its own."""
    c, offset = _session(daemon)
    try:
        assert c.line().startswith("220 ")
        c.sock.sendall(b"HELO x\ninfo: smtpd-rs 9.9.9 starting\rinfo: smtpd-rs 9.9.9 starting\r\n")
        c.line()
    finally:
        c.close()
    sid = daemon.wait_log(CONNECTED, since=offset).group(1)
    daemon.wait_log(rf"{sid} smtp disconnected", since=offset)
    text = daemon.log_since(offset)
    assert "\r" not in text, repr(text)
    for line in text.split("\n"):
        assert not line.startswith("info: smtpd-rs 9.9.9"), line
