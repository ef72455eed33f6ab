#!/usr/bin/python3
"""Start-up time and idle memory of smtpd-rs, side by side with OpenSMTPD.

For each daemon, N times (interleaved, after one discarded warm-up run each):
  - start `smtpd -d -f CONF` in its own mount and network namespace
    (`unshare -mn`, lo up, a fresh temp dir bind-mounted over
    /var/spool/smtpd and /var/run, so neither touches the real spool,
    control socket or port);
  - start-up: from just before exec to the moment the "220 " banner line can
    be read on 127.0.0.1:25 (connect is retried every millisecond);
  - memory: once idle (SETTLE seconds after the banner), the sum of Pss from
    /proc/PID/smaps_rollup over the daemon and all its descendants.
Prints the medians and the ratio smtpd-rs / OpenSMTPD. PSS charges each
shared page (libc's, say) in part to every process mapping it, so it moves a
little with whatever else runs on the machine; USS (private pages, also
printed) does not.

Inside each namespace /etc/hosts names this host and /etc/resolv.conf points
at 127.0.0.1, where nothing answers: every lookup ends at once (refused) and
no daemon waits on a resolver. OpenSMTPD looks up the client's address before
its banner, and with the host's resolver (which answers nothing here) that
lookup would time out; --keep-resolver leaves both files as they are.

Run as root (namespaces, mounts, the daemons' users): `make bench`, or
  /usr/bin/python3 bench/startup.py [--runs N] [--ours PATH] [--opensmtpd PATH]
A daemon whose binary is missing is skipped with a message.
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORT = 25
BANNER_TIMEOUT = 60.0

CONF_OURS = (
    f"listen on 127.0.0.1 port {PORT}\n"
    'action "local" mbox\n'
    'match from local for local action "local"\n'
)
# OpenSMTPD 6.8 refuses a config without a rule ("no rules, nothing to do").
CONF_OPENSMTPD = (
    f"listen on 127.0.0.1 port {PORT}\n"
    'action "local" mbox\n'
    'match from local for local action "local"\n'
)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- inside


def descendants(root):
    """PIDs of root and every process below it, from /proc."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The comm field may hold spaces and parentheses: split after the last ')'.
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return sorted(out)


def proc_memory(pid):
    """Pss, Rss and private (USS) kB of one process, with its title and uid."""
    mem = {"pid": pid}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Pss", "Rss", "Private_Clean", "Private_Dirty"):
                mem[key] = int(rest.split()[0])
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        mem["title"] = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                mem["uid"] = int(line.split()[1])
    return mem


def wait_banner(daemon):
    """Seconds from now until a "220 " line is read, or an error string."""
    deadline = time.monotonic() + BANNER_TIMEOUT
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            return f"daemon exited with status {daemon.returncode} before its banner"
        try:
            s = socket.create_connection(("127.0.0.1", PORT), timeout=1)
        except (ConnectionRefusedError, socket.timeout):
            time.sleep(0.001)
            continue
        with s:
            s.settimeout(max(deadline - time.monotonic(), 0.1))
            buf = b""
            try:
                while b"\n" not in buf:
                    chunk = s.recv(512)
                    if not chunk:
                        break
                    buf += chunk
            except socket.timeout:
                return f"no banner within {BANNER_TIMEOUT:.0f} s"
            if buf.startswith(b"220"):
                t = time.monotonic()
                try:
                    s.sendall(b"QUIT\r\n")
                    s.recv(512)
                except OSError:
                    pass
                return t
            if not buf:
                # Accepted but closed: not ready yet (or refusing); retry.
                time.sleep(0.001)
                continue
            return f"unexpected greeting {buf[:80]!r}"
    return f"no banner within {BANNER_TIMEOUT:.0f} s"


def bind_file(src, dst):
    """Bind-mount src over dst; where dst's target is gone (a symlink into the
    fresh /var/run), write it there instead."""
    target = os.path.realpath(dst)
    if os.path.exists(target):
        subprocess.run(["mount", "--bind", src, target], check=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(src, "rb") as f, open(target, "wb") as g:
            g.write(f.read())


def inner(spec):
    """Runs inside `unshare -mn`: set the namespace up, measure, stop."""
    tmp = spec["tmp"]
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    # util-linux unshare makes every mount private, so none of these leaks.
    subprocess.run(["mount", "--bind", f"{tmp}/spool", "/var/spool/smtpd"], check=True)
    subprocess.run(["mount", "--bind", f"{tmp}/run", "/var/run"], check=True)
    if not spec["keep_resolver"]:
        bind_file(f"{tmp}/hosts", "/etc/hosts")
        bind_file(f"{tmp}/resolv.conf", "/etc/resolv.conf")

    result = {}
    with open(f"{tmp}/log", "wb") as logf:
        t0 = time.monotonic()
        daemon = subprocess.Popen(
            [spec["binary"], "-d", "-f", f"{tmp}/smtpd.conf"],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=logf,
            start_new_session=True,
        )
        try:
            t1 = wait_banner(daemon)
            if isinstance(t1, str):
                result["error"] = t1
            else:
                result["startup_ms"] = (t1 - t0) * 1000
                time.sleep(spec["settle"])
                if daemon.poll() is not None:
                    result["error"] = f"daemon exited with status {daemon.returncode} while idle"
                else:
                    procs = []
                    for pid in descendants(daemon.pid):
                        try:
                            procs.append(proc_memory(pid))
                        except OSError:
                            pass
                    result["procs"] = procs
        finally:
            stop(daemon)
    if "error" in result:
        with open(f"{tmp}/log", "rb") as f:
            result["log"] = f.read()[-2000:].decode(errors="replace")
    print(json.dumps(result))


def stop(daemon):
    """SIGTERM, up to 10 s for an orderly exit, then SIGKILL what is left."""
    pids = descendants(daemon.pid) if daemon.poll() is None else []
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(10)
        except subprocess.TimeoutExpired:
            pass
    for sig_target in [daemon.pid] + pids:
        try:
            os.kill(sig_target, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.killpg(daemon.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    daemon.wait()


# ---------------------------------------------------------------- outside


def one_run(name, binary, conf, args):
    """One measurement in a fresh namespace; returns the inner result."""
    tmp = tempfile.mkdtemp(prefix="smtpd-bench-")
    try:
        os.chmod(tmp, 0o755)
        os.mkdir(f"{tmp}/spool", 0o711)
        os.chmod(f"{tmp}/spool", 0o711)
        os.mkdir(f"{tmp}/run", 0o755)
        with open(f"{tmp}/smtpd.conf", "w") as f:
            f.write(conf)
        host = socket.gethostname()
        with open(f"{tmp}/hosts", "w") as f:
            f.write(f"127.0.0.1\tlocalhost {host}\n::1\tlocalhost ip6-localhost\n")
        with open(f"{tmp}/resolv.conf", "w") as f:
            f.write("nameserver 127.0.0.1\n")
        spec = {
            "tmp": tmp,
            "binary": binary,
            "settle": args.settle,
            "keep_resolver": args.keep_resolver,
        }
        cmd = ["unshare", "--mount", "--net", "--", sys.executable,
               os.path.abspath(__file__), "--inner", json.dumps(spec)]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        try:
            out, _ = p.communicate(timeout=BANNER_TIMEOUT + args.settle + 60)
        except subprocess.TimeoutExpired:
            p.terminate()  # the inner side stops its daemon on SIGTERM
            out, _ = p.communicate(timeout=30)
        lines = out.strip().splitlines()
        if p.returncode != 0 or not lines:
            return {"error": f"{name}: namespace runner failed (status {p.returncode})"}
        return json.loads(lines[-1])
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", tmp], check=False)


def summarize(runs):
    startup = [r["startup_ms"] for r in runs]
    pss = [sum(p.get("Pss", 0) for p in r["procs"]) for r in runs]
    uss = [sum(p.get("Private_Clean", 0) + p.get("Private_Dirty", 0) for p in r["procs"])
           for r in runs]
    rss = [sum(p.get("Rss", 0) for p in r["procs"]) for r in runs]
    return {
        "startup_ms": statistics.median(startup),
        "startup_all": startup,
        "pss_kib": statistics.median(pss),
        "pss_all": pss,
        "uss_kib": statistics.median(uss),
        "rss_kib": statistics.median(rss),
        "nprocs": statistics.median(len(r["procs"]) for r in runs),
        "procs": runs[-1]["procs"],
    }


def opensmtpd_version():
    try:
        v = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "opensmtpd"],
                           capture_output=True, text=True, check=True).stdout
        return f"OpenSMTPD {v.split('-')[0]}"
    except (OSError, subprocess.CalledProcessError):
        return "OpenSMTPD"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="measured runs per daemon (median)")
    ap.add_argument("--warmup", type=int, default=1, help="discarded runs per daemon first")
    ap.add_argument("--settle", type=float, default=2.0,
                    help="seconds after the banner before memory is read")
    ap.add_argument("--ours", default=os.path.join(REPO, "target/release/smtpd"))
    ap.add_argument("--opensmtpd", default="/usr/sbin/smtpd")
    ap.add_argument("--keep-resolver", action="store_true",
                    help="leave /etc/hosts and /etc/resolv.conf as they are")
    ap.add_argument("--per-process", action="store_true",
                    help="list each process of the last run")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--inner", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.inner:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        inner(json.loads(args.inner))
        return 0

    if os.geteuid() != 0:
        log("startup: run as root (namespaces, mounts, the daemons' users)")
        return 1
    for d in ("/var/spool/smtpd", "/var/run"):
        if not os.path.isdir(d):
            log(f"startup: {d} is missing (make setup creates it)")
            return 1

    daemons = []
    for name, binary, conf, users in (
        ("smtpd-rs", args.ours, CONF_OURS, ("_smtpd", "_smtpq")),
        (opensmtpd_version(), args.opensmtpd, CONF_OPENSMTPD, ("opensmtpd", "opensmtpq")),
    ):
        if not os.access(binary, os.X_OK):
            log(f"startup: {name}: skipped: {binary} not found"
                + (" (build it: make)" if name == "smtpd-rs" else
                   " (install Debian's opensmtpd: make setup)"))
            continue
        daemons.append((name, os.path.abspath(binary), conf))
    if not daemons:
        log("startup: nothing to measure")
        return 1

    results = {name: [] for name, _, _ in daemons}
    failed = set()
    for i in range(args.warmup + args.runs):
        for name, binary, conf in daemons:
            if name in failed:
                continue
            r = one_run(name, binary, conf, args)
            if "error" in r:
                log(f"startup: {name}: {r['error']}")
                if r.get("log"):
                    log(f"--- {name} log (tail)\n{r['log']}---")
                failed.add(name)
                continue
            if i >= args.warmup:
                results[name].append(r)
            pss = sum(p.get("Pss", 0) for p in r["procs"])
            tag = "warm-up" if i < args.warmup else f"run {i - args.warmup + 1}"
            log(f"startup: {name} {tag}: {r['startup_ms']:.1f} ms to 220, "
                f"{len(r['procs'])} processes, PSS {pss} KiB")

    summary = {name: summarize(runs) for name, runs in results.items() if runs}
    if not summary:
        return 1

    names = [name for name, _, _ in daemons if name in summary]
    ours = next((n for n in names if n == "smtpd-rs"), None)
    theirs = next((n for n in names if n != "smtpd-rs"), None)
    rows = [
        ("start-up to 220 (ms)", "startup_ms", "{:.1f}"),
        ("idle PSS, all processes (KiB)", "pss_kib", "{:.0f}"),
        ("idle USS, all processes (KiB)", "uss_kib", "{:.0f}"),
        ("idle RSS, all processes (KiB)", "rss_kib", "{:.0f}"),
        ("processes", "nprocs", "{:.0f}"),
    ]
    cols = ["smtpd-rs", theirs or "OpenSMTPD", "ours/OpenSMTPD"]
    print(f"\nmedian of {args.runs} runs, each in its own mount+network namespace"
          f" ({os.cpu_count()} cores, {os.uname().release})")
    print(f"{'':32}" + "".join(f"{c:>18}" for c in cols))
    for label, key, fmt in rows:
        a = fmt.format(summary[ours][key]) if ours else "-"
        b = fmt.format(summary[theirs][key]) if theirs else "-"
        ratio = "-"
        if ours and theirs and summary[theirs][key]:
            ratio = f"{summary[ours][key] / summary[theirs][key]:.2f}"
        print(f"{label:32}{a:>18}{b:>18}{ratio:>18}")
    for name in names:
        s = summary[name]
        print(f"{name}: start-up ms per run: "
              + " ".join(f"{x:.1f}" for x in s["startup_all"])
              + "; PSS KiB per run: " + " ".join(str(x) for x in s["pss_all"]))
    if args.per_process:
        for name in names:
            print(f"\n{name}, last run:")
            print(f"{'pid':>8} {'uid':>6} {'PSS KiB':>8} {'USS KiB':>8}  title")
            for p in summary[name]["procs"]:
                uss = p.get("Private_Clean", 0) + p.get("Private_Dirty", 0)
                print(f"{p['pid']:>8} {p.get('uid', -1):>6} {p.get('Pss', 0):>8} "
                      f"{uss:>8}  {p['title']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
