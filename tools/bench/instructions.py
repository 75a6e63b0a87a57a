"""``--profile``: instructions per request of the floor, the shell and the select
broker, counted by valgrind's cachegrind: a measure this shared machine's noise
does not move.

CPU times here spread by a third between runs of one broker (BENCHMARKS.md notes
each row's runs), more than the distance to a target; the count of instructions
a broker executes for the same requests does not depend on its neighbours. Each
broker runs under ``valgrind --tool=cachegrind --cache-sim=no`` (valgrind(1),
cg_annotate(1): ``I refs``, the instructions executed in user space) twice, for
SMALL and for LARGE requests after the same start-up (each rounded down to whole
rounds of the connections), and the difference over the difference in requests
is its count per request, start-up and shutdown cancelled out. The kernel's work
(epoll, recv, send: the same system calls for the three) is not counted, so the
counts rank the Python each broker runs per request, not its whole CPU time.

The load: CONNECTIONS in lockstep, each writing one ``JOB <25 bytes>`` and all
then reading their replies, so that with 16 connections a wake-up finds all 16
requests (the broker is slowed some 50 times under valgrind); 256 connections
show whether the work per request grows with them. A count differs from one run
to the next by about 2 % (hash seeds, the collector).
"""

import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from . import loadgen
from .protocols import PAYLOAD
from .servers import FLOOR, SHELL, BrokerError, OurBroker, install_package

SMALL, LARGE = 2_000, 12_000
BROKERS = (FLOOR, SHELL, "select")
CONNECTIONS = (1, 16, 256)
REQUEST = b"JOB " + PAYLOAD + b"\n"
REPLY_TIMEOUT = 60.0        # seconds: valgrind slows the broker some 50 times
_I_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def find_valgrind(install=True, report=print):
    """The valgrind executable; installs the Debian package when missing and
    allowed. Returns (path or None, message)."""
    return install_package("valgrind", lambda: shutil.which("valgrind"), install, report,
                           "the instruction counts")


def count(name, requests, connections, valgrind):
    """Instructions (int) the broker ``name`` executes in user space from start to
    exit, answering ``requests`` JOBs (a multiple of ``connections``) from
    ``connections`` lockstep connections. Raises BrokerError when the broker does
    not start, answers wrongly or leaves no count, LoadError when it does not
    answer within REPLY_TIMEOUT."""
    with tempfile.TemporaryDirectory(prefix="workq-instructions-") as tmp:
        log = Path(tmp) / "valgrind.log"
        broker = OurBroker(name, wrapper=[valgrind, "--tool=cachegrind", "--cache-sim=no",
                                          "--cachegrind-out-file=/dev/null",
                                          f"--log-file={log}"])
        with broker.start():
            socks = loadgen.connect(broker.client, connections)
            try:
                for _ in range(requests // connections):
                    for sock in socks:
                        sock.sendall(REQUEST)
                    for sock in socks:
                        reply = loadgen.read_line(sock, timeout=REPLY_TIMEOUT)
                        if not reply.startswith(b"ID "):
                            raise BrokerError(f"{name}: expected ID n to a JOB, got {reply!r}")
            finally:
                loadgen.close_all(socks)
            status = broker.stop(signal.SIGTERM)     # the floor has no handler: valgrind still counts
        text = log.read_text(errors="replace") if log.exists() else ""
        found = _I_REFS.search(text)
        if not found:
            raise BrokerError(f"{name} under valgrind left no instruction count "
                              f"(exit status {status}): {text.strip()[-300:]!r}")
        return int(found.group(1).replace(",", ""))


def measure(report=print, install=True, small=SMALL, large=LARGE):
    """Count each of BROKERS at each of CONNECTIONS. Returns {"message": str,
    "small": small, "large": large, "counts": {(broker, connections): instructions
    per request (float)}}; counts is empty when valgrind is missing or could not
    run (message says why)."""
    valgrind, message = find_valgrind(install, report)
    counts = {}
    result = {"message": message, "small": small, "large": large, "counts": counts}
    if valgrind is None:
        return result
    try:
        for connections in CONNECTIONS:
            for name in BROKERS:
                # Whole rounds of lockstep requests: count() sends requests // connections.
                lots = [n // connections * connections for n in (small, large)]
                low, high = (count(name, n, connections, valgrind) for n in lots)
                counts[name, connections] = (high - low) / (lots[1] - lots[0])
                report(f"  instructions {name:7} {connections:3} connections: "
                       f"{counts[name, connections]:,.0f} per request")
    except (BrokerError, loadgen.LoadError, OSError, subprocess.SubprocessError) as error:
        result["message"] = f"valgrind could not count: {error}"
        counts.clear()
    return result

