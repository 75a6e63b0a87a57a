"""Starting and stopping the brokers under test, each on free loopback ports.

Our brokers get port 0 and report the real ports in their start-up line;
beanstalkd gets a port that was free a moment before (it cannot report one),
with a retry if another program took it meanwhile. Every broker's output goes
to a temporary file, so a chatty broker never blocks on a full pipe.
"""

import os
import re
import shutil
import io
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from .protocols import Beanstalk, Workq

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
BEANSTALKD_PATHS = ("/usr/sbin/beanstalkd", "/usr/bin/beanstalkd", "/usr/local/bin/beanstalkd")

_STARTUP = re.compile(r"workq broker \((\w+)\): clients on [^\s,]+:(\d+), workers on [^\s,]+:(\d+)")

OUR_BROKERS = ("select", "threads")
# The original system's broker (a reconstruction kept as a test fixture): the
# baseline issue 6 quotes, measured in the same run for reference.
ORIGINAL = "original"
ORIGINAL_SCRIPT = ROOT / "tests" / "original" / "workQueue.py"
# A Python loop that only reads and answers (tools/bench/floor_broker.py): the
# least any CPython broker of this design costs, for reference.
FLOOR = "floor"
# The select broker with the floor's answer in place of its core's
# (tools/bench/shell_broker.py): what the shell alone costs, for reference.
SHELL = "shell"
REFERENCES = (ORIGINAL, FLOOR, SHELL)
MODULES = {FLOOR: "tools.bench.floor_broker", SHELL: "tools.bench.shell_broker"}
ALL_BROKERS = ("beanstalkd",) + OUR_BROKERS + REFERENCES


class BrokerError(Exception):
    """A broker did not start, or died."""


def free_port():
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def split_cpus():
    """(generator CPUs, broker CPUs): the last CPU for the brokers, the rest for the
    load generator, so neither ever waits for the other's core and every broker
    meets the same placement. None on a single CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return set(cpus[:-1]), {cpus[-1]}


class Broker:
    """A broker process: ``client``/``worker`` addresses, ``pid``, ``protocol``."""

    name = "?"
    protocol = None
    cpus = None          # CPUs every broker process is confined to (see split_cpus)
    cwd = ROOT           # the directory it runs in (its packages are imported from there)

    def __init__(self):
        self.proc = None
        self.client = self.worker = None
        self._output = None

    @property
    def pid(self):
        return self.proc.pid

    def _spawn(self, argv, env=None):
        self._output = tempfile.TemporaryFile()
        cpus = Broker.cpus
        # Set before exec, so every thread the broker starts stays on these CPUs too.
        pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        self.proc = subprocess.Popen(argv, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=self._output,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                     preexec_fn=pin)

    def output(self):
        if self._output is None:
            return ""
        fd = self._output.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGINT):
        """Ask the broker to stop (SIGINT: ours exit cleanly and cProfile writes its
        file); SIGKILL after STOP_TIMEOUT. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._output is not None:
            self._output.close()
            self._output = None
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class OurBroker(Broker):
    """``python3 -m impl_<flavour>.broker 0 0 [options]``, optionally under cProfile
    (or a reference of MODULES: the floor loop, whose only option is
    ``--journal PATH``, or the shell, which takes select's)."""

    protocol = Workq

    def __init__(self, flavour, options=(), profile_to=None, wrapper=()):
        super().__init__()
        self.name = flavour
        self.flavour = flavour
        self.options = list(options)
        self.profile_to = profile_to
        self.wrapper = list(wrapper)          # a command the interpreter runs under (valgrind)
        self.module = MODULES.get(flavour, f"impl_{flavour}.broker")

    def start(self):
        module = self.module
        runner = ["-m", "cProfile", "-o", str(self.profile_to)] if self.profile_to else []
        argv = [*self.wrapper, sys.executable, *runner, "-m", module, "0", "0", *self.options]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._spawn(argv, env)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            match = _STARTUP.search(self.output())
            if match:
                self.client = (HOST, int(match.group(2)))
                self.worker = (HOST, int(match.group(3)))
                return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                output = self.output()
                self.stop()
                raise BrokerError(f"{' '.join(argv[1:])} did not start: {output.strip()[-500:]!r}")
            time.sleep(0.02)


def split_revision(name):
    """``"select@3e03e1e"`` -> ``("select", "3e03e1e")``; ``("select", None)`` for a plain name."""
    flavour, at, revision = name.partition("@")
    return flavour, (revision if at else None)


def resolve_revision(revision, root=ROOT):
    """The full commit hash ``revision`` (any git revision: hash, tag, ``HEAD~3``)
    names in the repository at ``root``. Raises ValueError with a one-line reason
    when git is missing or the revision names no commit."""
    try:
        found = subprocess.run(["git", "-C", str(root), "rev-parse", "--verify", "--quiet",
                                f"{revision}^{{commit}}"],
                               capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ValueError(f"cannot run git to find revision {revision!r}: {error}") from None
    if found.returncode != 0 or not found.stdout.strip():
        raise ValueError(f"{revision!r} names no commit of {root}")
    return found.stdout.strip()


def export_revision(commit, into, root=ROOT):
    """Extract the tree of ``commit`` into the directory ``into`` (``git archive``:
    reads the repository, changes nothing in it, makes no worktree). Raises
    BrokerError when git fails or the tree has no ``impl_select/broker.py``."""
    try:
        archive = subprocess.run(["git", "-C", str(root), "archive", "--format=tar", commit],
                                 capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise BrokerError(f"git archive {commit}: {error}") from None
    if archive.returncode != 0:
        raise BrokerError(f"git archive {commit}: {archive.stderr.decode(errors='replace').strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        try:
            tar.extractall(into, filter="data")
        except TypeError:                   # Python before 3.10.12 / 3.11.4: no filters
            tar.extractall(into)
    if not (Path(into) / "impl_select" / "broker.py").exists():
        raise BrokerError(f"revision {commit[:12]} has no impl_select/broker.py")
    return Path(into)


class RevisionBroker(OurBroker):
    """One of our brokers as it was at an older revision (``select@REV``): the
    same command line as :class:`OurBroker`, run in ``checkout`` (a tree from
    :func:`export_revision`) with PYTHONPATH cleared, so every module it imports
    is that revision's."""

    def __init__(self, name, checkout, options=()):
        flavour, _ = split_revision(name)
        super().__init__(flavour, options)
        self.name = name
        self.cwd = Path(checkout)

    def _spawn(self, argv, env=None):
        env = dict(env if env is not None else os.environ)
        env.pop("PYTHONPATH", None)
        super()._spawn(argv, env)


class OriginalBroker(Broker):
    """``python3 tests/original/workQueue.py CLIENT_PORT WORKER_PORT``: ports that
    were free a moment before (it cannot take port 0), retried if taken meanwhile."""

    protocol = Workq
    name = ORIGINAL

    def start(self):
        output = ""
        for _ in range(5):
            ports = free_port(), free_port()
            self._spawn([sys.executable, str(ORIGINAL_SCRIPT), *map(str, ports)],
                        dict(os.environ, PYTHONUNBUFFERED="1"))
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while self.proc.poll() is None and time.monotonic() < deadline:
                if "work queue: clients on port" in self.output():
                    self.client, self.worker = (HOST, ports[0]), (HOST, ports[1])
                    return self
                time.sleep(0.02)
            output = self.output()
            self.stop()
        raise BrokerError(f"{ORIGINAL_SCRIPT.name} did not start: {output.strip()[-500:]!r}")


class Beanstalkd(Broker):
    """``beanstalkd -l 127.0.0.1 -p PORT [options]``: one port for producers and workers."""

    protocol = Beanstalk
    name = "beanstalkd"

    def __init__(self, path, options=()):
        super().__init__()
        self.path = path
        self.options = list(options)

    def start(self):
        for _ in range(5):
            port = free_port()
            argv = [self.path, "-l", HOST, "-p", str(port), *self.options]
            self._spawn(argv)
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while self.proc.poll() is None and time.monotonic() < deadline:
                try:
                    socket.create_connection((HOST, port), timeout=1).close()
                except OSError:
                    time.sleep(0.02)
                    continue
                self.client = self.worker = (HOST, port)
                return self
            output = self.output()
            self.stop(signal.SIGTERM)
        raise BrokerError(f"beanstalkd did not start: {output.strip()[-500:]!r}")

    def stop(self, sig=signal.SIGTERM):
        return super().stop(sig)


def beanstalkd_version(path):
    try:
        out = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (out.stdout or out.stderr).strip().removeprefix("beanstalkd ").strip() or "unknown"


def find_beanstalkd(install=True, report=print):
    """The beanstalkd executable; installs the Debian package when missing and
    allowed (root with apt-get). Returns (path or None, message)."""
    return install_package("beanstalkd", _which_beanstalkd, install, report,
                           "the beanstalkd columns (and every ratio)")


def install_package(package, which, install, report, skipped):
    """The executable ``which()`` finds (a path or None), after installing the
    Debian ``package`` when it is missing and ``install`` allows (root with
    apt-get). Returns (path or None, message); ``skipped`` names what a run
    without it leaves out."""
    path = which()
    if path:
        return path, f"{package} found at {path}"
    if not install:
        return None, f"{package} not found (and --no-install): {skipped} are left out"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, (f"{package} not found, and installing it needs root and apt-get: run "
                      f"`sudo apt-get install -y {package}` and run the bench again. "
                      f"{skipped[:1].upper()}{skipped[1:]} are left out of this run")
    report(f"bench: {package} not found; installing the Debian package "
           f"(apt-get install -y {package})")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for attempt in (["apt-get", "install", "-y", package],
                    ["apt-get", "update"], ["apt-get", "install", "-y", package]):
        result = subprocess.run(attempt, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                text=True, timeout=600)
        path = which()
        if path:
            return path, f"{package} installed with apt-get at {path}"
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
    return None, f"{package} could not be installed with apt-get ({last[0]}); {skipped} are left out"


def _which_beanstalkd():
    found = shutil.which("beanstalkd")
    if found:
        return found
    for path in BEANSTALKD_PATHS:
        if os.access(path, os.X_OK):
            return path
    return None
