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

``test_replies_keep_order_when_a_job_wakes_a_waiting_fetch``: a worker waits
in ``FETCH <seconds>``; with the broker stopped (SIGSTOP), a client submits a
JOB and the worker sends STATS, so both are read in one go. The worker must
read the JOB (the answer to its FETCH) before the STATS reply. The select
broker queued the JOB for the end of its loop iteration and sent the STATS
reply first; the threads broker sent it from the client's thread after
releasing the lock, racing the worker's own thread.
"""

import signal
import time

import pytest

from tests.support import IMPLS, Broker, Wire

ROUNDS = 3000
ORDER_ROUNDS = 400
DEADLINE = 60.0


class Scene:
    """A fresh broker with a control client, a submitting client and one worker."""

    def __init__(self, impl):
        self.impl = impl
        self.deadline = time.monotonic() + DEADLINE
        self.broker = Broker(impl)
        self.conns = []
        try:
            self.conns = [Wire(self.broker.client_port), Wire(self.broker.client_port),
                          Wire(self.broker.worker_port)]
        except BaseException:
            self.close()
            raise
        self.control, self.client, self.worker = self.conns

    def rounds(self, count):
        for n in range(1, count + 1):
            assert time.monotonic() < self.deadline, (
                f"[{self.impl}] only {n - 1} of {count} rounds in time")
            yield n

    def close(self):
        for conn in self.conns:
            conn.close()
        self.broker.close()


@pytest.fixture(params=IMPLS, ids=[impl.split("_", 1)[1] for impl in IMPLS])
def scene(request):
    scene = Scene(request.param)
    yield scene
    scene.close()


def test_waiting_fetch_answered_once(scene):
    control, client, worker, deadline = scene.control, scene.client, scene.worker, scene.deadline
    for n in scene.rounds(ROUNDS):
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
            f"[{scene.impl}] round {n}: the waiting FETCH got {job!r}; then DONE {n} expected OK, "
            f"got {reply!r} (the same JOB line twice)")


def test_replies_keep_order_when_a_job_wakes_a_waiting_fetch(scene):
    control, client, worker, deadline = scene.control, scene.client, scene.worker, scene.deadline
    for n in scene.rounds(ORDER_ROUNDS):
        worker.send("FETCH 60")                       # nothing queued: it waits
        assert control.ask("STATS", deadline).startswith("STATS ")
        scene.broker.proc.send_signal(signal.SIGSTOP)
        try:
            client.send(f"JOB order {n}")             # on loopback, queued at the broker
            worker.send("STATS")                      # when send() returns
        finally:
            scene.broker.proc.send_signal(signal.SIGCONT)
        first, second = worker.line_or_eof(deadline), worker.line_or_eof(deadline)
        assert (first, (second or "")[:6]) == (f"JOB {n} order {n}", "STATS "), (
            f"[{scene.impl}] round {n}: worker sent FETCH 60, then STATS after the JOB was "
            f"submitted; expected 'JOB {n} order {n}' then the STATS reply, got "
            f"{first!r} then {second!r}")
        assert client.line_or_eof(deadline) == f"ID {n}"
        assert worker.ask(f"DONE {n}", deadline) == "OK"
