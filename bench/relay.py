#!/usr/bin/python3
"""Relaying: smtpd-rs side by side with OpenSMTPD and Postfix (issue 7's
benchmark), end to end, from the first connect to the relaying daemon until
the destination's MX has every message.

For each relaying MTA (runs interleaved; with --runs N the median of N is
shown):
  - a private world (regress/relay_world.py), built inside the run's own
    mount and network namespace (nslib's `unshare -mn`): a bridge in a
    namespace of its own; "ns.test" running dnsmasq, authoritative for
    .test; "mx.dest.test", Postfix's smtp-sink, the only MX of dest.test
    (IPv4 only: one smtp-sink process, one counter); and the run's own
    namespace joined to that LAN as "relay.test" (192.0.2.10), with its
    /etc/resolv.conf pointing at dnsmasq. The relaying MTA finds the MX by
    DNS (MX dest.test, then A mx.dest.test: once per route);
  - the MTA, on the run's spool file system (--fs: as receive.py; by
    default a fresh journaled ext4 on a loop device per run):
      smtpd-rs and OpenSMTPD 6.8: `smtpd -d -f CONF`, both with
        listen on 192.0.2.10
        action "relay" relay
        match from any for domain "dest.test" action "relay"
      and every limit at its default (OpenSMTPD 6.8's mta: at most 5
      connections per route and 10 per MX host, a new connection on a
      route at most every 5 s, 100 messages per session);
      Postfix (Debian's, unpacked by `make setup` in
      /opt/smtpd-rs-peers/postfix, never installed): `postfix start` with a
      config_directory of its own whose main.cf sets only the paths (the
      unpacked tree, queue_directory and data_directory on the run's spool
      file system, maillog_file), mail_owner postfix and setgid_group
      postdrop (created if missing, kept), myhostname relay.test,
      inet_interfaces 192.0.2.10, mynetworks 192.0.2.0/24, mydestination
      and relayhost empty (so it relays by MX), no local aliases; its
      master.cf is Debian's with chroot off everywhere (the upstream
      default). Every other setting is Postfix 3.7's default: up to 20
      connections per destination, connection reuse, in_flow_delay;
  - the load: receive.py's load generator (--messages, 5,000, of --size
    bytes, 4 KiB, from --sessions, 20, persistent sessions, QUIT after
    --per-connection, 100) to bench@dest.test, each message with a token
    of its own (Subject "relay benchmark TAG I"), from the run's namespace
    to 192.0.2.10;
  - the end: smtp-sink runs with -c, which writes its message count after
    every final dot; that count is read every --poll seconds (0.005) until
    it reaches --messages. smtp-sink also dumps every transaction into a
    file (-d) on a tmpfs, for the checks: it is one event-driven C process,
    and with its dumps on a tmpfs it takes the whole load at well above
    the rates measured here (--sink-check measures it alone, with Postfix's
    smtp-source);
  - relayed messages/s: --messages over the time from the load's first
    connect until the sink counts the last one. Also shown: the accepted
    rate (the load's 250s over its first connect to last 250), the lag from
    the last 250 to the last message at the sink, when the MTA's queue was
    empty again and how many SMTP sessions it opened to the sink;
  - CPU per 1,000 messages: utime+stime+cutime+cstime of every process in
    the run's network namespace but the benchmark's own (the MTA's whole
    process tree: smtpd's roles; Postfix's master and every daemon it
    started, whose exited children it reaped), from before the load to
    0.5 s after its queue is empty again (deliver.py's measure_e2e);
  - peak PSS: the sum of Pss over the same processes every 100 ms;
  - correctness, once the queue is empty: exactly --messages transactions
    at the sink, each for bench@dest.test, each holding one message's token
    and ending in that message as sent, none twice, none missing.
Goals (issue 7): relayed msg/s at least 2x OpenSMTPD's and at least
Postfix's; CPU per message below both; peak PSS no more than OpenSMTPD's.

Postfix logs through its own postlogd into a file (there is no syslog in
the namespace), so that process's CPU and memory are counted in Postfix's
tree; the smtpd daemons log to their stderr (-d), a file. Postfix counts
on a caching resolver on its host and asks dnsmasq again for every
delivery; the queries each MTA sent are printed.

Run as root: `make bench`, or
  /usr/bin/python3 bench/relay.py [--runs N] [--messages N] [--sessions N]
      [--size BYTES] [--fs image|dir] [--profile] [--logs DIR] [--json FILE]
      [--ours PATH] [--opensmtpd PATH] [--postfix DIR] [--only NAME,...]
      [--sink-check]
An MTA whose binary is missing is skipped with a message.
"""

import argparse
import grp
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time

from nslib import (BANNER_TIMEOUT, BUILD_HINT, installed, log, log_tail, make_tmp,
                   opensmtpd_version, remove_tmp,
                   run_inner, setup_namespace, start_daemon, stop, wait_banner)
from receive import (Scratch, check_args, count_queue, fs_of, load_arguments, mount_spool,
                     netns_pids, open_image, print_cpu_by_process, print_profiles, run_rounds,
                     run_spec, smtpd_role)
from deliver import check_copies, check_run, ensure_user, figures, measure_e2e

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "regress"))
import relay_world  # noqa: E402  (regress/: the private LAN, dnsmasq, smtp-sink)

DOMAIN = "dest.test"
MX = "mx.dest.test"
RELAY = "relay.test"
RELAY_INDEX = 10  # relay.test is 192.0.2.10
LAN = "192.0.2.0/24"
SENDER = "bench@relay.test"
SUBJECT = "relay benchmark"
CONF = (
    "listen on {addr}\n"
    'action "relay" relay\n'
    f'match from any for domain "{DOMAIN}" action "relay"\n'
)
# Issue 7's goals: relayed msg/s >= 2x OpenSMTPD's and >= Postfix's; CPU per
# message below both; peak PSS no more than OpenSMTPD's.
GOALS = {
    "rate": {"OpenSMTPD": (">=", 2.0), "Postfix": (">=", 1.0)},
    "cpu_per_k": {"OpenSMTPD": ("<", 1.0), "Postfix": ("<", 1.0)},
    "pss": {"OpenSMTPD": ("<=", 1.0)},
}


# ---------------------------------------------------------------- Postfix


class Postfix:
    """Postfix from the unpacked tree, started with `postfix start` in the
    run's namespaces; poll() and returncode as a Popen's, for the master."""

    def __init__(self, root, tmp, addr):
        self.root = root
        self.conf = f"{tmp}/postfix-conf"
        self.queue = f"{tmp}/spool/postfix"
        self.env = dict(os.environ, LD_LIBRARY_PATH=f"{root}/usr/lib/postfix")
        self.returncode = None
        self.cmd_log = f"{tmp}/postfix-cmd.log"
        os.mkdir(self.conf, 0o755)
        os.mkdir(self.queue, 0o755)
        data = f"{tmp}/spool/postfix-data"
        os.mkdir(data, 0o700)
        pw = ensure_user("postfix")
        os.chown(data, pw.pw_uid, pw.pw_gid)
        settings = {
            "compatibility_level": "3.6",
            "command_directory": f"{root}/usr/sbin",
            "daemon_directory": f"{root}/usr/lib/postfix/sbin",
            "shlib_directory": f"{root}/usr/lib/postfix",
            "meta_directory": f"{root}/etc/postfix",
            "sendmail_path": f"{root}/usr/sbin/sendmail",
            "newaliases_path": f"{root}/usr/bin/newaliases",
            "mailq_path": f"{root}/usr/bin/mailq",
            "manpage_directory": f"{root}/usr/share/man",
            "html_directory": "no",
            "readme_directory": "no",
            "sample_directory": f"{root}/etc/postfix",
            "queue_directory": self.queue,
            "data_directory": data,
            # The daemons the master starts find the unpacked libraries.
            "import_environment": "MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C "
                                  f"LD_LIBRARY_PATH={root}/usr/lib/postfix",
            "maillog_file": f"{tmp}/log",
            "maillog_file_prefixes": tmp,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": RELAY,
            "myorigin": RELAY,
            "mydestination": "",
            "relayhost": "",
            "inet_interfaces": addr,
            "inet_protocols": "ipv4",
            "mynetworks": LAN,
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
        }
        with open(f"{self.conf}/main.cf", "w") as f:
            f.writelines(f"{k} = {v}\n" for k, v in settings.items())
        shutil.copyfile(f"{root}/usr/share/postfix/master.cf.dist", f"{self.conf}/master.cf")
        self.cmd(["postconf", "-F", "-e", "*/*/chroot = n"])
        # postfix-script makes the queue directories and checks the rest.
        self.cmd(["postfix", "start"])

    def cmd(self, argv, check=True):
        with open(self.cmd_log, "ab") as out:
            return subprocess.run([f"{self.root}/usr/sbin/{argv[0]}", "-c", self.conf, *argv[1:]],
                                  env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, check=check)

    def master(self):
        try:
            with open(f"{self.queue}/pid/master.pid") as f:
                pid = int(f.read().split()[0])
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError, IndexError):
            return None

    def poll(self):
        if self.returncode is None and self.master() is None:
            self.returncode = 1
        return self.returncode

    def queued(self):
        """(messages, 0): Postfix keeps a message and its envelope in one
        queue file."""
        n = 0
        for sub in ("maildrop", "incoming", "active", "deferred", "hold"):
            for _dir, _dirs, files in os.walk(f"{self.queue}/{sub}"):
                n += len(files)
        return n, 0

    def stop(self):
        self.cmd(["postfix", "stop"], check=False)
        deadline = time.monotonic() + 10
        while self.master() and time.monotonic() < deadline:
            time.sleep(0.05)


def postfix_version(root):
    try:
        v = subprocess.run([f"{root}/usr/sbin/postconf", "-d", "-h", "mail_version"],
                           env=dict(os.environ, LD_LIBRARY_PATH=f"{root}/usr/lib/postfix"),
                           capture_output=True, text=True, check=True).stdout.strip()
        return f"Postfix {v}"
    except (OSError, subprocess.CalledProcessError):
        return "Postfix"


def ensure_postdrop():
    """Postfix's setgid_group, created if missing (kept for the next run)."""
    try:
        grp.getgrnam("postdrop")
    except KeyError:
        subprocess.run(["groupadd", "--system", "postdrop"], check=True, capture_output=True)


# ---------------------------------------------------------------- the sink


class SinkCount:
    """smtp-sink -c's counters, read from its output: it writes
    "sess=S quit=Q mesg=M\\r" after every final dot."""

    LINE = re.compile(rb"sess=(\d+) quit=(\d+) mesg=(\d+)\r")

    def __init__(self, path):
        self.f = open(path, "rb")
        self.tail = b""
        self.sessions = self.messages = 0

    def read(self):
        chunk = self.f.read()
        if chunk:
            self.tail = (self.tail + chunk)[-4096:]
            last = self.LINE.findall(self.tail)
            if last:
                self.sessions, self.messages = int(last[-1][0]), int(last[-1][2])
        return self.messages


def wait_sink(spec, daemon, count, deadline):
    """Read the sink's count every spec["poll"] seconds until it holds
    spec["messages"]; (count, monotonic time it was seen, or None)."""
    while time.monotonic() < deadline:
        if count.read() >= spec["messages"]:
            return count.messages, time.monotonic()
        if daemon.poll() is not None:
            break
        time.sleep(spec["poll"])
    return count.messages, None


def check_sink(spec, sink, tag):
    """Problems with what the sink dumped, and how many were right."""
    msgs = sink.messages()
    bad = []
    wrong = [m for m in msgs if m.recipients != [spec["recipient"]]]
    if wrong:
        bad.append(f"{len(wrong)} transactions not for {spec['recipient']} alone, "
                   f"e.g. {wrong[:2]}")
    more, good = check_copies([(m.path.name, m.content) for m in msgs], spec, tag, SENDER,
                              SUBJECT, "messages at the sink")
    return bad + more, good


def dns_queries(world, addr):
    """How many DNS queries dnsmasq logged from addr (the MTA's; the load
    asks none), by type: "MX 1, A 2"."""
    by = {}
    try:
        with open(world.dir / "dnsmasq.log", errors="replace") as f:
            for m in re.finditer(rf"query\[(\w+)\] \S+ from {re.escape(addr)}\n", f.read()):
                by[m.group(1)] = by.get(m.group(1), 0) + 1
    except OSError:
        pass
    return ", ".join(f"{k} {v}" for k, v in sorted(by.items())) or "none"


# ---------------------------------------------------------------- inside


def kill_namespace_leftovers():
    """SIGKILL whatever the MTA left in this network namespace (it is ours
    alone): Postfix's daemons outlive `postfix stop` by a moment."""
    for pid in netns_pids({os.getpid()}):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def inner(spec):
    """Runs inside `unshare -mn`: the world, the MTA, measure, stop."""
    tmp = spec["tmp"]
    mount_spool(spec)
    os.mkdir(f"{tmp}/world")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", f"{tmp}/world"],
                   check=True)
    result = {}
    world = daemon = None
    try:
        world = relay_world.RelayWorld(f"{tmp}/world")
        relay = world.attach(os.getpid(), name=RELAY, v6=False, index=RELAY_INDEX)
        sink = world.smtp_sink(MX, v6=False, args=["-c"])
        world.mx(DOMAIN, (MX, 10))
        shutil.copyfile(world.resolv_conf, f"{tmp}/resolv.conf")
        setup_namespace(tmp)
        count = SinkCount(sink.procs[0].log_path)
        if spec["mta"] == "postfix":
            daemon = Postfix(spec["binary"], tmp, relay.v4)
            queued = daemon.queued
        else:
            logf = open(f"{tmp}/log", "wb")
            daemon = start_daemon(spec["binary"], tmp, logf, spec["daemon_args"])
            queued = lambda: count_queue("/var/spool/smtpd")  # noqa: E731
        t1 = wait_banner(daemon, host=relay.v4)
        if isinstance(t1, str):
            result["error"] = t1
        else:
            spec["addr"] = relay.v4
            result = measure_e2e(
                spec, daemon, SENDER, SUBJECT,
                arrived=lambda deadline: wait_sink(spec, daemon, count, deadline),
                queued=queued,
                check=lambda tag: check_sink(spec, sink, tag))
            if not result["alive"]:
                result["error"] = f"the MTA exited (status {daemon.returncode})"
    except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
        result["error"] = f"{type(e).__name__}: {e}"
    finally:
        if isinstance(daemon, subprocess.Popen):
            stop(daemon)
            logf.close()
        elif daemon is not None:
            daemon.stop()
        kill_namespace_leftovers()
        if "load" in result:
            # smtp-sink counts a session when it ends: the MTA's are all
            # ended now.
            time.sleep(0.2)
            count.read()
            result["sink_sessions"] = count.sessions
            result["dns_queries"] = dns_queries(world, relay.v4)
        if world is not None:
            world.close()
    if spec.get("logs"):
        for src, dst in ((f"{tmp}/log", "log"), (f"{tmp}/postfix-cmd.log", "postfix-cmd.log")):
            if os.path.exists(src):
                shutil.copyfile(src, os.path.join(spec["logs"], f"{spec['label']}.{dst}"))
    if ("error" in result or result["load"].get("error") or result["problems"]
            or result["timed_out"] or result["load"].get("failures")):
        result["log"] = log_tail(tmp, 4000) if os.path.exists(f"{tmp}/log") else ""
    print(json.dumps(result))


# ---------------------------------------------------------------- --sink-check


def sink_check(args):
    """smtp-sink alone, as the runs use it (-c, dumps on a tmpfs), driven by
    Postfix's smtp-source with --sessions sessions: its ceiling in msg/s."""
    tmp = make_tmp("")
    try:
        spec = {"tmp": tmp, "sink_check": True, "messages": args.messages,
                "sessions": args.sessions, "size": args.size}
        return run_inner(__file__, spec, 120 + args.timeout, "sink-check")
    finally:
        remove_tmp(tmp)


def inner_sink_check(spec):
    tmp = spec["tmp"]
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", tmp], check=True)
    world = relay_world.RelayWorld(f"{tmp}/world")
    try:
        src = world.attach(os.getpid(), name="source.test", v6=False)
        sink = world.smtp_sink(MX, v6=False, args=["-c"])
        root = relay_world.POSTFIX_DIR
        env = dict(os.environ, LD_LIBRARY_PATH=f"{root}/usr/lib/postfix")
        t0 = time.monotonic()
        subprocess.run([f"{root}/usr/sbin/smtp-source", "-d",
                        "-s", str(spec["sessions"]), "-m", str(spec["messages"]),
                        "-l", str(spec["size"]), "-f", SENDER, "-t", f"bench@{DOMAIN}",
                        f"{sink.host.v4}:25"], env=env, check=True, capture_output=True)
        wall = time.monotonic() - t0
        count = SinkCount(sink.procs[0].log_path)
        print(json.dumps({"rate": spec["messages"] / wall, "messages": count.read(),
                          "source": src.v4}))
    finally:
        world.close()


# ---------------------------------------------------------------- outside


def one_run(name, mta, binary, daemon_args, label, args, image):
    with Scratch(args, image, CONF.format(addr=relay_world.v4_addr(RELAY_INDEX))) as sc:
        spec = run_spec(args, sc, label, mta=mta, binary=binary, daemon_args=daemon_args,
                        poll=args.poll, logs=args.logs, recipient=f"bench@{DOMAIN}")
        return run_inner(__file__, spec, BANNER_TIMEOUT + 2 * args.timeout + 120, name)


def postfix_role(name, title):
    """Postfix's processes by program (master, smtpd, cleanup, qmgr, smtp,
    ...); the smtpd daemons' by role."""
    if name.startswith("Postfix"):
        return os.path.basename(title.split(" ", 1)[0]) or "?"
    return smtpd_role(name, title)


def goal_verdict(key, ours, name, theirs):
    """(ratio text, verdict text or "", met or None) of ours against one peer."""
    if not theirs:
        return "-", "", None
    q = ours / theirs
    kind = next((g for peer, g in GOALS.get(key, {}).items() if name.startswith(peer)), None)
    if kind is None:
        return f"{q:.2f}", "", None
    op, bound = kind
    ok = {">=": q >= bound, "<": q < bound, "<=": q <= bound}[op]
    return f"{q:.2f}", f"{op} {bound:g}: {'met' if ok else 'NOT met'}", ok


def report(args, daemons, results):
    names = [name for name, *_ in daemons if results[name]]
    med = {n: {k: statistics.median(figures(r, args.messages)[k] for r in results[n])
               for k in figures(results[n][0], args.messages)} for n in names}
    for n in names:
        med[n]["sink_sessions"] = statistics.median(r["sink_sessions"] for r in results[n])
    ours = "smtpd-rs" if "smtpd-rs" in med else None
    peers = [n for n in names if n != "smtpd-rs"]

    print(f"\nrelay: {args.messages} messages of {args.size} bytes from {args.sessions} "
          f"sessions (persistent, QUIT after {args.per_connection}) to bench@{DOMAIN}, "
          f"relayed by MX (dnsmasq) to Postfix's smtp-sink, end to end (first connect to "
          "the last message at the sink); "
          + (f"median of {args.runs} runs; " if args.runs > 1 else "1 run; ")
          + f"{os.cpu_count()} cores, Linux {os.uname().release}")
    print(f"spool: {fs_description(args)}")
    rows = [
        ("relayed messages/s, end to end", "rate", "{:,.0f}"),
        ("CPU s per 1,000 messages", "cpu_per_k", "{:.3f}"),
        ("peak PSS, all processes (MiB)", "pss", "{:.1f}"),
        ("accepted messages/s (250s)", "accept_rate", "{:,.0f}"),
        ("first connect to last at sink (s)", "e2e", "{:.2f}"),
        ("last 250 to last at sink (s)", "lag", "{:.2f}"),
        ("first connect to empty queue (s)", "queue_empty", "{:.2f}"),
        ("SMTP sessions to the sink", "sink_sessions", "{:.0f}"),
        ("load generator's own CPU (s)", "client_cpu", "{:.2f}"),
    ]
    short = {n: n.split(" ")[0] for n in peers}
    cols = (["smtpd-rs"] if ours else []) + peers + ([f"/{short[p]}" for p in peers]
                                                      if ours else [])
    width = 35
    print(f"\n{'':{width}}" + "".join(f"{c:>19}" for c in cols) + "   goals")
    verdicts = []
    for label, key, fmt in rows:
        line = f"{label:{width}}"
        line += "".join(f"{fmt.format(med[n][key]):>19}" for n in ([ours] if ours else []) + peers)
        goals = []
        if ours:
            for p in peers:
                ratio, verdict, ok = goal_verdict(key, med[ours][key], p, med[p][key])
                line += f"{ratio:>19}"
                if verdict:
                    goals.append(f"vs {short[p]} {verdict}")
                    verdicts.append((f"{label} vs {short[p]}", ok))
        print(line + ("   " + "; ".join(goals) if goals else ""))
    print()
    for n in names:
        m = med[n]
        print(f"{n}: {m['files']:.0f} messages at the sink for {m['accepted']:.0f} 250s, "
              f"{m['good']:.0f} of them checked right (token, body, recipient), "
              "no duplicates, queue empty")
    if ours and peers:
        missed = [v for v, ok in verdicts if not ok]
        print("goals of issue 7: " + ("all met" if not missed else "NOT met: " + "; ".join(missed))
              + ("" if any(p.startswith("Postfix") for p in peers) else
                 " (Postfix not measured)"))
    print("\nload, mean ms from each command (or connect) to its reply (last run):")
    for n in names:
        ld = results[n][-1]["load"]
        print(f"  {n}: " + ", ".join(f"{k} {v:.2f}" for k, v in ld["phase_ms"].items())
              + f"; {ld['connects']} connects, slowest banner {ld['banner_max_ms']:.1f} ms")
    print("DNS queries the MTA sent to dnsmasq (last run): " + "; ".join(
        f"{n}: {results[n][-1]['dns_queries']}" for n in names))
    print_cpu_by_process(names, results, postfix_role)
    print_profiles(names, results)
    return med


def fs_description(args):
    host = f"{fs_of(args.dir)} ({args.dir})"
    if args.fs == "image":
        return ("a fresh journaled ext4 per run (mkfs.ext4's defaults), on a loop device "
                f"with direct I/O over a {args.image_mib} MiB file on {host}; the sink's "
                "dumps on a tmpfs")
    return f"a plain directory on {host}; the sink's dumps on a tmpfs"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    load_arguments(ap, timeout=600.0)
    ap.add_argument("--poll", type=float, default=0.005,
                    help="seconds between reads of the sink's count")
    ap.add_argument("--postfix", default=str(relay_world.POSTFIX_DIR),
                    help="the unpacked Postfix tree (make setup)")
    ap.add_argument("--only", help="comma-separated: smtpd-rs, opensmtpd, postfix")
    ap.add_argument("--logs", help="keep each run's MTA log in this directory, "
                    "as LABEL.log (LABEL: r<run>d<MTA>, d0 is smtpd-rs)")
    ap.add_argument("--sink-check", action="store_true",
                    help="only measure smtp-sink's own ceiling, fed by smtp-source")
    args = ap.parse_args()
    args.probe = 0  # receive.py's Image sizes itself with it

    if args.inner:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        spec = json.loads(args.inner)
        inner_sink_check(spec) if spec.get("sink_check") else inner(spec)
        return 0

    if not check_args("relay", args):
        return 1
    if not os.access(relay_world.SMTP_SINK, os.X_OK) or not shutil.which("dnsmasq",
                                                                         path="/usr/sbin"):
        log(f"relay: needs {relay_world.SMTP_SINK} and dnsmasq: make setup")
        return 1
    if args.sink_check:
        r = sink_check(args)
        print(f"smtp-sink alone (-c, dumps on a tmpfs), {args.messages} messages of {args.size} "
              f"bytes from smtp-source, {args.sessions} sessions: "
              + (f"{r['rate']:,.0f} msg/s, {r['messages']} counted" if "rate" in r
                 else r["error"]))
        return 0 if "rate" in r else 1
    if args.logs:
        args.logs = os.path.abspath(args.logs)
        os.makedirs(args.logs, exist_ok=True)

    only = set(args.only.lower().split(",")) if args.only else None
    daemons = []
    for name, key, mta, binary, check in (
        ("smtpd-rs", "smtpd-rs", "smtpd", args.ours, args.ours),
        (opensmtpd_version(), "opensmtpd", "smtpd", args.opensmtpd, args.opensmtpd),
        (postfix_version(args.postfix), "postfix", "postfix", os.path.abspath(args.postfix),
         os.path.join(args.postfix, "usr/sbin/postfix")),
    ):
        if only is not None and key not in only:
            continue
        hint = BUILD_HINT if key == "smtpd-rs" else "make setup"
        if not installed("relay", name, check, hint):
            continue
        daemons.append((name, mta, os.path.abspath(binary)))
    if not daemons:
        log("relay: nothing to measure")
        return 1
    if any(mta == "postfix" for _, mta, _ in daemons):
        try:
            ensure_user("postfix")
            ensure_postdrop()
        except (OSError, subprocess.CalledProcessError) as e:
            log(f"relay: cannot create Postfix's user and group: {e}")
            return 1

    image = None
    try:
        image = open_image("relay", args)

        def summary(r):
            f = figures(r, args.messages)
            return (f"{f['rate']:,.0f} msg/s end to end, {f['cpu_per_k']:.2f} CPU s/1000, "
                    f"peak PSS {f['pss']:.1f} MiB, accepted {f['accept_rate']:,.0f}/s, last "
                    f"at the sink {f['lag']:.2f} s after the last 250, {r['sink_sessions']} "
                    f"sessions to the sink, {f['good']}/{args.messages} right")

        results, failed = run_rounds(
            "relay", daemons, args,
            lambda i, k, d: one_run(d[0], d[1], d[2], [], f"r{i}d{k}", args, image),
            lambda name, r: check_run(name, r, args.messages, "messages at the sink"), summary)
    finally:
        if image:
            image.close()
        Scratch.cleanup()

    if not any(results.values()):
        return 1
    med = report(args, daemons, results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "median": med}, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
