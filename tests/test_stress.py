"""Concurrency stress test of both brokers: 50 clients and 20 workers at once.

The test itself plays every peer, with plain sockets driven by threads:
50 client connections each submit 60 jobs (pipelined 5 at a time) while 20
worker connections speak the worker protocol directly (FETCH; on `JOB n text`
send `DONE n`; on NOJOB wait a moment and FETCH again). No worker processes,
no multicast. Then it checks what the broker's lock or event loop must
guarantee under contention:

- every id issued is unique, and the ids are exactly 1..N (N = JOBs sent),
  increasing along each client connection;
- every job was handed out exactly once, with the text that was submitted;
- every DONE got OK;
- STATUS of every job (pipelined on one connection) is `completed`, and
  STATUS N+1 is `unknown`;
- STATS says waiting=0 running=0 completed=N.

Bounded: one overall deadline stops every thread and fails with the progress
so far. The throughput is printed (see it with -s) and never asserted.
"""

import collections
import socket
import threading
import time

import pytest

from tests.support import IMPLS, Broker, LineConnection, Stopped, parse_stats

CLIENTS = 50
JOBS_PER_CLIENT = 60
BATCH = 5                  # JOB lines a client sends before reading their replies
WORKERS = 20
DEADLINE = 120.0           # seconds for the whole run, connections to final checks
NOJOB_BACKOFF = 0.01       # a worker's wait after NOJOB (the only sleep)
STATUS_CHUNK = 500         # STATUS lines sent per write in the final check


def job_text(client, j):
    # Inner spaces and non-ASCII, which the broker must keep exactly.
    return f"c{client:02d}-j{j:02d} stress  größe {client}/{j}"


class Run:
    """What the threads share; every mutation under ``lock``."""

    def __init__(self, deadline):
        self.deadline = deadline
        # Threads' own reads give up later than the main thread does, so that
        # an overrun is reported as such, with the progress made.
        self.read_deadline = deadline + 10.0
        self.lock = threading.Condition()
        self.stop = threading.Event()        # failure or deadline: every thread ends
        self.finished = threading.Event()    # all jobs done: workers end at their next NOJOB
        self.errors = []                     # "thread: what went wrong"
        self.sent = 0                        # JOB lines sent
        self.issued = []                     # (client, id, text) per ID reply
        self.handed = []                     # (worker, id, text) per JOB reply to FETCH
        self.ok = 0                          # DONE answered OK

    def fail(self, who, message):
        with self.lock:
            self.errors.append(f"{who}: {message}")
            self.lock.notify_all()
        self.stop.set()

    def progress(self):
        with self.lock:
            return (f"{self.sent} JOB sent, {len(self.issued)} IDs received, "
                    f"{len(self.handed)} jobs handed out, {self.ok} DONE answered OK")


def client_thread(run, index, conn):
    who = f"client {index}"
    last_id = 0
    try:
        for start in range(0, JOBS_PER_CLIENT, BATCH):
            texts = [job_text(index, j) for j in range(start, min(start + BATCH, JOBS_PER_CLIENT))]
            conn.send_lines([f"JOB {t}" for t in texts])
            with run.lock:
                run.sent += len(texts)
            for text in texts:
                reply = conn.read_line(deadline=run.read_deadline, stop=run.stop)
                words = reply.split(" ")
                if len(words) != 2 or words[0] != "ID" or not words[1].isdigit():
                    return run.fail(who, f"JOB {text!r}: expected 'ID <n>', got {reply!r}")
                job_id = int(words[1])
                if job_id <= last_id:
                    return run.fail(who, f"JOB {text!r} got ID {job_id} after ID {last_id} on "
                                         "the same connection: ids must grow")
                last_id = job_id
                with run.lock:
                    run.issued.append((index, job_id, text))
    except Stopped:
        pass
    except Exception as exc:          # noqa: BLE001 - reported by the main thread
        run.fail(who, f"{type(exc).__name__}: {exc}")


def worker_thread(run, index, conn):
    who = f"worker {index}"
    try:
        while not run.stop.is_set():
            conn.send("FETCH")
            reply = conn.read_line(deadline=run.read_deadline, stop=run.stop)
            if reply == "NOJOB":
                if run.finished.is_set():
                    return
                run.stop.wait(NOJOB_BACKOFF)
                continue
            words = reply.split(" ", 2)
            if len(words) != 3 or words[0] != "JOB" or not words[1].isdigit():
                return run.fail(who, f"FETCH: expected 'JOB <n> <text>' or NOJOB, got {reply!r}")
            job_id, text = int(words[1]), words[2]
            with run.lock:
                run.handed.append((index, job_id, text))
            conn.send(f"DONE {job_id}")
            reply = conn.read_line(deadline=run.read_deadline, stop=run.stop)
            if reply != "OK":
                return run.fail(who, f"DONE {job_id} (text {text!r}): expected OK, got {reply!r}")
            with run.lock:
                run.ok += 1
                run.lock.notify_all()
    except Stopped:
        pass
    except Exception as exc:          # noqa: BLE001 - reported by the main thread
        run.fail(who, f"{type(exc).__name__}: {exc}")


@pytest.mark.parametrize("impl", IMPLS, ids=[impl.split("_", 1)[1] for impl in IMPLS])
def test_many_clients_and_workers_at_once(impl):
    run = Run(time.monotonic() + DEADLINE)
    broker = None
    connections = []
    threads = []
    try:
        broker = Broker(impl)
        clients = [LineConnection(broker.client_port) for _ in range(CLIENTS)]
        workers = [LineConnection(broker.worker_port) for _ in range(WORKERS)]
        connections = clients + workers
        threads = ([threading.Thread(target=client_thread, args=(run, i, c), daemon=True,
                                     name=f"stress-client-{i}") for i, c in enumerate(clients)]
                   + [threading.Thread(target=worker_thread, args=(run, i, w), daemon=True,
                                       name=f"stress-worker-{i}") for i, w in enumerate(workers)])

        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads[:CLIENTS]:
            thread.join(max(0.0, run.deadline - time.monotonic()))
        with run.lock:
            target = run.sent
            run.lock.wait_for(lambda: run.stop.is_set() or run.ok >= target,
                              timeout=max(0.0, run.deadline - time.monotonic()))
        elapsed = time.monotonic() - started
        run.finished.set()
        timed_out = not run.stop.is_set() and run.ok < target
        unfinished = [t.name for t in threads if t.is_alive()] if timed_out else []
        if timed_out or run.errors:
            run.stop.set()
        for thread in threads[CLIENTS:]:
            thread.join(max(1.0, run.deadline - time.monotonic()))
        stuck = [t.name for t in threads if t.is_alive()]
        if stuck:
            run.stop.set()
            _shut(connections)       # unblocks any thread stuck in a socket call
            for thread in threads:
                thread.join(2.0)
        assert not timed_out and not stuck, (
            f"the stress run did not finish within {DEADLINE:.0f} s against "
            f"{broker.describe()}: {run.progress()}; threads unfinished at the deadline: "
            f"{len(unfinished or stuck)} {(unfinished or stuck)[:10]}; "
            f"broker running: {broker.running()}, stderr: {broker.stderr()!r}; "
            f"thread errors: {run.errors[:5]}")
        assert not run.errors, (f"{len(run.errors)} thread(s) failed against {broker.describe()}; "
                                f"progress: {run.progress()}; first errors: {run.errors[:10]}; "
                                f"broker running: {broker.running()}, "
                                f"stderr: {broker.stderr()!r}")

        n = run.sent
        print(f"\nstress [{impl}]: {n} jobs submitted, handed out and completed by "
              f"{CLIENTS} clients and {WORKERS} workers in {elapsed:.2f} s: "
              f"{n / elapsed:.0f} jobs/s (information only)")
        _check_ids(run, n)
        _check_handed_out(run)
        assert run.ok == n, f"expected OK for all {n} DONEs, got {run.ok}"
        _check_final_state(run, broker, n)
    finally:
        run.stop.set()
        _shut(connections)
        for thread in threads:
            thread.join(2.0)
        if broker is not None:
            broker.close()


def _check_ids(run, n):
    counts = collections.Counter(job_id for _, job_id, _ in run.issued)
    duplicates = {job_id: [(c, t) for c, i, t in run.issued if i == job_id]
                  for job_id, count in counts.items() if count > 1}
    assert not duplicates, (f"{len(duplicates)} id(s) issued more than once, e.g. "
                            + "; ".join(f"ID {i} to {jobs}" for i, jobs
                                        in sorted(duplicates.items())[:5]))
    assert len(run.issued) == n, f"sent {n} JOB lines but got {len(run.issued)} ID replies"
    ids = set(counts)
    expected = set(range(1, n + 1))
    assert ids == expected, (f"expected ids exactly 1..{n}; missing {sorted(expected - ids)[:20]}, "
                             f"unexpected {sorted(ids - expected)[:20]}")


def _check_handed_out(run):
    submitted = {job_id: text for _, job_id, text in run.issued}
    handed = collections.defaultdict(list)
    for worker, job_id, text in run.handed:
        handed[job_id].append((worker, text))
    twice = {i: h for i, h in handed.items() if len(h) > 1}
    assert not twice, (f"{len(twice)} job(s) handed out more than once, e.g. "
                       + "; ".join(f"job {i} to workers {[w for w, _ in h]}"
                                   for i, h in sorted(twice.items())[:5]))
    never = sorted(set(submitted) - set(handed))
    assert not never, f"{len(never)} job(s) never handed out: {never[:20]}"
    unknown = sorted(set(handed) - set(submitted))
    assert not unknown, f"jobs handed out that were never issued: {unknown[:20]}"
    wrong = [(i, submitted[i], h[0][1]) for i, h in sorted(handed.items()) if h[0][1] != submitted[i]]
    assert not wrong, (f"{len(wrong)} job(s) handed out with other text than submitted, e.g. "
                       + "; ".join(f"job {i}: submitted {s!r}, handed out {h!r}"
                                   for i, s, h in wrong[:5]))


def _check_final_state(run, broker, n):
    conn = LineConnection(broker.client_port)
    try:
        statuses = {}
        ids = list(range(1, n + 2))          # n + 1 was never issued
        for start in range(0, len(ids), STATUS_CHUNK):
            chunk = ids[start:start + STATUS_CHUNK]
            conn.send_lines([f"STATUS {i}" for i in chunk])
            for i in chunk:
                statuses[i] = conn.read_line(deadline=run.deadline + 30)
        assert statuses.pop(n + 1) == "unknown", f"STATUS {n + 1} (never issued) should be unknown"
        wrong = {i: s for i, s in statuses.items() if s != "completed"}
        assert not wrong, (f"{len(wrong)} job(s) not completed at the end, e.g. "
                           + ", ".join(f"job {i}: {s!r}" for i, s in sorted(wrong.items())[:20]))
        stats_line = conn.request("STATS")
        stats = parse_stats(stats_line)
        got = {key: stats.get(key) for key in ("waiting", "running", "completed")}
        assert got == {"waiting": 0, "running": 0, "completed": n}, \
            f"expected STATS waiting=0 running=0 completed={n}, got {stats_line!r}"
    finally:
        conn.close()


def _shut(connections):
    for conn in connections:
        try:
            conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        conn.close()
