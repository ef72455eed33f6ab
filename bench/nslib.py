"""What the benchmarks share: a daemon in its own mount and network namespace.

Each measurement runs a fresh copy of its own script inside
`unshare --mount --net` (run_inner): that copy brings lo up, bind-mounts a
fresh temp dir over /var/spool/smtpd and /var/run (setup_namespace), so no
daemon touches the real spool, control socket or port, starts the daemon
(start_daemon), waits for its banner (wait_banner), measures, stops it
(stop) and prints one JSON line, which run_inner returns.

Inside each namespace /etc/hosts names this host and /etc/resolv.conf points
at 127.0.0.1, where nothing answers: every lookup ends at once (refused) and
no daemon waits on a resolver. OpenSMTPD looks up the client's address before
its banner, and with the host's resolver (which answers nothing here) that
lookup would time out; keep_resolver leaves both files as they are.

Standard library only; run as root.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

PORT = 25
BANNER_TIMEOUT = 60.0


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# How to get what a benchmark found missing.
BUILD_HINT = "build it: make"
OPENSMTPD_HINT = "install Debian's opensmtpd: make setup"


def installed(prog, name, path, hint):
    """Whether `path` can be run; if not, a line saying that `name` is
    skipped and how to get it."""
    if os.access(path, os.X_OK):
        return True
    log(f"{prog}: {name}: skipped: {path} not found ({hint})")
    return False


# ---------------------------------------------------------------- /proc


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
    mem["title"] = proc_title(pid)
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                mem["uid"] = int(line.split()[1])
    return mem


def proc_title(pid):
    """The process's command line (its title, for daemons that set one)."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode(errors="replace").strip()


# ---------------------------------------------------------------- inside


def wait_banner(daemon, port=PORT, timeout=BANNER_TIMEOUT, host="127.0.0.1"):
    """Monotonic time at which a "220 " line was read from host:port, or an
    error string."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            return f"daemon exited with status {daemon.returncode} before its banner"
        try:
            s = socket.create_connection((host, port), timeout=1)
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
                return f"no banner within {timeout:.0f} s"
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
    return f"no banner within {timeout:.0f} s"


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


def setup_namespace(tmp, keep_resolver=False):
    """Runs inside `unshare -mn`: lo up, tmp's spool and run dirs over the
    real ones, and (unless keep_resolver) tmp's hosts and resolv.conf."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    # util-linux unshare makes every mount private, so none of these leaks.
    subprocess.run(["mount", "--bind", f"{tmp}/spool", "/var/spool/smtpd"], check=True)
    subprocess.run(["mount", "--bind", f"{tmp}/run", "/var/run"], check=True)
    if not keep_resolver:
        bind_file(f"{tmp}/hosts", "/etc/hosts")
        bind_file(f"{tmp}/resolv.conf", "/etc/resolv.conf")


def start_daemon(binary, tmp, logf, extra_args=()):
    """`binary -d [extra_args] -f tmp/smtpd.conf`, in a session of its own,
    its output to logf."""
    return subprocess.Popen(
        [binary, "-d", *extra_args, "-f", f"{tmp}/smtpd.conf"],
        stdin=subprocess.DEVNULL,
        stdout=logf,
        stderr=logf,
        start_new_session=True,
    )


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


def log_tail(tmp, n=2000):
    with open(f"{tmp}/log", "rb") as f:
        return f.read()[-n:].decode(errors="replace")


# ---------------------------------------------------------------- outside


def make_tmp(conf, parent=None):
    """A fresh temp dir (in parent, or the default temp dir) with an empty
    spool and run dir, smtpd.conf, hosts and resolv.conf."""
    tmp = tempfile.mkdtemp(prefix="smtpd-bench-", dir=parent)
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
    return tmp


def remove_tmp(tmp):
    subprocess.run(["rm", "-rf", "--one-file-system", tmp], check=False)


def run_inner(script, spec, timeout, name):
    """Run `script --inner SPEC` in new mount and network namespaces; return
    the JSON object of its last output line, or {"error": ...}."""
    cmd = ["unshare", "--mount", "--net", "--", sys.executable,
           os.path.abspath(script), "--inner", json.dumps(spec)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.terminate()  # the inner side stops its daemon on SIGTERM
        out, _ = p.communicate(timeout=30)
    lines = out.strip().splitlines()
    if p.returncode != 0 or not lines:
        return {"error": f"{name}: namespace runner failed (status {p.returncode})"}
    return json.loads(lines[-1])


def opensmtpd_version():
    try:
        v = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "opensmtpd"],
                           capture_output=True, text=True, check=True).stdout
        return f"OpenSMTPD {v.split('-')[0]}"
    except (OSError, subprocess.CalledProcessError):
        return "OpenSMTPD"


def check_root(prog):
    """None if we may run, else the reason."""
    if os.geteuid() != 0:
        return f"{prog}: run as root (namespaces, mounts, the daemons' users)"
    for d in ("/var/spool/smtpd", "/var/run"):
        if not os.path.isdir(d):
            return f"{prog}: {d} is missing (make setup creates it)"
    return None
