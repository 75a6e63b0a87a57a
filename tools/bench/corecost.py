"""Where the select broker's CPU per request goes beyond the floor's: the core's
work, step by step, timed in process (``--profile``).

The select broker's shell costs what the floor's loop costs: the bench measures
it in every run as the ``shell`` (tools/bench/shell_broker.py: the select
broker with the floor's answer in place of its core's). What the select broker
spends beyond the shell is therefore the core's work on each request, and this
module times that work with ``timeit`` (the best of several repeats, in nanoseconds per
call, the price of the Python call included), next to the floor's whole
protocol work (``floor_broker.answer``). Each step is one the spec requires
of every conformant broker; the report adds them up into the least a CPython
broker of this design can pay per request.

Not a load test: nothing is sent anywhere; a few seconds of one core.
"""

import itertools
import timeit

from core.broker import CLIENT, WORKER, BrokerCore
from core.messages import ONE_PLAIN_LINE_MAP

from .floor_broker import answer as floor_answer
from .protocols import PAYLOAD

REPEATS = 5
CALLS = 100_000

JOB_LINE = b"JOB " + PAYLOAD + b"\n"


def _best(fn, calls):
    """Nanoseconds per call of ``fn()``: the best of REPEATS runs of ``calls`` calls."""
    return min(timeit.repeat(fn, number=calls, repeat=REPEATS)) / calls * 1e9


def _core():
    """A broker core with room for every job these measurements submit."""
    return BrokerCore(max_waiting=10 ** 9, max_memory=1 << 36)


def measure(calls=CALLS):
    """Time the core's per-request steps and the floor's answer, ``calls`` calls
    per repeat (fewer: faster, noisier).

    Returns {"whole": [(what, ns)], "steps": [(step, spec, ns)], "floor": ns,
    "call": ns}: ``whole`` the core's complete handling of a JOB, a STATUS and a
    FETCH + DONE pair (``BrokerCore.receive`` on one read each), ``steps`` the
    parts of a JOB that the spec requires (with the spec section that requires
    it), ``floor`` the floor's answer to a JOB, ``call`` an empty Python call.
    """
    core = _core()
    client = core.open(CLIENT, 0.0)
    end = len(JOB_LINE) - 1
    whole = [("JOB (submit)", _best(lambda: core.receive(client, JOB_LINE, 1.0), calls)),
             ("STATUS n", _best(lambda: core.receive(client, b"STATUS 7\n", 1.0), calls))]

    cycle_core = _core()
    submitter = cycle_core.open(CLIENT, 0.0)
    for _ in range(calls * REPEATS + 1):
        cycle_core.receive(submitter, JOB_LINE, 1.0)       # a job for every FETCH below
    worker = cycle_core.open(WORKER, 0.0)
    receive = cycle_core.receive

    def fetch_done():
        reply = receive(worker, b"FETCH\n", 1.0)
        receive(worker, b"DONE %s\n" % reply[4:reply.index(b" ", 4)], 1.0)

    sample = b"JOB 123456 " + PAYLOAD + b"\n"
    harness = _best(lambda: b"DONE %s\n" % sample[4:sample.index(b" ", 4)], calls)
    whole.append(("FETCH + DONE (one cycle)", _best(fetch_done, calls) - harness))

    handlers = client.handlers
    step_core = _core()
    step_client = step_core.open(CLIENT, 0.0)
    steps = [
        ("one plain line: the read ends in LF, and the line before it, once a "
         "single C pass maps CR, LF and every forbidden byte to LF, holds no LF",
         "framing; grammar (BAD_CHAR)",
         _best(lambda: one_plain_line(JOB_LINE, end), calls)),
        ("command and argument: split at the first blank, look up the command "
         "(upper case as sent; another case goes the general way), trim the argument",
         "commands (case-insensitive); client.job",
         _best(lambda: split_and_dispatch(JOB_LINE[:end], handlers), calls)),
        ("the job itself: not empty, not too long, queue and byte budget, an id, "
         "into the FIFO table",
         "client.job; limits (QUEUE_FULL, JOB_TOO_LONG)",
         _best(lambda: step_core._job(step_client, PAYLOAD, 1.0), calls)),
        ("the reply: `ID n`", "client.job", _best(lambda: b"ID %d\n" % 123456, calls)),
    ]
    return {
        "whole": whole,
        "steps": steps,
        "floor": _best(lambda: floor_answer(JOB_LINE, 123456), calls),
        "call": _best(lambda: None, calls),
        "rotation": {count: job_in_turns(count, calls) for count in ROTATION},
    }


# Connections the core's JOB is timed across in turn (job_in_turns): one, and the
# closed loop's largest count.
ROTATION = (1, 256)


def job_in_turns(connections, calls=CALLS):
    """Nanoseconds per ``BrokerCore.receive`` of a JOB line when ``connections``
    client connections send in turn, as in the closed loop (the next request
    comes from the next connection), on a fresh core each repeat so the job
    table grows alike. The turn's ``next()`` is included for every count alike:
    compare counts with each other, not with ``whole``. If the core's own
    per-connection state fell out of the cache between two requests of one
    connection, 256 would cost more than 1 here."""
    best = float("inf")
    for _ in range(REPEATS):
        core = _core()
        turn = itertools.cycle([core.open(CLIENT, 0.0) for _ in range(connections)]).__next__
        receive = core.receive
        best = min(best, timeit.timeit(lambda: receive(turn(), JOB_LINE, 1.0), number=calls))
    return best / calls * 1e9


def one_plain_line(data, end):
    """The fast path's test (BrokerCore.receive), alone: the line (bytes, its LF
    cut off) when ``data`` is one plain line ending at index ``end``, else None."""
    if data[end] == 10:
        line = data[:end]
        if 10 not in line.translate(ONE_PLAIN_LINE_MAP):
            return line
    return None


def split_and_dispatch(line, handlers):
    """The fast path's split and handler lookup (BrokerCore.receive), alone, on
    a line without its LF."""
    parts = line.split(None, 1)
    return handlers.get(parts[0]), parts[1].rstrip()


def measure_store(commits=2000):
    """Wall-clock µs per durable commit of one small job, the price a durable
    broker pays per job when each job is its own commit (one client).

    Returns {"sqlite": µs, "append": µs}: through ``shell.store.SqliteStore``
    (what ``--store sqlite:`` does: WAL, synchronous=FULL) and as a bare append
    of the same bytes plus ``fdatasync`` to a preallocated file (what
    beanstalkd's binlog does at ``-f 0``), both in a temporary directory of the
    default temporary file system, as the durable scenario uses.
    """
    import os
    import tempfile
    import time

    from shell.store import SqliteStore

    with tempfile.TemporaryDirectory(prefix="workq-corecost-") as where:
        store = SqliteStore(os.path.join(where, "jobs.db"))
        try:
            started = time.perf_counter()
            for job_id in range(1, commits + 1):
                store.add(job_id, PAYLOAD)
                store.sync()
            sqlite = (time.perf_counter() - started) / commits * 1e6
        finally:
            store.close()
        record = b"JOB %d %s\n" % (commits, PAYLOAD)
        fd = os.open(os.path.join(where, "binlog"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.write(fd, bytes(len(record) * (commits + 1)))   # preallocated and written once
            os.fsync(fd)
            os.lseek(fd, 0, os.SEEK_SET)
            started = time.perf_counter()
            for _ in range(commits):
                os.write(fd, record)
                os.fdatasync(fd)
            append = (time.perf_counter() - started) / commits * 1e6
        finally:
            os.close(fd)
    return {"sqlite": sqlite, "append": append}
