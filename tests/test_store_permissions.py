"""A store the broker's user may not read or write is named as a permission
problem: which path, which user the broker runs as; one line, exit status 1.
SQLite's own words ("disk I/O error", "unable to open database file") read
as a failing disk. This is the likely failure under README's systemd unit
(DynamicUser=yes runs the broker as a user of its own).

Run as root, the broker runs as nobody (setpriv), since root passes every
permission check; run as anyone else, as that user."""

import os
import pwd
import shutil
import subprocess
import sys
import tempfile

import pytest

from shell.store import open_store
from tests.support import IMPLS, ROOT
from tests.test_startup_errors import RUN_TIMEOUT, assert_one_line

IDS = [impl.split("_", 1)[1] for impl in IMPLS]
NOBODY = 65534

if os.geteuid() == 0:
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: cannot run the broker as another user",
                    allow_module_level=True)
    UID = NOBODY
    AS_USER = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
else:
    UID = os.geteuid()
    AS_USER = []
try:
    USER = f"uid {UID} ({pwd.getpwuid(UID).pw_name})"
except KeyError:
    USER = f"uid {UID}"


def run_broker(impl, store):
    """The broker of ``impl`` on --store sqlite:``store``, as USER, to its exit."""
    argv = [*AS_USER, sys.executable, "-m", f"{impl}.broker", "0", "0",
            "--store", f"sqlite:{store}"]
    return subprocess.run(argv, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT, check=False)


@pytest.fixture
def place():
    """A directory USER can reach and write (pytest's tmp_path, 0700 root's,
    is out of nobody's reach); its modes are restored before it is removed."""
    base = tempfile.mkdtemp(prefix="workq-perm-")
    os.chmod(base, 0o755)
    directory = os.path.join(base, "store")
    os.mkdir(directory)
    os.chmod(directory, 0o777)
    yield directory
    for here, dirs, files in os.walk(base):
        os.chmod(here, 0o755)
        for name in dirs + files:
            os.chmod(os.path.join(here, name), 0o755, follow_symlinks=False)
    shutil.rmtree(base)


def workq_database(directory):
    """A store made by the broker's own code (then closed: no -wal file left)."""
    path = os.path.join(directory, "jobs.db")
    store = open_store(f"sqlite:{path}")
    store.add(1, b"kept")
    store.close()
    os.chmod(path, 0o666)
    return path


@pytest.mark.parametrize("impl", IMPLS, ids=IDS)
@pytest.mark.parametrize("mode", [0o444, 0o000], ids=["read-only", "no-access"])
def test_store_file_the_user_may_not_write_is_a_permission_problem(impl, place, mode):
    """Was: "disk I/O error" (0444) and "unable to open database file" (0000)."""
    path = workq_database(place)
    os.chmod(path, mode)
    proc = run_broker(impl, path)
    assert_one_line(proc, 1, f"sqlite:{path}", "permission denied", USER,
                    f"read and write {path}", f"mode {mode:04o}")


@pytest.mark.parametrize("impl", IMPLS, ids=IDS)
def test_new_store_in_a_directory_the_user_may_not_write_is_a_permission_problem(impl, place):
    """Was: "unable to open database file"."""
    os.chmod(place, 0o555)
    path = os.path.join(place, "new.db")
    proc = run_broker(impl, path)
    assert_one_line(proc, 1, f"sqlite:{path}", "permission denied", USER,
                    f"write in directory {place}", "create the database")
    assert not os.path.exists(path), f"expected no {path} created, found one"


@pytest.mark.parametrize("impl", IMPLS, ids=IDS)
def test_writable_store_in_a_directory_without_room_for_its_log_is_named(impl, place):
    """The file itself is writable, but SQLite must create jobs.db-wal next to it."""
    path = workq_database(place)
    os.chmod(place, 0o555)
    proc = run_broker(impl, path)
    assert_one_line(proc, 1, f"sqlite:{path}", "permission denied", USER,
                    f"write in directory {place}", "jobs.db-wal")


@pytest.mark.parametrize("impl", IMPLS, ids=IDS)
def test_store_the_user_may_use_is_not_called_a_permission_problem(impl, place):
    """The check only speaks when the kernel refuses: the same user on a store
    it may write starts (and is stopped by the test)."""
    path = workq_database(place)
    argv = [*AS_USER, sys.executable, "-m", f"{impl}.broker", "0", "0",
            "--store", f"sqlite:{path}"]
    proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=RUN_TIMEOUT)
    assert line.startswith("workq broker"), \
        f"expected the start-up line, got {line!r}; stderr {err!r}"
