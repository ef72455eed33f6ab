"""Fixtures for the smtpd-rs regression tests (run as root: `make regress`).

`daemon`: one shared instance for the read-only checks (/proc, banner).
`instances`: a factory for fresh instances, for tests that stop or kill.
Every instance runs in its own mount + network namespace; see
smtpd_harness.py. Every process an instance started is killed in a
finalizer, whatever the test did.
"""

import os
import shutil
import tempfile

import pytest

import relay_world
import smtpd_harness as h


def pytest_sessionstart(session):
    if os.geteuid() != 0:
        pytest.exit("regress/ starts the daemon for real and must run as root", returncode=1)


def pytest_sessionfinish(session, exitstatus):
    h.stop_all()
    relay_world.close_all()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for inst in getattr(item, "_smtpd_instances", []):
            report.sections.append((f"smtpd log: {inst.name}", inst.log()))


@pytest.fixture(scope="session")
def workroot():
    """A root-owned, world-searchable scratch directory (some tests run
    programs as nobody, who must be able to read their config)."""
    d = tempfile.mkdtemp(prefix="smtpd-regress-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def smtpd_bin():
    h.ensure_system()
    return h.smtpd_bin()


@pytest.fixture(scope="session")
def daemon(workroot, smtpd_bin):
    inst = h.Instance(os.path.join(workroot, "shared"), h.SHARED_CONFIG, name="shared")
    try:
        inst.start()
        yield inst
    finally:
        inst.stop()


@pytest.fixture
def instances(request, workroot, smtpd_bin, _smtpd_logs):
    """start(config, name=...) -> a running Instance, stopped at the end of
    the test."""
    started = []
    counter = [0]

    def start(config=None, name=None, wait_ready=True, **kw):
        if config is None:
            config = h.config("listen on 127.0.0.1")
        counter[0] += 1
        label = name or f"{request.node.name}-{counter[0]}"
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
        inst = h.Instance(os.path.join(workroot, safe), config, name=label, **kw)
        started.append(inst)
        request.node._smtpd_instances.append(inst)
        inst.start(wait_ready=wait_ready)
        return inst

    yield start
    for inst in started:
        inst.stop()


@pytest.fixture(autouse=True)
def _smtpd_logs(request):
    """The instances a test uses; their logs are shown if it fails."""
    request.node._smtpd_instances = []
    if "daemon" in request.fixturenames:
        request.node._smtpd_instances.append(request.getfixturevalue("daemon"))
    yield


@pytest.fixture
def relay_world_factory(request, workroot):
    """make(name) -> a RelayWorld (relay_world.py) in the session's scratch
    dir, closed at the end of the test: its peers killed, its namespaces
    gone."""
    made = []

    def make(name="world"):
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{request.node.name}-{name}")
        w = relay_world.RelayWorld(os.path.join(workroot, safe))
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()
