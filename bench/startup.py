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
import statistics
import sys
import time

from nslib import (BANNER_TIMEOUT, BUILD_HINT, OPENSMTPD_HINT, PORT, check_root, descendants,
                   installed, log, log_tail,
                   make_tmp, opensmtpd_version, proc_memory, remove_tmp,
                   run_inner, setup_namespace, start_daemon, stop, wait_banner)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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


# ---------------------------------------------------------------- inside


def inner(spec):
    """Runs inside `unshare -mn`: set the namespace up, measure, stop."""
    tmp = spec["tmp"]
    setup_namespace(tmp, spec["keep_resolver"])

    result = {}
    with open(f"{tmp}/log", "wb") as logf:
        t0 = time.monotonic()
        daemon = start_daemon(spec["binary"], tmp, logf)
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
        result["log"] = log_tail(tmp)
    print(json.dumps(result))


# ---------------------------------------------------------------- outside


def one_run(name, binary, conf, args):
    """One measurement in a fresh namespace; returns the inner result."""
    tmp = make_tmp(conf)
    try:
        spec = {
            "tmp": tmp,
            "binary": binary,
            "settle": args.settle,
            "keep_resolver": args.keep_resolver,
        }
        return run_inner(__file__, spec, BANNER_TIMEOUT + args.settle + 60, name)
    finally:
        remove_tmp(tmp)


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

    err = check_root("startup")
    if err:
        log(err)
        return 1

    daemons = []
    for name, binary, conf, users in (
        ("smtpd-rs", args.ours, CONF_OURS, ("_smtpd", "_smtpq")),
        (opensmtpd_version(), args.opensmtpd, CONF_OPENSMTPD, ("opensmtpd", "opensmtpq")),
    ):
        hint = BUILD_HINT if name == "smtpd-rs" else OPENSMTPD_HINT
        if not installed("startup", name, binary, hint):
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
