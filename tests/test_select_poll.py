"""The select broker's poll(2) fallback, for systems without epoll (BSD, macOS):
Linux always takes epoll, so this runs every broker exchange of the conformance
suite against the broker with ``select.epoll`` removed (tests/poll_only_broker.py).
Deadlines (long-poll FETCH, leases, idle timeouts) pass through poll's timeout,
in milliseconds where epoll takes seconds."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = ROOT / "tests" / "poll_only_broker.py"


@pytest.mark.slow
def test_select_broker_passes_every_broker_exchange_on_poll():
    result = subprocess.run(
        [sys.executable, "-m", "conformance", "-p", "no:cacheprovider", "-n", "2", "-m", "broker",
         "--broker-cmd", f"{{python}} {LAUNCHER} {{client_port}} {{worker_port}}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, \
        f"expected every broker exchange to pass with select.poll, got exit {result.returncode}:\n" \
        + output[-4000:]
    assert " passed" in output, f"expected the broker exchanges to run, got:\n{output[-2000:]}"
