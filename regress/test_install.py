"""`make install`, checked against what is installed by hand and by the
OpenBSD port.

- The staged install of the port (ports/mail/smtpd-rs: its do-install's
  variables, DESTDIR a temp dir) installs exactly the files its pkg/PLIST
  lists, no more, no fewer; by GNU make and by BSD make (bmake), since the
  Makefile is written for both.
- The install on Linux (default variables) puts a systemd unit that
  `systemd-analyze verify` accepts, with the installed smtpd, and an rc.d
  script that runs it; an existing smtpd.conf is kept.

The man pages in the PLIST are expected only when their source is in man/
(the pages land in man/ separately); a page in man/ that the PLIST lacks
is an extra installed file, which fails.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import smtpd_harness as h

ROOT = h.ROOT
PORT = ROOT / "ports" / "mail" / "smtpd-rs"

# What the ports framework substitutes in the PLIST and in do-install.
PORT_VARS = {
    "TRUEPREFIX": "/usr/local",
    "SYSCONFDIR": "/etc",
    "RCDIR": "/etc/rc.d",
}
PREFIX = PORT_VARS["TRUEPREFIX"]

# Directories outside PREFIX that make install creates and the package
# does not list, because OpenBSD's base hierarchy (mtree) has them.
BASE_DIRS = {"/etc/mail", "/etc/rc.d", "/var/empty", "/var/spool/smtpd"}

# smtpctl's other names, and the man page names that are links to
# smtpctl.8.
SMTPCTL_LINKS = ("sendmail", "mailq", "newaliases", "makemap")
MAN_LINKS = ("sendmail.8", "mailq.8", "newaliases.8")

# OpenBSD's /etc/master.passwd and /etc/group.
OPENBSD_IDS = {"_smtpd": 95, "_smtpq": 103}


def _subst(text, wrkinst):
    out = text.replace("${WRKINST}", wrkinst)
    for k, v in PORT_VARS.items():
        out = out.replace("${" + k + "}", v)
    assert "${" not in out, f"unknown variable in {out!r}"
    return out


def _port_install_vars(wrkinst):
    """The VAR=value words the port's do-install passes to install-files."""
    text = (PORT / "Makefile").read_text()
    m = re.search(r"^do-install:\n((?:\t.*\n)+)", text, re.M)
    assert m, "no do-install target in the port's Makefile"
    recipe = m.group(1).replace("\\\n", " ")
    assert "install-files" in recipe
    words = recipe.split("install-files", 1)[1].split()
    assert words and all("=" in w for w in words), words
    return [_subst(w, wrkinst) for w in words]


def _plist():
    """(files, dirs, users, groups) the PLIST installs: absolute paths."""
    files, dirs, users, groups = set(), set(), {}, {}
    for raw in (PORT / "pkg" / "PLIST").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("@comment"):
            continue
        word, _, arg = line.partition(" ")
        if word in ("@mode", "@owner", "@group"):
            continue
        if word == "@newgroup":
            name, gid = arg.split(":")
            groups[name] = int(gid)
            continue
        if word == "@newuser":
            f = arg.split(":")
            users[f[0]] = {"uid": int(f[1]), "group": f[2], "home": f[5], "shell": f[6]}
            continue
        if word in ("@rcscript", "@sample"):
            path = _subst(arg, "")
            assert path.startswith("/"), line
        elif word in ("@man", "@bin") or not word.startswith("@"):
            rel = arg if word.startswith("@") else line
            assert not rel.startswith("/"), line
            path = f"{PREFIX}/{_subst(rel, '')}"
        else:
            raise AssertionError(f"PLIST keyword the test does not know: {line}")
        if path.endswith("/"):
            dirs.add(path.rstrip("/"))
        else:
            files.add(path)
    return files, dirs, users, groups


def _man_sources():
    return {p.name for p in (ROOT / "man").glob("*.[58]")} if (ROOT / "man").is_dir() else set()


def _expected_man(path, sources):
    """Whether a PLIST man page is expected from this tree's man/."""
    name = os.path.basename(path)
    if name in MAN_LINKS:
        return "smtpctl.8" in sources
    return name in sources


def _tree(destdir):
    """(files, dirs) under destdir, as absolute paths of the target."""
    files, dirs = set(), set()
    for top, dnames, fnames in os.walk(destdir):
        rel = "/" + os.path.relpath(top, destdir)
        rel = "" if rel == "/." else rel
        for d in dnames:
            if os.path.islink(os.path.join(top, d)):
                files.add(f"{rel}/{d}")
            else:
                dirs.add(f"{rel}/{d}")
        for f in fnames:
            files.add(f"{rel}/{f}")
    return files, dirs


def _ancestors(paths):
    out = set()
    for p in paths:
        p = os.path.dirname(p)
        while p not in ("/", ""):
            out.add(p)
            p = os.path.dirname(p)
    return out


def _makes():
    out = [pytest.param("make", id="gnu-make")]
    out.append(pytest.param("bmake", id="bmake", marks=pytest.mark.skipif(
        shutil.which("bmake") is None, reason="bmake (BSD make) is not installed: make setup")))
    return out


def _make(make, target, destdir, *variables):
    """Run `make TARGET` in the tree as root; cargo is found as the harness
    finds it (root's PATH may lack it). Nothing of an outer make (`make
    regress`) leaks in: bmake would read GNU make's MAKEFLAGS."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "GNUMAKEFLAGS")}
    r = subprocess.run(
        [make, "-C", str(ROOT), target, f"DESTDIR={destdir}", f"CARGO={h._cargo()}", *variables],
        capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, f"{make} {target} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


@pytest.mark.parametrize("make", _makes())
def test_port_staged_install_matches_plist(make, tmp_path):
    destdir = tmp_path / "fake"
    destdir.mkdir()
    with open("/etc/passwd", "rb") as f:
        passwd = f.read()
    with open("/etc/group", "rb") as f:
        group = f.read()
    out = _make(make, "install", str(destdir), *_port_install_vars(str(destdir)))

    plist_files, plist_dirs, users, groups = _plist()
    sources = _man_sources()
    expected = {p for p in plist_files
                if not re.search(r"/man/man[58]/", p) or _expected_man(p, sources)}
    files, dirs = _tree(destdir)
    assert sorted(files - expected) == [], "installed, not in the PLIST"
    assert sorted(expected - files) == [], "in the PLIST, not installed"
    assert sorted(plist_dirs - dirs) == [], "PLIST directories not installed"
    allowed = plist_dirs | BASE_DIRS | _ancestors(expected | plist_dirs | BASE_DIRS)
    assert sorted(dirs - allowed) == [], "directories installed that the PLIST lacks"

    # The users are the daemon's, with OpenBSD's ids; with a DESTDIR they
    # are the package's job, not created on this machine.
    assert groups == OPENBSD_IDS
    assert {u: v["uid"] for u, v in users.items()} == OPENBSD_IDS
    for name, u in users.items():
        assert (u["group"], u["home"], u["shell"]) == (name, "/var/empty", "/sbin/nologin")
    assert set(users) == {h.USER_SMTPD, h.USER_SMTPQ}
    assert "not creating users" in out
    with open("/etc/passwd", "rb") as f:
        assert f.read() == passwd
    with open("/etc/group", "rb") as f:
        assert f.read() == group

    sbin = destdir / PREFIX.lstrip("/") / "sbin"
    ctl = os.stat(sbin / "smtpctl")
    for name in SMTPCTL_LINKS:
        st = os.stat(sbin / name)
        assert (st.st_dev, st.st_ino) == (ctl.st_dev, ctl.st_ino), f"{name} is not smtpctl"
    for name in ("smtpd", "smtpctl"):
        assert os.stat(sbin / name).st_mode & 0o7777 == 0o555, name
    if "smtpctl.8" in sources:
        man8 = destdir / PREFIX.lstrip("/") / "man" / "man8"
        page = os.stat(man8 / "smtpctl.8")
        for name in MAN_LINKS:
            st = os.stat(man8 / name)
            assert (st.st_dev, st.st_ino) == (page.st_dev, page.st_ino), name
    rc = destdir / "etc" / "rc.d" / "smtpd"
    assert os.stat(rc).st_mode & 0o7777 == 0o555
    assert re.search(r'^daemon="/usr/local/sbin/smtpd"$', rc.read_text(), re.M)
    assert (destdir / "etc/mail/smtpd.conf").read_bytes() == (ROOT / "etc/smtpd.conf").read_bytes()
    st = os.stat(destdir / "var/spool/smtpd")
    assert (st.st_uid, st.st_mode & 0o7777) == (0, 0o711)


def test_port_makefile_comment():
    """COMMENT: at most 60 characters, no capital first letter, no final
    period (ports(7) conventions, checked by portcheck)."""
    m = re.search(r"^COMMENT\s*=\s*(.*)$", (PORT / "Makefile").read_text(), re.M)
    assert m
    comment = m.group(1)
    assert len(comment) <= 60 and not comment[0].isupper() and not comment.endswith(".")


def test_linux_install_systemd_unit(tmp_path):
    destdir = tmp_path / "root"
    (destdir / "etc" / "mail").mkdir(parents=True)
    kept = "# the admin's own config\n" + h.config("listen on 127.0.0.1")
    (destdir / "etc/mail/smtpd.conf").write_text(kept)
    _make("make", "install", str(destdir))

    assert (destdir / "etc/mail/smtpd.conf").read_text() == kept, "an existing smtpd.conf was replaced"
    unit = destdir / "lib/systemd/system/smtpd.service"
    text = unit.read_text()
    assert "ExecStart=/usr/local/sbin/smtpd -F\n" in text
    assert "ExecStartPre=/usr/local/sbin/smtpd -n\n" in text
    assert not re.search(r"^ExecReload=", text, re.M), "smtpd has no reload"
    assert os.stat(unit).st_mode & 0o7777 == 0o644

    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze (Debian package systemd) is not installed: make setup")
    # verify checks that ExecStart's program exists: the installed one is
    # bound over /usr/local/sbin in a mount namespace of its own. It exits
    # 0 even on lines it ignores, so any output at all is a failure.
    # --man=no: the man pages of Documentation= are checked elsewhere.
    r = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
         'mount --bind "$1/usr/local/sbin" /usr/local/sbin && '
         'exec systemd-analyze verify --man=no "$1/lib/systemd/system/smtpd.service"',
         "sh", str(destdir)],
        capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stdout + r.stderr) == (0, "")

    # The unit's config check runs the installed smtpd on the installed
    # default config, as systemd would before starting it.
    r = subprocess.run([str(destdir / "usr/local/sbin/smtpd"), "-n", "-f",
                        str(destdir / "usr/local/share/examples/smtpd-rs/smtpd.conf")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "configuration OK" in r.stderr, r.stderr
