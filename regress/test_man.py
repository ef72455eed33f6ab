"""The manual pages in man/: each is clean under `mandoc -Tlint -Wall`,
renders, and says what the programs do. smtpd.8 documents every flag that
`smtpd -h` prints, and smtpd.conf.5 every keyword the config parser
reserves (read from src/config/parser.rs, so a new keyword without
documentation fails here).

Needs mandoc(1) (Debian's `mandoc`, installed by `make setup`).
"""

import re
import shutil
import subprocess

import pytest

import smtpd_harness as h

MAN = h.ROOT / "man"
PAGES = sorted(p for p in MAN.iterdir() if re.fullmatch(r".+\.[1-9]", p.name))

# mandoc -Tlint looks every .Xr up in the manuals installed on this
# machine, so its "referenced manual not found" depends on the machine:
# our own pages are not installed while they are being written, pledge(2)
# exists only on OpenBSD, seccomp(2) only on Linux, and section 2 and 3
# pages on Debian only with manpages-dev. The test decides instead: an
# .Xr must name a page in man/ or one of these system pages.
SYSTEM_PAGES = {
    ("chroot", "2"), ("execve", "2"), ("fsync", "2"),  # POSIX, both systems
    ("syslog", "3"), ("mv", "1"), ("ps", "1"),
    ("pledge", "2"), ("unveil", "2"), ("mimmutable", "2"),  # OpenBSD
    ("seccomp", "2"), ("landlock", "7"),  # Linux
}

XR_NOT_FOUND = re.compile(
    r"^mandoc: (?P<file>[^:]+):\d+:\d+: STYLE: referenced manual not found: "
    r"Xr (?P<name>\S+) (?P<sec>\S+)( \(\d+ times\))?$")
# About the machine's own manual database, never about the page linted.
SYSTEM_DB = re.compile(r"^mandoc: outdated mandoc\.db lacks \S+ entry, run makewhatis \S+$")


@pytest.fixture(scope="module")
def mandoc():
    path = shutil.which("mandoc")
    assert path, "mandoc is not installed: run `make setup` (Debian package mandoc)"
    return path


def _run(argv):
    return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def _plain(text):
    """Rendered text without overstrike (bold, underline) sequences."""
    return re.sub(r".\x08", "", text)


def _own_pages():
    return {(p.name.rsplit(".", 1)[0], p.suffix[1:]) for p in PAGES}


def test_the_pages_exist():
    names = {p.name for p in PAGES}
    for want in ["smtpd.8", "smtpd.conf.5", "smtpctl.8", "makemap.8",
                 "aliases.5", "forward.5", "table.5"]:
        assert want in names, f"man/{want} is missing"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_lint_clean(mandoc, page):
    r = _run([mandoc, "-Tlint", "-Wall", str(page)])
    own = _own_pages()
    messages = []
    for line in (r.stdout + r.stderr).splitlines():
        if SYSTEM_DB.match(line):
            continue
        m = XR_NOT_FOUND.match(line)
        if m and ((m["name"], m["sec"]) in own or (m["name"], m["sec"]) in SYSTEM_PAGES):
            continue
        messages.append(line)
    assert not messages, "\n".join(messages)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_cross_references_exist(page):
    """Every .Xr names a page of ours or a known system page, whatever
    this machine has installed."""
    own = _own_pages()
    bad = []
    for n, line in enumerate(page.read_text().splitlines(), 1):
        for m in re.finditer(r"\bXr (\S+) ([1-9])\b", line):
            if (m[1], m[2]) not in own and (m[1], m[2]) not in SYSTEM_PAGES:
                bad.append(f"{page.name}:{n}: Xr {m[1]} {m[2]}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_prologue(page):
    """A real date, a title that matches the file name, an .Os."""
    lines = page.read_text().splitlines()
    head = [x for x in lines if not x.startswith('.\\"')][:3]
    assert re.fullmatch(r"\.Dd \$Mdocdate: [A-Z][a-z]+ [1-9]\d? \d{4} \$", head[0]), head[0]
    name, sec = page.name.rsplit(".", 1)
    assert head[1] == f".Dt {name.upper()} {sec}", head[1]
    assert head[2] == ".Os", head[2]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_renders(mandoc, page):
    r = _run([mandoc, "-Tutf8", str(page)])
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    text = _plain(r.stdout)
    name = page.name.rsplit(".", 1)[0]
    assert re.search(rf"^NAME\n +{re.escape(name)}\b", text, re.M), text[:400]
    for section in ["DESCRIPTION", "SEE ALSO"]:
        assert re.search(rf"^{section}$", text, re.M), f"{page.name}: no {section}"


def _smtpd_usage():
    r = _run([str(h.smtpd_bin()), "-h"])
    line = r.stderr.strip()
    assert line.startswith("usage: smtpd "), r.stderr
    return line[len("usage: "):]


def test_smtpd_synopsis_is_the_usage_line(mandoc):
    """What `smtpd -h` prints and the SYNOPSIS of smtpd.8 are the same."""
    usage = _smtpd_usage()
    r = _run([mandoc, "-Tascii", "-Owidth=200", str(MAN / "smtpd.8")])
    text = _plain(r.stdout)
    m = re.search(r"^SYNOPSIS\n +(.+)$", text, re.M)
    assert m, text[:400]
    assert m[1].strip() == usage


def test_every_smtpd_flag_is_described():
    usage = _smtpd_usage()
    flags = set()
    # [-dFhnv] is five flags; [-f file] is one, with its argument.
    for letters, arg in re.findall(r"\[-(\w+)( [^\]]+)?\]", usage):
        flags.update(letters[0] if arg else letters)
    assert {"d", "f", "n", "v"} <= flags, usage
    described = set(re.findall(r"^\.It Fl (\w)\b", (MAN / "smtpd.8").read_text(), re.M))
    missing = sorted(flags - described)
    assert not missing, f"flags in `smtpd -h` without an .It Fl entry in smtpd.8: {missing}"


def _parser_keywords():
    src = (h.ROOT / "src" / "config" / "parser.rs").read_text()
    m = re.search(r"const KEYWORDS: &\[&str\] = &\[(.*?)\];", src, re.S)
    assert m, "KEYWORDS not found in src/config/parser.rs"
    words = re.findall(r'"([^"]+)"', m[1])
    assert len(words) > 50, words
    return words


def _marked_up_words(page):
    """Words given to .Ic or .Cm (the grammar's keywords), up to the next
    macro on the line."""
    words = set()
    for line in page.read_text().splitlines():
        if not line.startswith("."):
            continue
        toks = line[1:].replace("\\&", "").split()
        on = False
        for t in toks:
            if re.fullmatch(r"[A-Z][a-z]{1,2}", t):
                on = t in ("Ic", "Cm")
            elif on:
                words.add(t.rstrip(",.;:)"))
    return words


def test_every_config_keyword_is_documented():
    documented = _marked_up_words(MAN / "smtpd.conf.5")
    missing = [k for k in _parser_keywords() if k not in documented]
    assert not missing, f"keywords of the parser not in smtpd.conf.5 as Ic/Cm: {missing}"


def _literal_blocks(page, section):
    text = page.read_text()
    body = text.split(f"\n.Sh {section}\n", 1)[1].split("\n.Sh ", 1)[0]
    return re.findall(r"^\.Bd -literal[^\n]*\n(.*?)^\.Ed$", body, re.M | re.S)


def test_config_examples_pass_smtpd_n(tmp_path):
    """Each configuration in the EXAMPLES of smtpd.conf.5 is one that
    `smtpd -n` accepts. The files it names are replaced by empty files of
    the right mode (the check wants them to exist, keys private), and the
    network interface by this machine's loopback."""
    blocks = [b for b in _literal_blocks(MAN / "smtpd.conf.5", "EXAMPLES")
              if re.search(r"^match ", b, re.M)]
    assert len(blocks) >= 3, blocks

    def stand_in(m):
        path = tmp_path / m[0].strip("/").replace("/", "_")
        path.touch()
        path.chmod(0o600)
        return str(path)

    for i, block in enumerate(blocks):
        text = block.replace("\\e", "\\")
        text = re.sub(r"/etc/[^\"'\s]+", stand_in, text)
        text = re.sub(r"\beth0\b", "lo", text)
        conf = tmp_path / f"example{i}.conf"
        conf.write_text(text)
        r = _run([str(h.smtpd_bin()), "-n", "-f", str(conf)])
        assert r.returncode == 0 and "configuration OK" in r.stderr, (text, r.stderr)
