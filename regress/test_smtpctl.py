"""smtpctl against the real daemon: every command a user runs, the real
smtpctl binary run as root (and as nobody) inside the instance's mount
namespace, where /var/run/smtpd.sock is the instance's own; its output
checked in OpenSMTPD's formats, and its effects checked from outside (the
spool, the log, a TCP client, /proc).

Mail stays queued: the harness starts every instance with -P mda, as
OpenSMTPD's `smtpd -P mda`, so nothing is delivered to this host's
mailboxes."""

import os
import re
import resource
import smtplib
import socket
import stat
import struct
import subprocess
import time

import pytest

import smtpd_harness as h

CONF = h.config("listen on 127.0.0.1")
FOUR_DAYS = 4 * 24 * 3600
NOBODY = 65534
LINE = re.compile(
    r"(?P<id>[0-9a-f]{16})\|(?P<src>inet4|inet6|local)\|(?P<agent>mda|mta|bounce)\|"
    r"(?P<flags>[a-z,]*)\|(?P<sender>[^|]*)\|(?P<rcpt>[^|]*)\|(?P<dest>[^|]*)\|"
    r"(?P<ctime>\d+)\|(?P<expire>\d+)\|(?P<lasttry>\d+)\|(?P<retry>\d+)\|"
    r"(?P<state>pending|inflight)\|(?P<when>-?\d+)\|(?P<error>.*)")


def smtpctl_bin():
    path = h.smtpd_bin().with_name("smtpctl")
    if not path.exists():
        subprocess.run(["cargo", "build", "--release", "--bin", "smtpctl"], cwd=h.ROOT, check=True)
    return str(path)


def smtpctl(inst, *args, user=None, timeout=30):
    """Run smtpctl in the instance's mount namespace (its /var/run and
    spool), as root or as uid `user`."""
    argv = ["nsenter", f"--mount=/proc/{inst.parent}/ns/mnt", "--"]
    if user is not None:
        argv += ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
    argv += [smtpctl_bin(), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def ok(inst, *args):
    r = smtpctl(inst, *args)
    assert r.returncode == 0, (args, r.returncode, r.stdout, r.stderr)
    return r.stdout


def send(inst, rcpts, subject, sender="alice@example.org"):
    with inst.netns():
        s = smtplib.SMTP("127.0.0.1", 25, timeout=10)
    try:
        refused = s.sendmail(sender, rcpts, f"Subject: {subject}\r\n\r\nhello\r\n")
        assert refused == {}
    finally:
        s.quit()


def queue_lines(inst, *args):
    out = ok(inst, "show", "queue", *args)
    lines = out.splitlines()
    parsed = [LINE.fullmatch(line) for line in lines]
    assert all(parsed), lines
    return [m.groupdict() for m in parsed]


def spool_envelopes(inst):
    """Every envelope id in the spool, from the file names."""
    out = set()
    q = inst.spool / "queue"
    if q.is_dir():
        for bucket in q.iterdir():
            for m in bucket.iterdir():
                out |= {e.name for e in m.iterdir() if re.fullmatch(r"[0-9a-f]{16}", e.name)}
    return out


def sock_path(inst):
    """/var/run/smtpd.sock as the instance sees it, from outside: through
    its root, with /var/run's symlink (Debian: -> /run) resolved here, as
    an absolute link would otherwise lead back to the host's."""
    return f"/proc/{inst.parent}/root" + os.path.realpath("/var/run/smtpd.sock")


def stats(inst):
    return dict(line.split("=", 1) for line in ok(inst, "show", "stats").splitlines())


@pytest.fixture
def queued(instances):
    """A daemon holding 4 envelopes of 3 messages: one message to two
    recipients, one from the null sender."""
    d = instances(CONF)
    send(d, ["root@localhost", "nobody@localhost"], "two")
    send(d, ["root@localhost"], "one")
    send(d, ["root@localhost"], "bounce-ish", sender="")
    assert len(spool_envelopes(d)) == 4
    return d


# ------------------------------------------------------------ show


def test_show_queue_lists_every_envelope_as_opensmtpd_does(queued):
    before = int(time.time())
    lines = queue_lines(queued)
    assert {x["id"] for x in lines} == spool_envelopes(queued)
    assert len(lines) == 4
    for x in lines:
        assert (x["src"], x["agent"], x["flags"]) == ("inet4", "mda", "")
        assert int(x["expire"]) - int(x["ctime"]) == FOUR_DAYS
        assert abs(int(x["ctime"]) - before) < 60
        assert (x["lasttry"], x["retry"], x["state"], x["error"]) == ("0", "0", "pending", "")
        assert x["rcpt"] == x["dest"]
    assert sorted(x["sender"] for x in lines) == ["@"] + ["alice@example.org"] * 3
    assert sorted(x["rcpt"] for x in lines) == ["nobody@localhost"] + ["root@localhost"] * 3
    # In id order, so a message's envelopes are together.
    assert [x["id"] for x in lines] == sorted(x["id"] for x in lines)

    # One message only.
    two = [x for x in lines if x["rcpt"] == "nobody@localhost"][0]
    msgid = two["id"][:8]
    only = queue_lines(queued, msgid)
    assert {x["id"][:8] for x in only} == {msgid} and len(only) == 2
    assert queue_lines(queued, "0badc0de") == []


def test_show_queue_of_many_envelopes_comes_in_chunks(instances):
    d = instances(CONF)
    rcpts = [f"root+{i}@localhost" for i in range(40)]
    send(d, rcpts, "many")
    lines = queue_lines(d)
    assert len(lines) == 40
    assert {x["id"] for x in lines} == spool_envelopes(d)
    assert sorted(x["rcpt"] for x in lines) == sorted(rcpts)


def test_show_stats(queued):
    s = stats(queued)
    assert s["scheduler.envelope"] == "4"
    assert s["scheduler.envelope.inflight"] == "0"
    assert s["smtp.session"] == "0"
    assert s["control.session"] == "1"
    assert int(s["uptime"]) >= 0
    assert re.fullmatch(r"(\d+d)?(\d+h)?(\d+m)?(\d+s)?", s["uptime.human"])
    assert list(s) == sorted(s), "sorted by name, as OpenSMTPD's"


def test_show_envelope_and_message_read_the_spool(queued):
    line = [x for x in queue_lines(queued) if x["rcpt"] == "nobody@localhost"][0]
    env = ok(queued, "show", "envelope", line["id"])
    fields = dict(x.split(": ", 1) for x in env.splitlines())
    assert fields["type"] == "mda"
    assert fields["rcpt"] == fields["dest"] == "nobody@localhost"
    assert fields["sender"] == "alice@example.org"
    assert fields["sockaddr"] == "127.0.0.1"
    assert fields["ctime"] == line["ctime"]
    msg = ok(queued, "show", "message", line["id"][:8])
    assert "Subject: two" in msg and "hello" in msg
    assert ok(queued, "show", "message", line["id"]) == msg
    r = smtpctl(queued, "show", "envelope", "0badc0de00000001")
    assert r.returncode == 1 and r.stderr.startswith("smtpctl: "), r


# ------------------------------------------------------------ pause, resume


def unanswered_until_resumed(d):
    """While SMTP is paused the kernel still takes a connection and
    nobody answers it; `resume smtp` gets it its banner."""
    c = d.connect(timeout=1.5)
    try:
        with pytest.raises(socket.timeout):
            c.recv(100)
        assert ok(d, "resume", "smtp") == "command succeeded\n"
        c.settimeout(10)
        assert c.recv(100).startswith(b"220 ")
    finally:
        c.close()


def test_pause_and_resume_smtp(instances):
    d = instances(CONF)
    assert ok(d, "show", "status") == "MDA paused\nMTA running\nSMTP running\n"
    assert ok(d, "pause", "smtp") == "command succeeded\n"
    r = smtpctl(d, "pause", "smtp")
    assert (r.returncode, r.stdout) == (1, "command failed\n")
    assert ok(d, "show", "status") == "MDA paused\nMTA running\nSMTP paused\n"
    d.wait_log(r"info: smtp paused")

    unanswered_until_resumed(d)
    assert ok(d, "show", "status") == "MDA paused\nMTA running\nSMTP running\n"
    r = smtpctl(d, "resume", "smtp")
    assert (r.returncode, r.stdout) == (1, "command failed\n")
    send(d, ["root@localhost"], "after resume")
    assert len(spool_envelopes(d)) == 1


def test_smtpd_minus_p_smtp_starts_with_smtp_paused(instances):
    """`smtpd -P smtp`, as OpenSMTPD's: listeners bound but not accepted
    from; `smtpctl resume smtp` takes the waiting client."""
    d = instances(CONF, args=["-P", "smtp"])
    assert ok(d, "show", "status") == "MDA paused\nMTA running\nSMTP paused\n"
    unanswered_until_resumed(d)


def test_pause_and_resume_mda_and_mta(instances):
    d = instances(CONF)  # empty queue: resuming mda delivers nothing
    assert ok(d, "pause", "mta") == "command succeeded\n"
    assert ok(d, "show", "status") == "MDA paused\nMTA paused\nSMTP running\n"
    assert ok(d, "resume", "mda") == "command succeeded\n"
    assert ok(d, "resume", "mta") == "command succeeded\n"
    assert ok(d, "show", "status") == "MDA running\nMTA running\nSMTP running\n"
    assert ok(d, "pause", "mda") == "command succeeded\n"
    assert smtpctl(d, "pause", "mda").returncode == 1
    for what in ("mta paused", "mda resumed", "mta resumed", "mda paused"):
        d.wait_log(rf"info: {what}$")


# ------------------------------------------------------------ envelopes


def test_schedule(queued):
    lines = queue_lines(queued)
    one = lines[0]["id"]
    msgid = [x for x in lines if x["rcpt"] == "nobody@localhost"][0]["id"][:8]
    assert ok(queued, "schedule", one) == "1 envelope scheduled\n"
    assert ok(queued, "schedule", msgid) == "2 envelopes scheduled\n"
    assert ok(queued, "schedule", "all") == "4 envelopes scheduled\n"
    # OpenSMTPD's wording for none, kept.
    assert ok(queued, "schedule", "0badc0de00000001") == "0 envelope scheduled\n"
    # Due now (mda is paused, so they stay).
    assert all(int(x["when"]) <= 0 for x in queue_lines(queued))


def test_pause_and_resume_envelopes(queued):
    lines = queue_lines(queued)
    msgid = [x for x in lines if x["rcpt"] == "nobody@localhost"][0]["id"][:8]
    assert ok(queued, "pause", "envelope", msgid) == "2 envelopes paused\n"
    flags = {x["id"]: x["flags"] for x in queue_lines(queued)}
    assert sorted(flags.values()) == ["", "", "suspend", "suspend"]
    assert all(f == "suspend" for i, f in flags.items() if i.startswith(msgid))
    assert ok(queued, "resume", "envelope", "all") == "2 envelopes resumed\n"
    assert all(x["flags"] == "" for x in queue_lines(queued))


def test_remove(queued):
    lines = queue_lines(queued)
    first = lines[0]
    since = queued.log_size()
    assert ok(queued, "remove", first["id"]) == "1 envelope removed\n"
    m = queued.wait_log(rf"delivery: Remove for {first['id']}: from=<(.*)>, to=<(.*)>, "
                        r"rcpt=<->, delay=\S+, stat=Removed by administrator", since=since)
    assert m.group(2) == first["dest"]
    assert first["id"] not in {x["id"] for x in queue_lines(queued)}
    deadline = time.monotonic() + 10
    while first["id"] in spool_envelopes(queued) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first["id"] not in spool_envelopes(queued)
    assert ok(queued, "remove", first["id"]) == "0 envelope removed\n"
    assert ok(queued, "remove", "all") == "3 envelopes removed\n"
    assert queue_lines(queued) == []
    deadline = time.monotonic() + 10
    while spool_envelopes(queued) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert spool_envelopes(queued) == set()
    assert stats(queued)["scheduler.envelope"] == "0"


# ------------------------------------------------------------ who may


def test_only_root_may_control(queued):
    for args in (["show", "queue"], ["show", "stats"], ["pause", "smtp"], ["remove", "all"],
                 ["schedule", "all"], ["stop"]):
        r = smtpctl(queued, *args, user=NOBODY)
        assert (r.returncode, r.stdout, r.stderr) == (1, "", "smtpctl: need root privileges\n"), args
    # Nothing changed.
    assert len(queue_lines(queued)) == 4
    assert ok(queued, "show", "status") == "MDA paused\nMTA running\nSMTP running\n"
    assert queued.proc.poll() is None
    # What smtpctl reads from the spool itself is refused to them first.
    line = queue_lines(queued)[0]
    for args in (["show", "message", line["id"][:8]], ["show", "envelope", line["id"]]):
        r = smtpctl(queued, *args, user=NOBODY)
        assert (r.returncode, r.stdout, r.stderr) == (1, "", "smtpctl: need root privileges\n"), r


def test_socket_is_the_instances_own_and_world_writable(queued):
    st = os.stat(sock_path(queued))
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o666
    assert (st.st_uid, st.st_gid) == (0, 0)
    assert not os.path.exists("/var/run/smtpd.sock") or \
        os.stat("/var/run/smtpd.sock").st_ino != st.st_ino


# ------------------------------------------------------------ commands


def test_not_running(smtpd_bin):
    """With no daemon, OpenSMTPD's message and exit status 1 (in a mount
    namespace of its own, with an empty /var/run)."""
    r = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
         'mount -t tmpfs tmpfs /var/run && exec "$0" show stats', smtpctl_bin()],
        capture_output=True, text=True, timeout=30)
    assert (r.returncode, r.stdout, r.stderr) == (1, "", "smtpctl: smtpd doesn't seem to be running\n")


def test_mailq_is_show_queue(queued, tmp_path):
    os.chmod(tmp_path, 0o755)
    mailq = tmp_path / "mailq"
    mailq.symlink_to(smtpctl_bin())
    r = subprocess.run(["nsenter", f"--mount=/proc/{queued.parent}/ns/mnt", "--", str(mailq)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r
    assert sorted(x.split("|")[0] for x in r.stdout.splitlines()) == \
        sorted(x["id"] for x in queue_lines(queued))


def test_unknown_and_incomplete_commands():
    ctl = smtpctl_bin()
    r = subprocess.run([ctl, "show"], capture_output=True, text=True)
    assert r.returncode == 255
    assert r.stderr.startswith("possibilities are:\n")
    assert "show queue\nshow stats\nshow status\n" in r.stderr
    r = subprocess.run([ctl, "frobnicate"], capture_output=True, text=True)
    assert r.returncode == 255 and "\nschedule\n" in r.stderr
    r = subprocess.run([ctl, "schedule", "12345"], capture_output=True, text=True)
    assert r.returncode == 255 and "schedule <msgid>\n" in r.stderr


def test_log_verbose_and_brief_reach_the_roles(instances):
    d = instances(CONF, verbose=False)
    send(d, ["root@localhost"], "x")
    ok(d, "schedule", "all")
    assert "debug:" not in d.log()
    assert ok(d, "log", "verbose") == "command succeeded\n"
    ok(d, "schedule", "all")
    # The scheduler's own debug line: the change reached another role.
    d.wait_log(r"^debug: scheduler: smtpctl Schedule All: 1 envelopes$")
    assert ok(d, "log", "brief") == "command succeeded\n"
    since = d.log_size()
    ok(d, "schedule", "all")
    # Verbose again, to know the log has caught up past the brief part.
    ok(d, "log", "verbose")
    ok(d, "pause", "envelope", "all")
    d.wait_log(r"^debug: scheduler: smtpctl Pause All: 1 envelopes$", since=since)
    debug = [x for x in d.log_since(since).splitlines() if x.startswith("debug:")]
    assert debug == ["debug: scheduler: smtpctl Pause All: 1 envelopes"], debug


def test_unsupported_commands_fail_plainly(queued):
    for args in (["update", "table", "aliases"], ["trace", "all"], ["profile", "imsg"]):
        r = smtpctl(queued, *args)
        assert r.returncode == 1 and r.stdout.startswith("command failed: "), (args, r)
    assert queued.proc.poll() is None


def test_monitor_prints_a_line_a_second(queued):
    p = subprocess.Popen(
        ["nsenter", f"--mount=/proc/{queued.parent}/ns/mnt", "--", smtpctl_bin(), "monitor"],
        stdout=subprocess.PIPE, text=True)
    try:
        head = [p.stdout.readline() for _ in range(4)]
    finally:
        p.kill()
        p.wait()
    assert head[0].startswith("--") and "envelope" in head[0]
    assert head[2].split() == ["0", "1", "4", "0"], head
    assert head[3].split() == ["0", "1", "4", "0"], head


def _kill_mount_ns(mnt_id):
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if h.ns_id(int(name), "mnt") == mnt_id and int(name) != os.getpid():
                    os.kill(int(name), 9)
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                pass


def test_stop_then_a_new_daemon_takes_the_stale_socket(instances):
    d = instances(CONF)
    send(d, ["root@localhost"], "kept")
    # A second daemon on the same /var/run (its own network) is refused.
    second = [
        "nsenter", f"--mount=/proc/{d.parent}/ns/mnt", "--",
        "unshare", "--net", "--", "/bin/sh", "-c", 'ip link set lo up && exec "$@"', "sh",
        str(d.bin), "-d", "-f", str(d.conf), "-P", "mda",
    ]
    r = subprocess.run(second, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1, r
    assert "smtpd: control socket already listening" in r.stderr, r

    assert ok(d, "stop") == "command succeeded\n"
    assert d.wait_exit() == 0
    log = d.log()
    assert "info: smtpctl stop, shutting down" in log and "lost child" not in log, log
    sock = f"/proc/{os.getpid()}/fd/{d.mnt_fd}"
    # With no daemon, show queue reads the spool, as OpenSMTPD's does.
    r = subprocess.run(["nsenter", f"--mount={sock}", "--", smtpctl_bin(), "show", "queue"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r
    [offline] = r.stdout.splitlines()
    assert re.fullmatch(r"[0-9a-f]{16}\|inet4\|mda\|\|alice@example\.org\|root@localhost\|"
                        r"root@localhost\|\d+\|\d+\|0\|0\|offline\|\|", offline), offline
    r = subprocess.run(["nsenter", f"--mount={sock}", "--", smtpctl_bin(), "show", "stats"],
                       capture_output=True, text=True, timeout=30)
    assert (r.returncode, r.stderr) == (1, "smtpctl: smtpd doesn't seem to be running\n"), r
    # The socket is left behind, as OpenSMTPD leaves it; a new daemon in
    # the same namespace removes it and serves the same queue.
    p = subprocess.Popen(
        ["nsenter", f"--mount={sock}", "--", *second[3:]],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + h.START_TIMEOUT
        while True:
            r = subprocess.run(["nsenter", f"--mount={sock}", "--", smtpctl_bin(), "show", "queue"],
                               capture_output=True, text=True, timeout=30)
            if r.returncode == 0:
                break
            assert time.monotonic() < deadline, r
            time.sleep(0.1)
        assert len(r.stdout.splitlines()) == 1 and "|root@localhost|" in r.stdout
    finally:
        _kill_mount_ns(d.mnt_id)
        p.wait(timeout=10)


# ------------------------------------------------------------ hostile clients


def _frame(payload, version=None, nfds=0, length=None):
    version = 0xffff if version is None else version
    length = len(payload) if length is None else length
    return struct.pack("<HHI", version, nfds, length) + payload


GARBAGE = [
    b"\x00",
    b"GET / HTTP/1.0\r\n\r\n",
    _frame(b"\x00"),  # wrong version
    _frame(b"\xff" * 20, version=2),  # the right version (IPC_VERSION), a bad payload
    _frame(b"\x00", length=1 << 31),
    os.urandom(300),
    b"\x01" * (65 * 1024),  # over the frame cap
]


def test_a_thousand_clients_and_garbage_leave_the_daemon_serving(queued):
    roles = {r: queued.role_pid(r) for r in h.ROLES}
    path = sock_path(queued)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    socks = []
    try:
        for _ in range(1000):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            # Blocking: a Unix connect waits while the backlog is full
            # (a non-blocking one fails with EAGAIN instead).
            s.connect(path)
            s.settimeout(10)
            socks.append(s)
        # Control holds at most 128 of them; the rest were closed at once.
        for i, s in enumerate(socks):
            try:
                if i % 10 == 0:
                    # A descriptor attached to garbage.
                    socket.send_fds(s, [GARBAGE[i % len(GARBAGE)]], [s.fileno()])
                else:
                    s.send(GARBAGE[i % len(GARBAGE)])
            except (BrokenPipeError, ConnectionResetError, OSError):
                pass
        # Every one of them is closed by the daemon.
        for s in socks:
            try:
                assert s.recv(100) == b""
            except ConnectionResetError:
                pass
    finally:
        for s in socks:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    log = queued.log()
    assert "warn: control: too many clients" in log
    assert re.search(r"warn: control: client uid=0: .*; dropped", log)
    # One line per dropped client, up to a burst: a local user cannot
    # flood the log.
    assert len(re.findall(r"; dropped\n", log)) == 10, log
    assert "warn: control: more clients dropped, not logged for 10s" in log

    s = stats(queued)
    assert s["control.session"] == "1"
    assert s["scheduler.envelope"] == "4"
    assert {r: queued.role_pid(r) for r in h.ROLES} == roles
    assert all(h.alive(pid, h.starttime(pid)) for pid in roles.values())
    assert "lost child" not in queued.log()
    # And a descriptor count back where it was.
    fds = h.fd_targets(roles["control"])
    assert len(fds) <= 12, fds


def test_a_slow_reader_gets_the_whole_queue_and_blocks_nobody(instances):
    """2,000 envelopes are more than the socket and a pipe hold: while this
    smtpctl is stuck writing to a pipe nobody reads, control serves other
    clients (it sends the next chunk only once the last was read); then
    every line arrives, in order."""
    d = instances(CONF)
    for m in range(2):
        send(d, [f"root+{m}.{i}@localhost" for i in range(1000)], f"big {m}")
    p = subprocess.Popen(
        ["nsenter", f"--mount=/proc/{d.parent}/ns/mnt", "--", smtpctl_bin(), "show", "queue"],
        stdout=subprocess.PIPE)
    try:
        # The pipe fills and smtpctl blocks in write(2) while lines remain.
        deadline = time.monotonic() + 20
        while True:
            with open(f"/proc/{p.pid}/wchan") as f:
                wchan = f.read()
            if "pipe" in wchan:
                break
            assert p.poll() is None and time.monotonic() < deadline, wchan
            time.sleep(0.05)
        s = stats(d)
        assert s["control.session"] == "2" and s["scheduler.envelope"] == "2000"
        out = p.stdout.read().decode()
        assert p.wait(timeout=30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    lines = out.splitlines()
    assert len(lines) == 2000
    assert all(LINE.fullmatch(x) for x in lines)
    ids = [x.split("|")[0] for x in lines]
    assert ids == sorted(ids) and set(ids) == spool_envelopes(d)


# Run as another user: open N connections, then print how many control
# kept open once it has taken them all (a closed one reads EOF), and hold
# them until stdin closes.
_HOLDER = r"""
import socket, sys, time
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect("/var/run/smtpd.sock")
    s.setblocking(False)
    socks.append(s)
def still_open(s):
    try:
        return s.recv(10) != b""
    except BlockingIOError:
        return True
held, last = None, time.monotonic()
while time.monotonic() - last < 1.0:
    n = sum(still_open(s) for s in socks)
    if n != held:
        held, last = n, time.monotonic()
    time.sleep(0.1)
print(held, flush=True)
sys.stdin.read()
"""


def test_a_local_user_cannot_crowd_root_out(queued):
    """One user holds at most 32 connections (OpenSMTPD's limit per uid);
    more are closed at once, and root is served meanwhile."""
    p = subprocess.Popen(
        ["nsenter", f"--mount=/proc/{queued.parent}/ns/mnt", "--",
         "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         "/usr/bin/python3", "-c", _HOLDER, "200"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        held = int(p.stdout.readline())
        assert held == 32
        s = stats(queued)
        assert s["control.session"] == "33"
        assert len(queue_lines(queued)) == 4
    finally:
        p.stdin.close()
        p.wait(timeout=30)
    queued.wait_log(r"warn: control: too many clients \(\d+, 32 of uid 65534\)")
