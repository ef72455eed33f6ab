"""Harness for the outside-in regression tests of smtpd-rs.

Every daemon instance runs as root, with its real paths and no test-only
switch, inside its own mount and network namespace (unshare(1)):

    unshare --mount --net --propagation private --fork -- /bin/sh -c '
        mount -t tmpfs tmpfs /var/run          # private /var/run (smtpd.sock)
        mount --bind SPOOL /var/spool/smtpd    # private, empty spool
        ip link set lo up                      # loopback of the new netns
        exec smtpd -d -v -f CONF'

so any number of instances can listen on 127.0.0.1:25 at once, each with
its own spool, while the host's /var/spool/smtpd and port 25 are untouched.
The test process joins an instance's network namespace with setns(2) only
for the time it takes to create a socket (a socket stays in the namespace
it was created in), then goes back to its own.

Everything is observed from outside: /proc/PID/{cmdline,status,root,fd,
maps,smaps,ns}, the daemon's stderr (captured through a pipe, not a file,
so that the daemon's own descriptors 1 and 2 are a pipe) and the exit
status of the parent (unshare --fork exits with its child's status).
To test the sandboxes themselves, a role is made to run a system call of
the test's choosing with ptrace (inject_syscall, call_syscall; x86_64).

Standard library only.
"""

import contextlib
import ctypes
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

ROLES = ("control", "lka", "queue", "scheduler", "dispatcher", "ca")
# The parent's children: the sandboxed roles, and the delivery runner it
# starts before pledging (root, unsandboxed: it becomes each user).
CHILDREN = ROLES + ("delivery",)

USER_SMTPD = "_smtpd"
USER_SMTPQ = "_smtpq"
EMPTY_DIR = "/var/empty"
SPOOL_DIR = "/var/spool/smtpd"

# The role table, as ../shared/README.md section 2 and issue 3 give it.
# chroot None: no chroot, the role's root is the root of its mount namespace.
ROLE_TABLE = {
    "control": {"user": USER_SMTPD, "chroot": EMPTY_DIR, "peers": 5},
    "lka": {"user": USER_SMTPD, "chroot": None, "peers": 3},
    "queue": {"user": USER_SMTPQ, "chroot": SPOOL_DIR, "peers": 4},
    "scheduler": {"user": USER_SMTPD, "chroot": EMPTY_DIR, "peers": 2},
    "dispatcher": {"user": USER_SMTPD, "chroot": EMPTY_DIR, "peers": 4},
    "ca": {"user": USER_SMTPD, "chroot": EMPTY_DIR, "peers": 2},
}

# A config needs at least one rule ("no rules, nothing to do" otherwise, as
# in OpenSMTPD): every test config ends with these.
RULES = """\
action "local" mbox
match from local for local action "local"
"""


def make_test_pki(d, host):
    """A self-signed certificate for `host` and its key (root's, 0600),
    and a credentials table with alice's password "secret", in `d`:
    {"key", "crt", "creds"}."""
    key, crt = d / "mx.key", d / "mx.crt"
    subprocess.run(["openssl", "req", "-x509", "-nodes", "-days", "2", "-newkey", "rsa:2048",
                    "-subj", f"/CN={host}", "-keyout", str(key), "-out", str(crt)],
                   check=True, capture_output=True)
    os.chown(key, 0, 0)
    os.chmod(key, 0o600)
    digest = subprocess.run(["openssl", "passwd", "-6", "-salt", "regressalt", "secret"],
                            check=True, capture_output=True, text=True).stdout.strip()
    creds = d / "creds"
    creds.write_text(f"alice {digest}\n")
    return {"key": key, "crt": crt, "creds": creds}


def config(*lines):
    """A complete smtpd.conf: `lines` (listen on ...), then RULES."""
    return "".join(line + "\n" for line in lines) + "\n" + RULES


# The shared instance (the `daemon` fixture) of the read-only tests.
SHARED_CONFIG = config(
    "# The shared instance of the regression tests.",
    "listen on 127.0.0.1 hostname mx.regress.test",
    "# Without a hostname: the banner names the machine.",
    "listen on 127.0.0.1 port 2525",
)
# Listening sockets the shared instance's dispatcher must hold.
SHARED_LISTENERS = 2
SHARED_HOSTNAME = "mx.regress.test"

START_TIMEOUT = 20.0  # the daemon's own handshake timeout is 10 s
STOP_TIMEOUT = 20.0  # the parent gives roles 5 s before it kills them

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.setns.restype = ctypes.c_int


# --------------------------------------------------------------------------
# The binary and the system it needs


_bin_lock = threading.Lock()
_bin_path = None


def _cargo():
    found = shutil.which("cargo")
    if found:
        return found
    for home in (os.environ.get("CARGO_HOME"), os.path.expanduser("~/.cargo"), "/root/.cargo"):
        if home and os.access(os.path.join(home, "bin", "cargo"), os.X_OK):
            return os.path.join(home, "bin", "cargo")
    raise RuntimeError("target/release/smtpd is missing and cargo is not in PATH")


def smtpd_bin():
    """Absolute path of the smtpd binary under test: $SMTPD_BIN, or this
    checkout's target/release/smtpd, built with cargo if missing."""
    global _bin_path
    with _bin_lock:
        if _bin_path is None:
            env = os.environ.get("SMTPD_BIN")
            if env:
                path = Path(env).resolve()
            else:
                path = ROOT / "target" / "release" / "smtpd"
                if not path.exists():
                    subprocess.run(
                        [_cargo(), "build", "--release", "--bin", "smtpd"],
                        cwd=ROOT,
                        check=True,
                    )
            if not os.access(path, os.X_OK):
                raise RuntimeError(f"{path}: not an executable")
            _bin_path = path
        return _bin_path


def ensure_system():
    """The users and directories smtpd requires, created the way
    `make install` does when they are missing."""
    missing_users = [u for u in (USER_SMTPD, USER_SMTPQ) if not _user_exists(u)]
    missing_dirs = [d for d in (EMPTY_DIR, SPOOL_DIR) if not os.path.isdir(d)]
    if not missing_users and not missing_dirs:
        return
    script = ROOT / "scripts" / "create-users-and-dirs.sh"
    if script.exists():
        subprocess.run(["/bin/sh", str(script)], check=True, cwd=ROOT)
        return
    for user in missing_users:
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home",
             "--home-dir", EMPTY_DIR, "--shell", "/usr/sbin/nologin", user],
            check=True,
        )
    if not os.path.isdir(EMPTY_DIR):
        os.makedirs(EMPTY_DIR, mode=0o755)
        os.chmod(EMPTY_DIR, 0o755)
    if not os.path.isdir(SPOOL_DIR):
        os.makedirs(SPOOL_DIR, mode=0o711)
        os.chmod(SPOOL_DIR, 0o711)


def _user_exists(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


# --------------------------------------------------------------------------
# /proc readers


def read_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def read_cmdline(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read()


def proctitle(pid):
    """The text of /proc/PID/cmdline up to the first NUL, and whether only
    NULs follow it."""
    raw = read_cmdline(pid)
    head, _, tail = raw.partition(b"\0")
    return head.decode("utf-8", "replace"), tail.strip(b"\0") == b""


def children(pid):
    kids = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return kids
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids.extend(int(x) for x in f.read().split())
        except FileNotFoundError:
            pass
    return sorted(set(kids))


def starttime(pid):
    """Field 22 of /proc/PID/stat: with the pid, identifies a process even
    if its pid is reused."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = data.rsplit(")", 1)[1].split()
    return int(rest[22 - 3])


def proc_state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return data.rsplit(")", 1)[1].split()[0]


def alive(pid, start):
    """True if process (pid, start) still exists and is not a zombie."""
    st = starttime(pid)
    return st is not None and st == start and proc_state(pid) != "Z"


def fd_targets(pid):
    out = {}
    base = f"/proc/{pid}/fd"
    for name in os.listdir(base):
        try:
            out[int(name)] = os.readlink(f"{base}/{name}")
        except FileNotFoundError:
            pass
    return out


def read_maps(pid):
    """[(start, end, perms, dev(major, minor), inode, path)]"""
    out = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            start, end = (int(x, 16) for x in parts[0].split("-"))
            major, minor = (int(x, 16) for x in parts[3].split(":"))
            path = parts[5].strip() if len(parts) > 5 else ""
            out.append((start, end, parts[1], (major, minor), int(parts[4]), path))
    return out


_SMAPS_HEAD = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \d+\s*(.*)$")


def read_smaps(pid):
    """[{'start', 'end', 'perms', 'path', 'vmflags': set}]"""
    out = []
    cur = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            m = _SMAPS_HEAD.match(line)
            if m:
                cur = {
                    "start": int(m.group(1), 16),
                    "end": int(m.group(2), 16),
                    "perms": m.group(3),
                    "path": m.group(4).strip(),
                    "vmflags": set(),
                }
                out.append(cur)
            elif line.startswith("VmFlags:") and cur is not None:
                cur["vmflags"] = set(line.split(":", 1)[1].split())
    return out


def socket_protocols(pid):
    """Map socket inode -> (protocol, state) for every socket of pid's
    network namespace, from /proc/PID/net/*."""
    out = {}
    for proto in ("tcp", "tcp6", "udp", "udp6", "raw", "raw6"):
        try:
            with open(f"/proc/{pid}/net/{proto}") as f:
                next(f)
                for line in f:
                    fields = line.split()
                    out[int(fields[9])] = (proto, fields[3])
        except FileNotFoundError:
            pass
    try:
        with open(f"/proc/{pid}/net/unix") as f:
            next(f)
            for line in f:
                fields = line.split()
                out[int(fields[6])] = ("unix", fields[5])
    except FileNotFoundError:
        pass
    return out


def ns_id(pid, kind):
    st = os.stat(f"/proc/{pid}/ns/{kind}")
    return (st.st_dev, st.st_ino)


def dev_ino(path):
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


# --------------------------------------------------------------------------
# A daemon instance in its own namespaces


class StartError(Exception):
    pass


_live = set()
_live_lock = threading.Lock()

# $1: the spool directory to bind; $2: "-", or a size for a tmpfs spool of
# that size instead (the disk-full tests), seen from outside through
# /proc/PARENT/root/var/spool/smtpd; $3: more binds, "SRC:DST SRC:DST"
# ("-" for none; no spaces or colons in the paths): the delivery tests'
# private /var/mail and /home, or a file over a file (the relay tests'
# /etc/resolv.conf). A file whose destination is a dangling symlink into the
# fresh /run (resolv.conf -> /run/systemd/resolve/... on some systems) gets
# an empty file there to bind over; nothing is created anywhere else.
_NS_SCRIPT = (
    'set -e\n'
    'mount -t tmpfs -o mode=0755 tmpfs /var/run\n'
    'mount --bind "$1" /var/spool/smtpd\n'
    'if [ "$2" != - ]; then mount -t tmpfs -o "size=$2,mode=0711" tmpfs /var/spool/smtpd; fi\n'
    'if [ "$3" != - ]; then for b in $3; do\n'
    '  src=${b%%:*} dst=${b#*:}\n'
    '  if [ -f "$src" ] && [ ! -e "$dst" ]; then\n'
    '    t=$(readlink -m -- "$dst")\n'
    '    case $t in /run/*) mkdir -p -- "${t%/*}"; : >"$t";; esac\n'
    '  fi\n'
    '  mount --bind "$src" "$dst"\n'
    'done; fi\n'
    'ip link set lo up\n'
    'shift 3\n'
    'exec "$@"\n'
)


class Instance:
    """One smtpd in its own mount + network namespace.

    Always call stop() (fixtures do it in a finalizer): it kills every
    process the instance ever had, whatever state the test left it in.

    `netns`: the path of an existing network namespace (/proc/PID/ns/net)
    to run in instead of a fresh one: a host of a relay world
    (relay_world.py), whose addresses exist before the daemon binds.
    `bin`: another daemon binary, started the same way (relay_world's
    Reference runs Debian's OpenSMTPD so); READY is the log line that
    says it has started."""

    READY = r"smtpd-rs \S+ starting"

    def __init__(self, workdir, config, name="smtpd", verbose=True, args=(), spool=None, spool_size=None,
                 binds=(), deliver=False, netns=None, bin=None):
        self.workdir = Path(workdir)
        self.name = name
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o755)
        # A spool of an earlier instance (restart tests), or a fresh one.
        self.spool = Path(spool) if spool else self.workdir / "spool"
        self.spool_size = spool_size
        self.spool.mkdir(mode=0o711, exist_ok=spool is not None)
        os.chmod(self.spool, 0o711)
        os.chown(self.spool, 0, 0)
        self.conf = self.workdir / "smtpd.conf"
        self.conf.write_text(config)
        self.log_path = self.workdir / "smtpd.log"
        self.bin = Path(bin) if bin else smtpd_bin()
        self.netns_path = netns
        self.verbose = verbose
        # Local deliveries stay paused (OpenSMTPD's -P mda) unless a test
        # delivers: the receive tests read what the queue holds, and no
        # test writes to the host's own mailboxes.
        self.args = ([] if deliver else ["-P", "mda"]) + list(args)
        self.proc = None
        self.parent = None
        self.tree = {}  # pid -> starttime of every process seen in the tree
        self.net_fd = None
        self.mnt_fd = None
        self.net_id = None
        self.mnt_id = None
        self._buf = bytearray()
        self._buf_lock = threading.Lock()
        self._reader = None
        self._logfile = None
        self.connects = 0  # sessions opened by connect()
        self.binds = [(str(a), str(b)) for a, b in binds]

    # ---- start

    def start(self, wait_ready=True):
        if self.netns_path:
            ns = ["nsenter", f"--net={self.netns_path}", "--", "unshare", "--mount"]
        else:
            ns = ["unshare", "--mount", "--net"]
        argv = ns + [
            "--propagation", "private", "--fork",
            "--", "/bin/sh", "-c", _NS_SCRIPT, "sh", str(self.spool),
            self.spool_size or "-", " ".join(f"{a}:{b}" for a, b in self.binds) or "-",
            str(self.bin), "-d",
        ]
        if self.verbose:
            argv.append("-v")
        argv += ["-f", str(self.conf)] + self.args
        self._logfile = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
        with _live_lock:
            _live.add(self)
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()
        self._find_parent()
        if wait_ready:
            self.wait_log(self.READY, timeout=START_TIMEOUT)
            self.record_tree()
        return self

    def _read_output(self):
        fd = self.proc.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            with self._buf_lock:
                self._buf += chunk
            self._logfile.write(chunk)
            self._logfile.flush()

    def _find_parent(self):
        """The smtpd parent is unshare's only child once /bin/sh has exec'd
        the binary."""
        want = dev_ino(self.bin)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StartError(
                    f"{self.name}: exited with {self.proc.returncode} before starting:\n{self.log()}")
            for kid in children(self.proc.pid):
                try:
                    if dev_ino(f"/proc/{kid}/exe") == want:
                        self.parent = kid
                        self.tree[kid] = starttime(kid)
                        self.net_fd = os.open(f"/proc/{kid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
                        self.mnt_fd = os.open(f"/proc/{kid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
                        self.net_id = dev_ino(f"/proc/self/fd/{self.net_fd}")
                        self.mnt_id = dev_ino(f"/proc/self/fd/{self.mnt_fd}")
                        if self.net_id == ns_id("self", "net") or self.mnt_id == ns_id("self", "mnt"):
                            raise StartError(f"{self.name}: not in its own namespaces")
                        return
                except (FileNotFoundError, ProcessLookupError):
                    pass
            time.sleep(0.01)
        raise StartError(f"{self.name}: smtpd parent never appeared:\n{self.log()}")

    def record_tree(self):
        """Remember every process of the instance (parent, roles and any
        descendant), to prove later that none survives."""
        todo = [self.parent]
        while todo:
            pid = todo.pop()
            st = starttime(pid)
            if st is None:
                continue
            self.tree.setdefault(pid, st)
            todo.extend(children(pid))
        for pid in self.ns_pids():
            self.tree.setdefault(pid, starttime(pid))

    # ---- observation

    def log(self):
        with self._buf_lock:
            return self._buf.decode("utf-8", "replace")

    def log_lines(self):
        return self.log().split("\n")

    def log_size(self):
        with self._buf_lock:
            return len(self._buf)

    def log_since(self, offset):
        with self._buf_lock:
            return bytes(self._buf[offset:]).decode("utf-8", "replace")

    def wait_log(self, pattern, timeout=10.0, since=0):
        """Wait for a line matching `pattern` (re.search) in the log after
        byte offset `since`; return the match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log_since(since).split("\n"):
                m = rx.search(line)
                if m:
                    return m
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{self.name}: no log line matching {pattern!r} within {timeout}s; log:\n{self.log()}")
            if self.proc.poll() is not None and self._reader is not None:
                self._reader.join(1)
                # One last look after all output is in.
                for line in self.log_since(since).split("\n"):
                    m = rx.search(line)
                    if m:
                        return m
                raise AssertionError(
                    f"{self.name}: exited ({self.proc.returncode}) without a log line matching "
                    f"{pattern!r}; log:\n{self.log()}")
            time.sleep(0.02)

    def role_pids(self):
        """{role: pid} of the parent's children, named by their proctitle
        ('smtpd: ROLE'). Children with another title are under key None."""
        out = {}
        for kid in children(self.parent):
            try:
                title, _ = proctitle(kid)
            except FileNotFoundError:
                continue
            m = re.fullmatch(r"smtpd: (\S+)", title)
            key = m.group(1) if m else None
            out.setdefault(key, []).append(kid)
        return out

    def role_pid(self, role):
        pids = self.role_pids().get(role, [])
        assert len(pids) == 1, (
            f"{self.name}: expected one process titled 'smtpd: {role}', found {pids}; "
            f"children: {self.describe_children()}")
        return pids[0]

    def describe_children(self):
        out = []
        for kid in children(self.parent):
            try:
                out.append((kid, read_cmdline(kid)))
            except FileNotFoundError:
                pass
        return out

    def kill_all(self, rnd):
        """SIGKILL every process in the instance's namespaces, in an order
        `rnd` (a random.Random) picks: the kill -9 tests' crash."""
        pids = list(self.ns_pids())
        rnd.shuffle(pids)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def ns_pids(self):
        """Every live process in this instance's network and mount
        namespaces (the namespaces are kept alive by our fds, so their ids
        are not reused while the instance exists)."""
        out = set()
        me = os.getpid()
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            pid = int(name)
            if pid == me:
                continue
            try:
                if ns_id(pid, "net") == self.net_id and ns_id(pid, "mnt") == self.mnt_id:
                    out.add(pid)
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                pass
        return out

    def survivors(self):
        """Processes of the instance still alive: any recorded process of
        the tree, and anything at all in its namespaces."""
        left = {pid for pid, st in self.tree.items() if st is not None and alive(pid, st)}
        left |= {pid for pid in self.ns_pids() if proc_state(pid) not in (None, "Z")}
        if self.proc is not None and self.proc.poll() is None:
            left.discard(self.proc.pid)  # unshare itself, not yet reaped
        return left

    # ---- interaction

    @contextlib.contextmanager
    def netns(self):
        """Run the body in this instance's network namespace (this thread
        only)."""
        orig = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if _libc.setns(self.net_fd, CLONE_NEWNET) != 0:
                e = ctypes.get_errno()
                raise OSError(e, f"setns: {os.strerror(e)}")
            try:
                yield
            finally:
                if _libc.setns(orig, CLONE_NEWNET) != 0:
                    e = ctypes.get_errno()
                    # Carrying on in the wrong namespace would make every
                    # later test lie.
                    os.write(2, f"FATAL: cannot return to the test's network namespace: "
                                f"{os.strerror(e)}\n".encode())
                    os._exit(70)
        finally:
            os.close(orig)

    def connect(self, port=25, host="127.0.0.1", timeout=10.0):
        with self.netns():
            sock = socket.create_connection((host, port), timeout=timeout)
        self.connects += 1
        return sock

    def settle_sessions(self, timeout=10.0):
        """Wait until every session opened so far is logged as connected and
        disconnected; return the log offset then. Log lines travel through a
        pipe and a reader thread, so a client can see a banner before the
        log shows the session: only a settled log tells sessions apart."""
        connected = re.compile(r"([0-9a-f]{16}) smtp connected ")
        disconnected = re.compile(r"([0-9a-f]{16}) smtp disconnected ")
        deadline = time.monotonic() + timeout
        while True:
            with self._buf_lock:
                size = len(self._buf)
                text = self._buf.decode("utf-8", "replace")
            ids = connected.findall(text)
            done = set(disconnected.findall(text))
            if len(ids) >= self.connects and set(ids) <= done:
                return size
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{self.name}: {self.connects} sessions opened, log shows {len(ids)} "
                    f"connected, not disconnected: {sorted(set(ids) - done)}; log:\n{text}")
            time.sleep(0.02)

    def signal_parent(self, sig):
        os.kill(self.parent, sig)

    def wait_exit(self, timeout=STOP_TIMEOUT):
        """Wait for the parent to exit; return its exit status (unshare
        --fork exits with its child's status)."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name}: still running {timeout}s later; log:\n{self.log()}") from None
        if self._reader is not None:
            self._reader.join(5)
        return rc

    # ---- teardown

    def stop(self):
        """Kill whatever is left of the instance and release everything.
        Safe to call any number of times, in any state."""
        if self.proc is None:
            return
        for _ in range(50):
            victims = set()
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            for pid, st in self.tree.items():
                if st is not None and alive(pid, st):
                    victims.add(pid)
            if self.net_id is not None:
                victims |= self.ns_pids()
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                self.proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                continue
            if not victims:
                break
            time.sleep(0.02)
        if self._reader is not None:
            self._reader.join(5)
        for fd in (self.net_fd, self.mnt_fd):
            if fd is not None:
                os.close(fd)
        self.net_fd = self.mnt_fd = None
        if self.proc.stdout:
            self.proc.stdout.close()
        if self._logfile:
            self._logfile.close()
            self._logfile = None
        with _live_lock:
            _live.discard(self)


def stop_all():
    with _live_lock:
        live = list(_live)
    for inst in live:
        inst.stop()


# --------------------------------------------------------------------------
# A line-oriented SMTP client on a raw socket (the daemon closes after 421,
# which smtplib reports as an exception; here the close itself is checked).


class Client:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def line(self):
        """One CRLF-terminated line, without CRLF; None at EOF."""
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                if self.buf:
                    rest, self.buf = self.buf, b""
                    return rest.decode("utf-8", "replace")
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def send(self, text):
        self.sock.sendall(text.encode() + b"\r\n")

    def at_eof(self):
        """True if the server has closed: nothing more, then EOF."""
        rest = b""
        while True:
            chunk = self.sock.recv(4096)
            if not chunk:
                return self.buf + rest == b""
            rest += chunk

    def close(self):
        self.sock.close()


def is_socket(target):
    return target.startswith("socket:[")


def socket_inode(target):
    return int(target[len("socket:["):-1])


# --------------------------------------------------------------------------
# Making a role do a system call it did not choose to make (ptrace, x86_64).
#
# The role is stopped where it sleeps (in epoll_wait), its registers are set
# up for another system call at the `syscall` instruction it was sleeping in,
# and it is let go. This tests the real sandbox of the real role from
# outside: with seccomp in place a forbidden call kills it with SIGSYS.

PTRACE_PEEKUSER = 3
PTRACE_GETREGS = 12
PTRACE_SETREGS = 13
PTRACE_ATTACH = 16
PTRACE_DETACH = 17
WALL = 0x40000000

SYS_exit_group = 231
SYS_chroot = 161


class _Regs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_ulonglong) for name in (
        "r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax "
        "rip cs eflags rsp ss fs_base gs_base ds es fs gs").split()]


_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
_libc.ptrace.restype = ctypes.c_long


def _ptrace(req, pid, addr=None, data=None):
    ctypes.set_errno(0)
    r = _libc.ptrace(req, pid, addr, data)
    if r == -1 and ctypes.get_errno():
        e = ctypes.get_errno()
        raise OSError(e, f"ptrace({req}, {pid}): {os.strerror(e)}")
    return r


def _attach_in_syscall(pid, timeout=10.0):
    """ptrace-attach to pid at a moment it is asleep in a system call (its
    event loop's epoll_wait); return its registers. Retries while it is
    running in user space. The caller must detach."""
    deadline = time.monotonic() + timeout
    while True:
        _ptrace(PTRACE_ATTACH, pid)
        _, status = os.waitpid(pid, WALL)
        if not os.WIFSTOPPED(status):
            raise RuntimeError(f"pid {pid}: not stopped after attach: status {status:#x}")
        regs = _Regs()
        _ptrace(PTRACE_GETREGS, pid, None, ctypes.byref(regs))
        if ctypes.c_longlong(regs.orig_rax).value >= 0:
            with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
                mem.seek(regs.rip - 2)
                if mem.read(2) == b"\x0f\x05":
                    return regs
        _ptrace(PTRACE_DETACH, pid, None, None)
        if time.monotonic() > deadline:
            raise RuntimeError(f"pid {pid} was never caught asleep in a system call")
        time.sleep(0.02)


def inject_syscall(pid, nr, *args):
    """Make process `pid`, asleep in a system call, execute system call `nr`
    with `args` instead when it resumes. Returns the syscall it was in."""
    import platform
    if platform.machine() != "x86_64":
        raise NotImplementedError(f"syscall injection is x86_64 only, not {platform.machine()}")
    regs = _attach_in_syscall(pid)
    try:
        was = ctypes.c_longlong(regs.orig_rax).value
        regs.rip -= 2
        regs.rax = nr
        regs.orig_rax = (1 << 64) - 1  # no restart of the interrupted call
        for name, value in zip(("rdi", "rsi", "rdx", "r10", "r8", "r9"), args):
            setattr(regs, name, value & ((1 << 64) - 1))
        _ptrace(PTRACE_SETREGS, pid, None, ctypes.byref(regs))
        return was
    finally:
        _ptrace(PTRACE_DETACH, pid, None, None)


PTRACE_SYSCALL = 24
SYS_mprotect = 10
SYS_munmap = 11
SYS_restart_syscall = 219
_RESTART_ERRNOS = {512, 513, 514}  # ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND
_ERESTART_RESTARTBLOCK = 516


class RoleDied(Exception):
    def __init__(self, status):
        self.status = status
        if os.WIFSIGNALED(status):
            what = f"killed by signal {os.WTERMSIG(status)}"
        else:
            what = f"exited with status {os.WEXITSTATUS(status)}"
        super().__init__(what)


def call_syscall(pid, nr, *args):
    """Make process `pid`, asleep in a system call, make system call `nr`
    with `args`, then put it back exactly where it was (its interrupted
    call restarted), as if a debugger had attached and detached. Returns
    the call's result (a negative errno on failure); raises RoleDied if the
    process died of it."""
    import platform
    if platform.machine() != "x86_64":
        raise NotImplementedError(f"syscall injection is x86_64 only, not {platform.machine()}")
    saved = _attach_in_syscall(pid)
    attached = True
    try:
        regs = _Regs.from_buffer_copy(saved)
        regs.rip -= 2
        regs.rax = nr
        regs.orig_rax = (1 << 64) - 1
        for name, value in zip(("rdi", "rsi", "rdx", "r10", "r8", "r9"), args):
            setattr(regs, name, value & ((1 << 64) - 1))
        _ptrace(PTRACE_SETREGS, pid, None, ctypes.byref(regs))
        # To the entry of the call, then to its exit.
        for _ in range(2):
            _ptrace(PTRACE_SYSCALL, pid, None, None)
            _, status = os.waitpid(pid, WALL)
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                attached = False
                raise RoleDied(status)
        out = _Regs()
        _ptrace(PTRACE_GETREGS, pid, None, ctypes.byref(out))
        result = ctypes.c_longlong(out.rax).value
        # Back to the interrupted call, restarted the way the kernel would.
        back = _Regs.from_buffer_copy(saved)
        err = -ctypes.c_longlong(saved.rax).value
        if err in _RESTART_ERRNOS:
            back.rip -= 2
            back.rax = saved.orig_rax
            back.orig_rax = (1 << 64) - 1
        elif err == _ERESTART_RESTARTBLOCK:
            back.rip -= 2
            back.rax = SYS_restart_syscall
            back.orig_rax = (1 << 64) - 1
        _ptrace(PTRACE_SETREGS, pid, None, ctypes.byref(back))
        return result
    finally:
        if attached:
            try:
                _ptrace(PTRACE_DETACH, pid, None, None)
            except OSError:
                pass
