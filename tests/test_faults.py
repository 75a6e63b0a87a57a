"""Fault tests: processes killed with SIGKILL under load, for both brokers.

- ``test_kill_workers_mid_job``: real worker processes are SIGKILLed while
  they hold a job, over and over, and replaced; every job still completes,
  and a job runs twice only if a worker was killed holding it.
- ``test_durable_broker_kill9``: a broker with ``--store sqlite:PATH`` is
  SIGKILLed at random moments while client threads submit and a worker thread
  fetches and completes jobs, and restarted on the same ports; nothing it
  acknowledged (ID, OK) is lost, changed, reused or undone.
- ``test_broker_restart_with_workers_connected``: the broker dies under real
  workers and comes back on the same ports; the workers reconnect by
  themselves and the queue drains.

Every test has one overall deadline and waits for events only (a reply, a
syslog datagram, a process's start-up line or exit). RELIABILITY.md lists
the numbers they produce and the commands that reproduce them.
"""

import collections
import random
import threading
import time

import pytest

from tests.support import (
    IMPLS,
    Broker,
    LineConnection,
    Process,
    Stopped,
    SyslogListener,
    Wire,
    await_completions,
    parse_stats,
    start_worker,
    udp_sink,
)

IDS = [impl.split("_", 1)[1] for impl in IMPLS]
WORKER_OPTIONS = ("--word-delay", "0.005", "--fetch-interval", "0.05")


def flavour(impl):
    return impl.split("_", 1)[1]


def start_broker(impl, *options, ports=(0, 0), attempts=5):
    """A broker; on given ports, retried a few times if the port is briefly
    taken (a connection's local port can collide with a just-freed listener)."""
    for attempt in range(attempts):
        try:
            return Broker(impl, *options, ports=ports)
        except AssertionError as error:
            if "cannot listen" not in str(error) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def submit_all(client, texts, deadline):
    """Pipeline ``JOB text`` for each text; the ids in order."""
    client.send_lines([f"JOB {t}" for t in texts])
    ids = []
    for text in texts:
        reply = client.read_line(deadline=deadline)
        assert reply.startswith("ID ") and reply[3:].isdigit(), \
            f"JOB {text!r}: expected 'ID <n>', got {reply!r}"
        ids.append(int(reply[3:]))
    assert len(set(ids)) == len(ids), f"expected distinct ids, got {ids}"
    return ids


def statuses(client, ids, deadline):
    """{id: STATUS reply}, pipelined in chunks."""
    result = {}
    ids = list(ids)
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        client.send_lines([f"STATUS {i}" for i in chunk])
        for i in chunk:
            result[i] = client.read_line(deadline=deadline)
    return result


def assert_all(states, expected, what):
    wrong = {i: s for i, s in sorted(states.items()) if s != expected}
    assert not wrong, (f"{what}: expected every job {expected}, got {len(wrong)} otherwise, e.g. "
                       + ", ".join(f"{i}: {s!r}" for i, s in list(wrong.items())[:20]))


# -- 1. SIGKILL workers mid-job --------------------------------------------------------

KW_JOBS = 200
KW_WORKERS = 3
KW_KILLS = 15
KW_DEADLINE = 90.0


def kw_text(k):
    # 8-12 words, each naming its job: about 50 ms of work at 5 ms a word
    return " ".join(f"k{k}w{i}" for i in range(8 + k % 5))


@pytest.mark.parametrize("impl", IMPLS, ids=IDS)
def test_kill_workers_mid_job(impl):
    """SIGKILL a worker that holds a job, KW_KILLS times, replacing each; all
    KW_JOBS jobs end completed and duplicates come only from killed holders."""
    deadline = time.monotonic() + KW_DEADLINE
    rng = random.Random()
    broker = syslog = output = client = None
    workers = {}                  # pid -> Process, alive or killed
    try:
        broker = Broker(impl)
        syslog = SyslogListener()
        output = udp_sink()       # the output port; nobody joins the group
        for _ in range(KW_WORKERS):
            w = start_worker(impl, broker.worker_port, output.getsockname()[1], syslog.port,
                             *WORKER_OPTIONS)
            workers[w.pid] = w
        client = LineConnection(broker.client_port)
        ids = submit_all(client, [kw_text(k) for k in range(KW_JOBS)], deadline)

        starts = collections.Counter()                 # job -> "starting job" lines
        completions = collections.Counter()            # job -> "completed job" lines
        killed = {}                                    # pid -> job it held when killed (or None)
        abandoned = collections.defaultdict(set)       # killed pid -> jobs it never completed
        problems = []                                  # "DONE n failed", protocol errors
        kills = 0
        gap = rng.randint(2, 10)                        # starts to let pass before the next kill
        pending = set(ids)
        while pending or kills < KW_KILLS:
            event = syslog.next(deadline)
            assert event is not None, (
                f"[{impl}] not finished within {KW_DEADLINE:.0f} s: {kills}/{KW_KILLS} kills, "
                f"{KW_JOBS - len(pending)}/{KW_JOBS} jobs completed, still pending "
                f"{sorted(pending)[:20]}; broker running {broker.running()}, "
                f"stderr {broker.stderr()!r}; live workers "
                f"{[p for p, w in workers.items() if w.running()]}")
            pid, text = event
            words = text.split()
            if text.startswith("starting job "):
                job = int(words[2])
                starts[job] += 1
                if pid in killed:                      # sent before it died, read after
                    abandoned[pid].add(job)
                    continue
                gap -= 1
                if gap <= 0 and kills < KW_KILLS and workers[pid].running():
                    workers[pid].proc.kill()
                    workers[pid].proc.wait(10)
                    killed[pid] = job
                    abandoned[pid].add(job)
                    kills += 1
                    gap = rng.randint(2, 10)
                    # Not waiting for its start-up line: the others keep working meanwhile.
                    w = start_worker_nowait(impl, broker.worker_port, output.getsockname()[1],
                                            syslog.port)
                    workers[w.pid] = w
            elif text.startswith("completed job "):
                job = int(words[2])
                completions[job] += 1
                pending.discard(job)
                if pid in abandoned:
                    abandoned[pid].discard(job)
            elif text.startswith("DONE ") or "protocol error" in text:
                problems.append((pid, text))
            if not pending and kills < KW_KILLS:
                raise AssertionError(
                    f"[{impl}] all {KW_JOBS} jobs completed after only {kills} of {KW_KILLS} "
                    "kills; make the jobs longer or more numerous")

        assert not problems, f"[{impl}] expected no failed DONE or protocol error, got {problems[:10]}"
        states = statuses(client, ids + [max(ids) + 1], deadline)
        assert states.pop(max(ids) + 1) == "unknown", "STATUS of an id never issued: expected unknown"
        assert_all(states, "completed", f"[{impl}] after {kills} worker kills")
        stats_line = client.request("STATS")
        stats = parse_stats(stats_line)
        got = {key: stats.get(key) for key in ("waiting", "running", "completed")}
        assert got == {"waiting": 0, "running": 0, "completed": KW_JOBS}, \
            f"[{impl}] expected STATS waiting=0 running=0 completed={KW_JOBS}, got {stats_line!r}"

        twice_done = {j: n for j, n in completions.items() if n > 1}
        assert not twice_done, f"[{impl}] expected each job completed once, got {twice_done}"
        never = sorted(set(ids) - set(starts))
        assert not never, f"[{impl}] expected every job started, never started: {never}"
        duplicates = {j: n - 1 for j, n in starts.items() if n > 1}
        may_repeat = set().union(*abandoned.values()) if abandoned else set()
        unexplained = sorted(set(duplicates) - may_repeat)
        assert not unexplained, (
            f"[{impl}] jobs started more than once although no killed worker held them: "
            f"{unexplained}; duplicates {duplicates}; jobs held by killed workers {sorted(may_repeat)}")
        total = sum(duplicates.values())
        assert total <= kills, (f"[{impl}] expected at most {kills} duplicate starts (one per kill), "
                                f"got {total}: {duplicates}")
        print(f"\nkill workers [{impl}]: {KW_JOBS} jobs, {kills} SIGKILLs of workers holding a "
              f"job, {len(ids) - len(set(ids) - set(starts))} jobs started, 0 lost, "
              f"{total} duplicate starts (jobs {sorted(duplicates)})")
    finally:
        if client is not None:
            client.close()
        for w in workers.values():
            w.close()
        for thing in (output, syslog, broker):
            if thing is not None:
                thing.close()


def start_worker_nowait(impl, worker_port, output_port, syslog_port):
    return Process(f"{impl}.worker", f"127.0.0.1:{worker_port}", output_port, syslog_port,
                   *WORKER_OPTIONS)


# -- 2. SIGKILL the durable broker ------------------------------------------------------

DUR_ROUNDS = 5
DUR_CLIENTS = 3
DUR_DEADLINE = 90.0
NOJOB_RECHECK = 0.5         # after NOJOB: wait for a new ID (an event), at most this long


class DurableRun:
    """What the load threads record; every change under ``cond``."""

    def __init__(self, deadline):
        self.deadline = deadline
        self.cond = threading.Condition()
        self.stop = threading.Event()
        self.generation = 0            # broker incarnation the threads should talk to
        self.ports = None
        self.acked = {}                # id -> (text, generation)
        self.acked_in = collections.defaultdict(list)   # generation -> ids in arrival order
        self.in_doubt = set()          # JOB texts sent without an ID reply (broker died)
        self.fetched = []              # (id, text, generation) per JOB to FETCH
        self.done_ok = {}              # id -> generation whose OK it got
        self.done_in_doubt = set()     # DONE sent, no reply
        self.round_acks = 0
        self.round_dones = 0
        self.errors = []

    def fail(self, message):
        with self.cond:
            self.errors.append(message)
            self.cond.notify_all()
        self.stop.set()

    def wait_generation(self, seen):
        """Block until the broker after ``seen`` is up; its generation, or None on stop."""
        with self.cond:
            self.cond.wait_for(lambda: self.stop.is_set() or self.generation > seen,
                               timeout=max(0.0, self.deadline + 10 - time.monotonic()))
            return None if self.stop.is_set() or self.generation <= seen else self.generation

    def progress(self):
        with self.cond:
            return (f"generation {self.generation}, {len(self.acked)} ids acknowledged, "
                    f"{len(self.fetched)} jobs fetched, {len(self.done_ok)} DONE answered OK, "
                    f"{len(self.in_doubt)} JOBs and {len(self.done_in_doubt)} DONEs in doubt")


def durable_client(run, index):
    generation, serial = 0, 0
    try:
        while True:
            generation = run.wait_generation(generation)
            if generation is None:
                return
            try:
                conn = Wire(run.ports[0])
            except OSError:
                continue                    # it died again already: wait for the next one
            try:
                last = 0
                while not run.stop.is_set():
                    text = f"c{index}-{serial} durable  größe g{generation}"
                    serial += 1
                    reply = conn.ask(f"JOB {text}", run.deadline + 10, run.stop)
                    if reply is None:
                        with run.cond:
                            run.in_doubt.add(text)
                        break
                    if not (reply.startswith("ID ") and reply[3:].isdigit()):
                        return run.fail(f"client {index}: JOB {text!r}: expected 'ID <n>', got {reply!r}")
                    job = int(reply[3:])
                    with run.cond:
                        if job in run.acked:
                            run.errors.append(f"ID {job} acknowledged twice: {run.acked[job]} "
                                              f"and then ({text!r}, generation {generation})")
                            run.stop.set()
                        if job <= last:
                            run.errors.append(f"client {index}: ID {job} after ID {last} on "
                                              "one connection: ids must grow")
                            run.stop.set()
                        run.acked[job] = (text, generation)
                        run.acked_in[generation].append(job)
                        run.round_acks += 1
                        run.cond.notify_all()
                    last = job
            finally:
                conn.close()
    except Stopped:
        pass
    except Exception as exc:                # noqa: BLE001 - reported by the main thread
        run.fail(f"client {index}: {type(exc).__name__}: {exc}")


def durable_worker(run):
    generation = 0
    try:
        while True:
            generation = run.wait_generation(generation)
            if generation is None:
                return
            try:
                conn = Wire(run.ports[1])
            except OSError:
                continue
            try:
                while not run.stop.is_set():
                    with run.cond:
                        acks = len(run.acked)
                    # plain FETCH: this test is about durability, not long-poll
                    reply = conn.ask("FETCH", run.deadline + 10, run.stop)
                    if reply is None:
                        break
                    if reply == "NOJOB":
                        with run.cond:        # until a client gets a new ID
                            run.cond.wait_for(
                                lambda acks=acks, generation=generation: run.stop.is_set()
                                or len(run.acked) > acks or run.generation != generation,
                                NOJOB_RECHECK)
                        continue
                    words = reply.split(" ", 2)
                    if len(words) != 3 or words[0] != "JOB" or not words[1].isdigit():
                        return run.fail(f"worker: FETCH: expected JOB <n> <text> or NOJOB, got {reply!r}")
                    job, text = int(words[1]), words[2]
                    with run.cond:
                        run.fetched.append((job, text, generation))
                        if job in run.done_ok:
                            run.errors.append(f"job {job} ({text!r}) handed out again in generation "
                                              f"{generation} although its DONE got OK in generation "
                                              f"{run.done_ok[job]}")
                            run.stop.set()
                    reply = conn.ask(f"DONE {job}", run.deadline + 10, run.stop)
                    if reply is None:
                        with run.cond:
                            run.done_in_doubt.add(job)
                        break
                    if reply != "OK":
                        return run.fail(f"worker: DONE {job}: expected OK, got {reply!r}")
                    with run.cond:
                        run.done_ok[job] = generation
                        run.round_dones += 1
                        run.cond.notify_all()
            finally:
                conn.close()
    except Stopped:
        pass
    except Exception as exc:                # noqa: BLE001
        run.fail(f"worker: {type(exc).__name__}: {exc}")


@pytest.mark.parametrize("impl", IMPLS, ids=IDS)
def test_durable_broker_kill9(impl, tmp_path):
    """DUR_ROUNDS times: SIGKILL a sqlite-backed broker after a random number of
    acknowledged JOBs, restart it on the same ports; then check everything it
    acknowledged survived exactly."""
    run = DurableRun(time.monotonic() + DUR_DEADLINE)
    rng = random.Random()
    options = ("--store", f"sqlite:{tmp_path / 'jobs.db'}")
    threads = [threading.Thread(target=durable_client, args=(run, i), daemon=True,
                                name=f"durable-client-{i}") for i in range(DUR_CLIENTS)]
    threads.append(threading.Thread(target=durable_worker, args=(run,), daemon=True,
                                    name="durable-worker"))
    broker = None
    kills = []                     # (generation, acks, dones) of the round it ended
    try:
        for thread in threads:
            thread.start()
        ports = (0, 0)
        for generation in range(1, DUR_ROUNDS + 2):
            broker = start_broker(impl, *options, ports=ports)
            ports = (broker.client_port, broker.worker_port)
            with run.cond:
                run.ports = ports
                run.round_acks = run.round_dones = 0
                run.generation = generation
                run.cond.notify_all()
            if generation > DUR_ROUNDS:
                break
            target = rng.randint(20, 120)
            with run.cond:
                ok = run.cond.wait_for(
                    lambda target=target: run.stop.is_set()
                    or (run.round_acks >= target and run.round_dones >= 3),
                    timeout=max(0.0, run.deadline - time.monotonic()))
                assert ok and not run.errors, (
                    f"[{impl}] round {generation}: expected {target} acknowledged JOBs and 3 OK'd "
                    f"DONEs before the kill; progress {run.progress()}; errors {run.errors[:5]}; "
                    f"broker running {broker.running()}, stderr {broker.stderr()!r}")
                acks, dones = run.round_acks, run.round_dones
            broker.proc.kill()                       # SIGKILL: no chance to flush anything
            broker.proc.wait(10)
            kills.append((generation, acks, dones))
            broker.close()
            broker = None
            if generation == DUR_ROUNDS:
                run.stop.set()                   # the final broker gets no load: only checks
        run.stop.set()
        with run.cond:
            run.cond.notify_all()
        for thread in threads:
            thread.join(10)
        assert not any(t.is_alive() for t in threads), \
            f"[{impl}] load threads did not stop: {[t.name for t in threads if t.is_alive()]}"
        assert not run.errors, f"[{impl}] {len(run.errors)} error(s) under load: {run.errors[:10]}"
        _check_durable_state(impl, run, broker, kills)
    finally:
        run.stop.set()
        with run.cond:
            run.cond.notify_all()
        for thread in threads:
            thread.join(5)
        if broker is not None:
            broker.close()


def _check_durable_state(impl, run, broker, kills):
    deadline = run.deadline + 30
    acked, done_ok = run.acked, run.done_ok
    # ids keep increasing: every generation's ids are above all earlier generations' ids
    top = 0
    for generation in sorted(run.acked_in):
        ids = run.acked_in[generation]
        assert min(ids) > top, (f"[{impl}] generation {generation} acknowledged id {min(ids)}, "
                                f"expected ids above {top} (acknowledged before the restart)")
        top = max(top, max(ids))
    # a job fetched under any generation always carries its one text
    texts_seen = {}
    for job, text, generation in run.fetched:
        first = texts_seen.setdefault(job, (text, generation))
        assert first[0] == text, (f"[{impl}] job {job} handed out as {first[0]!r} (generation "
                                  f"{first[1]}) and as {text!r} (generation {generation})")
        if job in acked:
            assert acked[job][0] == text, (f"[{impl}] job {job}: acknowledged with text "
                                           f"{acked[job][0]!r}, handed out as {text!r}")
        else:
            assert text in run.in_doubt, (f"[{impl}] job {job} handed out with text {text!r} that "
                                          "no client ever sent")
    client = LineConnection(run.ports[0], timeout=10)
    worker = LineConnection(run.ports[1], timeout=10)
    try:
        stats = parse_stats(client.request("STATS"))
        assert stats["running"] == 0, f"[{impl}] fresh broker: expected running=0, got {stats}"
        probe = client.request("JOB final probe")
        assert probe.startswith("ID ") and int(probe[3:]) > top, \
            f"[{impl}] a JOB after the last restart: expected an id above {top}, got {probe!r}"
        # done_ok may hold ids never acknowledged: the broker committed the JOB, a
        # worker fetched and completed it, and it died before the ID went out.
        states = statuses(client, sorted(set(acked) | set(done_ok)), deadline)
        lost = {i: s for i, s in states.items() if s not in ("waiting", "completed")}
        assert not lost, (f"[{impl}] acknowledged jobs neither waiting nor completed after "
                          f"{len(kills)} kill -9: {dict(list(lost.items())[:20])}")
        undone = {i: states[i] for i in done_ok if states[i] != "completed"}
        assert not undone, (f"[{impl}] jobs whose DONE got OK are not completed after the "
                            f"restarts: {dict(list(undone.items())[:20])}")
        drained = {}
        while True:
            reply = worker.request("FETCH", timeout=10)
            if reply == "NOJOB":
                break
            words = reply.split(" ", 2)
            assert words[0] == "JOB" and len(words) == 3, f"FETCH: expected JOB or NOJOB, got {reply!r}"
            drained[int(words[1])] = words[2]
            worker.request(f"DONE {words[1]}")
        probe_id = int(probe[3:])
        assert drained.pop(probe_id, None) == "final probe", \
            f"[{impl}] the probe job {probe_id} was not handed out with its text"
        for job, text in drained.items():
            if job in acked:
                assert text == acked[job][0], (f"[{impl}] job {job}: acknowledged as "
                                               f"{acked[job][0]!r}, restored as {text!r}")
            else:
                assert text in run.in_doubt, f"[{impl}] restored job {job} has unknown text {text!r}"
        waiting = {i for i, s in states.items() if s == "waiting"}
        missing = sorted(waiting - set(drained))
        assert not missing, f"[{impl}] jobs said waiting but not handed out: {missing[:20]}"
        back = sorted(set(drained) & set(done_ok))
        assert not back, f"[{impl}] jobs completed (DONE got OK) handed out again: {back}"
        print(f"\ndurable kill -9 [{impl}]: {len(kills)} kills (round: acks, dones "
              f"{[(a, d) for _, a, d in kills]}); {len(acked)} ids acknowledged, "
              f"{len(done_ok)} DONEs OK'd, {len(run.in_doubt)} JOBs and {len(run.done_in_doubt)} "
              f"DONEs in doubt; lost 0, ids reused 0, completed jobs back 0; "
              f"{len(drained)} waiting at the end, all with their text")
    finally:
        client.close()
        worker.close()


# -- 3. broker restart under connected workers ------------------------------------------

RS_DEADLINE = 60.0
RS_WORKERS = 2


@pytest.mark.parametrize("store", ["memory", "sqlite"])
@pytest.mark.parametrize("impl", IMPLS, ids=IDS)
def test_broker_restart_with_workers_connected(impl, store, tmp_path):
    """Kill -9 the broker under two real workers, start it again on the same
    ports: the workers reconnect by themselves and the queue drains. With
    sqlite, the jobs running at the crash are done after it."""
    deadline = time.monotonic() + RS_DEADLINE
    options = () if store == "memory" else ("--store", f"sqlite:{tmp_path / 'jobs.db'}")
    broker = syslog = output = client = None
    workers = []

    def wait_for(what, predicate):
        """Read syslog until predicate(pid, text) says all is seen."""
        while not predicate(None, None):
            event = syslog.next(deadline)
            assert event is not None, (
                f"[{impl}/{store}] no {what} within {RS_DEADLINE:.0f} s; broker running "
                f"{broker.running() if broker else None}; workers running "
                f"{[w.running() for w in workers]}")
            predicate(*event)

    try:
        broker = Broker(impl, *options)
        ports = (broker.client_port, broker.worker_port)
        syslog = SyslogListener()
        output = udp_sink()
        for _ in range(RS_WORKERS):
            workers.append(start_worker(impl, broker.worker_port, output.getsockname()[1],
                                        syslog.port, *WORKER_OPTIONS))
        pids = {w.pid for w in workers}
        client = LineConnection(broker.client_port)
        before = submit_all(client, [f"before restart {k} a b c" for k in range(10)], deadline)
        long_jobs = []
        if store == "sqlite":
            # Two jobs long enough (1 s each) to be running when the broker dies.
            long_jobs = submit_all(client, [" ".join(["slow"] * 200)] * RS_WORKERS, deadline)
        started = set()

        def note_start(pid, text):
            if text is not None and text.startswith("starting job "):
                started.add(int(text.split()[2]))
            return set(long_jobs) <= started
        await_completions(syslog, before, deadline, pids, note_start)
        wait_for("start of the long jobs", note_start)
        client.close()
        client = None

        broker.proc.kill()
        broker.proc.wait(10)
        broker.close()
        broker = None
        lost = set()

        def losses(pid, text):
            if text is not None and pid in pids and "lost" in text and "connection to broker" in text:
                lost.add(pid)
            return lost == pids
        wait_for("'connection to broker ... lost' from every worker", losses)

        broker = start_broker(impl, *options, ports=ports)
        reconnected = set()

        def reconnects(pid, text):
            if text is not None and pid in pids and text.startswith("connected to broker"):
                reconnected.add(pid)
            return reconnected == pids
        wait_for("'connected to broker' from every worker after the restart", reconnects)

        client = LineConnection(broker.client_port)
        after = submit_all(client, [f"after restart {k} d e" for k in range(20)], deadline)
        if store == "sqlite":
            assert min(after) > max(before + long_jobs), \
                f"[{impl}/sqlite] ids after the restart {after} should follow those before"
        await_completions(syslog, after + long_jobs, deadline, pids)
        final = statuses(client, after + long_jobs + (before if store == "sqlite" else []), deadline)
        assert_all(final, "completed", f"[{impl}/{store}] after the broker restart")
        stats_line = client.request("STATS")
        stats = parse_stats(stats_line)
        assert (stats["waiting"], stats["running"], stats["workers"]) == (0, 0, RS_WORKERS), \
            f"[{impl}/{store}] expected waiting=0 running=0 workers={RS_WORKERS}, got {stats_line!r}"
        assert all(w.running() for w in workers), "a worker exited during the broker restart"
        print(f"\nbroker restart [{impl}/{store}]: kill -9 under {RS_WORKERS} connected workers, "
              f"restarted on the same ports, both reconnected; {len(after)} jobs submitted after "
              f"the restart" + (f" and {len(long_jobs)} running at the crash" if long_jobs else "")
              + " all completed; lost 0")
    finally:
        if client is not None:
            client.close()
        for w in workers:
            w.close()
        for thing in (output, syslog, broker):
            if thing is not None:
                thing.close()
