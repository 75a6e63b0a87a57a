"""Races between connections, for both brokers.

``test_waiting_fetch_answered_once``: a worker waits in ``FETCH <seconds>``;
another client gets a reply (STATS) and at once a third submits a JOB. The
waiting worker must get that job exactly once: its next line, the answer to
its DONE, must be OK. Repeated ROUNDS times, as fast as the replies come.

A regression test: the threads broker failed it within 2-20 rounds (found by
tests/test_broker_properties.py). A thread that answered a request with no
deliveries for other connections iterated the core's deliveries list after
sending its own reply, outside the lock, while it was still the core's live
list; a JOB handled by another thread in that window appended the waiting
worker's ``JOB n text`` to that list, and both threads sent it. A real worker
(long-poll is its default) then read a JOB while streaming, dropped the
connection as a protocol error, and the job ran again. See RELIABILITY.md.
"""

import time

import pytest

from tests.support import IMPLS, Broker, Wire

ROUNDS = 3000
DEADLINE = 60.0

@pytest.mark.parametrize("impl", IMPLS, ids=[impl.split("_", 1)[1] for impl in IMPLS])
def test_waiting_fetch_answered_once(impl):
    deadline = time.monotonic() + DEADLINE
    broker = None
    conns = []
    try:
        broker = Broker(impl)
        control, client = Wire(broker.client_port), Wire(broker.client_port)
        worker = Wire(broker.worker_port)
        conns = [control, client, worker]
        for n in range(1, ROUNDS + 1):
            assert time.monotonic() < deadline, f"[{impl}] only {n - 1} of {ROUNDS} rounds in time"
            worker.send("FETCH 60")                       # nothing queued: it waits
            control.send("STATS")
            stats = control.line_or_eof(deadline)
            assert stats and stats.startswith("STATS "), f"STATS: got {stats!r}"
            client.send(f"JOB race {n}")
            assert client.line_or_eof(deadline) == f"ID {n}"
            job = worker.line_or_eof(deadline)
            assert job == f"JOB {n} race {n}", f"round {n}: FETCH 60 expected 'JOB {n} race {n}', got {job!r}"
            worker.send(f"DONE {n}")
            reply = worker.line_or_eof(deadline)
            assert reply == "OK", (
                f"[{impl}] round {n}: the waiting FETCH got {job!r}; then DONE {n} expected OK, "
                f"got {reply!r} (the same JOB line twice)")
    finally:
        for conn in conns:
            conn.close()
        if broker is not None:
            broker.close()
