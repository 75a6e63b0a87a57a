"""Options on accepted connections never take a broker down.

``--peer-timeout`` sets TCP keepalive on every accepted connection; Linux
refuses a keepalive idle time or interval above 32,767 s and more than 127
probes (tcp(7); include/net/tcp.h) with EINVAL. With ``--peer-timeout 86400``
the select broker died of a traceback on its first connection (exit 1: a
crash loop under systemd's Restart=on-failure) and the threads broker's
accept thread died, so every client timed out while the process stayed up.
Now the settings are clamped to what the kernel takes, and an option the
kernel refuses anyway costs that one connection, never the broker.
"""

import socket
import sys
import time

import pytest

from shell.netutil import keep_alive
from tests.support import BROKER_LINE, IMPLS, Broker, LineConnection, Process, Wire

IDS = [impl.split("_", 1)[1] for impl in IMPLS]
DEADLINE = 30.0       # hang guard, not a measurement
DAY = 86400


@pytest.fixture(params=IMPLS, ids=IDS)
def impl(request):
    return request.param


def submit(port):
    client = LineConnection(port)
    try:
        return client.request("JOB a b")
    finally:
        client.close()


def test_a_day_of_peer_timeout_still_serves_clients(impl):
    broker = Broker(impl, "--peer-timeout", DAY)
    try:
        first, second = submit(broker.client_port), submit(broker.client_port)
        assert (first, second) == ("ID 1", "ID 2"), (
            f"[{impl} --peer-timeout {DAY}] expected 'ID 1', 'ID 2', got {first!r}, {second!r}; "
            f"stderr: {broker.stderr()!r}")
        assert broker.running(), (
            f"[{impl}] expected the broker to keep running, it exited "
            f"{broker.proc.returncode}; stderr: {broker.stderr()!r}")
        assert "Traceback" not in broker.stderr(), f"[{impl}] traceback: {broker.stderr()!r}"
    finally:
        broker.close()


@pytest.mark.parametrize("timeout", [0.5, 2, 20, 65534, 65535, DAY, 30 * DAY, 10**9, 1e300])
def test_the_kernel_takes_the_keepalive_of_any_peer_timeout(timeout):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            keep_alive(sock, timeout)
        except (OSError, OverflowError) as error:
            pytest.fail(f"expected keepalive for a {timeout} s peer timeout to be accepted, "
                        f"the kernel refused it: {error!r}")


# Runs a broker whose first accepted connection is refused an option by the
# "kernel": its set_up_accepted raises EINVAL once (argv: impl, then the
# broker's arguments).
REFUSING_BROKER = """
import errno, importlib, sys
impl = sys.argv[1]
module = importlib.import_module(impl + ".broker")
real, calls = module.set_up_accepted, []
def refuse_first(sock, *args, **kwargs):
    calls.append(1)
    if len(calls) == 1:
        raise OSError(errno.EINVAL, "Invalid argument")
    return real(sock, *args, **kwargs)
module.set_up_accepted = refuse_first
sys.exit(module.main(sys.argv[2:]))
"""


def test_an_option_refused_on_one_connection_costs_only_that_connection(impl):
    broker = Process(None, argv=[sys.executable, "-c", REFUSING_BROKER, impl, "0", "0"])
    try:
        match = BROKER_LINE.search(broker.startup_line())
        assert match, f"[{impl}] unexpected start-up line; stderr {broker.stderr()!r}"
        port = int(match[2])
        refused = Wire(port)
        try:
            refused.send("JOB refused")
            got = refused.line_or_eof(time.monotonic() + DEADLINE)
        finally:
            refused.close()
        assert got is None, f"[{impl}] expected the refused connection closed, got {got!r}"
        reply = submit(port)
        assert reply == "ID 1", (
            f"[{impl}] expected the next client to get 'ID 1', got {reply!r}; "
            f"stderr: {broker.stderr()!r}")
        assert broker.running(), f"[{impl}] broker exited; stderr: {broker.stderr()!r}"
        assert broker.stop() == 0, f"[{impl}] expected exit 0 after SIGTERM"
        lines = broker.stderr().splitlines()
        assert "Traceback" not in broker.stderr(), f"[{impl}] traceback: {lines}"
        assert any("cannot set up the connection from 127.0.0.1:" in line
                   and "Invalid argument" in line for line in lines), (
            f"[{impl}] expected one line naming the refused connection, got {lines}")
    finally:
        broker.close()
