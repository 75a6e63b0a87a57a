"""End to end across implementations: each broker with two workers of each flavour.

A real broker (ports chosen by the kernel) and two real worker processes; a
multicast receiver joined before the workers start; ten jobs of 2-6 words,
every word unique to its job, so each datagram names its job. Checked: each
job's words arrive complete, in order, all from one source (one worker's
socket, never more sources than workers), and every job ends `completed`.

The test process runs in a private network namespace when permitted (see
conformance/netns.py); either way the workers send on 127.0.0.1 with TTL 1.
"""

import socket
import time

import pytest

from tests.support import IMPLS, Broker, LineConnection, start_worker, udp_sink
from tools.mcast_listen import open_receiver

WORKERS = 2
WORKER_OPTIONS = ("--word-delay", "0.01", "--fetch-interval", "0.05")
WORD_DEADLINE = 30.0       # seconds for every word of every job to arrive
STATUS_DEADLINE = 15.0     # then for every job to be completed
VOCABULARY = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot")


def job_words(k):
    """Job k's words: 2 to 6, distinct, and tagged with k (``bravo-k3``)."""
    return [f"{VOCABULARY[i]}-k{k}" for i in range(2 + k % 5)]


JOBS = [job_words(k) for k in range(10)]


def flavour(impl):
    return impl.split("_", 1)[1]


@pytest.mark.parametrize(
    "broker_impl,worker_impl",
    [(b, w) for b in IMPLS for w in IMPLS],
    ids=[f"broker-{flavour(b)}-workers-{flavour(w)}" for b in IMPLS for w in IMPLS])
def test_jobs_flow_from_broker_through_workers_to_multicast(broker_impl, worker_impl):
    broker = receiver = syslog = client = None
    workers = []
    try:
        broker = Broker(broker_impl)
        receiver = open_receiver(0)
        output_port = receiver.getsockname()[1]
        syslog = udp_sink()           # the workers' syslog port; messages are not checked here
        for _ in range(WORKERS):
            workers.append(start_worker(worker_impl, broker.worker_port, output_port,
                                        syslog.getsockname()[1], *WORKER_OPTIONS))

        client = LineConnection(broker.client_port)
        ids = {}                      # job id -> index k into JOBS
        for k, words in enumerate(JOBS):
            reply = client.request("JOB " + " ".join(words))
            assert reply.startswith("ID "), f"JOB {words}: expected 'ID <n>', got {reply!r}"
            ids[int(reply[3:])] = k
        assert len(ids) == len(JOBS), f"expected {len(JOBS)} distinct ids, got {sorted(ids)}"

        owner = {w: k for k, words in enumerate(JOBS) for w in words}
        received = {k: [] for k in range(len(JOBS))}      # k -> [(word, source)]
        strays = []
        job_of = {k: n for n, k in ids.items()}
        _receive_words(receiver, JOBS, job_of, owner, received, strays, broker, workers)

        for k, words in enumerate(JOBS):
            got = [w for w, _ in received[k]]
            assert got == words, (f"job {job_of[k]} (JOB {' '.join(words)}): expected words "
                                  f"{words}, received {got}")
            sources = {source for _, source in received[k]}
            assert len(sources) == 1, (f"job {job_of[k]}: expected all words from one worker "
                                       f"socket, got sources {sorted(sources)}")
            assert sources.pop()[0].startswith("127."), \
                f"job {job_of[k]}: expected a loopback source, got {received[k]}"
        all_sources = {source for got in received.values() for _, source in got}
        assert len(all_sources) <= WORKERS, \
            f"expected at most {WORKERS} sending sockets (one per worker), got {sorted(all_sources)}"
        assert not strays, f"datagrams that belong to no job: {strays}"

        statuses = _wait_completed(client, sorted(ids))
        not_done = {n: s for n, s in statuses.items() if s != "completed"}
        assert not not_done, "every job should be completed; not: " + ", ".join(
            f"job {n} (JOB {' '.join(JOBS[ids[n]])}) is {s!r}" for n, s in sorted(not_done.items()))
    finally:
        for closable in (client, receiver, syslog):
            if closable is not None:
                closable.close()
        for worker in workers:
            worker.close()
        if broker is not None:
            broker.close()


def _receive_words(receiver, jobs, job_of, owner, received, strays, broker, workers):
    """Receive datagrams until every job has as many words as it should."""
    deadline = time.monotonic() + WORD_DEADLINE
    missing = lambda: [k for k, words in enumerate(jobs) if len(received[k]) < len(words)]
    while missing():
        left = deadline - time.monotonic()
        if left <= 0:
            dead = [f"{p.describe()} exited {p.proc.returncode}: {p.stderr()!r}"
                    for p in (broker, *workers) if not p.running()]
            raise AssertionError(
                f"not every word arrived within {WORD_DEADLINE} s; " + "; ".join(
                    f"job {job_of[k]}: expected {jobs[k]}, received {[w for w, _ in received[k]]}"
                    for k in missing()) + (f"; dead processes: {dead}" if dead else ""))
        receiver.settimeout(left)
        try:
            data, source = receiver.recvfrom(65536)
        except socket.timeout:
            continue
        word = data.decode(errors="replace")
        if word.endswith("\n") and word[:-1] in owner:
            received[owner[word[:-1]]].append((word[:-1], source))
        else:
            strays.append((data, source))


def _wait_completed(client, ids):
    """Ask STATUS of every id (pipelined) until all are completed or the deadline
    passes; returns the last answers."""
    deadline = time.monotonic() + STATUS_DEADLINE
    while True:
        client.send_lines([f"STATUS {n}" for n in ids])
        statuses = {n: client.read_line(deadline=deadline + 5) for n in ids}
        if all(s == "completed" for s in statuses.values()) or time.monotonic() > deadline:
            return statuses
        time.sleep(0.02)      # polling interval; the result, not the timing, is checked
