"""sendmail, mailq, newaliases and makemap: smtpctl called by those names
(symbolic links, as `make install` makes hard links), run as root and as
real users inside an instance's mount namespace, where
/var/run/smtpd.sock and /var/spool/smtpd are the instance's own.

sendmail hands the message to the running daemon over an SMTP session
that control opens for it (OpenSMTPD's enqueue); with the daemon stopped
it writes the message to the offline queue, which the daemon enqueues
when it starts. Mail stays queued (the harness runs -P mda): each test
reads the queue with smtpctl, and the message from the spool."""

import os
import re
import smtplib
import socket
import subprocess
import time

import pytest

import smtpd_harness as h
from test_smtpctl import LINE, smtpctl_bin

CONF = h.config("listen on 127.0.0.1")
NOBODY = 65534
EX_SOFTWARE = 70
EX_TEMPFAIL = 75


def mailname():
    """The domain sendmail qualifies bare names with: /etc/mail/mailname,
    else the host name (what it does itself)."""
    try:
        with open("/etc/mail/mailname") as f:
            name = f.readline().strip()
            if name:
                return name
    except OSError:
        pass
    return socket.gethostname()


@pytest.fixture(scope="module")
def names(workroot):
    """A directory of links to smtpctl by each of its other names."""
    d = os.path.join(workroot, "sendmail-names")
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o755)
    for n in ("sendmail", "mailq", "newaliases", "makemap"):
        p = os.path.join(d, n)
        if not os.path.lexists(p):
            os.symlink(smtpctl_bin(), p)
    return d


def run(names, inst, name, *args, stdin=b"", user=None, timeout=30):
    """Run smtpctl as `name` in the instance's mount namespace, as root or
    as uid `user`."""
    argv = ["nsenter", f"--mount=/proc/{inst.parent}/ns/mnt", "--"]
    if user is not None:
        argv += ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
    argv += [os.path.join(names, name), *args]
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout)


def queue(inst):
    r = subprocess.run(["nsenter", f"--mount=/proc/{inst.parent}/ns/mnt", "--", smtpctl_bin(),
                        "show", "queue"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r
    lines = [LINE.fullmatch(x) for x in r.stdout.splitlines()]
    assert all(lines), r.stdout
    return [m.groupdict() for m in lines]


def message(inst, evpid):
    r = subprocess.run(["nsenter", f"--mount=/proc/{inst.parent}/ns/mnt", "--", smtpctl_bin(),
                        "show", "message", evpid], capture_output=True, timeout=30)
    assert r.returncode == 0, r
    # The spool keeps SMTP's CRLF.
    return r.stdout.decode().replace("\r\n", "\n")


def headers(text):
    return text.split("\n\n", 1)[0]


def ok(r):
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return r


@pytest.fixture
def inst(instances):
    return instances(CONF)


# ------------------------------------------------------------ sendmail


def test_sendmail_t_takes_recipients_from_headers_and_drops_bcc(names, inst):
    host = mailname()
    msg = (b"To: root\n"
           b"Cc: Someone Else <root+cc@localhost>,\n"
           b"  \"Last, First\" <root+cc2@localhost>\n"
           b"Bcc: root+hidden@localhost\n"
           b"Subject: sendmail -t\n"
           b"\n"
           b"the body\n")
    # From a shell pipe, as scripts call it.
    argv = ["nsenter", f"--mount=/proc/{inst.parent}/ns/mnt", "--", "/bin/sh", "-c",
            f"printf '%s' \"$1\" | {names}/sendmail -t", "sh", msg.decode()]
    ok(subprocess.run(argv, capture_output=True, timeout=30))
    q = queue(inst)
    assert sorted(x["rcpt"] for x in q) == sorted(
        [f"root@{host}", "root+cc@localhost", "root+cc2@localhost", "root+hidden@localhost"])
    assert {x["sender"] for x in q} == {f"root@{host}"}
    # From the local socket.
    assert {x["src"] for x in q} == {"local"}
    text = message(inst, q[0]["id"])
    hdr = headers(text)
    assert "hidden" not in text
    assert "Bcc" not in hdr
    assert re.search(r"^Received: from localhost \(\S+ \[local\]\)", hdr, re.M), hdr
    assert re.search(r"^Cc: Someone Else <root\+cc@localhost>,\n  \"Last, First\"", hdr, re.M)
    # Added, as OpenSMTPD's enqueue and server add them.
    assert re.search(rf"^From: .*<root@{re.escape(host)}>$", hdr, re.M), hdr
    assert re.search(r"^Date: ", hdr, re.M)
    assert re.search(r"^Message-Id: <", hdr, re.M)
    assert text.endswith("\n\nthe body\n")
    inst.wait_log(r"smtp connected address=local host=")


def test_sendmail_as_a_user_sends_as_that_user(names, inst):
    host = mailname()
    r = ok(run(names, inst, "sendmail", "root", stdin=b"Subject: hi\n\nfrom nobody\n", user=NOBODY))
    assert r.stdout == b"" and r.stderr == b""
    [e] = queue(inst)
    assert (e["sender"], e["rcpt"]) == (f"nobody@{host}", f"root@{host}")
    hdr = headers(message(inst, e["id"]))
    # The user's full name (nobody's GECOS field).
    assert re.search(rf"^From: nobody <nobody@{re.escape(host)}>$", hdr, re.M), hdr


def test_sendmail_f_and_F_set_sender_and_name(names, inst):
    ok(run(names, inst, "sendmail", "-f", "bounces@example.org", "-FJoe Q. Public",
           "root@localhost", stdin=b"Subject: f\n\nbody\n"))
    [e] = queue(inst)
    assert e["sender"] == "bounces@example.org"
    hdr = headers(message(inst, e["id"]))
    assert "From: Joe Q. Public <bounces@example.org>" in hdr.split("\n")


def test_sendmail_a_lone_dot_ends_input_unless_i(names, inst):
    body = b"Subject: dots\n\nline one\n.\nline three\n..two dots\n"
    ok(run(names, inst, "sendmail", "root+plain@localhost", stdin=body))
    ok(run(names, inst, "sendmail", "-i", "root+i@localhost", stdin=body))
    ok(run(names, inst, "sendmail", "-oi", "root+oi@localhost", stdin=body))
    texts = {x["rcpt"]: message(inst, x["id"]) for x in queue(inst)}
    assert texts["root+plain@localhost"].endswith("\n\nline one\n")
    for r in ("root+i@localhost", "root+oi@localhost"):
        # Dots reach the queue as they were written (SMTP's stuffing undone).
        assert texts[r].endswith("\n\nline one\n.\nline three\n..two dots\n"), texts[r]


def test_sendmail_refused_recipient_fails(names, inst):
    r = run(names, inst, "sendmail", "nosuchuser-sendmail@localhost", stdin=b"Subject: x\n\nx\n")
    assert r.returncode == EX_SOFTWARE
    assert b"command failed: 550" in r.stderr
    assert queue(inst) == []
    r = run(names, inst, "sendmail", stdin=b"Subject: x\n\nno one\n")
    assert r.returncode == EX_SOFTWARE and b"no recipients" in r.stderr


def test_sendmail_is_refused_while_smtp_is_paused(names, inst):
    ok(subprocess.run(["nsenter", f"--mount=/proc/{inst.parent}/ns/mnt", "--", smtpctl_bin(),
                       "pause", "smtp"], capture_output=True, timeout=30))
    r = run(names, inst, "sendmail", "root", stdin=b"x\n")
    assert r.returncode == 1 and b"server disallowed submission request" in r.stderr
    assert queue(inst) == []


def test_sendmail_bs_speaks_smtp_on_stdin_and_stdout(names, inst):
    p = subprocess.Popen(["nsenter", f"--mount=/proc/{inst.parent}/ns/mnt", "--",
                          os.path.join(names, "sendmail"), "-bs"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def reply():
        lines = []
        while True:
            line = p.stdout.readline().decode()
            assert line, lines
            lines.append(line)
            if line[3:4] == " ":
                return lines

    try:
        assert reply()[0].startswith("220 ")
        for cmd, code in (("EHLO client.test", "250"), ("MAIL FROM:<bs@example.org>", "250"),
                          ("RCPT TO:<root@localhost>", "250"), ("DATA", "354")):
            p.stdin.write(cmd.encode() + b"\r\n")
            p.stdin.flush()
            assert reply()[-1].startswith(code), cmd
        p.stdin.write(b"Subject: bs\r\n\r\nhello\r\n.\r\n")
        p.stdin.flush()
        assert reply()[-1].startswith("250 ")
        p.stdin.write(b"QUIT\r\n")
        p.stdin.flush()
        assert reply()[-1].startswith("221 ")
        p.stdin.close()
        assert p.wait(timeout=10) == 0
    finally:
        p.kill()
    [e] = queue(inst)
    assert (e["sender"], e["rcpt"], e["src"]) == ("bs@example.org", "root@localhost", "local")


def test_mailq_and_sendmail_bp_show_the_queue(names, inst):
    ok(run(names, inst, "sendmail", "root@localhost", stdin=b"Subject: q\n\nq\n"))
    [e] = queue(inst)
    for name, args in (("mailq", ()), ("sendmail", ("-bp",))):
        r = ok(run(names, inst, name, *args))
        [line] = r.stdout.decode().splitlines()
        assert line.startswith(e["id"] + "|local|mda||"), line


def test_sendmail_sessions_match_from_socket_with_its_listener_options(names, instances):
    """`listen on socket` sets the options of sendmail's sessions (here
    a tag), and only they match `from socket`; a TCP client from
    127.0.0.1 is `from local` but not `from socket`."""
    conf = ("listen on 127.0.0.1\n"
            "listen on socket tag SOCK\n"
            "action \"local\" mbox\n"
            "match from socket tag SOCK for domain \"sock.test\" action \"local\"\n"
            "match from local for local action \"local\"\n")
    inst = instances(conf)
    ok(run(names, inst, "sendmail", "root@sock.test", stdin=b"Subject: s\n\ns\n"))
    [e] = queue(inst)
    assert (e["rcpt"], e["src"]) == ("root@sock.test", "local")
    with inst.netns():
        s = smtplib.SMTP("127.0.0.1", 25, timeout=10)
        try:
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                s.sendmail("a@example.org", ["root@sock.test"], "Subject: t\r\n\r\nt\r\n")
        finally:
            s.quit()
    assert len(queue(inst)) == 1


# ------------------------------------------------------------ offline


def in_spool(spool, names, *args, stdin):
    """Run sendmail with `spool` as /var/spool/smtpd and no inst: an
    empty /var/run, as on a machine where smtpd is stopped."""
    script = ('set -e; mount -t tmpfs -o mode=0755 tmpfs /var/run; '
              'mount --bind "$1" /var/spool/smtpd; shift; exec "$@"')
    argv = ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, "sh",
            str(spool), os.path.join(names, "sendmail"), *args]
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=30)


def test_sendmail_without_daemon_writes_offline_and_smtpd_enqueues_it(names, instances, workroot):
    # The spool of a inst that ran once (it made offline/), now stopped.
    first = instances(CONF, name="offline-first")
    spool = first.spool
    first.stop()
    off = spool / "offline"
    st = os.stat(off)
    assert (st.st_mode & 0o7777, st.st_uid) == (0o770, 0)
    msg = b"To: root+offline@localhost\nSubject: offline\n\nwritten while smtpd was down\n"
    r = in_spool(spool, names, "-t", "-F", "Off Line", stdin=msg)
    assert r.returncode == EX_TEMPFAIL, r
    [f] = list(off.iterdir())
    st = os.stat(f)
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o600, 0, os.stat(off).st_gid)
    # The arguments, then the message as it was given.
    assert f.read_bytes() == b"-t|-F|Off Line\n" + msg

    # A user who may not write there is told so (smtpctl is not
    # set-group-id here).
    r = in_spool(spool, names, "root", stdin=b"x\n")
    r2 = subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
                         'set -e; mount -t tmpfs -o mode=0755 tmpfs /var/run; '
                         'mount --bind "$1" /var/spool/smtpd; shift; exec "$@"', "sh", str(spool),
                         "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                         os.path.join(names, "sendmail"), "root"],
                        input=b"x\n", capture_output=True, timeout=30)
    assert r2.returncode == 69 and b"cannot create temporary file" in r2.stderr, r2
    assert len(list(off.iterdir())) == 2  # root's second one

    # Started again, smtpd enqueues both, as their owner, and removes them.
    again = instances(CONF, name="offline-again", spool=spool)
    host = mailname()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        q = queue(again)
        if len(q) == 2 and not list(off.iterdir()):
            break
        time.sleep(0.2)
    assert not list(off.iterdir()), again.log()
    rcpts = sorted(x["rcpt"] for x in q)
    assert rcpts == ["root+offline@localhost", f"root@{host}"], q
    e = [x for x in q if x["rcpt"] == "root+offline@localhost"][0]
    assert (e["sender"], e["src"]) == (f"root@{host}", "local")
    hdr = headers(message(again, e["id"]))
    assert re.search(r"^From: Off Line <root@", hdr, re.M), hdr


# ------------------------------------------------------------ newaliases, makemap


def test_newaliases_checks_the_aliases_table(names, tmp_path):
    os.chmod(tmp_path, 0o755)
    aliases = tmp_path / "aliases"
    aliases.write_text("# test\npostmaster: root\nabuse: postmaster\nlist: root, \"|/bin/cat\", /tmp/x\n")
    conf = tmp_path / "smtpd.conf"
    conf.write_text(f"table aliases file:{aliases}\nlisten on 127.0.0.1\n"
                    "action \"local\" mbox alias <aliases>\nmatch from local for local action \"local\"\n")
    r = subprocess.run([os.path.join(names, "newaliases"), "-f", str(conf)],
                       capture_output=True, text=True, timeout=30)
    assert (r.returncode, r.stdout, r.stderr) == (0, f"{aliases}: 3 aliases\n", "")
    # sendmail -bi is newaliases.
    r = subprocess.run([os.path.join(names, "sendmail"), "-bi", "-f", str(conf)],
                       capture_output=True, text=True, timeout=30)
    assert (r.returncode, r.stdout) == (0, f"{aliases}: 3 aliases\n")

    aliases.write_text("postmaster: root\nroot: alice\nroot: bob\nbad: error:999 nope\n")
    r = subprocess.run([os.path.join(names, "newaliases"), "-f", str(conf)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and r.stdout == ""
    assert f"{aliases}:3: duplicate entry for root" in r.stderr
    assert f"{aliases}:4: invalid entry" in r.stderr


def test_makemap_checks_and_refuses_db_output(names, tmp_path):
    m = tmp_path / "domains"
    m.write_text("example.org\nexample.net\n")
    r = subprocess.run([os.path.join(names, "makemap"), "-t", "set", str(m)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert f"{m}.db: db output is not supported yet" in r.stderr
    assert not os.path.exists(f"{m}.db")
    bad = tmp_path / "aliases"
    bad.write_text("root: alice\nx: \"unterminated\n")
    r = subprocess.run([os.path.join(names, "makemap"), "-t", "aliases", str(bad)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and f"{bad}:2: invalid entry" in r.stderr, r.stderr
    assert "not supported" not in r.stderr
