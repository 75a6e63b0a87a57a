"""Every start-up failure of a broker or a worker is one line on stderr that
names what failed (the store path, the token file, the busy port, the
multicast interface), with exit status 1, never a traceback; a command line
that cannot work (two equal ports) is a usage error, exit status 2."""

import os
import socket
import sqlite3
import subprocess
import sys

import pytest

from tests.support import IMPLS, ROOT

RUN_TIMEOUT = 30      # hang guard for a start-up that should fail at once, not a measurement


def run(module, *args):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT, check=False)


def assert_one_line(proc, status, *needles):
    """Exit ``status``, nothing on stdout, one stderr line holding every needle."""
    got = f"exit {proc.returncode}, stdout {proc.stdout!r}, stderr {proc.stderr!r}"
    assert proc.returncode == status, f"expected exit {status}, got {got}"
    assert "Traceback" not in proc.stderr, f"expected no traceback, got {got}"
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {got}"
    for needle in needles:
        assert needle in lines[0], f"expected {needle!r} in the error, got {got}"


@pytest.fixture(params=IMPLS, ids=[impl.split("_", 1)[1] for impl in IMPLS])
def impl(request):
    return request.param


@pytest.fixture
def busy_port():
    """A port on 127.0.0.1 that a listener holds for the whole test."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


def closed_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------ store

def test_store_in_a_missing_directory_names_the_directory(impl, tmp_path):
    path = tmp_path / "no" / "such" / "x.db"
    proc = run(f"{impl}.broker", 0, 0, "--store", f"sqlite:{path}")
    assert_one_line(proc, 1, f"sqlite:{path}", f"directory {path.parent} does not exist")


def test_store_that_is_a_directory_is_named(impl, tmp_path):
    proc = run(f"{impl}.broker", 0, 0, "--store", f"sqlite:{tmp_path}")
    assert_one_line(proc, 1, f"sqlite:{tmp_path}", "is a directory")


def test_store_that_is_not_a_database_is_named(impl, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a database, just some words\n" * 100)
    proc = run(f"{impl}.broker", 0, 0, "--store", f"sqlite:{path}")
    assert_one_line(proc, 1, f"sqlite:{path}", "not a database")


def test_store_of_another_program_is_named(impl, tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE jobs (name TEXT)")      # same table name, other columns
    db.close()
    proc = run(f"{impl}.broker", 0, 0, "--store", f"sqlite:{path}")
    assert_one_line(proc, 1, f"sqlite:{path}")


@pytest.mark.parametrize("value, needle", [
    ("foo", "unknown store 'foo'"),
    ("memory:", "unknown store 'memory:'"),
    ("SQLITE:/x", "unknown store 'SQLITE:/x'"),
    ("sqlite:", "no path"),
    ("", "empty store"),
], ids=["foo", "memory-colon", "upper-case", "no-path", "empty"])
def test_store_value_that_names_no_store_is_a_usage_error(impl, value, needle):
    """A typo in --store is the command line's fault (exit 2), not a run-time
    failure (exit 1) that systemd's Restart=on-failure would repeat forever; an
    empty value (``--store ${STORE}`` unset) is not read as memory."""
    proc = run(f"{impl}.broker", 0, 0, "--store", value)
    assert_one_line(proc, 2, "--store", needle, "use memory or sqlite:PATH"
                    if needle != "no path" else "sqlite:PATH")


# ------------------------------------------------------------- token file

@pytest.mark.parametrize("program", ["broker", "worker"])
def test_missing_token_file_is_named(impl, program, tmp_path):
    path = tmp_path / "absent-token"
    args = (0, 0) if program == "broker" else (f"127.0.0.1:{closed_port()}",)
    proc = run(f"{impl}.{program}", *args, "--token-file", path)
    assert_one_line(proc, 1, f"--token-file {path}", "No such file or directory")


@pytest.mark.parametrize("program", ["broker", "worker"])
def test_empty_token_file_is_named(impl, program, tmp_path):
    path = tmp_path / "token"
    path.write_text("\n")
    args = (0, 0) if program == "broker" else (f"127.0.0.1:{closed_port()}",)
    proc = run(f"{impl}.{program}", *args, "--token-file", path)
    assert_one_line(proc, 1, str(path), "empty")


# ------------------------------------------------------------------ ports

def test_busy_client_port_is_named(impl, busy_port):
    proc = run(f"{impl}.broker", busy_port, 0)
    assert_one_line(proc, 1, f"for clients on 127.0.0.1 port {busy_port}", "in use")


def test_busy_worker_port_is_named(impl, busy_port):
    """The issue's case: 'broker 50005 50001' with 50001 taken said 'ports 50005/50001'."""
    proc = run(f"{impl}.broker", 0, busy_port)
    assert_one_line(proc, 1, f"for workers on 127.0.0.1 port {busy_port}", "in use")


def test_same_port_for_clients_and_workers_is_a_usage_error(impl):
    port = closed_port()
    proc = run(f"{impl}.broker", port, port)
    assert_one_line(proc, 2, f"both {port}", "two different ports")


# -------------------------------------------------------- multicast interface

def test_multicast_interface_this_machine_lacks_is_named(impl):
    # 192.0.2.1 is TEST-NET-1 (RFC 5737): never a local address, so the kernel
    # refuses IP_MULTICAST_IF and nothing is sent; the broker port is closed.
    proc = run(f"{impl}.worker", f"127.0.0.1:{closed_port()}", "--mcast-if", "192.0.2.1")
    assert_one_line(proc, 1, "--mcast-if 192.0.2.1")


# ------------------------------------------------------ empty host or address

@pytest.mark.parametrize("host", ["", " ", "\t"], ids=["empty", "blank", "tab"])
def test_empty_host_is_a_usage_error_not_every_interface(impl, host):
    """``--host ${HOST}`` with HOST unset must not listen on 0.0.0.0."""
    proc = run(f"{impl}.broker", 0, 0, "--host", host)
    assert_one_line(proc, 2, "--host", "empty host")


@pytest.mark.parametrize("option, value, needle", [
    ("broker", "[]:{port}", "empty broker host"),
    ("broker", " :{port}", "empty broker host"),
    ("--mcast-if", "", "not an IPv4 address"),
    ("--mcast-if", " ", "not an IPv4 address"),
    ("--mcast-if", "0.0.0.0", "names no interface"),
    ("--mcast-group", "", "not an IPv4 address"),
], ids=["broker-[]", "broker-blank", "if-empty", "if-blank", "if-any", "group-empty"])
def test_worker_refuses_an_empty_or_any_address(impl, option, value, needle):
    """The broker's host, the multicast interface and group: never "any"."""
    port = closed_port()
    if option == "broker":
        args = (value.format(port=port),)
    else:
        args = (f"127.0.0.1:{port}", option, value)
    proc = run(f"{impl}.worker", *args)
    assert_one_line(proc, 2, needle)


# ------------------------------------------------------- seconds: upper bound

TOO_MANY_SECONDS = "99999999999999999999"     # overflowed time_t in the wait: a traceback


@pytest.mark.parametrize("option", ["--idle-timeout", "--auth-timeout", "--lease",
                                    "--peer-timeout"])
def test_broker_seconds_beyond_the_maximum_are_a_usage_error(impl, option):
    proc = run(f"{impl}.broker", 0, 0, option, TOO_MANY_SECONDS)
    assert_one_line(proc, 2, option, "at most 604800")


@pytest.mark.parametrize("option", ["--word-delay", "--fetch-interval", "--renew-interval"])
def test_worker_seconds_beyond_the_maximum_are_a_usage_error(impl, option):
    """``--fetch-interval 99999999999999999999 --long-poll 0`` was accepted and
    died of OverflowError at the first NOJOB."""
    proc = run(f"{impl}.worker", f"127.0.0.1:{closed_port()}", "--long-poll", "0",
               option, TOO_MANY_SECONDS)
    assert_one_line(proc, 2, option, "at most 604800")


def test_worker_fetch_interval_of_0_is_a_usage_error_not_a_busy_loop(impl):
    """``--long-poll 0 --fetch-interval 0`` asked the broker in a loop (67 % of
    a core for the worker, 21 % for an idle broker); README promises a worker
    asks once per fetch interval, never in a loop."""
    proc = run(f"{impl}.worker", f"127.0.0.1:{closed_port()}", "--long-poll", "0",
               "--fetch-interval", "0")
    assert_one_line(proc, 2, "--fetch-interval", "greater than 0")


# ------------------------------------------------------- descriptor limit

NOFILE = 256      # the hard and soft limit on open files the worker gets here


def test_concurrency_beyond_the_open_file_limit_is_refused_at_start_up(impl):
    """--concurrency 300 under a hard limit of 256 open files: the select worker
    died of EMFILE with a traceback, the threads worker printed one per thread.
    Now one line naming the limit and what to do, exit 1, before any slot."""
    argv = ["prlimit", f"--nofile={NOFILE}:{NOFILE}", sys.executable, "-m", f"{impl}.worker",
            f"127.0.0.1:{closed_port()}", str(closed_port()), str(closed_port()),
            "--mcast-if", "127.0.0.1", "--concurrency", "300"]
    proc = subprocess.run(argv, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT, check=False)
    assert_one_line(proc, 1, "--concurrency 300", f"RLIMIT_NOFILE {NOFILE}",
                    "lower --concurrency to at most", "raise the hard limit")


# ------------------------------------------------------------ closed stdout

@pytest.mark.parametrize("program", ["broker", "worker"])
def test_start_up_line_into_a_closed_pipe_ends_quietly(impl, program, tmp_path):
    """``python3 -m impl_select.broker | true``: the start-up line meets a pipe
    nobody reads (EPIPE). Was: a BrokenPipeError traceback. Now, as command-line
    tools do (Python docs, signal module, "Note on SIGPIPE"): no traceback,
    nothing on stderr, exit status 1."""
    if program == "broker":
        args = [0, 0, "--store", f"sqlite:{tmp_path / 'jobs.db'}"]
    else:
        args = [f"127.0.0.1:{closed_port()}", closed_port(), closed_port(),
                "--mcast-if", "127.0.0.1"]
    read_end, write_end = os.pipe()
    os.close(read_end)                      # the reader is gone before the first write
    try:
        proc = subprocess.run([sys.executable, "-m", f"{impl}.{program}", *map(str, args)],
                              cwd=ROOT, stdin=subprocess.DEVNULL, stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=RUN_TIMEOUT,
                              check=False)
    finally:
        os.close(write_end)
    got = f"exit {proc.returncode}, stderr {proc.stderr!r}"
    assert (proc.returncode, proc.stderr) == (1, ""), f"expected exit 1 and no words, got {got}"
