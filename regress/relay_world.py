"""The relay tests' world: peer hosts in network namespaces of their own,
on one private LAN with the daemon under test, and the servers that play
the Internet there (DNS, MX hosts, hostile servers, a smarthost).

    world = RelayWorld(tmpdir)                  # the LAN and its DNS server
    sink = world.smtp_sink("mx1.test")          # Postfix's smtp-sink as an MX
    bad = world.hostile("mx2.test", "tempfail", at="rcpt")  # hostile_smtp.py
    down = world.refuser("mx3.test")            # nothing listens there
    smart = world.smarthost("smart.test", dir)  # our daemon: STARTTLS + AUTH
    world.mx("example.test", ("mx1.test", 10))  # MX and A/AAAA in dnsmasq
    relay = world.host("relay.test")            # where the relaying MTA runs
    inst = Instance(dir, conf, netns=relay.netns, binds=world.binds())
    ...
    world.close()                               # or the `relay_world` fixture

What runs where:
  - the switch: a namespace holding only a bridge, br0. Every host has a
    veth pair, `world0` inside the host, `wN` on the bridge in the switch.
  - hosts (Host): a network namespace held by `sleep infinity` (its
    holder), with lo and world0 up, 192.0.2.N/24 (TEST-NET-1, RFC 5737)
    and fd00:c0:2::N/64 (a ULA prefix; the addresses skip DAD). Peers are
    started in a host with nsenter; they share the test's file system.
  - 192.0.2.53 / fd00:c0:2::53, host "ns.test": dnsmasq, authoritative for
    the names the test declares (MX, A, AAAA and the PTRs of every host),
    NXDOMAIN for anything else below .test and the reverse zones, REFUSED
    for the rest (no upstream, no /etc/hosts). Restarted on every change.
  - every DNS name a host is created with gets its A/AAAA records.
  - a daemon: either started inside a host (Instance(netns=host.netns)),
    so its listen addresses exist before it binds, or an Instance already
    running in its own namespace joined to the LAN with attach(inst).
    Either way binds() gives its /etc/resolv.conf (nameserver 192.0.2.53).

Nothing leaves the world: its addresses exist only in namespaces the test
created. Every process is started with a parent-death signal (SIGKILL), so
even a test runner killed with -9 leaves no peer behind; close() (and
close_all(), which conftest calls at the end of the session) kill them
first, by their process ids.

Standard library only (plus the packages `make setup` installs: iproute2,
util-linux, dnsmasq-base, openssl, and Postfix unpacked in
/opt/smtpd-rs-peers/postfix).
"""

import base64
import contextlib
import ctypes
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import smtpd_harness as h

HERE = Path(__file__).resolve().parent
PEERS_DIR = Path(os.environ.get("SMTPD_RS_PEERS", "/opt/smtpd-rs-peers"))
POSTFIX_DIR = PEERS_DIR / "postfix"
SMTP_SINK = POSTFIX_DIR / "usr" / "sbin" / "smtp-sink"
DNSMASQ = "/usr/sbin/dnsmasq"
OPENSMTPD = Path("/usr/sbin/smtpd")
HOSTILE = HERE / "hostile_smtp.py"

NET4 = "192.0.2."  # TEST-NET-1 (RFC 5737): /24
NET6 = "fd00:c0:2::"  # a ULA /64
DNS_INDEX = 53
FIRST_INDEX = 10  # hosts get .10, .11, ... unless they ask for an index
IFACE = "world0"  # a host's interface on the LAN
READY_TIMEOUT = 10.0

_live = set()
_live_lock = threading.Lock()


def v4_addr(index):
    return f"{NET4}{index}"


def v6_addr(index):
    return f"{NET6}{index:x}"


def _pdeathsig():
    return ["setpriv", "--pdeathsig", "KILL", "--"]


def _run(argv, **kw):
    p = subprocess.run(argv, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))}: exit {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def _netns_pid(target):
    """A pid in the network namespace of `target`: a Host, an Instance
    (its smtpd parent), or a pid."""
    if isinstance(target, int):
        return target
    if isinstance(target, Host):
        return target.pid
    pid = getattr(target, "parent", None)
    if pid is None:
        raise ValueError(f"{target!r}: not started (no parent pid)")
    return pid


@contextlib.contextmanager
def in_netns(path):
    """Run the body in the network namespace at `path` (this thread only);
    sockets created there stay there."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    orig = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if h._libc.setns(fd, h.CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"setns {path}: {os.strerror(e)}")
        try:
            yield
        finally:
            if h._libc.setns(orig, h.CLONE_NEWNET) != 0:
                e = ctypes.get_errno()
                os.write(2, f"FATAL: cannot return to the test's network namespace: "
                            f"{os.strerror(e)}\n".encode())
                os._exit(70)
    finally:
        os.close(fd)
        os.close(orig)


def _holder():
    """A process alone in a fresh network namespace, until it is killed or
    its parent dies."""
    p = subprocess.Popen(_pdeathsig() + ["unshare", "--net", "--", "sleep", "infinity"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, start_new_session=True)
    mine = h.ns_id("self", "net")
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise RuntimeError(f"namespace holder exited: {p.stderr.read().decode(errors='replace')}")
        try:
            # unshare has unshared and exec'd sleep.
            with open(f"/proc/{p.pid}/comm") as f:
                comm = f.read().strip()
            if comm == "sleep" and h.ns_id(p.pid, "net") != mine:
                p.stderr.close()
                p.stderr = None
                return p
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    p.kill()
    raise RuntimeError("namespace holder never got its namespace")


def _group(pgid):
    """The pids of process group pgid, from /proc."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                out.append(int(d))
    return out


def _kill(proc):
    """SIGKILL the process group proc leads (it was started in a session of
    its own), and wait until every member is gone, its sockets closed."""
    if proc is None:
        return
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    deadline = time.monotonic() + 5
    while _group(proc.pid) and time.monotonic() < deadline:
        for pid in _group(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)


# --------------------------------------------------------------------------
# Hosts


class Host:
    """A network namespace on the world's LAN: `name` (its DNS name),
    `v4`/`v6` (its addresses, None if it has none), `netns` (a path to
    give nsenter or Instance(netns=...)), `pid` (its holder)."""

    def __init__(self, world, name, index, v4, v6, holder=None, pid=None):
        self.world = world
        self.name = name
        self.index = index
        self.v4 = v4_addr(index) if v4 else None
        self.v6 = v6_addr(index) if v6 else None
        self.holder = holder
        self.pid = holder.pid if holder else pid
        self.netns = f"/proc/{self.pid}/ns/net"
        self.procs = []

    @property
    def addrs(self):
        return [a for a in (self.v4, self.v6) if a]

    def nsenter(self, argv):
        return ["nsenter", f"--net={self.netns}", "--"] + [str(a) for a in argv]

    def run(self, argv, log=None, env=None):
        """Start argv in this host (killed with the world); its stdout and
        stderr go to `log` (a path), or to the world's dir.

        A server that drops privileges loses its parent-death signal (the
        kernel clears it on setuid), so argv runs in a PID namespace of its
        own, under a shell as its init that keeps the signal: when the test
        dies, unshare dies, the shell gets SIGKILL (--kill-child), and the
        kernel kills everything left in that PID namespace."""
        log = Path(log) if log else self.world.dir / f"{self.name}-{len(self.procs)}.log"
        contained = ["unshare", "--pid", "--fork", "--kill-child", "--",
                     "/bin/sh", "-c", '"$@" & wait $!', "sh"] + [str(a) for a in argv]
        with open(log, "ab") as out:
            p = subprocess.Popen(_pdeathsig() + self.nsenter(contained), stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                 env=env)
        p.log_path = log
        self.procs.append(p)
        return p

    def sh(self, argv):
        """Run argv in this host to completion; its stdout."""
        return _run(self.nsenter(argv))

    @contextlib.contextmanager
    def netns_ctx(self):
        with in_netns(self.netns):
            yield

    def connect(self, addr, port=25, timeout=10.0):
        """A TCP connection made from this host."""
        with in_netns(self.netns):
            return socket.create_connection((addr, port), timeout=timeout)

    def wait_listening(self, port, proto="tcp", timeout=READY_TIMEOUT, proc=None, families=(4, 6)):
        """Until something in this host listens on `port` (IPv4 or IPv6:
        `families`); `proc`: fail at once if it exits first."""
        wait_listening(self.pid, port, proto, timeout, proc, families, self.name)

    def __repr__(self):
        return f"<Host {self.name} {self.v4} {self.v6}>"


def wait_listening(pid, port, proto="tcp", timeout=READY_TIMEOUT, proc=None, families=(4, 6), name=None):
    """Until something in the network namespace of pid listens on `port`,
    read from /proc/PID/net/{tcp,tcp6,udp,udp6} (no connection made)."""
    want = f":{port:04X}"
    deadline = time.monotonic() + timeout
    while True:
        for table in [proto + ("6" if fam == 6 else "") for fam in families]:
            try:
                with open(f"/proc/{pid}/net/{table}") as f:
                    next(f)
                    for line in f:
                        fields = line.split()
                        # TCP: state 0A is LISTEN; UDP: 07 (unconnected).
                        if fields[1].endswith(want) and fields[3] in ("0A", "07"):
                            return
            except FileNotFoundError:
                pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{name or pid}: {proc.args} exited ({proc.returncode}) "
                               f"before listening on {port}:\n{_tail(getattr(proc, 'log_path', None))}")
        if time.monotonic() >= deadline:
            raise RuntimeError(f"{name or pid}: nothing listens on {proto} port {port}")
        time.sleep(0.01)


def _tail(path, n=3000):
    try:
        return Path(path).read_bytes()[-n:].decode(errors="replace")
    except (OSError, TypeError):
        return ""


# --------------------------------------------------------------------------
# The world


class RelayWorld:
    def __init__(self, workdir):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.hosts = {}
        self.attached = []
        self._next = FIRST_INDEX
        self._mx = {}  # domain -> [(pref, host)]
        self._records = {}  # name -> {"A": [...], "AAAA": [...]}
        self._extra = []  # raw dnsmasq options
        self._dnsmasq = None
        self._servers = []
        self.switch = None
        with _live_lock:
            _live.add(self)
        try:
            self.switch = _holder()
            self._switch_sh(["ip", "link", "add", "br0", "type", "bridge"])
            self._switch_sh(["ip", "link", "set", "br0", "up"])
            self.resolv_conf = self.dir / "resolv.conf"
            self.resolv_conf.write_text(
                f"# the relay world's dnsmasq\nnameserver {v4_addr(DNS_INDEX)}\n"
                "options timeout:2 attempts:2\n")
            os.chmod(self.resolv_conf, 0o644)
            self.ns = self.host("ns.test", index=DNS_INDEX)
            self._restart_dns()
        except BaseException:
            self.close()
            raise

    # ---- the LAN

    def _switch_sh(self, argv):
        return _run(["nsenter", f"--net=/proc/{self.switch.pid}/ns/net", "--"] + argv)

    def _index(self, index):
        if index is None:
            while self._next in self._used() or self._next == DNS_INDEX:
                self._next += 1
            index = self._next
        if index in self._used() or not 1 < index < 255:
            raise ValueError(f"address index {index} taken or out of range")
        return index

    def _used(self):
        return {hst.index for hst in list(self.hosts.values()) + self.attached}

    def _plug(self, pid, index, v4, v6):
        """A veth pair between the switch and the namespace of pid: IFACE
        there, with the host's addresses."""
        port = f"w{index}"
        self._switch_sh(["ip", "link", "add", port, "type", "veth", "peer", "name", IFACE,
                         "netns", str(pid)])
        self._switch_sh(["ip", "link", "set", port, "master", "br0", "up"])
        inside = ["nsenter", f"--net=/proc/{pid}/ns/net", "--"]
        _run(inside + ["ip", "link", "set", "lo", "up"])
        if v4:
            _run(inside + ["ip", "addr", "add", f"{v4_addr(index)}/24", "dev", IFACE])
        if v6:
            _run(inside + ["ip", "-6", "addr", "add", f"{v6_addr(index)}/64", "dev", IFACE, "nodad"])
        _run(inside + ["ip", "link", "set", IFACE, "up"])

    def host(self, name, v4=True, v6=True, index=None, dns=True):
        """A new host on the LAN; `name` gets A/AAAA records unless
        dns=False."""
        if name in self.hosts:
            raise ValueError(f"{name}: already a host")
        index = self._index(index)
        holder = _holder()
        hst = Host(self, name, index, v4, v6, holder=holder)
        self.hosts[name] = hst
        self._plug(holder.pid, index, v4, v6)
        if dns and name != "ns.test":
            self.record(name, a=hst.v4, aaaa=hst.v6)
        return hst

    def attach(self, target, name=None, v4=True, v6=True, index=None, dns=True):
        """Join a running daemon's own network namespace (an Instance, a
        Host or a pid) to the LAN; returns a Host describing its place
        (addresses; its `pid` is the target's)."""
        pid = _netns_pid(target)
        index = self._index(index)
        name = name or f"attached{index}.test"
        hst = Host(self, name, index, v4, v6, pid=pid)
        self._plug(pid, index, v4, v6)
        self.attached.append(hst)
        if dns:
            self.record(name, a=hst.v4, aaaa=hst.v6)
        return hst

    def binds(self):
        """Instance(binds=...) for a daemon of this world: its resolver."""
        return [(self.resolv_conf, "/etc/resolv.conf")]

    # ---- DNS

    def record(self, name, a=None, aaaa=None):
        """A and/or AAAA records for name (each an address or a list)."""
        rec = self._records.setdefault(name, {"A": [], "AAAA": []})
        for kind, val in (("A", a), ("AAAA", aaaa)):
            if val:
                rec[kind] += [val] if isinstance(val, str) else list(val)
        self._restart_dns()

    def mx(self, domain, *hosts):
        """MX records of domain: (host name, preference) pairs."""
        self._mx[domain] = [(name, pref) for name, pref in hosts]
        self._restart_dns()

    def dns_option(self, *options):
        """Raw dnsmasq options (--txt-record=..., --cname=...)."""
        self._extra += list(options)
        self._restart_dns()

    def _dns_args(self):
        args = [
            DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
            "--no-poll", "--pid-file=", "--user=nobody", "--group=nogroup", "--bind-interfaces",
            f"--listen-address={v4_addr(DNS_INDEX)}", f"--listen-address={v6_addr(DNS_INDEX)}",
            "--port=53", "--log-queries", "--log-facility=-", "--local=/test/",
            "--local=/in-addr.arpa/", "--local=/ip6.arpa/", "--local-ttl=1",
        ]
        for name, rec in sorted(self._records.items()):
            addrs = rec["A"] + rec["AAAA"]
            if addrs:
                args.append(f"--host-record={name},{','.join(addrs)}")
        for domain, hosts in sorted(self._mx.items()):
            for name, pref in hosts:
                args.append(f"--mx-host={domain},{name},{pref}")
        return args + self._extra

    def _restart_dns(self):
        if not hasattr(self, "ns"):
            return
        _kill(self._dnsmasq)
        self._dnsmasq = self.ns.run(self._dns_args(), log=self.dir / "dnsmasq.log")
        self.ns.wait_listening(53, proto="udp", proc=self._dnsmasq)
        # Answers, not only binds.
        deadline = time.monotonic() + READY_TIMEOUT
        while self.query("ns.test", "A") is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"dnsmasq does not answer:\n{_tail(self._dnsmasq.log_path)}")
            time.sleep(0.02)

    def query(self, name, qtype="A", server=None, timeout=1.0):
        """Ask the world's DNS server from inside the world: (rcode,
        answer count), or None if it did not answer."""
        qtypes = {"A": 1, "MX": 15, "AAAA": 28, "PTR": 12, "TXT": 16}
        qid = random.randrange(1 << 16)
        pkt = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
        for label in name.rstrip(".").split("."):
            pkt += bytes([len(label)]) + label.encode()
        pkt += b"\0" + struct.pack(">HH", qtypes[qtype], 1)
        with in_netns(self.ns.netns):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with s:
            s.settimeout(timeout)
            s.sendto(pkt, (server or v4_addr(DNS_INDEX), 53))
            try:
                data = s.recv(4096)
            except socket.timeout:
                return None
        rid, flags, _, ancount = struct.unpack(">HHHH", data[:8])
        if rid != qid:
            return None
        return flags & 0xF, ancount

    # ---- peers

    def mx_sink(self, domain, name, v4=True, v6=True):
        """An smtp-sink as host `name`, the one MX (preference 10) of
        `domain`."""
        sink = self.smtp_sink(name, v4=v4, v6=v6)
        self.mx(domain, (name, 10))
        return sink

    def smtp_sink(self, name, v4=True, v6=True, port=25, args=(), index=None):
        """Postfix's smtp-sink as host `name`, on every address it has."""
        return SmtpSink(self, self.host(name, v4=v4, v6=v6, index=index), port, args)

    def refuser(self, name, v4=True, v6=True, index=None):
        """A host where nothing listens: every connection is refused (RST)."""
        return self.host(name, v4=v4, v6=v6, index=index)

    def hostile(self, name, mode, at=None, port=25, args=(), v4=True, v6=True, index=None,
                hostname=None):
        """regress/hostile_smtp.py in `mode` as host `name` (see its
        --help for the modes)."""
        return HostileServer(self, self.host(name, v4=v4, v6=v6, index=index), mode, at, port,
                             args, hostname or name)

    def smarthost(self, name, workdir, ca=None, users=None, port=587, rules=None, **instance_kw):
        """A second instance of our own daemon as host `name`: a listener
        on each of its addresses at `port` that requires STARTTLS (a
        certificate for name from `ca`, a TestCA made here if None) and
        AUTH against `users` ({user: password}; default relayuser/secret),
        and accepts mail from authenticated clients for anywhere (`rules`
        replaces that). Returns the started Instance, with .place (the
        host), .ca and .users; stopped by close()."""
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        ca = ca or TestCA(workdir / "ca")
        users = users or {"relayuser": "secret"}
        crt, key = ca.issue(name)
        creds = workdir / "creds"
        creds.write_text("".join(
            f"{user} {_run(['openssl', 'passwd', '-6', password]).strip()}\n"
            for user, password in users.items()))
        os.chmod(creds, 0o600)
        hst = self.host(name)
        conf = f'pki {name} cert "{crt}"\npki {name} key "{key}"\ntable creds file:{creds}\n'
        for addr in hst.addrs:
            conf += f"listen on {addr} port {port} tls-require pki {name} auth <creds> hostname {name}\n"
        conf += rules or ('action "relay" relay\n'
                          'match from any auth for any action "relay"\n')
        inst = h.Instance(workdir / "smtpd", conf, name=name, netns=hst.netns, binds=self.binds(),
                          **instance_kw)
        self._servers.append(inst)
        inst.start()
        inst.place, inst.ca, inst.users = hst, ca, users
        return inst

    # ---- teardown

    def close(self):
        for srv in self._servers:
            srv.stop()
        _kill(self._dnsmasq)
        for hst in self.hosts.values():
            for p in hst.procs:
                _kill(p)
            _kill(hst.holder)
        # The switch last: its going takes every wN (and their peers) along.
        _kill(self.switch)
        self.hosts = {}
        with _live_lock:
            _live.discard(self)


def close_all():
    with _live_lock:
        worlds = list(_live)
    for w in worlds:
        w.close()


# --------------------------------------------------------------------------
# Postfix's smtp-sink


class SinkMessage:
    """One transaction as smtp-sink dumped it: client address, HELO, MAIL
    and RCPT arguments, and the content. smtp-sink writes lines ending in
    LF: `content` has every line end as CRLF again, which is what arrived
    for any message whose lines ended in CRLF (smtp-sink cannot tell a
    bare LF from CRLF, and drops a bare CR). The dot-stuffing is undone."""

    def __init__(self, path, raw):
        self.path = path
        lines = raw.split(b"\n")
        if lines[-2:] == [b"", b""]:
            lines = lines[:-2]
        fields = {}
        i = 0
        while i < len(lines) and lines[i].startswith(b"X-") and b": " in lines[i]:
            key, _, value = lines[i].partition(b": ")
            fields.setdefault(key.decode(), []).append(value.decode("utf-8", "replace"))
            i += 1
        # smtp-sink's own Received: (three lines) ends its headers.
        if i < len(lines) and lines[i].startswith(b"Received: "):
            i += 1
            while i < len(lines) and lines[i].startswith(b"\t"):
                i += 1
        self.client = fields.get("X-Client-Addr", [None])[0]
        self.proto = fields.get("X-Client-Proto", [None])[0]
        self.helo = fields.get("X-Helo-Args", [None])[0]
        self.mail = fields.get("X-Mail-Args", [None])[0]
        self.rcpts = fields.get("X-Rcpt-Args", [])
        self.content = b"".join(line + b"\r\n" for line in lines[i:])

    @property
    def sender(self):
        return _angle(self.mail)

    @property
    def recipients(self):
        return [_angle(r) for r in self.rcpts]

    def __repr__(self):
        return f"<SinkMessage {self.sender} -> {self.recipients} from {self.client}>"


def _angle(args):
    m = re.match(r"<([^>]*)>", args or "")
    return m.group(1) if m else None


class SmtpSink:
    """smtp-sink on host.addrs:port (one process per address family: it
    listens on one address), dumping each transaction to its own file in
    `dump` (-d)."""

    def __init__(self, world, host, port=25, args=()):
        if not os.access(SMTP_SINK, os.X_OK):
            raise RuntimeError(f"{SMTP_SINK} is missing: `make setup` unpacks Postfix there")
        self.world, self.host, self.port = world, host, port
        self.name = host.name
        self.dump = world.dir / f"{host.name}-dump"
        self.dump.mkdir(exist_ok=True)
        os.chmod(self.dump, 0o1777)
        env = dict(os.environ, LD_LIBRARY_PATH=str(POSTFIX_DIR / "usr" / "lib" / "postfix"))
        self.procs = []
        for addr, listen in ((host.v4, f"{host.v4}:{port}"), (host.v6, f"[{host.v6}]:{port}")):
            if not addr:
                continue
            # -u: smtp-sink refuses to run as root; -h: the name in its
            # banner and EHLO reply; -d: one file per transaction.
            argv = [SMTP_SINK, "-u", "nobody", "-h", host.name, "-d", f"{self.dump}/%Y%m%d%H%M%S.",
                    *args, listen, "64"]
            p = host.run(argv, log=world.dir / f"{host.name}-smtp-sink.log", env=env)
            self.procs.append(p)
            host.wait_listening(port, proc=p, families=(4 if addr == host.v4 else 6,))
        world._servers.append(self)

    def files(self):
        return sorted(self.dump.iterdir())

    def messages(self):
        """Every complete transaction dumped so far (a dump ends with an
        empty line once its final dot has arrived)."""
        out = []
        for path in self.files():
            raw = path.read_bytes()
            if raw.endswith(b"\n\n"):
                out.append(SinkMessage(path, raw))
        return out

    def wait_messages(self, n=1, timeout=20.0):
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.messages()
            if len(msgs) >= n:
                return msgs
            if time.monotonic() >= deadline:
                raise AssertionError(f"{self.name}: {len(msgs)} messages, not {n}, within {timeout}s; "
                                     f"smtp-sink log:\n{_tail(self.procs[0].log_path)}")
            time.sleep(0.05)

    def stop(self):
        for p in self.procs:
            _kill(p)


# --------------------------------------------------------------------------
# The hostile server


class HostileServer:
    """regress/hostile_smtp.py in a host; `events()` is what it logged
    (JSON lines: connect, recv, send, tls, message, close)."""

    def __init__(self, world, host, mode, at, port, args, hostname):
        self.world, self.host, self.port, self.mode = world, host, port, mode
        self.name = host.name
        self.log_path = world.dir / f"{host.name}-hostile.jsonl"
        argv = [sys.executable, HOSTILE, "--mode", mode, "--port", str(port),
                "--log", self.log_path, "--hostname", hostname]
        if at:
            argv += ["--at", at]
        for addr in host.addrs:
            argv += ["--listen", addr]
        self.proc = host.run(argv + list(args), log=world.dir / f"{host.name}-hostile.out")
        host.wait_listening(port, proc=self.proc)
        world._servers.append(self)

    def events(self):
        out = []
        try:
            text = self.log_path.read_text()
        except FileNotFoundError:
            return out
        for line in text.splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue  # a line being written
            if "data" in ev:
                ev["data"] = base64.b64decode(ev["data"])
            out.append(ev)
        return out

    def commands(self):
        """Every line the clients sent outside DATA, as bytes."""
        return [e["data"] for e in self.events() if e["ev"] == "recv"]

    def messages(self):
        """The raw DATA of every transaction it accepted, byte-exact as on
        the wire (dot-stuffed, up to but excluding CRLF.CRLF)."""
        return [e["data"] for e in self.events() if e["ev"] == "message"]

    def wait_event(self, pred, timeout=20.0):
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events():
                if pred(ev):
                    return ev
            if time.monotonic() >= deadline:
                raise AssertionError(f"{self.name}: no such event within {timeout}s; "
                                     f"events: {self.events()}\n{_tail(self.proc.log_path)}")
            time.sleep(0.05)

    def stop(self):
        _kill(self.proc)


# --------------------------------------------------------------------------
# A test CA, and the certificates it signs


class TestCA:
    """A CA made with openssl at test time; issue(name) gives a server
    certificate and key for name (CN and subjectAltName)."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = self.dir / "ca.key"
        self.cert = self.dir / "ca.crt"
        _run(["openssl", "req", "-x509", "-nodes", "-newkey", "rsa:2048", "-days", "2",
              "-subj", "/CN=smtpd-rs regress CA", "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign",
              "-keyout", self.key, "-out", self.cert])
        os.chmod(self.key, 0o600)
        os.chmod(self.cert, 0o644)

    def issue(self, name, usage="serverAuth"):
        """usage: the extendedKeyUsage, "clientAuth" for a client's."""
        key, csr, crt = (self.dir / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
        ext = self.dir / f"{name}.ext"
        ext.write_text(f"subjectAltName=DNS:{name}\nbasicConstraints=CA:FALSE\n"
                       f"keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage={usage}\n")
        _run(["openssl", "req", "-new", "-nodes", "-newkey", "rsa:2048", "-subj", f"/CN={name}",
              "-keyout", key, "-out", csr])
        _run(["openssl", "x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
              "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", crt])
        os.chown(key, 0, 0)
        os.chmod(key, 0o600)
        os.chmod(crt, 0o644)
        return crt, key


# --------------------------------------------------------------------------
# OpenSMTPD 6.8, the reference, run like an Instance


class Reference(h.Instance):
    """Debian's OpenSMTPD (/usr/sbin/smtpd) as an Instance: same
    namespaces, private spool and /var/run, `smtpd -d -v -f CONF`."""

    READY = r"OpenSMTPD \S+ starting"

    def __init__(self, workdir, config, ports=(25,), **kw):
        super().__init__(workdir, config, bin=OPENSMTPD, **kw)
        self.ports = ports

    def start(self, wait_ready=True):
        """Started once its log says so and it listens on every one of
        `ports` (it logs "starting" before its dispatcher listens)."""
        super().start(wait_ready=wait_ready)
        if wait_ready:
            for port in self.ports:
                wait_listening(self.parent, port, timeout=h.START_TIMEOUT, name=self.name)
        return self

    def smtpctl(self, *args):
        """Debian's smtpctl in the instance's namespaces (its control
        socket is in the private /var/run)."""
        return _run(["nsenter", f"--net=/proc/{self.parent}/ns/net",
                     f"--mount=/proc/{self.parent}/ns/mnt", "--", "/usr/sbin/smtpctl", *args])
