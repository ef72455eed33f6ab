"""Differential test of smtpd.conf checking: the corpus in regress/config/.

For every regress/config/*.conf (see regress/config/README.md for the header
format), the configuration is copied into a temporary fixture directory with
@FIXTURES@ replaced, and
  - test_opensmtpd[NAME] runs OpenSMTPD 6.8 (`/usr/sbin/smtpd -n -f COPY`,
    Debian's package `opensmtpd`; $OPENSMTPD_BIN overrides) and requires the
    verdict the header states for it;
  - test_ours[NAME] runs smtpd-rs (`smtpd -n -f COPY`; $SMTPD_BIN, or this
    checkout's target/release/smtpd, built with cargo if missing) and
    requires its verdict: exit status, and for errors the `FILE:LINE:`
    location and message.
test_summary_agreement prints "N of M corpus configs agree with OpenSMTPD's
verdict" (same ok/error verdict, whatever the wording) and lists the others.

Self-contained: imports nothing from the other regress/ modules. Run as root
(OpenSMTPD's -n needs it, and one fixture key is chowned to nobody):
  /usr/bin/python3 -m pytest -q regress/test_config_corpus.py
"""

import glob
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CORPUS = HERE / "config"
FILES = CORPUS / "files"
PLACEHOLDER = "@FIXTURES@"
OPENSMTPD = os.environ.get("OPENSMTPD_BIN", "/usr/sbin/smtpd")
TIMEOUT = 60  # seconds; OpenSMTPD's include loop runs until it is out of fds

CONFIGS = sorted(p.name for p in CORPUS.glob("*.conf"))
# Files the test generates into the fixture directory (besides files/*).
GENERATED = {"cert.pem", "ca.pem", "key.pem", "key-group.pem", "key-world.pem", "key-nobody.pem"}
NOBODY_UID = 65534


# --------------------------------------------------------------- headers


@dataclass
class Verdict:
    ok: bool
    loc: str = "-"  # "-", "N" or "NAME:N"
    patterns: list = field(default_factory=list)

    def describe(self):
        if self.ok:
            return "ok"
        return f"error at {self.loc} matching {' && '.join(self.patterns) or '(anything)'}"


@dataclass
class Expectation:
    name: str
    ours: Verdict
    opensmtpd: Verdict
    why: str = ""
    ours_stderr: list = field(default_factory=list)


def parse_verdict(text, where):
    words = text.split(None, 2)
    if words == ["ok"]:
        return Verdict(ok=True)
    if not words or words[0] != "error" or len(words) < 2:
        raise ValueError(f"{where}: bad verdict {text!r} (want `ok` or `error LOC [PATTERN]`)")
    loc = words[1]
    if not re.fullmatch(r"-|\d+|[\w.+-]+:\d+", loc):
        raise ValueError(f"{where}: bad location {loc!r}")
    patterns = [p.strip() for p in words[2].split(" && ")] if len(words) > 2 else []
    for p in patterns:
        re.compile(p)
    return Verdict(ok=False, loc=loc, patterns=patterns)


def header(name):
    """The expectation block: `# key: value` lines among the leading comments."""
    keys = {}
    stderr_pats = []
    for raw in (CORPUS / name).read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            break
        m = re.match(r"#\s*(expect|expect-ours|expect-opensmtpd|why|ours-stderr):\s*(.*?)\s*$", line)
        if not m:
            continue
        key, value = m.groups()
        if key == "ours-stderr":
            re.compile(value)
            stderr_pats.append(value)
        elif key in keys:
            raise ValueError(f"{name}: `{key}` given twice")
        else:
            keys[key] = value
    base = keys.get("expect")
    ours = keys.get("expect-ours", base)
    theirs = keys.get("expect-opensmtpd", base)
    if ours is None or theirs is None:
        raise ValueError(f"{name}: no expectation for {'smtpd-rs' if ours is None else 'OpenSMTPD'}")
    exp = Expectation(
        name=name,
        ours=parse_verdict(ours, name),
        opensmtpd=parse_verdict(theirs, name),
        why=keys.get("why", ""),
        ours_stderr=stderr_pats,
    )
    if exp.ours.ok != exp.opensmtpd.ok and not exp.why:
        raise ValueError(f"{name}: the verdicts differ without a `# why:`")
    return exp


# --------------------------------------------------------------- fixtures


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.fixture(scope="session")
def fixtures_dir():
    """A temp dir holding files/* (with @FIXTURES@ replaced) and a fresh
    self-signed certificate and key in several modes."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is required to generate the corpus' certificate (apt-get install openssl)")
    d = tempfile.mkdtemp(prefix="smtpd-config-corpus-")
    os.chmod(d, 0o755)
    try:
        for src in sorted(FILES.iterdir()):
            text = src.read_text().replace(PLACEHOLDER, d)
            dst = Path(d) / src.name
            dst.write_text(text)
            os.chmod(dst, 0o640 if src.name in ("secrets", "users") else 0o644)
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
                 "-subj", "/CN=mx.example.com", "-keyout", "key.pem", "-out", "cert.pem", cwd=d)
        shutil.copyfile(os.path.join(d, "cert.pem"), os.path.join(d, "ca.pem"))
        os.chmod(os.path.join(d, "cert.pem"), 0o644)
        os.chmod(os.path.join(d, "ca.pem"), 0o644)
        os.chmod(os.path.join(d, "key.pem"), 0o600)
        for name, mode in (("key-group.pem", 0o640), ("key-world.pem", 0o644), ("key-nobody.pem", 0o600)):
            shutil.copyfile(os.path.join(d, "key.pem"), os.path.join(d, name))
            os.chmod(os.path.join(d, name), mode)
        if os.geteuid() == 0:
            os.chown(os.path.join(d, "key-nobody.pem"), NOBODY_UID, -1)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _cargo():
    found = shutil.which("cargo")
    if found:
        return found
    for home in (os.environ.get("CARGO_HOME"), os.path.expanduser("~/.cargo"), "/root/.cargo"):
        if home and os.access(os.path.join(home, "bin", "cargo"), os.X_OK):
            return os.path.join(home, "bin", "cargo")
    return None


@pytest.fixture(scope="session")
def ours_bin():
    env = os.environ.get("SMTPD_BIN")
    if env:
        path = Path(env).resolve()
    else:
        path = ROOT / "target" / "release" / "smtpd"
        if not path.exists():
            cargo = _cargo()
            if cargo is None:
                pytest.fail("target/release/smtpd is missing and cargo is not in PATH")
            subprocess.run([cargo, "build", "--release", "--bin", "smtpd"], cwd=ROOT, check=True)
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path}: not an executable")
    return str(path)


@pytest.fixture(scope="session")
def opensmtpd_bin():
    if not os.access(OPENSMTPD, os.X_OK):
        pytest.skip(f"OpenSMTPD is not installed ({OPENSMTPD} missing: apt-get install opensmtpd); "
                    "its half of the differential test is skipped")
    if os.geteuid() != 0:
        pytest.skip("OpenSMTPD's `smtpd -n` must run as root")
    return OPENSMTPD


# --------------------------------------------------------------- running


@dataclass
class Run:
    argv: list
    status: object  # int, or "timeout"
    stdout: str
    stderr: str

    def show(self):
        return (f"$ {' '.join(self.argv)}\nexit status: {self.status}\n"
                f"--- stderr ---\n{self.stderr}--- stdout ---\n{self.stdout}")


_runs = {}


def run_config(binary, name, fixtures):
    """Run `binary -n -f COPY` on the substituted copy of config NAME (cached:
    the summary reuses the per-config runs)."""
    key = (binary, name)
    if key in _runs:
        return _runs[key]
    copy = Path(fixtures) / name
    if not copy.exists():
        copy.write_text((CORPUS / name).read_text().replace(PLACEHOLDER, fixtures))
    argv = [binary, "-n", "-f", str(copy)]
    try:
        p = subprocess.run(argv, cwd="/", stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=TIMEOUT)
        run = Run(argv, p.returncode, p.stdout.decode(errors="replace"),
                  p.stderr.decode(errors="replace"))
    except subprocess.TimeoutExpired as e:
        run = Run(argv, "timeout", (e.stdout or b"").decode(errors="replace"),
                  (e.stderr or b"").decode(errors="replace"))
    _runs[key] = run
    return run


def mismatch(run, verdict, conf_name):
    """None if the run meets the verdict, else why not."""
    if run.status == "timeout":
        return f"no verdict within {TIMEOUT}s"
    if verdict.ok:
        if run.status != 0:
            return f"expected the config to be accepted (exit 0), got exit status {run.status}"
        if "configuration OK" not in run.stderr:
            return "exit status 0 but no `configuration OK` on stderr"
        return None
    if run.status != 1:
        return f"expected the config to be refused (exit 1), got exit status {run.status}"
    lines = run.stderr.splitlines()
    if verdict.loc != "-":
        fname, _, line = verdict.loc.rpartition(":")
        fname = fname or conf_name
        at = re.compile(r"(?:^|[\s/])" + re.escape(fname) + ":" + line + r":(?:\d+:)?(?:\s|$)")
        lines = [l for l in lines if at.search(l)]
        if not lines:
            return f"refused, but no error line at {fname}:{line}:"
    pats = [re.compile(p, re.IGNORECASE) for p in verdict.patterns]
    if not any(all(p.search(l) for p in pats) for l in lines):
        where = f"at {verdict.loc}" if verdict.loc != "-" else "on stderr"
        return f"no error line {where} matches {' && '.join(verdict.patterns)!r}"
    return None


# --------------------------------------------------------------- tests


def test_corpus_shape():
    """The corpus is big enough, every header parses, and every fixture a
    config names exists."""
    exps = [header(n) for n in CONFIGS]
    assert len(exps) >= 45, f"only {len(exps)} corpus configs"
    broken = [e for e in exps if not e.ours.ok]
    assert len(broken) >= 15, f"only {len(broken)} broken configs"
    assert all(not e.ours.ok for e in exps if e.name.startswith("err-"))
    assert all(e.ours.ok for e in exps if e.name[:3] in ("ok-", "x7-"))
    available = {p.name for p in FILES.iterdir()} | GENERATED
    for p in [CORPUS / n for n in CONFIGS] + sorted(FILES.iterdir()):
        for ref in re.findall(re.escape(PLACEHOLDER) + r"/([\w.+-]+)", p.read_text()):
            assert ref in available or ref.startswith("nonexistent"), f"{p.name}: no fixture {ref}"


@pytest.mark.parametrize("name", CONFIGS)
def test_opensmtpd(name, opensmtpd_bin, fixtures_dir):
    """OpenSMTPD 6.8 reaches the verdict the corpus records for it."""
    exp = header(name)
    if name == "err-key-not-root-owned.conf" and os.geteuid() != 0:
        pytest.skip("needs root to chown the key")
    run = run_config(opensmtpd_bin, name, fixtures_dir)
    why = mismatch(run, exp.opensmtpd, name)
    assert why is None, f"{name}: OpenSMTPD: {why}\nexpected: {exp.opensmtpd.describe()}\n{run.show()}"


@pytest.mark.parametrize("name", CONFIGS)
def test_ours(name, ours_bin, fixtures_dir):
    """smtpd-rs reaches the corpus' verdict, at the corpus' line."""
    exp = header(name)
    if name == "err-key-not-root-owned.conf" and os.geteuid() != 0:
        pytest.skip("needs root to chown the key")
    run = run_config(ours_bin, name, fixtures_dir)
    why = mismatch(run, exp.ours, name)
    assert why is None, f"{name}: smtpd-rs: {why}\nexpected: {exp.ours.describe()}\n{run.show()}"
    for pat in exp.ours_stderr:
        assert re.search(pat, run.stderr, re.IGNORECASE), \
            f"{name}: smtpd-rs: stderr lacks {pat!r}\n{run.show()}"


def _verdict(run):
    if run.status == 0:
        return "ok"
    if run.status == 1:
        return "error"
    return f"exit {run.status}"


def test_summary_agreement(ours_bin, opensmtpd_bin, fixtures_dir, capsys):
    """Prints how many corpus configs get the same ok/error verdict from
    smtpd-rs as from OpenSMTPD 6.8 (the number issue 4's report asks for).
    Reports; the per-config tests above are the ones that fail."""
    exps = [header(n) for n in CONFIGS]
    documented = [e.name for e in exps if e.ours.ok != e.opensmtpd.ok]
    agree, differ, own_ok = [], [], 0
    for e in exps:
        ours = run_config(ours_bin, e.name, fixtures_dir)
        theirs = run_config(opensmtpd_bin, e.name, fixtures_dir)
        (agree if _verdict(ours) == _verdict(theirs) else differ).append(
            (e.name, _verdict(ours), _verdict(theirs)))
        own_ok += mismatch(ours, e.ours, e.name) is None
    m = len(exps)
    lines = [
        "",
        "=== smtpd.conf corpus (regress/config) ===",
        f"{m} configs: {sum(e.ours.ok for e in exps)} valid, {sum(not e.ours.ok for e in exps)} broken; "
        f"{len(documented)} documented verdict differences with OpenSMTPD 6.8 "
        f"(so at best {m - len(documented)} of {m} agree)",
        f"{len(agree)} of {m} corpus configs agree with OpenSMTPD's verdict",
        f"{own_ok} of {m} corpus configs meet smtpd-rs's expectation (verdict, line and message)",
    ]
    if differ:
        lines.append("verdicts that differ (config: smtpd-rs / OpenSMTPD 6.8):")
        for name, o, t in differ:
            tag = " (documented)" if name in documented else ""
            lines.append(f"  {name}: {o} / {t}{tag}")
    with capsys.disabled():
        print("\n".join(lines))
