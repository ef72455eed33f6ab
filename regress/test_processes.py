"""The running daemon seen from outside, through /proc: seven processes with
the right titles, each role as its own user in its own chroot, sandboxed
(seccomp, no_new_privs, no capabilities), holding only the descriptors it
needs, separately randomized, with its config in a sealed mapping.

All of these read one shared instance (the `daemon` fixture)."""

import os
from pathlib import Path
import pwd
import re
import time

import pytest

import smtpd_harness as h

ROLES = h.ROLES


# ---------------------------------------------------------------- the tree


def test_roles_and_the_delivery_runner_with_titles(daemon):
    kids = h.children(daemon.parent)
    titles = {}
    for kid in kids:
        title, only_nuls = h.proctitle(kid)
        assert only_nuls, f"pid {kid}: cmdline has more than a title: {h.read_cmdline(kid)!r}"
        titles[kid] = title
    assert sorted(titles.values()) == sorted(f"smtpd: {r}" for r in h.CHILDREN), titles
    assert len(kids) == 7, f"the parent has {len(kids)} children: {titles}"
    # unshare's only child is the parent: no stray process in between.
    assert h.children(daemon.proc.pid) == [daemon.parent]


def test_roles_have_no_children(daemon):
    for role in ROLES:
        pid = daemon.role_pid(role)
        assert h.children(pid) == [], f"{role} has children {h.children(pid)}"


def test_every_process_is_in_the_instance_namespaces(daemon):
    """Exactly the parent, its six roles and the delivery runner (plus
    unshare) live in the instance's namespaces."""
    expected = {daemon.parent, daemon.proc.pid} | set(h.children(daemon.parent))
    assert daemon.ns_pids() == expected


def test_every_role_is_an_exec_of_the_binary(daemon):
    want = h.dev_ino(daemon.bin)
    for pid in [daemon.parent] + [daemon.role_pid(r) for r in ROLES]:
        assert h.dev_ino(f"/proc/{pid}/exe") == want, (pid, os.readlink(f"/proc/{pid}/exe"))


def test_parent_runs_as_root_without_chroot(daemon):
    st = h.read_status(daemon.parent)
    assert st["Uid"].split() == ["0"] * 4
    assert h.dev_ino(f"/proc/{daemon.parent}/root") == h.dev_ino(f"/proc/{daemon.proc.pid}/root")


# ---------------------------------------------------------------- users


@pytest.mark.parametrize("role", ROLES)
def test_role_user(daemon, role):
    pid = daemon.role_pid(role)
    pw = pwd.getpwnam(h.ROLE_TABLE[role]["user"])
    assert pw.pw_uid != 0 and pw.pw_gid != 0
    st = h.read_status(pid)
    # real, effective, saved, filesystem
    assert st["Uid"].split() == [str(pw.pw_uid)] * 4, f"{role} Uid: {st['Uid']}"
    assert st["Gid"].split() == [str(pw.pw_gid)] * 4, f"{role} Gid: {st['Gid']}"
    assert st["Groups"].split() == [str(pw.pw_gid)], f"{role} Groups: {st['Groups']!r}"


# ---------------------------------------------------------------- chroot


def _root_of(daemon, path):
    """(st_dev, st_ino) of `path` as the instance's mount namespace sees
    it: through the parent's root."""
    return h.dev_ino(f"/proc/{daemon.parent}/root{path}")


def test_chroot_directories_are_distinct(daemon):
    """Guards the chroot test below: the three possible roots differ, and
    the instance's /var/spool/smtpd is the test's private spool."""
    ns_root = _root_of(daemon, "/")
    empty = _root_of(daemon, h.EMPTY_DIR)
    spool = _root_of(daemon, h.SPOOL_DIR)
    assert len({ns_root, empty, spool}) == 3
    assert spool == h.dev_ino(daemon.spool)
    assert spool != h.dev_ino(h.SPOOL_DIR), "the host spool is visible in the namespace"


@pytest.mark.parametrize("role", ROLES)
def test_role_chroot(daemon, role):
    pid = daemon.role_pid(role)
    chroot = h.ROLE_TABLE[role]["chroot"]
    expected = _root_of(daemon, chroot or "/")
    actual = h.dev_ino(f"/proc/{pid}/root")
    shown = os.readlink(f"/proc/{pid}/root")
    assert actual == expected, (
        f"{role}: /proc/{pid}/root -> {shown!r} {actual}, expected {chroot or '/'} {expected}")


@pytest.mark.parametrize("role", [r for r in ROLES if h.ROLE_TABLE[r]["chroot"]])
def test_role_cwd_is_its_root(daemon, role):
    """chdir("/") after chroot: a working directory outside the new root is
    the classic way out of a chroot."""
    pid = daemon.role_pid(role)
    expected = h.dev_ino(f"/proc/{pid}/root")
    cwd = h.dev_ino(f"/proc/{pid}/cwd")
    assert cwd == expected, f"{role}: cwd {os.readlink(f'/proc/{pid}/cwd')!r} is not its root"


# ---------------------------------------------------------------- sandbox


@pytest.mark.parametrize("role", ROLES)
def test_role_sandbox_status(daemon, role):
    st = h.read_status(daemon.role_pid(role))
    observed = {k: st.get(k) for k in ("Seccomp", "NoNewPrivs", "CapEff", "CapPrm", "CapBnd",
                                       "CapInh", "CapAmb")}
    expected = {
        "Seccomp": "2",
        "NoNewPrivs": "1",
        "CapEff": "0" * 16,
        "CapPrm": "0" * 16,
        "CapBnd": "0" * 16,
        "CapInh": "0" * 16,
        "CapAmb": "0" * 16,
    }
    assert observed == expected, f"{role}: {observed}"


@pytest.mark.parametrize("role", ROLES)
def test_role_is_not_dumpable(daemon, role):
    """Non-dumpable: /proc/PID files owned by root, not the role's user
    (so another process of the same user cannot read its memory)."""
    pid = daemon.role_pid(role)
    st = os.stat(f"/proc/{pid}/mem")
    assert (st.st_uid, st.st_gid) == (0, 0), f"{role}: /proc/{pid}/mem is owned by {st.st_uid}"


@pytest.mark.parametrize("role", ROLES)
def test_every_thread_is_sandboxed(daemon, role):
    """A role has one thread, the one that sandboxed itself, except the
    queue, whose flusher thread is started after pledge, and lka, whose
    4 route workers (DNS look-ups off its loop) are too: they inherit the
    filter, and every thread shows the seccomp filter and no_new_privs."""
    pid = daemon.role_pid(role)
    tasks = sorted(os.listdir(f"/proc/{pid}/task"))
    assert len(tasks) == {"queue": 2, "lka": 5}.get(role, 1), tasks
    for tid in tasks:
        status = h.read_status(f"{pid}/task/{tid}")
        assert (status["Seccomp"], status["NoNewPrivs"]) == ("2", "1"), (role, tid)


# ---------------------------------------------------------------- descriptors


@pytest.mark.parametrize("role", ROLES)
def test_role_descriptors(daemon, role):
    pid = daemon.role_pid(role)
    peers = h.ROLE_TABLE[role]["peers"]
    listeners = h.SHARED_LISTENERS if role == "dispatcher" else 0
    # Sessions end asynchronously after tests that talk SMTP: wait until
    # the dispatcher holds none.
    fds, kinds = _settled_fds(daemon, pid)

    # 0, 1, 2: what the parent inherited (our stdin is /dev/null, stdout and
    # stderr the pipe the log is read from) - never a file.
    for fd in (0, 1, 2):
        assert fd in fds, f"{role}: fd {fd} is closed"
        t = fds[fd]
        assert t == "/dev/null" or t.startswith("pipe:[") or t.startswith("/dev/pts/") \
            or t == "/dev/tty", f"{role}: fd {fd} -> {t}"
    # 3: the channel to the parent.
    assert kinds.get(3, (None,))[0] == "unix", f"{role}: fd 3 -> {fds.get(3)} {kinds.get(3)}"
    # Above: sockets and the epoll instance only. No file, directory, pipe.
    others = {fd: t for fd, t in fds.items() if fd > 3}
    # The queue keeps its spool directories open (incoming/, queue/...):
    # inside its chroot, nothing else.
    spool_dir = {fd: t for fd, t in others.items()
                 if role == "queue" and t.startswith(h.SPOOL_DIR + "/") and "/" not in t[len(h.SPOOL_DIR) + 1:]}
    bad = {fd: t for fd, t in others.items()
           if not (h.is_socket(t) or t == "anon_inode:[eventpoll]" or fd in spool_dir)}
    assert not bad, f"{role}: unexpected descriptors {bad}"
    assert sum(t == "anon_inode:[eventpoll]" for t in fds.values()) <= 1, fds

    inet = {fd: k for fd, k in kinds.items() if k[0] != "unix"}
    unix = {fd: k for fd, k in kinds.items() if k[0] == "unix"}
    if role == "dispatcher":
        listening = {fd: k for fd, k in inet.items() if k[0].startswith("tcp") and k[1] == "0A"}
        assert len(listening) == listeners, f"dispatcher listeners: {inet}"
        assert inet == listening, f"dispatcher holds other inet sockets while idle: {inet}"
    else:
        assert not inet, f"{role} holds inet sockets: {inet}"
    # The dispatcher holds a second descriptor of its ca channel: its TLS
    # signer asks ca for signatures synchronously on it. The queue holds
    # both ends of its flusher thread's wake-up socket pair. lka holds its
    # channel to the delivery runner (it waits on it for the ~/.forward
    # the runner reads) and both ends of its route workers' wake-up
    # socket pair; its workers' DNS sockets live only during a look-up.
    # control holds the listening /var/run/smtpd.sock (and a socket per
    # smtpctl connected, none here).
    extra = {"dispatcher": 1, "queue": 2, "lka": 3, "control": 1}.get(role, 0)
    assert len(unix) <= 1 + peers + extra, f"{role}: {len(unix)} unix sockets for {peers} peers: {unix}"
    limit = 3 + 1 + peers + 2 + listeners + len(spool_dir) + extra
    assert len(fds) <= limit, f"{role}: {len(fds)} descriptors, at most {limit}: {fds}"


def _settled_fds(daemon, pid, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        fds = h.fd_targets(pid)
        protos = h.socket_protocols(daemon.parent)
        kinds = {}
        for fd, t in fds.items():
            if h.is_socket(t):
                kinds[fd] = protos.get(h.socket_inode(t), ("unknown", "?"))
        sessions = [k for k in kinds.values() if k[0].startswith("tcp") and k[1] != "0A"]
        if not sessions or time.monotonic() > deadline:
            return fds, kinds
        time.sleep(0.05)


def test_dispatcher_holds_one_descriptor_per_session(daemon):
    pid = daemon.role_pid("dispatcher")
    before, _ = _settled_fds(daemon, pid)
    c = h.Client(daemon.connect())
    try:
        assert c.line().startswith("220 ")
        during = h.fd_targets(pid)
        assert len(during) == len(before) + 1, (before, during)
        c.send("QUIT")
        assert c.line().startswith("221 ")
        assert c.at_eof()
    finally:
        c.close()
    after, _ = _settled_fds(daemon, pid)
    assert after.keys() == before.keys(), (before, after)


def test_descriptor_limit_is_raised_for_every_role(instances):
    """The parent raises the soft limit on open files to the hard limit
    (at most 65536) before it starts the roles, as OpenSMTPD does: the
    dispatcher needs one per session, connection and relayed message.
    Started here with a soft limit of 256, as a login shell may give."""
    import resource

    def nofile(pid):
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), (int(hard) if hard.isdigit() else None)
        raise AssertionError("no Max open files line")

    soft0, hard0 = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard0))
    try:
        d = instances()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft0, hard0))
    soft, hard = nofile(d.parent)
    assert soft == min(hard or 65536, 65536) and soft > 256, (soft, hard)
    for role, pids in d.role_pids().items():
        for pid in pids:
            assert nofile(pid)[0] == soft, role


def test_parent_holds_no_files(daemon):
    fds = h.fd_targets(daemon.parent)
    files = {fd: t for fd, t in fds.items()
             if fd > 2 and t.startswith("/")}
    assert not files, f"parent has files open: {files}"


# ---------------------------------------------------------------- memory


def _binary_base(daemon, pid):
    """Lowest address at which the smtpd binary is mapped in pid."""
    st = os.stat(daemon.bin)
    want_dev = (os.major(st.st_dev), os.minor(st.st_dev))
    starts = [m[0] for m in h.read_maps(pid) if m[4] == st.st_ino and m[3] == want_dev]
    assert starts, f"pid {pid}: {daemon.bin} is not mapped"
    return min(starts)


def test_binary_mapped_at_a_different_address_in_every_process(daemon):
    pids = {"parent": daemon.parent}
    pids.update({r: daemon.role_pid(r) for r in ROLES})
    bases = {name: _binary_base(daemon, pid) for name, pid in pids.items()}
    shown = {name: hex(b) for name, b in bases.items()}
    assert len(set(bases.values())) == 7, f"shared binary bases: {shown}"


def test_stacks_differ_in_every_process(daemon):
    pids = [daemon.parent] + [daemon.role_pid(r) for r in ROLES]
    stacks = []
    for pid in pids:
        s = [m[0] for m in h.read_maps(pid) if m[5] == "[stack]"]
        assert len(s) == 1, (pid, s)
        stacks.append(s[0])
    assert len(set(stacks)) == 7, [hex(s) for s in stacks]


@pytest.mark.parametrize("role", ROLES)
def test_role_config_mapping_is_sealed(daemon, role):
    """The config view lives in an anonymous mapping that is read-only and
    sealed (VmFlags `sl`, mseal(2))."""
    maps = h.read_smaps(daemon.role_pid(role))
    sealed = [m for m in maps if "sl" in m["vmflags"]]
    config = [m for m in sealed
              if m["path"] == "" and "w" not in m["perms"] and "x" not in m["perms"]
              and m["perms"].startswith("r")]
    assert config, (
        f"{role}: no sealed read-only anonymous mapping; sealed mappings: "
        f"{[(hex(m['start']), m['perms'], m['path']) for m in sealed]}")


@pytest.mark.parametrize("role", ROLES)
def test_role_heap_is_not_sealed(daemon, role):
    """Guards the test above: `sl` is something this kernel shows for some
    mappings only (the writable heap and stack are not sealed)."""
    maps = h.read_smaps(daemon.role_pid(role))
    for m in maps:
        if m["path"] == "[stack]":
            assert "sl" not in m["vmflags"], m


def test_started_once_without_warnings(daemon):
    """'starting' is logged once, after every role reported ready, and a
    healthy start logs no warning or fatal error."""
    log = daemon.log()
    assert len(re.findall(r"info: smtpd-rs \S+ starting", log)) == 1, log
    assert "warn:" not in log and "fatal:" not in log, log
