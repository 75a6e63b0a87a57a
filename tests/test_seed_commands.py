"""The command lines of the contract, typed as a user would, end to end.

Inside the private network namespace this test process runs in (see
conformance/netns.py) the default ports are ours alone, so the commands run
verbatim; outside one they run on free ports instead.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import warnings

import pytest

from conformance.netns import inside_private_netns
from tools.mcast_listen import open_receiver

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bindable(port):
    """True when a broker could listen on 127.0.0.1:``port`` now (as shell.netutil.listen
    does, with SO_REUSEADDR)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture
def ports():
    """The default ports inside the private namespace; free ports outside one, or when
    a socket of an earlier test in this namespace still holds a default port (seen
    once in CI: every test here failed on a broker that could not start), with a
    warning naming the sockets, so these tests fail only for their commands."""
    if inside_private_netns():
        if bindable(50000) and bindable(50001):
            return 50000, 50001, 30000, 30001
        held = subprocess.run(["ss", "-tanp", "( sport = :50000 or sport = :50001 )"],
                              capture_output=True, text=True).stdout
        warnings.warn(f"the default ports 50000/50001 are in use in this test namespace; "
                      f"running on free ports instead:\n{held}")
    return free_port(), free_port(), free_port(), free_port()


def start(*args):
    proc = subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return proc


def run(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, input=stdin, text=True,
                          capture_output=True, timeout=30)


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("impl", ["impl_select", "impl_threads"])
def test_seed_walkthrough(impl, ports):
    client_port, worker_port, output_port, syslog_port = ports
    broker = start(f"{impl}.broker", str(client_port), str(worker_port))
    worker = None
    try:
        banner = broker.stdout.readline()
        assert f":{client_port}" in banner and f":{worker_port}" in banner, \
            f"broker start-up line should name its ports, got {banner!r} " \
            f"({broker.stderr.read() if not banner and broker.wait(5) is not None else ''})"

        if shutil.which("nc"):
            nc = subprocess.run(["nc", "-q1", "127.0.0.1", str(client_port)], input="JOB a b\n",
                                capture_output=True, text=True, timeout=10)
            assert nc.stdout == "ID 1\n", f"nc as a client: expected 'ID 1', got {nc.stdout!r} {nc.stderr!r}"
        else:
            assert run("tools.client", "127.0.0.1", str(client_port), "JOB", "a", "b").stdout == "ID 1\n"

        auto = run("tools.client", "127.0.0.1", str(client_port), "autoCall", "--num-jobs", "2", "--delay", "0")
        assert auto.returncode == 0, f"autoCall failed: {auto.stdout}{auto.stderr}"
        assert "submitted 2" in auto.stdout and "failed 0" in auto.stdout, auto.stdout

        receiver = open_receiver(output_port)
        receiver.settimeout(10)
        worker = start(f"{impl}.worker", f"127.0.0.1:{worker_port}", str(output_port), str(syslog_port))
        word, _ = receiver.recvfrom(2048)
        assert word == b"a\n", f"first datagram should be the first word of job 1, got {word!r}"
        receiver.close()

        deadline = time.monotonic() + 30
        while True:
            status = run("tools.client", f"127.0.0.1:{client_port}", "STATUS", "1").stdout.strip()
            if status == "completed" or time.monotonic() > deadline:
                break
        assert status == "completed", f"job 1 should complete, STATUS says {status!r}"
    finally:
        if worker:
            stop(worker)
        stop(broker)
    assert broker.returncode == 0, f"broker should exit 0 on SIGTERM, got {broker.returncode}"


@pytest.mark.skipif(not shutil.which("nc"), reason="needs nc (netcat-openbsd)")
@pytest.mark.parametrize("impl", ["impl_select", "impl_threads"])
@pytest.mark.parametrize("sent", ["FETCH 1\n", "FETCH 1"], ids=["LF", "no LF"])
def test_nc_fetch_with_a_wait_then_half_close_gets_its_reply(impl, sent, ports):
    """`printf 'FETCH 1\\n' | nc -q 3 127.0.0.1 50001`: nc half-closes at the end of
    its input; the broker still owes the FETCH its NOJOB (spec: framing)."""
    client_port, worker_port, _, _ = ports
    broker = start(f"{impl}.broker", str(client_port), str(worker_port))
    try:
        broker.stdout.readline()
        nc = subprocess.run(["nc", "-q", "3", "127.0.0.1", str(worker_port)], input=sent,
                            capture_output=True, text=True, timeout=10)
        assert nc.stdout == "NOJOB\n", \
            f"expected the owed reply 'NOJOB' before the close, got {nc.stdout!r} {nc.stderr!r}"
    finally:
        stop(broker)
