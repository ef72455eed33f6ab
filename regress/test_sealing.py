"""The sealed config, tested on the running roles: each role is made (by
ptrace, from outside) to mprotect its config mapping writable and to unmap
it; mseal(2) must refuse both with EPERM, the mapping must stay as it was,
and the role must go on working as if nothing happened."""

import errno
import signal

import pytest

import smtpd_harness as h

PROT_READ, PROT_WRITE = 1, 2


def _config_mapping(pid):
    found = [m for m in h.read_smaps(pid)
             if "sl" in m["vmflags"] and m["path"] == "" and m["perms"].startswith("r")
             and "w" not in m["perms"] and "x" not in m["perms"]]
    assert len(found) >= 1, f"pid {pid}: no sealed read-only anonymous mapping"
    return found[0]


@pytest.mark.parametrize("role", h.ROLES)
def test_sealed_config_cannot_be_changed(instances, role):
    d = instances()
    d.record_tree()
    pid = d.role_pid(role)
    m = _config_mapping(pid)
    length = m["end"] - m["start"]

    try:
        r_prot = h.call_syscall(pid, h.SYS_mprotect, m["start"], length, PROT_READ | PROT_WRITE)
        r_unmap = h.call_syscall(pid, h.SYS_munmap, m["start"], length)
    except h.RoleDied as e:
        pytest.fail(f"{role} died of mprotect/munmap on its config ({e}): "
                    "they are allowed calls; the seal must refuse them")
    assert r_prot == -errno.EPERM, f"{role}: mprotect(RW) on the sealed config returned {r_prot}"
    assert r_unmap == -errno.EPERM, f"{role}: munmap of the sealed config returned {r_unmap}"

    after = [x for x in h.read_smaps(pid) if x["start"] == m["start"]]
    assert after and after[0]["perms"] == m["perms"] and after[0]["end"] == m["end"], after
    assert "sl" in after[0]["vmflags"]

    # The role carries on: the daemon still serves and stops cleanly.
    c = h.Client(d.connect())
    try:
        assert c.line().startswith("220 ")
        c.send("QUIT")
        assert c.line() == "221 2.0.0 Bye"
    finally:
        c.close()
    assert d.role_pid(role) == pid
    d.signal_parent(signal.SIGTERM)
    assert d.wait_exit() == 0
    assert "lost child" not in d.log()
