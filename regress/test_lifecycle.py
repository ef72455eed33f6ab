"""Start, stop and death: the death of any role brings the whole daemon down
in order, with one log line naming the role and how it died, exit status 1
and no process left; SIGTERM/SIGINT stop it cleanly (exit 0); SIGHUP is
ignored; two instances run side by side without touching each other.

Each test starts its own instance(s) in fresh namespaces."""

import os
import re
import signal

import pytest

import smtpd_harness as h

ROLES = h.ROLES
# The lifecycle tests check what is logged; test_log_lines_are_whole checks
# that each event is a line of its own. So here a line is found by search,
# not by anchoring it to the start and end of a line.
LOST = re.compile(r"warn: lost child: (\S+) (terminated; signal \d+ \([A-Z0-9]+\)"
                  r"|exited abnormally; status \d+|exited okay)")


def _lost_lines(inst):
    return [f"warn: lost child: {m.group(1)} {m.group(2)}"
            for line in inst.log_lines() for m in LOST.finditer(line)]


def _pos(text, pattern):
    """Where `pattern` first occurs in the log text (order of events)."""
    m = re.search(pattern, text)
    assert m, f"no log line matching {pattern!r}"
    return m.start()


def _assert_died_in_order(inst, role, how):
    """After the death of `role` (`how`: the text after its name)."""
    rc = inst.wait_exit()
    text = inst.log()
    lost = _lost_lines(inst)
    assert lost == [f"warn: lost child: {role} {how}"], lost
    assert _pos(text, r"warn: parent terminating") > _pos(text, r"warn: lost child: "), \
        "'parent terminating' before 'lost child'"
    assert "panicked" not in text, "a process panicked"
    assert rc == 1, f"parent exit status {rc}"
    left = inst.survivors()
    assert not left, f"processes of the instance still alive: {left}"


@pytest.mark.parametrize("role", ROLES)
def test_kill_9_of_a_role_stops_the_daemon(instances, role):
    d = instances()
    victim = d.role_pid(role)
    d.record_tree()
    assert len(d.tree) >= 7
    os.kill(victim, signal.SIGKILL)
    _assert_died_in_order(d, role, "terminated; signal 9 (SIGKILL)")


def test_sigsys_of_a_role_is_named_in_the_log(instances):
    d = instances()
    d.record_tree()
    os.kill(d.role_pid("scheduler"), signal.SIGSYS)
    _assert_died_in_order(d, "scheduler", "terminated; signal 31 (SIGSYS)")


@pytest.mark.parametrize("role", ROLES)
def test_forbidden_syscall_in_a_role_kills_it_with_sigsys(instances, role):
    """The real sandbox of the real role: made to call chroot(2) (which no
    promise set allows) where it sleeps, the role must die of SIGSYS, and
    the parent shut everything down."""
    d = instances()
    d.record_tree()
    victim = d.role_pid(role)
    h.inject_syscall(victim, h.SYS_chroot, 0)
    _assert_died_in_order(d, role, "terminated; signal 31 (SIGSYS)")


def test_role_exiting_abnormally_is_named_in_the_log(instances):
    """A role that exits with a non-zero status (made to call exit_group(7)
    from outside, which every promise set allows)."""
    d = instances()
    d.record_tree()
    h.inject_syscall(d.role_pid("queue"), h.SYS_exit_group, 7)
    _assert_died_in_order(d, "queue", "exited abnormally; status 7")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_clean_stop(instances, sig):
    d = instances()
    d.record_tree()
    offset = d.log_size()
    d.signal_parent(sig)
    rc = d.wait_exit()
    after = d.log_since(offset)
    assert _pos(after, r"info: smtpd-rs exiting") > \
        _pos(after, rf"info: received {sig.name}, shutting down")
    assert not _lost_lines(d), _lost_lines(d)
    warns = [line for line in after.split("\n") if "warn:" in line or "fatal:" in line]
    assert not warns, f"warnings during a clean stop: {warns}"
    assert rc == 0, f"parent exit status {rc}"
    left = d.survivors()
    assert not left, f"processes of the instance still alive: {left}"


def test_sighup_is_ignored(instances):
    d = instances()
    d.record_tree()
    before = {pid: st for pid, st in d.tree.items() if pid != d.proc.pid}
    offset = d.log_size()
    d.signal_parent(signal.SIGHUP)
    d.wait_log(r"info: .*SIGHUP", since=offset)
    # Still the same eight processes, still answering.
    c = h.Client(d.connect())
    try:
        assert c.line().startswith("220 ")
    finally:
        c.close()
    gone = [pid for pid, st in before.items() if not h.alive(pid, st)]
    assert not gone, f"processes gone after SIGHUP: {gone}"
    assert sorted(d.role_pids()) == sorted(h.CHILDREN)
    assert d.proc.poll() is None
    assert not _lost_lines(d)
    # And it still stops cleanly.
    d.signal_parent(signal.SIGTERM)
    assert d.wait_exit() == 0


def test_sighup_to_a_role_is_ignored(instances):
    d = instances()
    d.record_tree()
    victim = d.role_pid("dispatcher")
    os.kill(victim, signal.SIGHUP)
    c = h.Client(d.connect())
    try:
        assert c.line().startswith("220 ")
    finally:
        c.close()
    assert d.role_pid("dispatcher") == victim
    assert d.proc.poll() is None and not _lost_lines(d)


def test_two_instances_run_independently(instances):
    a = instances(name="first")
    b = instances(name="second")
    a.record_tree()
    b.record_tree()
    assert a.net_id != b.net_id and a.mnt_id != b.mnt_id
    assert not set(a.tree) & set(b.tree)
    assert sorted(a.role_pids()) == sorted(b.role_pids()) == sorted(h.CHILDREN)

    # Each one's port 25 is its own: each log shows its own session only.
    for inst in (a, b):
        c = h.Client(inst.connect())
        try:
            assert c.line().startswith("220 ")
            c.send("QUIT")
            assert c.line() == "221 2.0.0 Bye"
        finally:
            c.close()
    for inst in (a, b):
        inst.settle_sessions()
        assert inst.log().count(" smtp connected ") == 1, inst.log()

    # Killing a role of one leaves the other whole.
    b_before = {pid: st for pid, st in b.tree.items() if pid != b.proc.pid}
    os.kill(a.role_pid("dispatcher"), signal.SIGKILL)
    _assert_died_in_order(a, "dispatcher", "terminated; signal 9 (SIGKILL)")
    gone = [pid for pid, st in b_before.items() if not h.alive(pid, st)]
    assert not gone, f"the second instance lost {gone}"
    assert b.proc.poll() is None and not _lost_lines(b)
    c = h.Client(b.connect())
    try:
        assert c.line().startswith("220 ")
    finally:
        c.close()
    b.signal_parent(signal.SIGTERM)
    assert b.wait_exit() == 0
    assert not b.survivors()


def test_log_lines_are_whole(instances):
    """Every event is one whole line, even when several processes log at
    once (start-up and shutdown, with -v): `grep '^warn: lost child'` must
    find it. A race, so five runs."""
    well_formed = re.compile(r"^(?:(?:debug|info|warn|fatal): \S|[0-9a-f]{16} smtp \S)")
    second_prefix = re.compile(r".(?:debug|info|warn|fatal): ")
    bad = []
    for n in range(5):
        d = instances(name=f"whole-lines-{n}")
        d.record_tree()
        os.kill(d.role_pid("ca"), signal.SIGKILL)
        d.wait_exit()
        bad += [line for line in d.log_lines()
                if line and (not well_formed.match(line) or second_prefix.search(line))]
    assert not bad, "log lines run together:\n" + "\n".join(bad)
