"""rc.d/smtpd, the OpenBSD rc.d(8) script, run by mksh with
regress/rcd/rc.subr (a small re-creation of OpenBSD's rc.subr; its header
says how it differs) against the real daemon; and the commands of the
systemd unit (contrib/systemd/smtpd.service), run as systemd would.

Each test gets its own mount, network and PID namespaces (unshare(1)), in
which the script and the daemon run at their real paths:

    /etc/rc.d/smtpd, /etc/rc.d/rc.subr    in an overlay on /etc, with the
    /etc/mail/smtpd.conf                  test's config and its smtpd_flags
    /etc/rc.conf.local                    (if any)
    /usr/sbin/smtpd                       the binary under test, bound over
                                          an overlay on /usr/sbin
    /var/run, /var/spool/smtpd            private, as in smtpd_harness.py

The PID namespace stands in for rc.subr's `pgrep -T rtable`: the script's
pgrep and pkill see the test's daemon and nothing else of the machine
(another smtpd, another test's). Its first process only reaps orphans; the
script runs as root through nsenter(1), as rcctl(8) would run it. The
daemon is observed from outside, in /proc.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import smtpd_harness as h

RC_SCRIPT = h.ROOT / "rc.d" / "smtpd"
RC_SUBR = h.ROOT / "regress" / "rcd" / "rc.subr"
DAEMON = "/usr/sbin/smtpd"

pytestmark = pytest.mark.skipif(
    shutil.which("mksh") is None or not os.access("/bin/ksh", os.X_OK),
    reason="mksh (Debian package mksh, which provides /bin/ksh) is not installed: make setup")

CONFIG = h.config("listen on 127.0.0.1")

# The namespaces' first process: mounts, then reaps whatever is orphaned
# in the PID namespace (the daemon, once daemon(3) has forked) until
# killed. $1: the test's directory, $2: the smtpd binary, $3: python.
_NS_SCRIPT = r'''set -e
w=$1
mount -t tmpfs -o mode=0755 tmpfs /var/run
mount --bind "$w/spool" /var/spool/smtpd
mount -t tmpfs -o mode=0755 tmpfs "$w/ovl"
mkdir "$w/ovl/etc" "$w/ovl/etc.work" "$w/ovl/sbin" "$w/ovl/sbin.work"
mkdir -m 0755 "$w/ovl/etc/rc.d" "$w/ovl/etc/mail"
cp "$w/rc.d/smtpd" "$w/rc.d/rc.subr" "$w/ovl/etc/rc.d/"
cp "$w/etc/"* "$w/ovl/etc/mail/"
if [ -e "$w/rc.conf.local" ]; then cp "$w/rc.conf.local" "$w/ovl/etc/rc.conf.local"; fi
: >"$w/ovl/sbin/smtpd"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$w/ovl/etc,workdir=$w/ovl/etc.work" /etc
mount -t overlay overlay -o "lowerdir=/usr/sbin,upperdir=$w/ovl/sbin,workdir=$w/ovl/sbin.work" /usr/sbin
mount --bind "$2" /usr/sbin/smtpd
ip link set lo up
echo ready
exec "$3" -c '
import os, time
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(0.1)
'
'''


class RcBox:
    """The namespaces one test runs rc.d/smtpd in."""

    def __init__(self, workdir, config=CONFIG, flags=None, extra_files=()):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        for sub in ("spool", "ovl", "rc.d", "etc"):
            (self.dir / sub).mkdir(exist_ok=True)
        os.chmod(self.dir / "spool", 0o711)
        shutil.copy(RC_SCRIPT, self.dir / "rc.d" / "smtpd")
        shutil.copy(RC_SUBR, self.dir / "rc.d" / "rc.subr")
        (self.dir / "etc" / "smtpd.conf").write_text(config)
        for name, text in extra_files:
            (self.dir / "etc" / name).write_text(text)
        if flags is not None:
            (self.dir / "rc.conf.local").write_text(f"smtpd_flags={flags}\n")
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--net", "--pid", "--fork", "--kill-child",
             "--mount-proc", "--propagation", "private", "--",
             "/bin/sh", "-c", _NS_SCRIPT, "sh", str(self.dir), str(h.smtpd_bin()),
             sys.executable],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True)
        line = self.proc.stdout.readline().decode(errors="replace")
        if line.strip() != "ready":
            rest = self.proc.stdout.read().decode(errors="replace")
            self.close()
            raise RuntimeError(f"namespace setup failed: {line}{rest}")
        self.init = self._init_pid()
        self.pidns = h.ns_id(self.init, "pid")

    def _init_pid(self):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            kids = h.children(self.proc.pid)
            if kids:
                return kids[0]
            time.sleep(0.02)
        raise RuntimeError("unshare has no child")

    def rc(self, action, timeout=60):
        """Run `/etc/rc.d/smtpd ACTION` in the namespaces, as root; return
        (exit status, stdout, stderr)."""
        r = subprocess.run(
            ["nsenter", "-t", str(self.init), "-m", "-n", "-p", "--wd=/",
             "/etc/rc.d/smtpd", action],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")

    def pids(self):
        """{host pid: command line (NULs as spaces, trailing ones dropped)}
        of every live process in the PID namespace but its first one."""
        out = {}
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == self.init:
                continue
            pid = int(name)
            try:
                if h.ns_id(pid, "pid") != self.pidns or h.proc_state(pid) in (None, "Z"):
                    continue
                raw = h.read_cmdline(pid)
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
            out[pid] = raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
        return out

    def parents(self, cmdline):
        return sorted(pid for pid, c in self.pids().items() if c == cmdline)

    def wait_gone(self, timeout=10):
        deadline = time.monotonic() + timeout
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.pids()

    def banner(self, timeout=20):
        """The first line the daemon sends on 127.0.0.1:25 of the box."""
        deadline = time.monotonic() + timeout
        with open(f"/proc/{self.init}/ns/net", "rb") as f:
            netfd = f.fileno()
            orig = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            try:
                while True:
                    if h._libc.setns(netfd, h.CLONE_NEWNET) != 0:
                        raise OSError("setns to the box's network failed")
                    try:
                        sock = socket.create_connection(("127.0.0.1", 25), timeout=10)
                        break
                    except ConnectionRefusedError:
                        if time.monotonic() > deadline:
                            raise
                    finally:
                        if h._libc.setns(orig, h.CLONE_NEWNET) != 0:
                            os.write(2, b"FATAL: cannot return to the test's network namespace\n")
                            os._exit(70)
                    time.sleep(0.1)
            finally:
                os.close(orig)
        with sock:
            return h.Client(sock).line()

    def close(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # The namespace's first process dying kills every process in it.
        init = getattr(self, "init", None)
        if init is not None:
            try:
                os.kill(init, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)
        self.proc.stdout.close()


@pytest.fixture
def box(request, workroot, smtpd_bin):
    made = []

    def make(name="box", **kw):
        b = RcBox(os.path.join(workroot, f"rcd-{request.node.name}-{name}"), **kw)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def _assert_running(b, cmdline):
    """Once the roles are up (each has exec'd and is titled "smtpd:
    ROLE"), exactly one process has the command line rc.subr started: the
    parent, with the roles as its children. Before that, a role forked
    but not yet exec'd still shows the parent's command line."""
    want = {f"smtpd: {r}" for r in h.CHILDREN}
    deadline = time.monotonic() + 20
    while True:
        procs = b.pids()
        parents = [pid for pid, c in procs.items() if c == cmdline]
        kids = {procs.get(k) for p in parents for k in h.children(p)}
        if len(parents) == 1 and kids == want:
            return parents[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"expected one {cmdline!r} with the roles {sorted(want)} "
                                 f"as its children; processes: {procs}")
        time.sleep(0.05)


def test_start_check_restart_stop(box):
    b = box()
    assert b.rc("check")[:2] == (1, "smtpd(failed)\n")

    rc, out, err = b.rc("start")
    assert (rc, out) == (0, "smtpd(ok)\n"), err
    first = _assert_running(b, DAEMON)
    assert b.banner().startswith("220 ")
    assert b.rc("check")[:2] == (0, "smtpd(ok)\n")
    # start again: already running, nothing done, nothing printed.
    assert b.rc("start")[:2] == (0, "")
    assert b.parents(DAEMON) == [first]

    old = set(b.pids())
    rc, out, err = b.rc("restart")
    assert (rc, out) == (0, "smtpd(ok)\nsmtpd(ok)\n"), err
    second = _assert_running(b, DAEMON)
    assert second != first
    assert not old & set(b.pids()), f"processes of the first daemon left: {b.pids()}"
    assert b.banner().startswith("220 ")
    assert b.rc("check")[:2] == (0, "smtpd(ok)\n")

    rc, out, err = b.rc("stop")
    assert (rc, out) == (0, "smtpd(ok)\n"), err
    assert b.wait_gone() == {}, "processes left after stop"
    assert b.rc("check")[:2] == (1, "smtpd(failed)\n")
    # stop again: not running, nothing to do.
    assert b.rc("stop")[:2] == (0, "")


def test_flags_from_rc_conf_local_and_pexp(box):
    """smtpd_flags (rcctl set smtpd flags ...) reach the daemon, and
    pexp, "${daemon} ${daemon_flags}", matches the parent only: the roles
    were started as "smtpd -x ROLE" and are retitled "smtpd: ROLE"."""
    flags = "-v -P mda -f /etc/mail/other.conf"
    b = box(config="# not valid\n", flags=flags,
            extra_files=[("other.conf", CONFIG)])
    rc, out, err = b.rc("start")
    assert (rc, out) == (0, "smtpd(ok)\n"), err
    parent = _assert_running(b, f"{DAEMON} {flags}")
    runfile = subprocess.run(
        ["nsenter", "-t", str(b.init), "-m", "cat", "/var/run/rc.d/smtpd"],
        capture_output=True, text=True).stdout
    assert f"daemon_flags={flags}\n" in runfile
    assert f"pexp={DAEMON} {flags}\n" in runfile
    others = {pid: c for pid, c in b.pids().items() if pid != parent}
    assert others and not any(re.fullmatch(re.escape(f"{DAEMON} {flags}"), c)
                              for c in others.values())
    # New flags (rcctl set smtpd flags ...) apply at the next start; check
    # and stop still find the running daemon through the run file.
    r = subprocess.run(
        ["nsenter", "-t", str(b.init), "-m", "sh", "-c",
         "echo smtpd_flags=-v >/etc/rc.conf.local"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert b.rc("check")[:2] == (0, "smtpd(ok)\n")
    assert b.rc("stop")[:2] == (0, "smtpd(ok)\n")
    assert b.wait_gone() == {}


def test_configtest_refuses_a_bad_config(box):
    b = box(config="listen on 127.0.0.1\nthis is not smtpd.conf\n")
    rc, out, _ = b.rc("configtest")
    assert (rc, out) == (1, "smtpd(failed)\n")
    rc, out, _ = b.rc("start")
    assert (rc, out) == (1, "smtpd(failed)\n")
    assert b.pids() == {}, "a daemon was started on a config smtpd -n refuses"
    assert b.rc("check")[0] == 1


def test_configtest_accepts_the_config(box):
    b = box()
    assert b.rc("configtest")[:2] == (0, "smtpd(ok)\n")
    assert b.pids() == {}


def test_reload_is_not_supported(box):
    """rc_reload=NO, as for OpenSMTPD: SIGHUP does not reload smtpd."""
    b = box()
    rc, out, err = b.rc("reload")
    assert rc == 1 and out == ""
    assert "reload is not supported" in err
    rc, _, err = b.rc("frobnicate")
    assert rc == 1
    assert "usage:" in err and "reload" not in err and "configtest" in err


def _unit_commands():
    """ExecStartPre and ExecStart of contrib/systemd/smtpd.service, which
    name /usr/sbin/smtpd, as the box does."""
    text = (h.ROOT / "contrib" / "systemd" / "smtpd.service").read_text()
    pre = re.findall(r"^ExecStartPre=(.*)$", text, re.M)
    start = re.findall(r"^ExecStart=(.*)$", text, re.M)
    assert len(pre) == 1 and len(start) == 1
    assert re.search(r"^Type=exec$", text, re.M) and re.search(r"^KillMode=mixed$", text, re.M)
    return pre[0].split(), start[0].split()


def test_systemd_unit_commands(box):
    """What the systemd unit assumes of the daemon: its ExecStart stays in
    the foreground as the main process with the roles as its children (no
    pid file needed), and a SIGTERM to that process alone (KillMode=mixed)
    stops every process, exit status 0. ExecStartPre fails on a bad config."""
    pre, start = _unit_commands()
    b = box()
    enter = ["nsenter", "-t", str(b.init), "-m", "-n", "-p", "--wd=/", "--"]
    r = subprocess.run(enter + pre, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    main = subprocess.Popen(enter + start, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pid = _assert_running(b, " ".join(start))
        assert h.children(main.pid) == [pid], "smtpd -F left its parent: it daemonized"
        assert b.banner().startswith("220 ")
        os.kill(pid, signal.SIGTERM)
        assert main.wait(30) == 0
        assert b.wait_gone() == {}, "processes left after SIGTERM to the main process"
    finally:
        if main.poll() is None:
            main.kill()
            main.wait()

    bad = box(name="bad", config="this is not smtpd.conf\n")
    r = subprocess.run(["nsenter", "-t", str(bad.init), "-m", "-n", "-p", "--wd=/", "--"] + pre,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
