#!/usr/bin/python3
"""Receiving mail: smtpd-rs side by side with OpenSMTPD (issue 5's benchmark).

For each daemon (runs interleaved; with --runs N the median of N is shown):
  - start `smtpd -d -f CONF` in its own mount and network namespace, with a
    fresh spool and /var/run (nslib: `unshare -mn`, lo up, a temp dir in
    --dir bind-mounted over /var/spool/smtpd and /var/run). Both daemons get
    `listen on 127.0.0.1 port 25`, one mbox action and `match from local for
    local`. Both are started with `-P mda` (local deliveries paused), so
    they only accept and queue;
  - the spool's file system (--fs): by default ("image") a fresh ext4 for
    every run, made by mkfs.ext4 with its defaults (so journaled, as a
    spool's file system would be) on a loop device with direct I/O over one
    zero-filled file in --dir, mounted over the spool inside the namespace.
    Every run starts from the same state, and syncfs(2) flushes the spool
    alone. With "dir" the spool is a plain directory in --dir: on this
    project's VM that is an ext4 WITHOUT a journal, where fsync is cheap and
    where the inode allocator scans past every inode freed in the last
    minutes, so numbers there depend on what was deleted just before (the
    temp dirs are kept until the end for that reason);
  - the load: --messages messages (default 5,000) of --size bytes (4 KiB)
    from --sessions concurrent sessions (20), one process with non-blocking
    sockets in the daemon's network namespace. Sessions are persistent: each
    connects, EHLO, then MAIL FROM / RCPT TO:<root@localhost> / DATA /
    message / "." in lock step (OpenSMTPD 6.8 has no PIPELINING; no RSET, a
    completed DATA resets the transaction), and after --per-connection
    messages (100: both daemons answer a 101st MAIL in a session with 452)
    QUIT and reconnect. Sessions take the next message from a common pool
    until it is empty. They start one after another, each once the one
    before has its banner: OpenSMTPD's listen backlog is small, and 20
    simultaneous connects lose SYNs that TCP sends again only after 1 s;
  - the latency probe, ALONGSIDE the load: one more session, in a process of
    its own, sends --probe messages (200) one after the other, paced over
    the load (message i waits until the load has had i/200 of its 250s) and
    times each from sending the final ".\r\n" (the body went just before)
    to reading the 250. Samples taken after the load ended are counted and
    shown; the p99 is the nearest-rank one (the 198th of 200);
  - accepted messages/s: the load's 250s over the wall time from its first
    connect to its last 250;
  - CPU per 1,000 messages: utime+stime+cutime+cstime (/proc/PID/stat, so
    children that exited and were reaped are included) summed over every
    process in the daemon's network namespace except ours, before the load
    and 0.5 s after the last 250, over all 250s (load and probe);
  - peak PSS: the sum of Pss (/proc/PID/smaps_rollup) over the same
    processes, sampled every 100 ms during the run; its maximum;
  - correctness: after the run, with the daemon still up, the messages in
    its spool's queue/ (`message` files; the other files there are counted
    as envelopes) must equal the 250s the clients got.
Before the first run and after the last: the fsync rate of the spools' kind
of file system (a fresh one, as the runs get): 4 KiB appended + fsync in a
loop, by 1 writer and by 20 writer threads (--fsync-seconds each, 3), in
fsyncs/s.

Also printed: the load's mean time from each command to its reply (where a
session waits), each daemon process's CPU seconds, and with --profile where
each process spends the run (its state sampled from /proc/PID/syscall about
every millisecond: on a CPU, or in which system call).

Postfix is not measured: Debian's postfix and opensmtpd packages both
provide and conflict with mail-transport-agent, so installing one removes
the other, and this benchmark never installs or removes packages.

The load generator and the daemon share the machine's cores; the
generator's own CPU is printed too.

Run as root: `make bench`, or
  /usr/bin/python3 bench/receive.py [--runs N] [--messages N] [--sessions N]
      [--size BYTES] [--probe N] [--fs image|dir] [--profile] [--json FILE]
      [--ours PATH] [--opensmtpd PATH]
A daemon whose binary is missing is skipped with a message.
"""

import argparse
import json
import math
import mmap
import os
import resource
import selectors
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

from nslib import (BANNER_TIMEOUT, BUILD_HINT, OPENSMTPD_HINT, PORT, check_root, installed, log,
                   log_tail, make_tmp,
                   opensmtpd_version, proc_title, remove_tmp, run_inner,
                   setup_namespace, start_daemon, stop, wait_banner)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONF = (
    f"listen on 127.0.0.1 port {PORT}\n"
    'action "local" mbox\n'
    'match from local for local action "local"\n'
)
SENDER = "bench@localhost"
RECIPIENT = "root@localhost"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SAMPLE_INTERVAL = 0.1
SETTLE = 0.5


# ---------------------------------------------------------------- /proc


def netns_pids(exclude):
    """Every process in our network namespace, but those in exclude."""
    mine = os.stat("/proc/self/ns/net").st_ino
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) in exclude:
            continue
        try:
            if os.stat(f"/proc/{d}/ns/net").st_ino == mine:
                out.append(int(d))
        except OSError:
            pass
    return out


def cpu_ticks(pid):
    """utime+stime of the process and of its reaped children, in ticks."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2 :].split()
    # fields[0] is field 3 (state): utime, stime, cutime, cstime are 14-17.
    return sum(int(x) for x in fields[11:15])


def cpu_snapshot(exclude):
    snap = {}
    for pid in netns_pids(exclude):
        try:
            snap[pid] = (cpu_ticks(pid), proc_title(pid))
        except OSError:
            pass
    return snap


def pss_kib(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


class Sampler(threading.Thread):
    """Sums Pss over the namespace's processes every SAMPLE_INTERVAL."""

    def __init__(self, exclude):
        super().__init__(daemon=True)
        self.exclude = exclude
        self.halt = threading.Event()
        self.peak = 0
        self.peak_procs = 0
        self.samples = 0

    def run(self):
        while not self.halt.is_set():
            total, n = 0, 0
            for pid in netns_pids(self.exclude):
                try:
                    total += pss_kib(pid)
                    n += 1
                except OSError:
                    pass
            self.samples += 1
            if total > self.peak:
                self.peak, self.peak_procs = total, n
            self.halt.wait(SAMPLE_INTERVAL)


# Names of the x86_64 system calls a daemon is most often found in.
SYSCALLS = {
    0: "read", 1: "write", 3: "close", 7: "poll", 19: "readv", 20: "writev",
    23: "select", 44: "sendto", 45: "recvfrom", 46: "sendmsg", 47: "recvmsg",
    74: "fsync", 75: "fdatasync", 82: "rename", 83: "mkdir", 84: "rmdir",
    87: "unlink", 138: "fstatfs", 217: "getdents64", 232: "epoll_wait",
    257: "openat", 262: "newfstatat", 270: "pselect6", 281: "epoll_pwait",
    306: "syncfs", 316: "renameat2", 332: "statx", 441: "epoll_pwait2",
}


class Profiler(threading.Thread):
    """--profile: where each daemon process spends the run, by sampling
    /proc/PID/syscall about every millisecond: "running" (on a CPU or
    runnable) or the system call it is in (blocked or about to block)."""

    def __init__(self, exclude):
        super().__init__(daemon=True)
        self.exclude = exclude
        self.halt = threading.Event()
        self.counts = {}  # pid -> {state: samples}
        self.titles = {}

    def run(self):
        pids, refreshed = [], 0.0
        while not self.halt.is_set():
            now = time.monotonic()
            if now - refreshed > 0.1:
                pids, refreshed = netns_pids(self.exclude), now
            for pid in pids:
                try:
                    with open(f"/proc/{pid}/syscall") as f:
                        first = f.read().split(" ", 1)[0].strip()
                    if pid not in self.titles:
                        self.titles[pid] = proc_title(pid)
                except OSError:
                    continue
                if first.lstrip("-").isdigit():
                    n = int(first)
                    state = SYSCALLS.get(n, f"syscall {n}") if n >= 0 else "blocked"
                else:
                    state = first  # "running"
                c = self.counts.setdefault(pid, {})
                c[state] = c.get(state, 0) + 1
            time.sleep(0.001)

    def result(self):
        out = []
        for pid, c in self.counts.items():
            total = sum(c.values())
            top = sorted(c.items(), key=lambda kv: -kv[1])
            out.append({"pid": pid, "title": self.titles.get(pid, "?"), "samples": total,
                        "states": {k: v / total for k, v in top}})
        return out


# ---------------------------------------------------------------- clients


def make_message(size, tag, i, sender=SENDER, recipient=RECIPIENT,
                 subject="receive benchmark"):
    """A message of exactly `size` bytes (CRLF lines, no line starting with
    a dot), without the final ".\\r\\n"."""
    head = (
        f"From: <{sender}>\r\n"
        f"To: <{recipient}>\r\n"
        f"Subject: {subject} {tag} {i}\r\n"
        f"Message-Id: <{tag}.{i}@bench.localhost>\r\n"
        "Date: Thu, 1 Jan 2026 00:00:00 +0000\r\n"
        "\r\n"
    ).encode()
    line = b"x" * 76 + b"\r\n"
    body = bytearray(head)
    while len(body) + len(line) <= size:
        body += line
    rest = size - len(body)
    if rest >= 3:
        body += b"y" * (rest - 2) + b"\r\n"
    elif rest:
        body += b"z" * rest  # below 3 bytes: only with absurdly small sizes
    return bytes(body)


def reply_complete(buf):
    """(code, text, rest) once buf holds a whole (multi-line) reply."""
    start = 0
    while True:
        end = buf.find(b"\r\n", start)
        if end < 0:
            return None
        line = buf[start:end]
        if len(line) < 4 or line[3:4] != b"-":
            code = int(line[:3]) if line[:3].isdigit() else 0
            return code, bytes(buf[:end]), buf[end + 2 :]
        start = end + 2


class Shared:
    """Counters the load shares with the probe (anonymous shared memory)."""

    def __init__(self):
        self.m = mmap.mmap(-1, 16)

    def set_accepted(self, n):
        struct.pack_into("q", self.m, 0, n)

    def accepted(self):
        return struct.unpack_from("q", self.m, 0)[0]

    def set_done(self):
        struct.pack_into("q", self.m, 8, 1)

    def done(self):
        return struct.unpack_from("q", self.m, 8)[0] == 1


class Session:
    """One load session's state machine; the loop feeds it replies."""

    def __init__(self, gen, n):
        self.gen, self.n = gen, n
        self.sock = None
        self.inbuf = b""
        self.out = b""
        self.state = None
        self.in_conn = 0

    def connect(self):
        g = self.gen
        # Non-blocking: a SYN dropped by a full listen queue (OpenSMTPD's
        # backlog is small) stalls this session, not the whole load.
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.sock.connect_ex((g.addr, PORT))
        g.connects += 1
        if g.t_first is None:
            g.t_first = time.monotonic()
        self.inbuf, self.out, self.in_conn = b"", b"", 0
        self.state = "banner"
        self.sent_at = time.monotonic()
        g.sel.register(self.sock, selectors.EVENT_READ, self)

    def close(self):
        if self.sock is not None:
            self.gen.sel.unregister(self.sock)
            self.sock.close()
            self.sock = None

    def send(self, data):
        self.sent_at = time.monotonic()
        self.out += data
        self.flush()

    def flush(self):
        try:
            while self.out:
                k = self.sock.send(self.out)
                self.out = self.out[k:]
        except BlockingIOError:
            pass
        self.gen.sel.modify(self.sock, selectors.EVENT_READ
                            | (selectors.EVENT_WRITE if self.out else 0), self)

    def next_message(self):
        g = self.gen
        if g.pool == 0 or self.in_conn >= g.per_conn:
            self.state = "quit"
            self.send(b"QUIT\r\n")
            return
        g.pool -= 1
        self.msg = g.next_index
        g.next_index += 1
        self.in_conn += 1
        self.state = "mail"
        self.send(f"MAIL FROM:<{g.sender}>\r\n".encode())

    def fail(self, code, text):
        g = self.gen
        g.failures += 1
        if len(g.failure_samples) < 5:
            g.failure_samples.append(f"{self.state}: {text[:200]!r}")
        self.close()
        if g.pool:
            self.connect()

    def on_reply(self, code, text):
        g = self.gen
        st = self.state
        ph = g.phases.setdefault(st, [0, 0.0])
        ph[0] += 1
        ph[1] += time.monotonic() - self.sent_at
        if st == "banner":
            waited = time.monotonic() - self.sent_at
            g.banner_max = max(g.banner_max, waited)
            if waited >= 0.9:
                g.slow_connects += 1
            if g.idle:
                g.idle.pop().connect()
            if code != 220:
                return self.fail(code, text)
            self.state = "ehlo"
            self.send(b"EHLO bench.localhost\r\n")
        elif st == "ehlo":
            if code != 250:
                return self.fail(code, text)
            self.next_message()
        elif st == "mail":
            if code != 250:
                return self.fail(code, text)
            self.state = "rcpt"
            self.send(f"RCPT TO:<{g.recipient}>\r\n".encode())
        elif st == "rcpt":
            if code != 250:
                return self.fail(code, text)
            self.state = "data"
            self.send(b"DATA\r\n")
        elif st == "data":
            if code != 354:
                return self.fail(code, text)
            self.state = "dot"
            self.send(make_message(g.size, g.tag, self.msg, g.sender, g.recipient,
                                   g.subject) + b".\r\n")
        elif st == "dot":
            if code != 250:
                return self.fail(code, text)
            g.accepted += 1
            g.t_last = time.monotonic()
            g.shared.set_accepted(g.accepted)
            self.next_message()
        elif st == "quit":
            self.close()
            if g.pool:
                self.connect()


class Load:
    def __init__(self, args, shared, tag):
        self.pool = args["messages"]
        self.sessions_n = args["sessions"]
        self.per_conn = args["per_connection"]
        self.size = args["size"]
        # The envelope and the Subject's prefix (deliver.py sets its own).
        self.sender = args.get("sender", SENDER)
        self.recipient = args.get("recipient", RECIPIENT)
        self.subject = args.get("subject", "receive benchmark")
        # Where the daemon listens (relay.py: its address on a private LAN).
        self.addr = args.get("addr", "127.0.0.1")
        self.deadline = time.monotonic() + args["timeout"]
        self.shared = shared
        self.tag = tag
        self.sel = selectors.DefaultSelector()
        self.next_index = 0
        self.accepted = 0
        self.failures = 0
        self.failure_samples = []
        self.connects = 0
        # Sessions not started yet: the ramp-up connects them one at a time,
        # each once the one before has its banner.
        self.idle = []
        self.banner_max = 0.0
        # Banners that took 0.9 s or more: a SYN dropped by a full listen
        # queue is sent again after 1 s.
        self.slow_connects = 0
        # Per state: [replies, seconds from our command to its reply].
        self.phases = {}
        self.t_first = self.t_last = None

    def run(self):
        self.idle = [Session(self, n) for n in range(self.sessions_n)][::-1]
        self.idle.pop().connect()
        timed_out = False
        while self.sel.get_map():
            if time.monotonic() > self.deadline:
                timed_out = True
                break
            for key, ev in self.sel.select(timeout=1.0):
                s = key.data
                if s.sock is None:
                    continue
                if ev & selectors.EVENT_WRITE:
                    s.flush()
                if ev & selectors.EVENT_READ:
                    try:
                        chunk = s.sock.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError as e:
                        s.fail(0, f"recv: {e}")
                        continue
                    if not chunk:
                        if s.state == "quit":
                            s.close()
                            if self.pool:
                                s.connect()
                        else:
                            s.fail(0, "connection closed")
                        continue
                    s.inbuf += chunk
                    while s.sock is not None:
                        r = reply_complete(s.inbuf)
                        if r is None:
                            break
                        code, text, s.inbuf = r
                        s.on_reply(code, text.decode(errors="replace"))
        self.shared.set_done()
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "accepted": self.accepted,
            "failures": self.failures,
            "failure_samples": self.failure_samples,
            "connects": self.connects,
            "slow_connects": self.slow_connects,
            "banner_max_ms": self.banner_max * 1000,
            "timed_out": timed_out,
            "wall": (self.t_last - self.t_first) if self.t_last else None,
            "client_cpu": ru.ru_utime + ru.ru_stime,
            "phase_ms": {k: v[1] / v[0] * 1000 for k, v in self.phases.items()},
        }


def read_reply(sock, buf):
    while True:
        r = reply_complete(buf)
        if r is not None:
            return r
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk


def probe(args, shared, tag):
    """The latency session: one message at a time, paced over the load."""
    n, total = args["probe"], args["messages"]
    per_conn, size = args["per_connection"], args["size"]
    deadline = time.monotonic() + args["timeout"]
    lat, after_load, accepted, failures, samples = [], 0, 0, [], []
    sock, buf, in_conn = None, b"", 0

    def cmd(line, want):
        nonlocal buf
        sock.sendall(line)
        code, text, buf = read_reply(sock, buf)
        if code != want:
            raise ValueError(text.decode(errors="replace")[:200])

    for i in range(n):
        target = i * total // n
        while (shared.accepted() < target and not shared.done()
               and time.monotonic() < deadline):
            time.sleep(0.0005)
        if time.monotonic() > deadline:
            break
        try:
            if sock is None or in_conn >= per_conn:
                if sock is not None:
                    try:
                        sock.sendall(b"QUIT\r\n")
                        read_reply(sock, buf)
                    except (OSError, ConnectionError):
                        pass
                    sock.close()
                sock = socket.create_connection(("127.0.0.1", PORT), timeout=60)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.settimeout(60)
                buf, in_conn = b"", 0
                code, text, buf = read_reply(sock, buf)
                if code != 220:
                    raise ValueError(text.decode(errors="replace")[:200])
                cmd(b"EHLO probe.localhost\r\n", 250)
            in_conn += 1
            cmd(f"MAIL FROM:<{SENDER}>\r\n".encode(), 250)
            cmd(f"RCPT TO:<{RECIPIENT}>\r\n".encode(), 250)
            cmd(b"DATA\r\n", 354)
            sock.sendall(make_message(size, tag + "p", i))
            t0 = time.perf_counter()
            sock.sendall(b".\r\n")
            code, text, buf = read_reply(sock, buf)
            t1 = time.perf_counter()
            if code != 250:
                raise ValueError(text.decode(errors="replace")[:200])
            accepted += 1
            lat.append((t1 - t0) * 1000)
            if shared.done():
                after_load += 1
        except (OSError, ValueError, ConnectionError) as e:
            failures.append(str(e))
            if sock is not None:
                sock.close()
            sock = None
    if sock is not None:
        try:
            sock.sendall(b"QUIT\r\n")
            read_reply(sock, buf)
        except (OSError, ConnectionError):
            pass
        sock.close()
    return {"accepted": accepted, "latencies_ms": lat, "after_load": after_load,
            "failures": len(failures), "failure_samples": failures[:5]}


def in_child(fn, *a):
    """Fork; the child waits for a byte on the go pipe, runs fn(*a) and
    writes its JSON result to the result pipe. Returns (pid, go_w, res_r)."""
    go_r, go_w = os.pipe()
    res_r, res_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(go_w)
            os.close(res_r)
            os.read(go_r, 1)
            try:
                out = fn(*a)
            except Exception as e:  # reported to the parent, not raised
                out = {"error": f"{fn.__name__}: {type(e).__name__}: {e}"}
            data = json.dumps(out).encode()
            while data:
                data = data[os.write(res_w, data):]
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(go_r)
    os.close(res_w)
    return pid, go_w, res_r


def collect(pid, res_r):
    chunks = []
    while True:
        b = os.read(res_r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(res_r)
    os.waitpid(pid, 0)
    if not chunks:
        return {"error": "client process died"}
    return json.loads(b"".join(chunks))


# ---------------------------------------------------------------- inside


def count_queue(root):
    """(messages, envelopes) under root/queue: `message` files, and every
    other regular file."""
    messages = envelopes = 0
    for dirpath, _dirs, files in os.walk(f"{root}/queue"):
        for f in files:
            if f == "message":
                messages += 1
            elif os.path.isfile(os.path.join(dirpath, f)):
                envelopes += 1
    return messages, envelopes


def measure(spec, daemon):
    shared = Shared()
    tag = f"{spec['label']}{os.getpid()}"
    load_pid, load_go, load_res = in_child(lambda: Load(spec, shared, tag).run())
    probe_pid, probe_go, probe_res = in_child(probe, spec, shared, tag)
    exclude = {os.getpid(), load_pid, probe_pid}

    before = cpu_snapshot(exclude)
    sampler = Sampler(exclude)
    sampler.start()
    profiler = Profiler(exclude) if spec.get("profile") else None
    if profiler:
        profiler.start()
    t0 = time.monotonic()
    os.write(load_go, b"g")
    os.write(probe_go, b"g")
    os.close(load_go)
    os.close(probe_go)
    load = collect(load_pid, load_res)
    pr = collect(probe_pid, probe_res)
    t_end = time.monotonic()
    if profiler:
        profiler.halt.set()
        profiler.join()
    time.sleep(SETTLE)
    after = cpu_snapshot(exclude)
    sampler.halt.set()
    sampler.join()

    per_proc = []
    for pid, (ticks, title) in after.items():
        base = before.get(pid, (0, title))[0]
        per_proc.append({"pid": pid, "title": title, "cpu_s": (ticks - base) / CLK_TCK})
    gone = [{"pid": pid, "title": t} for pid, (_, t) in before.items() if pid not in after]
    cpu = (sum(t for t, _ in after.values()) - sum(t for t, _ in before.values())) / CLK_TCK
    messages, envelopes = count_queue("/var/spool/smtpd")
    return {
        "load": load,
        "probe": pr,
        "cpu_s": cpu,
        "per_proc": per_proc,
        "gone": gone,
        "peak_pss_kib": sampler.peak,
        "peak_procs": sampler.peak_procs,
        "pss_samples": sampler.samples,
        "run_s": t_end - t0,
        "queued_messages": messages,
        "queued_envelopes": envelopes,
        "alive": daemon.poll() is None,
        "profile": profiler.result() if profiler else None,
    }


def mount_spool(spec):
    """With --fs image: the fresh file system over tmp/spool (this mount
    namespace only), as bare as a new spool directory."""
    tmp = spec["tmp"]
    if spec.get("device"):
        subprocess.run(["mount", spec["device"], f"{tmp}/spool"], check=True)
        os.rmdir(f"{tmp}/spool/lost+found")
        os.chmod(f"{tmp}/spool", 0o711)


def inner(spec):
    """Runs inside `unshare -mn`: set the namespace up, measure, stop."""
    tmp = spec["tmp"]
    mount_spool(spec)
    if spec.get("fsync_seconds"):
        print(json.dumps({f"{w}": fsync_rate(f"{tmp}/spool", w, spec["fsync_seconds"])
                          for w in (1, 20)}))
        return
    setup_namespace(tmp, spec["keep_resolver"])
    result = {}
    with open(f"{tmp}/log", "wb") as logf:
        daemon = start_daemon(spec["binary"], tmp, logf, spec["daemon_args"])
        try:
            t1 = wait_banner(daemon)
            if isinstance(t1, str):
                result["error"] = t1
            else:
                result = measure(spec, daemon)
                if not result["alive"]:
                    result["error"] = f"daemon exited with status {daemon.returncode}"
        finally:
            stop(daemon)
    if "error" in result or result["load"].get("error") or result["probe"].get("error"):
        result["log"] = log_tail(tmp)
    print(json.dumps(result))


# ---------------------------------------------------------------- fsync


def fsync_rate(directory, writers, seconds, size=4096):
    """fsyncs/s of `writers` threads, each appending `size` bytes to a file
    of its own and fsyncing it, for `seconds`."""
    buf = b"f" * size
    counts = [0] * writers
    start = threading.Barrier(writers + 1)
    stop_at = [0.0]
    paths = [os.path.join(directory, f"fsync-{os.getpid()}-{i}") for i in range(writers)]

    def work(i):
        fd = os.open(paths[i], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        try:
            start.wait()
            n = 0
            while time.monotonic() < stop_at[0]:
                os.write(fd, buf)
                os.fsync(fd)
                n += 1
            counts[i] = n
        finally:
            os.close(fd)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    stop_at[0] = time.monotonic() + seconds
    t0 = time.monotonic()
    start.wait()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    for p in paths:
        os.unlink(p)
    return sum(counts) / elapsed


def fs_of(path):
    out = subprocess.run(["findmnt", "-n", "-o", "SOURCE,FSTYPE,OPTIONS", "-T", path],
                         capture_output=True, text=True).stdout.split()
    return f"{out[1]} on {out[0]}" if len(out) >= 2 else "?"


# ---------------------------------------------------------------- outside


def postfix_note():
    """Why Postfix is not measured, from the package metadata (read only)."""
    def field(pkg, name):
        try:
            out = subprocess.run(["apt-cache", "show", pkg], capture_output=True,
                                 text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            return None
        for line in out.splitlines():
            if line.lower().startswith(name.lower() + ":"):
                return [x.strip().split(" ")[0] for x in line.split(":", 1)[1].split(",")]
        return []

    pc, op = field("postfix", "Conflicts"), field("opensmtpd", "Provides")
    if pc is None or op is None:
        return "not measured (apt-cache unavailable)"
    clash = sorted(set(pc) & (set(op) | {"opensmtpd"}))
    if clash:
        return ("not measured: package conflict (postfix Conflicts: "
                f"{', '.join(clash)}, which opensmtpd provides; installing "
                "postfix would remove OpenSMTPD)")
    return "not measured (this benchmark does not install packages)"


class Image:
    """--fs image: one file in --dir, written with zeros once (so no run pays
    for the host file system allocating its blocks), on a loop device with
    direct I/O; fresh() makes a new ext4 on it (mkfs.ext4's defaults, so
    journaled, as a spool's file system would be) for each run."""

    def __init__(self, args):
        mib = max(1024, math.ceil((args.messages + args.probe)
                                  * (2 * args.size + 65536) / 2**20))
        self.dir = tempfile.mkdtemp(prefix="smtpd-bench-img-", dir=args.dir)
        self.path = f"{self.dir}/spool.img"
        self.device = None
        try:
            zeros = bytes(4 << 20)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                for _ in range(mib // 4):
                    os.write(fd, zeros)
                os.fsync(fd)
            finally:
                os.close(fd)
            self.device = subprocess.run(
                ["losetup", "--find", "--show", "--direct-io=on", self.path],
                capture_output=True, text=True, check=True).stdout.strip()
        except BaseException:
            self.close()
            raise
        self.mib = mib

    def fresh(self):
        """A new file system on the device. The last run's mount goes away
        with its namespace, perhaps a moment after it exits: retry."""
        # No lazy init: no kernel thread zeroing inode tables during a run;
        # no discard: the image keeps its blocks.
        cmd = ["mkfs.ext4", "-q", "-F", "-L", "smtpd-bench",
               "-E", "lazy_itable_init=0,lazy_journal_init=0,nodiscard", self.device]
        for _ in range(100):
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"mkfs.ext4 {self.device}: {p.stderr.strip()}")

    def close(self):
        if self.device:
            for _ in range(100):
                if subprocess.run(["losetup", "-d", self.device],
                                  capture_output=True).returncode == 0:
                    break
                time.sleep(0.1)
            else:
                log(f"receive: could not detach {self.device} (losetup -d {self.device})")
            self.device = None
        remove_tmp(self.dir)


class Scratch:
    """Where one namespace run keeps its spool: a temp dir in --dir and,
    with --fs image, a fresh file system on the image, mounted over its
    spool dir inside the namespace. With --fs dir the spool is the temp dir
    itself, removed only at the end (see --fs)."""

    left = []

    def __init__(self, args, image, conf=CONF):
        self.args = args
        self.tmp = make_tmp(conf, args.dir)
        self.device = None
        if image:
            try:
                image.fresh()
            except BaseException:
                remove_tmp(self.tmp)
                raise
            self.device = image.device

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.device:
            remove_tmp(self.tmp)
        else:
            Scratch.left.append(self.tmp)

    @classmethod
    def cleanup(cls):
        for tmp in cls.left:
            remove_tmp(tmp)
        cls.left = []


def run_spec(args, sc, label, **extra):
    """What the inner side of a run is told: the options every load
    benchmark shares, and `extra` (shared with deliver.py and relay.py)."""
    return dict(tmp=sc.tmp, device=sc.device, label=label, messages=args.messages,
                sessions=args.sessions, size=args.size, per_connection=args.per_connection,
                timeout=args.timeout, profile=args.profile, **extra)


def one_run(name, binary, daemon_args, label, args, image):
    with Scratch(args, image) as sc:
        spec = run_spec(args, sc, label, binary=binary, daemon_args=daemon_args,
                        keep_resolver=args.keep_resolver, probe=args.probe)
        return run_inner(__file__, spec, BANNER_TIMEOUT + 2 * args.timeout + 60, name)


def fsync_probe(prog, args, image, when, fsync):
    """Measure the disk's fsync rate with 1 and 20 writers (unless
    --fsync-seconds is 0), log it and keep it in `fsync` under
    "<writers> <when>"."""
    if args.fsync_seconds <= 0:
        return
    r = fsync_run(args, image)
    if "error" in r:
        log(f"{prog}: fsync test: {r['error']}")
        return
    for w in (1, 20):
        fsync[f"{w} {when}"] = r[f"{w}"]
        log(f"{prog}: fsync {when} the daemons, {w} writer(s): {r[f'{w}']:,.0f}/s")


def fsync_run(args, image):
    with Scratch(args, image) as sc:
        spec = {"tmp": sc.tmp, "device": sc.device, "fsync_seconds": args.fsync_seconds}
        return run_inner(__file__, spec, 4 * args.fsync_seconds + 60, "fsync")


def pct(sorted_xs, p):
    """Nearest-rank percentile."""
    if not sorted_xs:
        return float("nan")
    return sorted_xs[max(0, math.ceil(p / 100 * len(sorted_xs)) - 1)]


def figures(r):
    load, pr = r["load"], r["probe"]
    lat = sorted(pr["latencies_ms"])
    total = load["accepted"] + pr["accepted"]
    return {
        "rate": load["accepted"] / load["wall"] if load.get("wall") else 0.0,
        "cpu_per_k": r["cpu_s"] / total * 1000 if total else float("nan"),
        "pss": r["peak_pss_kib"] / 1024,
        "p50": pct(lat, 50),
        "p99": pct(lat, 99),
        "wall": load.get("wall") or 0.0,
        "client_cpu": load.get("client_cpu", 0.0),
        "accepted": total,
        "queued": r["queued_messages"],
        "envelopes": r["queued_envelopes"],
        "failures": load.get("failures", 0) + pr.get("failures", 0),
        "after_load": pr["after_load"],
        "probe_n": len(lat),
    }


def check_run(name, r):
    """Problems with one run, as strings."""
    bad = []
    if "error" in r:
        bad.append(r["error"])
    for part in ("load", "probe"):
        p = r.get(part, {})
        if p.get("error"):
            bad.append(p["error"])
        if p.get("failures"):
            bad.append(f"{part}: {p['failures']} failed: {p['failure_samples']}")
        if p.get("timed_out"):
            bad.append(f"{part}: timed out")
    if "load" in r and "probe" in r and not bad:
        total = r["load"]["accepted"] + r["probe"]["accepted"]
        if r["queued_messages"] != total:
            bad.append(f"queue holds {r['queued_messages']} messages, clients got {total} 250s")
    return bad


def has_journal(path):
    """Whether the file system holding path is journaled (jbd2), or None."""
    out = subprocess.run(["findmnt", "-n", "-o", "SOURCE,FSTYPE", "-T", path],
                         capture_output=True, text=True).stdout.split()
    if len(out) < 2 or out[1] not in ("ext3", "ext4"):
        return None
    dev = os.path.basename(out[0])
    return os.path.isdir("/proc/fs/jbd2") and any(
        e.startswith(dev + "-") for e in os.listdir("/proc/fs/jbd2"))


def spool_description(args):
    host = f"{fs_of(args.dir)} ({args.dir})"
    if args.fs == "image":
        return ("a fresh journaled ext4 for each run (mkfs.ext4's defaults), on a loop "
                f"device with direct I/O over a {args.image_mib} MiB file on {host}")
    return host


def report(args, daemons, results, fsync):
    names = [name for name, _, _ in daemons if results[name]]
    med = {n: {k: statistics.median(figures(r)[k] for r in results[n])
               for k in figures(results[n][0])} for n in names}
    ours = "smtpd-rs" if "smtpd-rs" in med else None
    theirs = next((n for n in names if n != "smtpd-rs"), None)

    print(f"\nreceive: {args.messages} messages of {args.size} bytes from {args.sessions} "
          f"sessions (persistent, QUIT after {args.per_connection}), plus a latency "
          f"session of {args.probe} messages alongside; "
          + (f"median of {args.runs} runs; " if args.runs > 1 else "1 run; ")
          + f"{os.cpu_count()} cores, Linux {os.uname().release}")
    print(f"spool: {spool_description(args)}")
    rows = [
        ("accepted messages/s", "rate", "{:,.0f}", "ratio >= 1.5"),
        ("CPU s per 1,000 messages", "cpu_per_k", "{:.3f}", "ratio <= 1"),
        ("peak PSS, all processes (MiB)", "pss", "{:.1f}", ""),
        ("latency p50, dot to 250 (ms)", "p50", "{:.2f}", ""),
        ("latency p99, dot to 250 (ms)", "p99", "{:.2f}", "ratio <= 1"),
        ("load wall time (s)", "wall", "{:.2f}", ""),
        ("load generator's own CPU (s)", "client_cpu", "{:.2f}", ""),
    ]
    cols = ["smtpd-rs", theirs or "OpenSMTPD", "ratio", "goal"]
    width = 34
    print(f"\n{'':{width}}" + "".join(f"{c:>18}" for c in cols))
    missed = []
    for label, key, fmt, goal in rows:
        a = fmt.format(med[ours][key]) if ours else "-"
        b = fmt.format(med[theirs][key]) if theirs else "-"
        ratio, verdict = "-", ""
        if ours and theirs and med[theirs][key]:
            q = med[ours][key] / med[theirs][key]
            ratio = f"{q:.2f}"
            if goal:
                ok = q >= 1.5 if ">=" in goal else q <= 1.0
                verdict = f"{goal}: {'met' if ok else 'NOT met'}"
                if not ok:
                    missed.append(label)
        print(f"{label:{width}}{a:>18}{b:>18}{ratio:>18}   {verdict}")
    print(f"{'Postfix':{width}}{postfix_note()}")
    print()
    for n in (ours, theirs):
        if n:
            m = med[n]
            print(f"{n}: {m['queued']:.0f} messages ({m['envelopes']:.0f} envelopes) "
                  f"in queue/ for {m['accepted']:.0f} 250s: "
                  f"{'equal' if m['queued'] == m['accepted'] else 'DIFFERENT'}; "
                  f"latency samples {m['probe_n']:.0f}, {m['after_load']:.0f} "
                  "taken after the load ended")
    if ours and theirs:
        print("goals of issue 5: " + ("all met" if not missed else
                                      "NOT met: " + "; ".join(missed)))
    if "1 before" in fsync:
        after = "1 after" in fsync
        print(f"disk fsync rate on the spools' kind of file system, 4 KiB appended + fsync, "
              f"{args.fsync_seconds:g} s each"
              + (", before / after the daemons' runs" if after else "") + ": "
              f"1 writer {fsync['1 before']:,.0f}"
              + (f" / {fsync['1 after']:,.0f}" if after else "") + " per s, "
              f"20 writers {fsync['20 before']:,.0f}"
              + (f" / {fsync['20 after']:,.0f}" if after else "") + " per s")
    print("\nload, mean ms from each command (or connect) to its reply (last run):")
    for n in names:
        l = results[n][-1]["load"]
        print(f"  {n}: " + ", ".join(f"{k} {v:.2f}" for k, v in l["phase_ms"].items())
              + f"; {l['connects']} connects, slowest banner {l['banner_max_ms']:.1f} ms"
              + (f", {l['slow_connects']} after 0.9 s or more" if l["slow_connects"] else ""))
    print_cpu_by_process(names, results)
    print_profiles(names, results)
    return med


def smtpd_role(name, title):
    """The role an smtpd process's title names ("smtpd: queue"), else "parent"."""
    return title if title.startswith("smtpd:") else "parent"


def print_cpu_by_process(names, results, role=smtpd_role):
    """Each daemon's CPU seconds by process, grouped by role(name, title),
    from its last run (shared with deliver.py and relay.py)."""
    print("CPU seconds by process (last run; titles as the daemons set them):")
    for n in names:
        r = results[n][-1]
        by = {}
        for p in r["per_proc"]:
            t = role(n, p["title"])
            by[t] = by.get(t, 0.0) + p["cpu_s"]
        parts = sorted(by.items(), key=lambda kv: -kv[1])
        print(f"  {n}: " + ", ".join(f"{t} {c:.2f}" for t, c in parts)
              + (f"; exited: {len(r['gone'])}" if r["gone"] else ""))


def print_profiles(names, results):
    """--profile: where each process spent the last run (shared with
    deliver.py)."""
    for n in names:
        prof = results[n][-1].get("profile")
        if not prof:
            continue
        print(f"where each process spends the run, sampled (--profile, last run): {n}")
        for p in sorted(prof, key=lambda p: -(1 - p["states"].get("epoll_wait", 0)
                                             - p["states"].get("epoll_pwait", 0))):
            busy = {k: v for k, v in p["states"].items() if v >= 0.01}
            print(f"  {p['title'][:28]:28} " + ", ".join(
                f"{k} {v * 100:.0f}%" for k, v in busy.items()))


def check_args(prog, args):
    """Whether the runs may go ahead (else the reason is logged): root, sane
    counts, and the tools --fs image needs (without them: --fs dir, with a
    warning where that is an ext4 without a journal). Shared with
    deliver.py and relay.py."""
    err = check_root(prog)
    if err:
        log(err)
        return False
    if args.size < 256 or args.messages < 1 or args.sessions < 1 or args.per_connection < 1:
        log(f"{prog}: --size must be at least 256, the counts at least 1")
        return False
    if args.fs == "image":
        missing = [t for t in ("losetup", "mkfs.ext4") if not shutil.which(t)]
        if missing:
            log(f"{prog}: {' and '.join(missing)} not found: the runs' files go in "
                f"{args.dir} itself (--fs dir)")
            args.fs = "dir"
    if args.fs == "dir" and has_journal(args.dir) is False:
        log(f"{prog}: warning: {args.dir} is on an ext4 without a journal: there the "
            "inode allocator skips inodes freed in the last minutes one by one, so "
            "runs soon after large deletions (earlier runs, the regress tests) are "
            "slower, and fsync costs differ from a journaled file system")
    return True


def open_image(prog, args):
    """With --fs image, the Image every run gets a fresh file system on; None
    with --fs dir, or when there is no loop device (then --fs dir)."""
    if args.fs != "image":
        return None
    try:
        image = Image(args)
    except (OSError, subprocess.CalledProcessError) as e:
        log(f"{prog}: no loop device ({e}): the runs' files go in {args.dir} itself "
            "(--fs dir)")
        args.fs = "dir"
        return None
    args.image_mib = image.mib
    return image


def run_rounds(prog, daemons, args, run, check, summary):
    """args.runs rounds, each daemon (a tuple, its name first) in turn:
    run(i, k, daemon) is the result of round i's run of daemon k, check(name,
    result) its problems. A daemon whose run has problems is reported, with
    its log's tail, and runs no more; summary(result) is a good run's log
    line. Returns (results by name, names that failed); shared with
    deliver.py and relay.py."""
    results = {d[0]: [] for d in daemons}
    failed = set()
    for i in range(args.runs):
        for k, d in enumerate(daemons):
            name = d[0]
            if name in failed:
                continue
            r = run(i, k, d)
            bad = check(name, r)
            if bad:
                for b in bad:
                    log(f"{prog}: {name}: {b}")
                if r.get("log"):
                    log(f"--- {name} log (tail)\n{r['log']}---")
                failed.add(name)
                continue
            results[name].append(r)
            log(f"{prog}: {name} run {i + 1}: {summary(r)}")
    return results, failed


def load_arguments(ap, timeout):
    """The options of the load and of the runs that every load benchmark
    takes (shared with deliver.py and relay.py, which add their own)."""
    ap.add_argument("--messages", type=int, default=5000, help="messages of the load")
    ap.add_argument("--sessions", type=int, default=20, help="concurrent load sessions")
    ap.add_argument("--size", type=int, default=4096, help="message size in bytes")
    ap.add_argument("--per-connection", type=int, default=100,
                    help="messages per connection before QUIT and reconnect")
    ap.add_argument("--runs", type=int, default=1, help="runs per daemon (median shown)")
    ap.add_argument("--timeout", type=float, default=timeout,
                    help="seconds a run may take before it is abandoned")
    ap.add_argument("--fs", choices=("image", "dir"), default="image",
                    help="image: each run's file system is a fresh ext4 on a loop device "
                    "(default); dir: plain directories in --dir")
    ap.add_argument("--dir", default="/var/tmp",
                    help="where the file system images (or the directories) and the "
                    "fsync test go")
    ap.add_argument("--ours", default=os.path.join(REPO, "target/release/smtpd"))
    ap.add_argument("--opensmtpd", default="/usr/sbin/smtpd")
    ap.add_argument("--profile", action="store_true",
                    help="sample each daemon process's state every ~1 ms during the "
                    "run (costs some CPU) and print where each spends its time")
    ap.add_argument("--json", help="also write the raw results to this file")
    ap.add_argument("--inner", help=argparse.SUPPRESS)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    load_arguments(ap, timeout=100.0)
    ap.add_argument("--probe", type=int, default=200, help="messages of the latency session")
    ap.add_argument("--fsync-seconds", type=float, default=3.0,
                    help="seconds per fsync test (0: skip)")
    ap.add_argument("--keep-resolver", action="store_true",
                    help="leave /etc/hosts and /etc/resolv.conf as they are")
    args = ap.parse_args()

    if args.inner:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        inner(json.loads(args.inner))
        return 0

    if not check_args("receive", args):
        return 1

    daemons = []
    for name, binary, extra in (
        # Local deliveries paused: both only accept and queue.
        ("smtpd-rs", args.ours, ["-P", "mda"]),
        (opensmtpd_version(), args.opensmtpd, ["-P", "mda"]),
    ):
        hint = BUILD_HINT if name == "smtpd-rs" else OPENSMTPD_HINT
        if not installed("receive", name, binary, hint):
            continue
        daemons.append((name, os.path.abspath(binary), extra))
    if not daemons:
        log("receive: nothing to measure")
        return 1

    fsync = {}

    image = None
    try:
        image = open_image("receive", args)
        fsync_probe("receive", args, image, "before", fsync)

        def summary(r):
            f = figures(r)
            return (f"{f['rate']:,.0f} msg/s, {f['cpu_per_k']:.2f} CPU s/1000, peak PSS "
                    f"{f['pss']:.1f} MiB, p50 {f['p50']:.2f} ms, p99 {f['p99']:.2f} ms, "
                    f"{f['queued']}/{f['accepted']} queued/250s")

        results, failed = run_rounds(
            "receive", daemons, args,
            lambda i, k, d: one_run(d[0], d[1], d[2], f"r{i}d{k}", args, image),
            check_run, summary)
        fsync_probe("receive", args, image, "after", fsync)
    finally:
        if image:
            image.close()
        Scratch.cleanup()

    if not any(results.values()):
        return 1
    med = report(args, daemons, results, fsync)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "fsync": fsync, "median": med}, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
