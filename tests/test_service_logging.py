"""What the broker and the worker say on stderr (--log-level; README "Running as
a service"): a worker with no broker says so once per outage and again when
the broker is back; the broker at debug tells every connection and job, at
the default level none of them; SIGINT and SIGTERM end every program with
one line saying it stopped (and what it held) and exit status 0; a bad
--log-level is a one-line usage error. Every wait is on a line arriving."""

import re
import signal
import sqlite3
import time

import pytest

from shell.store import open_store
from tests.support import IMPLS, Broker, LineConnection, Process, SyslogListener
from tests.test_startup_errors import assert_one_line, closed_port, run

IDS = [impl.split("_", 1)[1] for impl in IMPLS]
TIMEOUT = 15.0
# The file-size limit (bytes) under which a store fails at its first big job.
STORE_FSIZE = 32768
PEER = r"127\.0\.0\.1:\d+"


@pytest.fixture
def syslog():
    listener = SyslogListener()
    yield listener
    listener.close()


def syslog_until(syslog, text, deadline_seconds=TIMEOUT):
    """Read the workers' syslog until a message equal to ``text``; fail at the deadline."""
    deadline = time.monotonic() + deadline_seconds
    seen = []
    while True:
        event = syslog.next(deadline)
        assert event is not None, f"expected syslog message {text!r}, got {seen}"
        seen.append(event[1])
        if event[1] == text:
            return


def worker(impl, broker_port, syslog, *options):
    proc = Process(f"{impl}.worker", f"127.0.0.1:{broker_port}", closed_port(), syslog.port,
                   *options, stderr_pipe=True)
    proc.startup_line()
    return proc


@pytest.mark.parametrize("slots", [1, 3], ids=["1-slot", "3-slots"])
@pytest.mark.parametrize("impl", IMPLS, ids=IDS)
def test_worker_says_cannot_connect_once_per_outage_then_connected(impl, slots, syslog):
    """No broker: one "cannot connect" line however often it retries (and
    however many --concurrency slots retry), then one "connected" when a
    broker appears on that port."""
    port = closed_port()
    proc = worker(impl, port, syslog, "--concurrency", slots)
    broker = None
    try:
        proc.stderr_line(rf"workq worker: error: cannot connect to broker 127\.0\.0\.1:{port}: "
                         r"Connection refused; retrying in 1 s")
        # The second attempt (syslog hears of every one), then the broker appears.
        syslog_until(syslog, f"cannot connect to broker 127.0.0.1:{port}: Connection refused; "
                             "retrying in 2 s")
        broker = Broker("impl_select", "--log-level", "debug", ports=(0, port),
                        stderr_pipe=True)
        proc.stderr_line(rf"workq worker: connected to broker 127\.0\.0\.1:{port}")
        for _ in range(slots):       # every slot is back
            broker.stderr_line(rf"workq broker: debug: accepted worker {PEER}")
        proc.proc.send_signal(signal.SIGTERM)
        proc.stderr_to_exit()
        said = proc.stderr_lines
        assert said == [f"workq worker: error: cannot connect to broker 127.0.0.1:{port}: "
                        "Connection refused; retrying in 1 s",
                        f"workq worker: connected to broker 127.0.0.1:{port}",
                        "workq worker: stopped"], \
            f"expected one 'cannot connect' line for the outage and one 'connected', got {said}"
    finally:
        proc.close()
        if broker is not None:
            broker.close()


def exchange(broker):
    """A client submits job 1; a worker takes it and drops the connection (the job
    is requeued), another (waiting with FETCH 10 until then) takes it and
    completes it."""
    client = LineConnection(broker.client_port)
    try:
        assert client.request("JOB alpha beta") == "ID 1"
    finally:
        client.close()
    first = LineConnection(broker.worker_port)
    assert first.request("FETCH") == "JOB 1 alpha beta"
    first.close()
    second = LineConnection(broker.worker_port)
    try:
        reply = second.request("FETCH 10")      # answered once the job is back
        assert reply == "JOB 1 alpha beta", f"expected the requeued job 1, got {reply!r}"
        assert second.request("DONE 1") == "OK"
    finally:
        second.close()


@pytest.mark.parametrize("impl", IMPLS, ids=IDS)
def test_broker_at_debug_tells_every_connection_and_job(impl):
    """Each connection accepted and closed (role, address), and each step of the
    job, in the job's order (connections of the threads broker may interleave)."""
    broker = Broker(impl, "--log-level", "debug", stderr_pipe=True)
    try:
        exchange(broker)
        for _ in range(3):      # the client's and both workers' connections end
            broker.stderr_line(r"workq broker: debug: closed .*")
        lines = [line.removeprefix("workq broker: debug: ") for line in broker.stderr_lines]
        job = [line for line in lines if line.startswith("job 1 ")]
        expected = [rf"job 1 submitted by client {PEER} \(10 bytes\)",
                    rf"job 1 handed to worker {PEER}",
                    rf"job 1 requeued: holder lost \(worker {PEER}\), delivery 1 of 20 "
                    r"without DONE",
                    rf"job 1 handed to worker {PEER}",
                    rf"job 1 completed by worker {PEER}"]
        assert len(job) == len(expected) and all(map(re.fullmatch, expected, job)), \
            f"expected the job's lines {expected}, got {job}"
        connections = sorted(re.sub(r"\d+$|:\d+ ", ":N ", line + " ").strip()
                             for line in lines if not line.startswith("job "))
        assert connections == sorted(
            ["accepted client 127.0.0.1:N", "closed client 127.0.0.1:N",
             "accepted worker 127.0.0.1:N", "closed worker 127.0.0.1:N (it held job 1)",
             "accepted worker 127.0.0.1:N", "closed worker 127.0.0.1:N"]), \
            f"expected each connection accepted and closed once, got {lines}"
    finally:
        broker.close()


@pytest.mark.parametrize("impl", IMPLS, ids=IDS)
def test_broker_at_debug_tells_leases_burials_and_kicks(impl):
    """A lease that runs out, the delivery that buries the job, the KICK that
    brings it back: one debug line each."""
    broker = Broker(impl, "--log-level", "debug", "--lease", "0.5", "--max-deliveries", "2",
                    stderr_pipe=True)
    connections = []
    try:
        client = LineConnection(broker.client_port)
        connections.append(client)
        assert client.request("JOB poison") == "ID 1"
        hung = LineConnection(broker.worker_port)
        connections.append(hung)
        assert hung.request("FETCH") == "JOB 1 poison"
        assert hung.request("TOUCH 1") == "OK"        # leased: it then says nothing more
        broker.stderr_line(rf"workq broker: debug: job 1 requeued: lease expired \(worker "
                           rf"{PEER}\), delivery 1 of 2 without DONE")
        crashing = LineConnection(broker.worker_port)
        assert crashing.request("FETCH") == "JOB 1 poison"
        crashing.close()
        broker.stderr_line(rf"workq broker: debug: job 1 buried: holder lost \(worker {PEER}\), "
                           r"2 deliveries without DONE")
        assert client.request("KICK 1") == "OK"
        broker.stderr_line(rf"workq broker: debug: job 1 kicked back to waiting by client {PEER}")
    finally:
        for conn in connections:
            conn.close()
        broker.close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("impl", IMPLS, ids=IDS)
def test_broker_stops_with_one_line_and_none_per_connection(impl, sig):
    """Default level: nothing for the connections and jobs of a whole exchange;
    on the signal one line saying what it held, exit status 0."""
    broker = Broker(impl, stderr_pipe=True)
    try:
        exchange(broker)
        client = LineConnection(broker.client_port)
        assert client.request("JOB left behind") == "ID 2"
        client.close()
        broker.proc.send_signal(sig)
        status = broker.stderr_to_exit()
        assert (status, broker.stderr_lines) == (
            0, ["workq broker: stopped: 1 waiting and 0 running jobs lost (store memory)"]), \
            f"expected exit 0 and only the stop line, got exit {status}, {broker.stderr_lines}"
    finally:
        broker.close()


@pytest.mark.parametrize("impl", IMPLS, ids=IDS)
def test_broker_with_a_store_says_its_jobs_are_kept(impl, tmp_path):
    store = f"sqlite:{tmp_path / 'jobs.db'}"
    broker = Broker(impl, "--store", store, stderr_pipe=True)
    try:
        client = LineConnection(broker.client_port)
        assert client.request("JOB kept") == "ID 1"
        client.close()
        broker.proc.send_signal(signal.SIGTERM)
        status = broker.stderr_to_exit()
        expected = (f"workq broker: stopped: 1 waiting and 0 running jobs kept in {store}, "
                    "all waiting at the next start; 0 completed, 0 buried")
        assert (status, broker.stderr_lines) == (0, [expected]), \
            f"expected exit 0 and {expected!r}, got exit {status}, {broker.stderr_lines}"
    finally:
        broker.close()


@pytest.mark.parametrize("impl", IMPLS, ids=IDS)
def test_broker_with_a_store_stops_cleanly_as_a_worker_drops_its_job(impl, tmp_path):
    """A worker holding a job disconnects just as the broker is stopped: the
    threads broker closed the store while the worker's thread still requeued
    the job into it (exit 1 "Cannot operate on a closed database", once a
    SIGSEGV). A race: ten stops, each after the same events."""
    store = f"sqlite:{tmp_path / 'jobs.db'}"
    for attempt in range(10):
        broker = Broker(impl, "--store", store, stderr_pipe=True)
        try:
            client = LineConnection(broker.client_port)
            assert client.request(f"JOB held {attempt}").startswith("ID "), "no ID"
            client.close()
            worker = LineConnection(broker.worker_port)
            reply = worker.request("FETCH")
            assert reply.startswith("JOB "), f"expected a JOB for the FETCH, got {reply!r}"
            worker.close()
            broker.proc.send_signal(signal.SIGTERM)
            status = broker.stderr_to_exit()
            assert status == 0 and broker.stderr_lines and \
                broker.stderr_lines[-1].startswith("workq broker: stopped: "), \
                f"stop {attempt + 1}: expected exit 0 and the stopped line, got exit {status}, " \
                f"{broker.stderr_lines}"
        finally:
            broker.close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("impl", IMPLS, ids=IDS)
def test_worker_stops_with_the_job_it_abandoned(impl, sig, syslog):
    """A worker stopped mid-job says which job it abandoned and that it stopped,
    exit status 0; at the default level no per-job lines come before."""
    broker = Broker("impl_select")
    proc = worker(impl, broker.worker_port, syslog, "--word-delay", "60")
    try:
        client = LineConnection(broker.client_port)
        assert client.request("JOB slow words") == "ID 1"
        client.close()
        syslog_until(syslog, "starting job 1")
        proc.proc.send_signal(sig)
        status = proc.stderr_to_exit()
        expected = [f"workq worker: connected to broker 127.0.0.1:{broker.worker_port}",
                    "workq worker: abandoned job 1", "workq worker: stopped"]
        assert (status, proc.stderr_lines) == (0, expected), \
            f"expected exit 0 and {expected}, got exit {status}, {proc.stderr_lines}"
    finally:
        proc.close()
        broker.close()


@pytest.mark.parametrize("program", ["broker", "worker"])
@pytest.mark.parametrize("impl", IMPLS, ids=IDS)
def test_bad_log_level_is_a_usage_error(impl, program):
    proc = run(f"{impl}.{program}", "--log-level", "verbose")
    assert_one_line(proc, 2, "--log-level", "'verbose'", "'error', 'info', 'debug'")


@pytest.mark.parametrize("impl", IMPLS, ids=IDS)
def test_broker_whose_store_fails_says_so_and_exits_1(impl, tmp_path):
    """The store cannot commit (here: the file-size limit, RLIMIT_FSIZE, stops
    the write-ahead log from growing: EFBIG, which sqlite reports as a disk I/O
    error, as it would a failing disk): one error
    line, exit status 1 (systemd's Restart=on-failure brings it back), no
    traceback, and the job is never acknowledged."""
    path = tmp_path / "jobs.db"
    broker = Broker(impl, "--store", f"sqlite:{path}", stderr_pipe=True,
                    wrapper=("prlimit", f"--fsize={STORE_FSIZE}"))
    client = None
    try:
        client = LineConnection(broker.client_port)
        client.send("JOB " + "x" * 60000)      # more than STORE_FSIZE in the log
        status = broker.stderr_to_exit(timeout=TIMEOUT)
        expected = [f"workq broker: error: store sqlite:{path} failed: disk I/O error; "
                    "stopped (jobs acknowledged so far are on disk)"]
        assert (status, broker.stderr_lines) == (1, expected), \
            f"expected exit 1 and {expected}, got exit {status}, {broker.stderr_lines}"
        reply = client.read_line(eof_ok=True)
        assert reply is None, f"expected no ID for a job the store did not take, got {reply!r}"
    finally:
        if client is not None:
            client.close()
        broker.close()


def test_store_that_failed_a_commit_fails_every_later_sync(tmp_path):
    """The batch a failed commit held is gone from the pending lists: a later commit
    that succeeds (here the database is writable again) must not count it as on disk,
    or the threads broker, syncing again while it closes a connection, sent the ID of
    a job the store never took."""
    store = open_store(f"sqlite:{tmp_path / 'jobs.db'}")
    try:
        store.add(1, b"lost")
        store.db.execute("PRAGMA query_only = ON")       # the commit fails: read-only
        with pytest.raises(sqlite3.Error):
            store.sync()
        store.db.execute("PRAGMA query_only = OFF")
        store.add(2, b"after")
        with pytest.raises(sqlite3.Error):
            store.sync()
        assert store.synced == 0, f"expected nothing counted as synced, got {store.synced}"
    finally:
        store.db.close()


def test_second_broker_on_the_same_store_refuses_to_start(tmp_path):
    """Two brokers on one store file would hand out the same ids: the second
    one says the file is in use and exits 1 at start-up."""
    path = tmp_path / "jobs.db"
    first = Broker("impl_select", "--store", f"sqlite:{path}")
    try:
        second = run("impl_threads.broker", "0", "0", "--store", f"sqlite:{path}")
        assert second.returncode == 1 and "database is locked: another broker" in second.stderr, \
            f"expected exit 1 naming the lock, got {second.returncode}, {second.stderr!r}"
    finally:
        first.close()
