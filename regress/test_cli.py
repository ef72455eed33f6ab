"""The command line: `smtpd -n` checks a config (OK, or `FILE:LINE: message`
for each error, exit 1); smtpd refuses to run without root."""

import os
import pwd
import re
import subprocess

import pytest

import smtpd_harness as h

ERROR_LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): (?P<msg>\S.*)$")


def _write(workroot, name, text):
    """`text` then the rules every config needs (after it, so that line
    numbers in `text` are the file's)."""
    path = os.path.join(workroot, name)
    with open(path, "w") as f:
        f.write(text + "\n" + h.RULES)
    os.chmod(path, 0o644)
    return path


def _check(smtpd_bin, conf, as_nobody=False):
    argv = [str(smtpd_bin), "-n", "-f", conf]
    if as_nobody:
        argv = _nobody() + argv
    return subprocess.run(argv, capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)


def _nobody():
    pw = pwd.getpwnam("nobody")
    return ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups"]


@pytest.mark.parametrize("text", [
    "listen on localhost\n",
    "# a comment\n\nlisten on 127.0.0.1 port 2525 hostname mx.example.org\n   # indented comment\n",
    "listen on 127.0.0.1\nlisten on ::1 port 587\n",
])
def test_check_ok(workroot, smtpd_bin, text):
    conf = _write(workroot, "ok.conf", text)
    r = _check(smtpd_bin, conf)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip().split("\n") == ["configuration OK"], r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize("bad", [
    "frobnicate everything",
    "listen",
    "listen on",
    "listen on 127.0.0.1 port",
    "listen on 127.0.0.1 port 99999",
    "listen on 127.0.0.1 port 0x19",
    "listen on 127.0.0.1 port -1",
    "listen on 127.0.0.1 bogus 1",
    "listen on 127.0.0.1 hostname",
])
def test_check_error_names_file_and_line(workroot, smtpd_bin, bad):
    conf = _write(workroot, "bad.conf", f"# line 1\nlisten on 127.0.0.1\n{bad}\n")
    r = _check(smtpd_bin, conf)
    assert r.returncode == 1, (r.returncode, r.stderr)
    lines = [x for x in r.stderr.split("\n") if x]
    assert lines, "no error message"
    for line in lines:
        m = ERROR_LINE.match(line)
        assert m, f"not FILE:LINE: message: {line!r}"
        assert m.group("file") == conf, line
        assert m.group("line") == "3", line
    assert "configuration OK" not in r.stderr


def test_check_reports_every_error(workroot, smtpd_bin):
    conf = _write(workroot, "bad2.conf", (
        "# 1\n"
        "listen on 127.0.0.1\n"
        "frobnicate\n"                          # 3
        "\n"
        "listen on 127.0.0.1 port 99999\n"      # 5
        "listen on 127.0.0.1 port 2525\n"
        "listen on 127.0.0.1 whatever x\n"      # 7
    ))
    r = _check(smtpd_bin, conf)
    assert r.returncode == 1
    numbers = []
    for line in r.stderr.split("\n"):
        if line:
            m = ERROR_LINE.match(line)
            assert m and m.group("file") == conf, line
            numbers.append(int(m.group("line")))
    assert numbers == [3, 5, 7], r.stderr


def test_check_missing_file(workroot, smtpd_bin):
    conf = os.path.join(workroot, "does-not-exist.conf")
    r = _check(smtpd_bin, conf)
    assert r.returncode == 1
    assert conf in r.stderr and "configuration OK" not in r.stderr


def test_check_starts_nothing(workroot, smtpd_bin):
    """-n parses and exits without binding: it says OK even where port 25
    is already taken (in a network namespace of its own)."""
    conf = _write(workroot, "ok25.conf", "listen on 127.0.0.1\n")
    code = (
        "import socket, subprocess, sys\n"
        "subprocess.run(['ip', 'link', 'set', 'lo', 'up'], check=True)\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind(('127.0.0.1', 25)); s.listen()\n"
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "print(r.returncode); print(r.stderr, end='')\n"
    )
    r = subprocess.run(["unshare", "--net", "--", "/usr/bin/python3", "-c", code,
                        str(smtpd_bin), "-n", "-f", conf],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    rc, _, err = r.stdout.partition("\n")
    assert rc == "0" and err.strip() == "configuration OK", r.stdout


def test_refuses_to_run_without_root(workroot, smtpd_bin):
    conf = _write(workroot, "nonroot.conf", "listen on 127.0.0.1 port 2525\n")
    # In a network namespace of its own, in case it did start.
    argv = ["unshare", "--net", "--"] + _nobody() + [str(smtpd_bin), "-d", "-f", conf]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert r.stderr.strip().split("\n") == ["smtpd: need root privileges"], r.stderr


def _smtpctl(smtpd_bin):
    path = smtpd_bin.with_name("smtpctl")
    if not path.exists():
        subprocess.run(["cargo", "build", "--release", "--bin", "smtpctl"], cwd=h.ROOT, check=True)
    return path


def test_smtpctl_encrypt_makes_hashes_crypt3_accepts(smtpd_bin):
    """`smtpctl encrypt`: a bcrypt hash (OpenBSD's kind) per password, from
    the argument or each line of stdin, that the system's crypt(3) (which
    Debian's OpenSMTPD checks credentials with) verifies."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    ctl = _smtpctl(smtpd_bin)
    one = subprocess.run([ctl, "encrypt", "secret"], capture_output=True, text=True, check=True).stdout
    assert re.fullmatch(r"\$2b\$10\$[./A-Za-z0-9]{53}\n", one), one
    h1 = one.strip()
    assert crypt.crypt("secret", h1) == h1 and crypt.crypt("Secret", h1) != h1
    lines = subprocess.run([ctl, "encrypt"], input="alpha\nbeta\n", capture_output=True,
                           text=True, check=True).stdout.splitlines()
    assert len(lines) == 2
    assert [crypt.crypt(p, hh) == hh for p, hh in zip(["alpha", "beta"], lines)] == [True, True]
    again = subprocess.run([ctl, "encrypt", "secret"], capture_output=True, text=True, check=True).stdout
    assert again != one, "salted"
    # The other commands talk to a daemon: regress/test_smtpctl.py.
