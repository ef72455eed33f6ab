#!/usr/bin/python3
"""Local Maildir delivery: smtpd-rs side by side with OpenSMTPD (issue 6's
benchmark), end to end, from the first connect to the last file in
Maildir/new.

For each daemon (runs interleaved; with --runs N the median of N is shown):
  - start `smtpd -d -f CONF` in its own mount and network namespace, with a
    fresh spool and /var/run (nslib, as bench/receive.py does), WITHOUT
    `-P mda`: both deliver. Both get the same configuration:
        listen on 127.0.0.1
        action "md" maildir
        match from any for domain "bench.test" action "md"
    OpenSMTPD 6.8 delivers to Maildir by running its mail.maildir helper
    (/usr/libexec/opensmtpd) as the user, from a child of its parent
    process; smtpd-rs from a child of its delivery runner, as the user;
  - one real user, --user (smtpdrs-bench; created with useradd -M -U and
    no login shell if missing, kept for the next run). Its home is a fresh
    empty directory (mode 0700, the user's), and the directory holding it
    is bound over /home inside the namespace, so the daemons deliver to
    /home/USER/Maildir, which they create themselves;
  - the file system (--fs): by default ("image") ONE fresh journaled ext4
    per run (mkfs.ext4's defaults, on a loop device with direct I/O over a
    zero-filled file in --dir: receive.py's Image) holding both the spool
    (its spool/, bind-mounted over /var/spool/smtpd) and the home (its
    home/, bound over /home): every queue write, Maildir file and fsync of
    a run goes to that one journal. With "dir" both are plain directories
    in --dir (see receive.py about --fs dir);
  - the load: --messages messages (default 5,000) of --size bytes (4 KiB)
    from --sessions concurrent sessions (20), receive.py's load generator
    (persistent sessions, QUIT and reconnect after --per-connection
    messages, lock step, no PIPELINING), all to USER@bench.test. Every
    message carries a token of its own (Subject "deliver benchmark TAG I"
    and Message-Id <TAG.I@bench.localhost>);
  - the end: the files in /home/USER/Maildir/new are counted every
    --poll seconds (0.05) until there are --messages of them (or --timeout
    passes). The time of the last one is new/'s modification time (every
    file entering new/ sets it; the kernel's coarse clock, a few ms),
    so the end does not depend on the polling interval;
  - delivered messages/s: --messages over the time from the load's first
    connect to the last file in new/. Also shown: the load's accepted rate
    (its 250s over its first connect to its last 250), the lag from the
    last 250 to the last file, and when the queue was empty again;
  - CPU per 1,000 messages: utime+stime+cutime+cstime (/proc/PID/stat) of
    every process in the daemon's network namespace except ours, from
    before the load to 0.5 s after the queue is empty again, as receive.py
    measures it. The delivery children (OpenSMTPD: a child of the parent,
    /bin/sh and mail.maildir; smtpd-rs: children of its delivery runner)
    exit and are reaped by the daemon, so their CPU is in their parent's
    cutime+cstime and counted; children still alive at the end are
    counted directly;
  - peak PSS: the sum of Pss over the same processes, the short-lived
    delivery children included, sampled every 100 ms; its maximum;
  - correctness, after the queue is empty again: exactly --messages files
    in new/, nothing in tmp/ or cur/, every file the user's, each holding
    exactly one message's token and ending in that message as sent (the
    daemon adds its headers above it; line ends compared as LF), no token
    twice, none missing; the queue empty.
Before the first run and after the last: the fsync rate of that kind of
file system (receive.py's test: 4 KiB appended + fsync in a loop, 1 and 20
writers, --fsync-seconds each).

Durability is what each daemon does, not measured here: smtpd-rs fsyncs
each file in tmp/ and then the directory after the rename into new/;
OpenSMTPD 6.8's mail.maildir fsyncs the file before the rename.

Postfix is not measured: Debian's postfix and opensmtpd packages both
provide and conflict with mail-transport-agent, so installing one removes
the other, and this benchmark never installs or removes packages.

The load generator and the daemon share the machine's cores; the
generator's own CPU is printed too.

Run as root: `make bench`, or
  /usr/bin/python3 bench/deliver.py [--runs N] [--messages N] [--sessions N]
      [--size BYTES] [--fs image|dir] [--profile] [--verbose] [--logs DIR]
      [--json FILE]
      [--ours PATH] [--opensmtpd PATH] [--user NAME]
A daemon whose binary is missing is skipped with a message.
"""

import argparse
import json
import os
import pwd
import shutil
import signal
import statistics
import subprocess
import sys
import time

from nslib import (BANNER_TIMEOUT, BUILD_HINT, OPENSMTPD_HINT, installed, log, log_tail,
                   opensmtpd_version,
                   run_inner, setup_namespace, start_daemon, stop, wait_banner)
from receive import (CLK_TCK, SETTLE, Load, Profiler, Sampler, Scratch, Shared, check_args,
                     collect, count_queue, cpu_snapshot, fs_of, fsync_probe, in_child,
                     load_arguments, make_message, open_image, postfix_note,
                     print_cpu_by_process, print_profiles, run_rounds, run_spec)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DOMAIN = "bench.test"
CONF = (
    "listen on 127.0.0.1\n"
    'action "md" maildir\n'
    f'match from any for domain "{DOMAIN}" action "md"\n'
)
SENDER = "bench@localhost"
SUBJECT = "deliver benchmark"
RATE_GOAL = 2.0  # delivered messages/s: at least twice OpenSMTPD's
CPU_GOAL = 1.0  # CPU per message: below OpenSMTPD's


# ---------------------------------------------------------------- the user


def ensure_user(name):
    """The benchmark's user, created (no home made, no login shell) if
    missing, as regress/test_delivery.py does."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        nologin = next((p for p in ("/usr/sbin/nologin", "/sbin/nologin")
                        if os.path.exists(p)), "/bin/false")
        subprocess.run(["useradd", "-M", "-U", "-d", f"/home/{name}", "-s", nologin, name],
                       check=True, capture_output=True)
        return pwd.getpwnam(name)


# ---------------------------------------------------------------- inside


def count_new(new):
    try:
        return len(os.listdir(new))
    except FileNotFoundError:
        return 0


def wait_delivered(spec, daemon, new, deadline):
    """Poll new/ until it holds spec["messages"] files; (files, monotonic
    time of the last one, or None on timeout or a dead daemon)."""
    want = spec["messages"]
    n = 0
    while time.monotonic() < deadline:
        n = count_new(new)
        if n >= want:
            seen = time.monotonic()
            # new/'s mtime is the last entry's arrival (realtime, coarse
            # clock); map it onto the monotonic clock.
            offset = time.time() - time.monotonic()
            last = os.stat(new).st_mtime - offset
            return n, min(last, seen)
        if daemon.poll() is not None:
            break
        time.sleep(spec["poll"])
    return n, None


def wait_queue_empty(daemon, deadline, queued):
    """Monotonic time at which queued() (messages, envelopes) was (0, 0), or
    None."""
    while time.monotonic() < deadline:
        if queued() == (0, 0):
            return time.monotonic()
        if daemon.poll() is not None:
            break
        time.sleep(0.05)
    return None


def check_maildir(spec, home, tag, uid):
    """Problems with the delivered files, and how many were right."""
    md = f"{home}/Maildir"
    bad = []
    for sub in ("tmp", "cur"):
        try:
            left = os.listdir(f"{md}/{sub}")
        except FileNotFoundError:
            left = []
        if left:
            bad.append(f"{len(left)} files in Maildir/{sub}")
    try:
        names = os.listdir(f"{md}/new")
    except FileNotFoundError:
        names = []
    copies, wrong_owner = [], 0
    for name in names:
        path = f"{md}/new/{name}"
        if os.stat(path).st_uid != uid:
            wrong_owner += 1
        with open(path, "rb") as f:
            copies.append((name, f.read()))
    if wrong_owner:
        bad.append(f"{wrong_owner} files in Maildir/new not owned by the user")
    more, good = check_copies(copies, spec, tag, SENDER, SUBJECT, "files in Maildir/new")
    return bad + more, good


def check_copies(copies, spec, tag, sender, subject, what):
    """Problems with the copies of the load's messages that arrived ((name,
    bytes) pairs): each must hold exactly one message's token (its Subject
    line as sent) and end in that message as sent (the daemons add headers
    above it; line ends compared as LF), no token twice, none missing; and
    how many were right (shared with relay.py)."""
    want, size = spec["messages"], spec["size"]
    seen = {}
    malformed, good = [], 0
    prefix = f"Subject: {subject} {tag} ".encode()
    for name, data in copies:
        hits = [line for line in data.split(b"\n") if line.startswith(prefix)]
        idx = hits[0][len(prefix):].strip() if len(hits) == 1 else b""
        if not idx.isdigit():
            malformed.append(f"{name}: {len(hits)} tokens")
            continue
        i = int(idx)
        seen.setdefault(i, []).append(name)
        sent = make_message(size, tag, i, sender, spec["recipient"], subject)
        if not data.replace(b"\r\n", b"\n").endswith(sent.replace(b"\r\n", b"\n")):
            malformed.append(f"{name}: message {i} differs from what was sent")
            continue
        good += 1
    dups = {i: v for i, v in seen.items() if len(v) > 1}
    missing = [i for i in range(want) if i not in seen]
    bad = []
    if len(copies) != want:
        bad.append(f"{len(copies)} {what}, {want} expected")
    if malformed:
        bad.append(f"{len(malformed)} {what} malformed, e.g. {malformed[:3]}")
    if dups:
        bad.append(f"{len(dups)} messages arrived more than once, e.g. "
                   f"{list(dups.items())[:2]}")
    if missing:
        bad.append(f"{len(missing)} messages missing, e.g. {missing[:5]}")
    return bad, good


def measure(spec, daemon, home):
    new = f"{home}/Maildir/new"
    return measure_e2e(
        spec, daemon, SENDER, SUBJECT,
        arrived=lambda deadline: wait_delivered(spec, daemon, new, deadline),
        queued=lambda: count_queue("/var/spool/smtpd"),
        check=lambda tag: check_maildir(spec, home, tag, spec["uid"]))


def measure_e2e(spec, daemon, sender, subject, arrived, queued, check):
    """The load, end to end (shared with relay.py): arrived(deadline) waits
    until every message has arrived, giving (how many, monotonic time of
    the last one or None); queued() is (messages, envelopes) in the
    daemon's queue; check(tag) is (problems, messages right)."""
    shared = Shared()
    tag = f"{spec['label']}{os.getpid()}"
    load_spec = dict(spec, sender=sender, subject=subject)
    load_pid, load_go, load_res = in_child(lambda: TimedLoad(load_spec, shared, tag).run())
    exclude = {os.getpid(), load_pid}

    before = cpu_snapshot(exclude)
    sampler = Sampler(exclude)
    sampler.start()
    profiler = Profiler(exclude) if spec.get("profile") else None
    if profiler:
        profiler.start()
    t0 = time.monotonic()
    deadline = t0 + spec["timeout"]
    os.write(load_go, b"g")
    os.close(load_go)
    load = collect(load_pid, load_res)
    files, t_last_file = arrived(deadline)
    t_empty = wait_queue_empty(daemon, deadline, queued) if t_last_file else None
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
    messages, envelopes = queued()
    problems, good = check(tag)
    t_first = load.get("t_first_abs")
    return {
        "load": load,
        "files": files,
        "good_files": good,
        "problems": problems,
        "timed_out": t_last_file is None,
        # Seconds from the load's go to its first connect is tiny; the
        # end-to-end time counts from the first connect.
        "e2e_s": (t_last_file - t_first) if t_last_file and t_first else None,
        "lag_s": (t_last_file - load["t_last_abs"]) if t_last_file and load.get("t_last_abs")
        else None,
        "queue_empty_s": (t_empty - t_first) if t_empty and t_first else None,
        "cpu_s": cpu,
        "per_proc": per_proc,
        "gone": gone,
        "peak_pss_kib": sampler.peak,
        "peak_procs": sampler.peak_procs,
        "pss_samples": sampler.samples,
        "queued_messages": messages,
        "queued_envelopes": envelopes,
        "alive": daemon.poll() is None,
        "profile": profiler.result() if profiler else None,
    }


class TimedLoad(Load):
    """receive.py's load, also returning its first connect and last 250 as
    monotonic times (the same clock in every process), for the end-to-end
    time."""

    def run(self):
        out = super().run()
        out["t_first_abs"] = self.t_first
        out["t_last_abs"] = self.t_last
        return out


def prepare_disk(spec):
    """The run's file system at tmp/disk (with --fs image a fresh ext4 on
    the loop device; else a directory), holding spool/ and home/USER."""
    tmp, user = spec["tmp"], spec["user"]
    disk = f"{tmp}/disk"
    os.mkdir(disk, 0o755)
    if spec.get("device"):
        subprocess.run(["mount", spec["device"], disk], check=True)
        os.rmdir(f"{disk}/lost+found")
        os.chmod(disk, 0o755)
    os.mkdir(f"{disk}/spool")
    os.chmod(f"{disk}/spool", 0o711)
    os.mkdir(f"{disk}/home")
    os.chmod(f"{disk}/home", 0o755)
    home = f"{disk}/home/{user}"
    os.mkdir(home)
    os.chown(home, spec["uid"], spec["gid"])
    os.chmod(home, 0o700)
    # nslib's setup_namespace binds tmp/spool over /var/spool/smtpd.
    subprocess.run(["mount", "--bind", f"{disk}/spool", f"{tmp}/spool"], check=True)
    return disk


def inner(spec):
    """Runs inside `unshare -mn`: set the namespace up, measure, stop."""
    tmp = spec["tmp"]
    disk = prepare_disk(spec)
    setup_namespace(tmp, spec["keep_resolver"])
    subprocess.run(["mount", "--bind", f"{disk}/home", "/home"], check=True)
    home = f"/home/{spec['user']}"
    result = {}
    with open(f"{tmp}/log", "wb") as logf:
        daemon = start_daemon(spec["binary"], tmp, logf, spec["daemon_args"])
        try:
            t1 = wait_banner(daemon)
            if isinstance(t1, str):
                result["error"] = t1
            else:
                result = measure(spec, daemon, home)
                if not result["alive"]:
                    result["error"] = f"daemon exited with status {daemon.returncode}"
        finally:
            stop(daemon)
    if spec.get("logs"):
        shutil.copyfile(f"{tmp}/log", os.path.join(spec["logs"], f"{spec['label']}.log"))
    if ("error" in result or result["load"].get("error") or result["problems"]
            or result["timed_out"] or result["load"].get("failures")):
        result["log"] = log_tail(tmp, 4000)
    print(json.dumps(result))


# ---------------------------------------------------------------- outside


def one_run(name, binary, daemon_args, label, args, image, user):
    with Scratch(args, image, CONF) as sc:
        spec = run_spec(args, sc, label, binary=binary, daemon_args=daemon_args,
                        keep_resolver=args.keep_resolver, poll=args.poll, logs=args.logs,
                        user=user.pw_name, uid=user.pw_uid, gid=user.pw_gid,
                        recipient=f"{user.pw_name}@{DOMAIN}")
        return run_inner(__file__, spec, BANNER_TIMEOUT + 2 * args.timeout + 60, name)


def figures(r, messages):
    load = r["load"]
    return {
        "rate": messages / r["e2e_s"] if r.get("e2e_s") else 0.0,
        "cpu_per_k": r["cpu_s"] / r["files"] * 1000 if r["files"] else float("nan"),
        "pss": r["peak_pss_kib"] / 1024,
        "accept_rate": load["accepted"] / load["wall"] if load.get("wall") else 0.0,
        "e2e": r.get("e2e_s") or 0.0,
        "lag": r.get("lag_s") or 0.0,
        "queue_empty": r.get("queue_empty_s") or 0.0,
        "client_cpu": load.get("client_cpu", 0.0),
        "files": r["files"],
        "good": r["good_files"],
        "accepted": load["accepted"],
    }


def check_run(name, r, messages, where="files in Maildir/new"):
    """Problems with one run, as strings (shared with relay.py)."""
    bad = []
    if "error" in r:
        bad.append(r["error"])
    load = r.get("load", {})
    if load.get("error"):
        bad.append(load["error"])
    if load.get("failures"):
        bad.append(f"load: {load['failures']} failed: {load['failure_samples']}")
    if load.get("timed_out"):
        bad.append("load: timed out")
    if "files" not in r:
        return bad
    if r["timed_out"]:
        bad.append(f"only {r['files']} of {messages} {where} before the timeout")
    elif r.get("queue_empty_s") is None:
        bad.append(f"queue not empty before the timeout ({r['queued_messages']} messages, "
                   f"{r['queued_envelopes']} envelopes left)")
    bad.extend(r["problems"])
    return bad


def fs_description(args):
    host = f"{fs_of(args.dir)} ({args.dir})"
    if args.fs == "image":
        return ("one fresh journaled ext4 per run for both (mkfs.ext4's defaults), on a "
                f"loop device with direct I/O over a {args.image_mib} MiB file on {host}")
    return f"plain directories on {host}"


def report(args, daemons, results, fsync):
    names = [name for name, _, _ in daemons if results[name]]
    med = {n: {k: statistics.median(figures(r, args.messages)[k] for r in results[n])
               for k in figures(results[n][0], args.messages)} for n in names}
    ours = "smtpd-rs" if "smtpd-rs" in med else None
    theirs = next((n for n in names if n != "smtpd-rs"), None)

    print(f"\ndeliver: {args.messages} messages of {args.size} bytes from {args.sessions} "
          f"sessions (persistent, QUIT after {args.per_connection}) to one user's "
          "Maildir, end to end (first connect to the last file in Maildir/new); "
          + (f"median of {args.runs} runs; " if args.runs > 1 else "1 run; ")
          + f"{os.cpu_count()} cores, Linux {os.uname().release}")
    print(f"spool and home: {fs_description(args)}")
    rows = [
        ("delivered messages/s, end to end", "rate", "{:,.0f}", f"ratio >= {RATE_GOAL:g}"),
        ("CPU s per 1,000 messages", "cpu_per_k", "{:.3f}", f"ratio < {CPU_GOAL:g}"),
        ("peak PSS, all processes (MiB)", "pss", "{:.1f}", ""),
        ("accepted messages/s (250s)", "accept_rate", "{:,.0f}", ""),
        ("first connect to last file (s)", "e2e", "{:.2f}", ""),
        ("last 250 to last file (s)", "lag", "{:.2f}", ""),
        ("first connect to empty queue (s)", "queue_empty", "{:.2f}", ""),
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
                ok = q >= RATE_GOAL if ">=" in goal else q < CPU_GOAL
                verdict = f"{goal}: {'met' if ok else 'NOT met'}"
                if not ok:
                    missed.append(label)
        print(f"{label:{width}}{a:>18}{b:>18}{ratio:>18}   {verdict}")
    print(f"{'Postfix':{width}}{postfix_note()}")
    print()
    for n in (ours, theirs):
        if n:
            m = med[n]
            print(f"{n}: {m['files']:.0f} files in Maildir/new for {m['accepted']:.0f} 250s, "
                  f"{m['good']:.0f} of them checked right (token, body, owner), "
                  "no duplicates, tmp/ and cur/ empty, queue empty")
    if ours and theirs:
        print("goals of issue 6 against OpenSMTPD: " + (
            "all met" if not missed else "NOT met: " + "; ".join(missed))
            + " (against Postfix: not measured)")
    if "1 before" in fsync:
        after = "1 after" in fsync
        print(f"disk fsync rate on this kind of file system, 4 KiB appended + fsync, "
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
    print("  (the delivery children's CPU is in the process that reaped them)")
    print_profiles(names, results)
    return med


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    load_arguments(ap, timeout=300.0)
    ap.add_argument("--poll", type=float, default=0.05,
                    help="seconds between counts of Maildir/new")
    ap.add_argument("--user", default="smtpdrs-bench",
                    help="the local user the mail is for (created if missing)")
    ap.add_argument("--fsync-seconds", type=float, default=3.0,
                    help="seconds per fsync test (0: skip)")
    ap.add_argument("--keep-resolver", action="store_true",
                    help="leave /etc/hosts and /etc/resolv.conf as they are")
    ap.add_argument("--verbose", action="store_true",
                    help="start the daemons with -v (their logs are shown on failure)")
    ap.add_argument("--logs", help="keep each run's daemon log in this directory, "
                    "as LABEL.log (LABEL: r<run>d<daemon>, d0 is smtpd-rs)")
    args = ap.parse_args()
    args.probe = 0  # receive.py's Image sizes itself with it

    if args.inner:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        inner(json.loads(args.inner))
        return 0

    if not check_args("deliver", args):
        return 1
    try:
        user = ensure_user(args.user)
    except (OSError, subprocess.CalledProcessError) as e:
        log(f"deliver: cannot create the user {args.user}: {e}")
        return 1
    if args.logs:
        args.logs = os.path.abspath(args.logs)
        os.makedirs(args.logs, exist_ok=True)
    verbose = ["-v"] if args.verbose else []
    daemons = []
    for name, binary in (("smtpd-rs", args.ours), (opensmtpd_version(), args.opensmtpd)):
        hint = BUILD_HINT if name == "smtpd-rs" else OPENSMTPD_HINT
        if not installed("deliver", name, binary, hint):
            continue
        daemons.append((name, os.path.abspath(binary), verbose))
    if not daemons:
        log("deliver: nothing to measure")
        return 1

    fsync = {}

    image = None
    try:
        image = open_image("deliver", args)
        fsync_probe("deliver", args, image, "before", fsync)

        def summary(r):
            f = figures(r, args.messages)
            return (f"{f['rate']:,.0f} msg/s end to end, {f['cpu_per_k']:.2f} CPU s/1000, "
                    f"peak PSS {f['pss']:.1f} MiB, accepted {f['accept_rate']:,.0f}/s, last "
                    f"file {f['lag']:.2f} s after the last 250, {f['good']}/{args.messages} "
                    "files right")

        results, failed = run_rounds(
            "deliver", daemons, args,
            lambda i, k, d: one_run(d[0], d[1], d[2], f"r{i}d{k}", args, image, user),
            lambda name, r: check_run(name, r, args.messages), summary)
        fsync_probe("deliver", args, image, "after", fsync)
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
