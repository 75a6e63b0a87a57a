"""Hostile input and limits on the wire, for both brokers.

- a client that sends many requests and never reads its replies: the select
  broker drops it once more than --max-output bytes wait for it; the threads
  broker blocks only that connection's thread. Other clients are served
  normally meanwhile;
- a line left unfinished gets ERR IDLE_TIMEOUT after --idle-timeout and is
  closed; a quiet connection with no partial line is not;
- --max-waiting 3: the fourth waiting job gets ERR QUEUE_FULL;
- --token-file: no AUTH, a wrong token, the right token, on both ports; a
  worker started with the token does a job end to end;
- a 10 MB line without LF does not grow the broker's memory (VmRSS);
- --max-memory (issue 10, kind 8): 60 KB jobs are accepted exactly until
  their bytes fill three quarters of the budget, then ERR QUEUE_FULL, and
  again after one is done (VmRSS stays near the count); connections holding
  unfinished lines share the budget (those that do not fit get ERR
  MEMORY_FULL); a client that never reads is dropped once its unsent replies
  pass the budget, even under a large --max-output;
- --auth-timeout (kind 9): a connection that never authenticates gets ERR
  AUTH_TIMEOUT and is closed; an authenticated one stays;
- the start-up line states the memory budget (default: a quarter of RAM)
  and, with a token, the auth timeout.

Each test has a deadline and waits for replies, datagrams or the peer's
close; none sleeps to synchronise.
"""

import select
import socket
import struct
import threading
import time

import pytest

from core.broker import DEFAULT_AUTH_TIMEOUT, JOB_OVERHEAD, JOB_SHARE, LINE_OVERHEAD, default_max_memory
from tests.support import (
    IMPLS,
    Broker,
    Process,
    LineConnection,
    SyslogListener,
    Wire,
    await_completions,
    parse_stats,
    proc_status_kb,
    read_until_closed,
    start_worker,
    udp_sink,
)

IDS = [impl.split("_", 1)[1] for impl in IMPLS]
DEADLINE = 30.0


def await_stats(conn, predicate, deadline):
    """Ask STATS until ``predicate(stats dict)`` holds (each reply is the event
    waited for); the last STATS line. Fails with it at ``deadline``."""
    while True:
        line = conn.request("STATS")
        if predicate(parse_stats(line)):
            return line
        assert time.monotonic() < deadline, f"STATS never reached the expected state; last {line!r}"


def expect_err(line, code):
    assert line == f"ERR {code}" or line.startswith(f"ERR {code} "), \
        f"expected 'ERR {code} ...', got {line!r}"


# -- a client that never reads -----------------------------------------------------------

HOG_CHUNK = b"STATS\n" * 10000        # 60 kB of requests, about 700 kB of replies
HOG_CAP = 256 * 1024 * 1024           # bytes the hog sends at most
HOG_STALL = 1.0                       # seconds unwritable that count as "blocked"
MAX_OUTPUT = 1024 * 1024              # --max-output: replies the select broker holds for it


def hog(port, result):
    """Send STATS lines without ever reading; stop when dropped, blocked or at the cap."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setblocking(False)
    result["sock"] = sock
    sent = 0
    try:
        while sent < HOG_CAP and not result["stop"].is_set():
            if not select.select([], [sock], [], HOG_STALL)[1]:
                result["outcome"] = "blocked"
                break
            try:
                sent += sock.send(HOG_CHUNK)
            except BlockingIOError:
                continue
            except OSError as error:
                result["outcome"] = f"dropped ({error.strerror or error})"
                break
            result["sent"] = sent
        else:
            result.setdefault("outcome", "cap reached" if sent >= HOG_CAP else "stopped")
    finally:
        result["sent"] = sent
        result["done"].set()


@pytest.mark.parametrize("impl", IMPLS, ids=IDS)
@pytest.mark.parametrize("options", [("--max-output", str(MAX_OUTPUT)),
                                     ("--max-output", str(1 << 30), "--max-memory", str(MAX_OUTPUT))],
                         ids=["max-output", "max-memory"])
def test_client_that_never_reads(impl, options):
    deadline = time.monotonic() + DEADLINE
    broker = good = None
    result = {"stop": threading.Event(), "done": threading.Event(), "sent": 0}
    thread = None
    try:
        broker = Broker(impl, *options)
        good = LineConnection(broker.client_port)
        thread = threading.Thread(target=hog, args=(broker.client_port, result), daemon=True)
        thread.start()
        served_during = 0
        while not result["done"].is_set():       # other clients are served meanwhile
            reply = good.request(f"JOB while the hog sends {served_during}")
            assert reply.startswith("ID "), f"[{impl}] while a client does not read: JOB " \
                                            f"expected 'ID <n>', got {reply!r}"
            assert good.request(f"STATUS {reply[3:]}") == "waiting"
            served_during += 1
            assert time.monotonic() < deadline, f"[{impl}] the hog thread did not end in time: {result}"
        outcome = result["outcome"]
        if impl == "impl_select":
            assert outcome.startswith("dropped"), (
                f"[{impl}] a client that never reads: expected it dropped past {options}, "
                f"got {outcome} after sending {result['sent']} bytes")
        else:
            assert outcome == "blocked" or outcome.startswith("dropped"), (
                f"[{impl}] a client that never reads: expected its sends to stall (its thread "
                f"blocked) or it dropped, got {outcome} after {result['sent']} bytes")
        for k in range(20):                          # and after it
            reply = good.request(f"JOB after the hog {k}")
            assert reply.startswith("ID "), f"[{impl}] after the hog: expected 'ID <n>', got {reply!r}"
        expected_clients = 1 if outcome.startswith("dropped") else 2
        await_stats(good, lambda s: s["clients"] == expected_clients, deadline)
        print(f"\nnever-reading client [{impl}, {options}]: {outcome} after {result['sent']} bytes sent; "
              f"{served_during} JOB+STATUS round trips of another client meanwhile")
    finally:
        result["stop"].set()
        if thread is not None:
            thread.join(5)
        if "sock" in result:
            result["sock"].close()
        if good is not None:
            good.close()
        if broker is not None:
            broker.close()


# -- an idle partial line ------------------------------------------------------------------

# Found a bug once (impl_threads answered the timed-out partial line when its
# reader woke with EOF); the core now drops such a line.
IDLE_PARAMS = ["impl_select", "impl_threads"]


@pytest.mark.parametrize("impl", IDLE_PARAMS)
def test_idle_partial_line_times_out(impl):
    deadline = time.monotonic() + DEADLINE
    broker = quiet = stalled = None
    try:
        broker = Broker(impl, "--idle-timeout", "0.5")
        quiet = LineConnection(broker.client_port)          # connected, says nothing
        stalled = socket.create_connection(("127.0.0.1", broker.client_port), timeout=10)
        stalled.sendall(b"JOB never finished")
        data = read_until_closed(stalled, deadline)
        lines = data.decode(errors="replace").splitlines()
        assert len(lines) == 1, f"[{impl}] expected one line then the close, got {data!r}"
        expect_err(lines[0], "IDLE_TIMEOUT")
        # The quiet one is still served; the threads broker counts the closed
        # connection out just after closing it, so ask until it has.
        stats_line = await_stats(quiet, lambda s: s["clients"] == 1, deadline)
        assert parse_stats(stats_line)["waiting"] == 0, \
            f"[{impl}] after the idle close: expected waiting=0, got {stats_line!r}"
    finally:
        for thing in (quiet, stalled, broker):
            if thing is not None:
                thing.close()


# -- --max-waiting --------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS, ids=IDS)
def test_max_waiting_queue_full(impl):
    broker = client = worker = None
    try:
        broker = Broker(impl, "--max-waiting", "3")
        client = LineConnection(broker.client_port)
        for n in (1, 2, 3):
            assert client.request(f"JOB job {n}") == f"ID {n}", f"[{impl}] JOB {n}: expected ID {n}"
        expect_err(client.request("JOB job 4"), "QUEUE_FULL")
        expect_err(client.request("JOB job 5"), "QUEUE_FULL")
        stats_line = client.request("STATS")
        assert parse_stats(stats_line)["waiting"] == 3, f"expected waiting=3, got {stats_line!r}"
        worker = LineConnection(broker.worker_port)
        assert worker.request("FETCH") == "JOB 1 job 1"
        reply = client.request("JOB job 6")
        assert reply == "ID 4", f"[{impl}] after a FETCH freed a place: expected ID 4, got {reply!r}"
        expect_err(client.request("JOB job 7"), "QUEUE_FULL")
        assert client.request("STATUS 5") == "unknown", "a refused JOB must not take an id"
    finally:
        for thing in (client, worker, broker):
            if thing is not None:
                thing.close()


# -- --token-file ---------------------------------------------------------------------------

TOKEN = "s3cret-token-for-tests"


@pytest.mark.parametrize("impl", IMPLS, ids=IDS)
def test_token_file(impl, tmp_path):
    deadline = time.monotonic() + DEADLINE
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    broker = syslog = output = worker = good = None
    try:
        broker = Broker(impl, "--token-file", token_file)
        for port_name, port, request in (("client", broker.client_port, "JOB sneaky"),
                                         ("worker", broker.worker_port, "FETCH")):
            for first, code in ((request, "AUTH_REQUIRED"), ("AUTH wrong-token", "AUTH_FAILED"),
                                (f"AUTH {TOKEN}x", "AUTH_FAILED"), ("AUTH", "AUTH_FAILED")):
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                try:
                    sock.sendall(f"{first}\nSTATS\n".encode())
                    data = read_until_closed(sock, deadline).decode(errors="replace")
                finally:
                    sock.close()
                lines = data.splitlines()
                assert len(lines) == 1, (f"[{impl}] {port_name} port, {first!r}: expected one ERR "
                                         f"{code} line and the close, got {data!r}")
                expect_err(lines[0], code)
        good = LineConnection(broker.client_port)
        assert good.request(f"AUTH {TOKEN}") == "OK"
        stats = parse_stats(good.request("STATS"))
        assert stats["waiting"] == 0, f"[{impl}] refused connections queued jobs: {stats}"

        syslog = SyslogListener()
        output = udp_sink()
        worker = start_worker(impl, broker.worker_port, output.getsockname()[1], syslog.port,
                              "--word-delay", "0.005", "--fetch-interval", "0.05",
                              "--token-file", token_file)
        reply = good.request("JOB with a token")
        assert reply.startswith("ID "), f"[{impl}] authenticated JOB: expected ID, got {reply!r}"
        job = int(reply[3:])
        seen = []

        def no_auth_trouble(pid, text):
            seen.append(text)
            assert "AUTH" not in text, f"[{impl}] worker with the right token logged {text!r}"
        await_completions(syslog, [job], deadline, {worker.pid}, no_auth_trouble)
        assert good.request(f"STATUS {job}") == "completed"
    finally:
        for thing in (worker, good, output, syslog, broker):
            if thing is not None:
                thing.close()


# -- a 10 MB line without LF ----------------------------------------------------------------

HUGE = 10 * 1024 * 1024
RSS_GROWTH_KB = 5 * 1024


@pytest.mark.parametrize("impl", IMPLS, ids=IDS)
def test_huge_line_does_not_grow_memory(impl):
    deadline = time.monotonic() + DEADLINE
    broker = probe = None
    try:
        broker = Broker(impl)
        probe = Wire(broker.client_port)
        assert probe.request("JOB warm up").startswith("ID ")   # code paths loaded before measuring
        before = proc_status_kb(broker.pid)
        sock = socket.create_connection(("127.0.0.1", broker.client_port), timeout=10)
        sock.setblocking(False)
        payload = memoryview(b"JOB " + b"x" * (HUGE - 4))
        sent, received = 0, bytearray()
        closed = False
        try:
            while not closed:
                assert time.monotonic() < deadline, \
                    f"[{impl}] 10 MB line: no close in time; sent {sent}, got {bytes(received)!r}"
                want_write = [sock] if sent < len(payload) else []
                readable, writable, _ = select.select([sock], want_write, [], 1.0)
                if readable:
                    try:
                        chunk = sock.recv(65536)
                    except ConnectionError:
                        chunk = b""
                    received += chunk
                    closed = not chunk
                if writable and not closed:
                    try:
                        sent += sock.send(payload[sent:sent + 1024 * 1024])
                    except BlockingIOError:
                        pass
                    except OSError:
                        closed = True
        finally:
            sock.close()
        lines = received.decode(errors="replace").splitlines()
        assert lines, f"[{impl}] 10 MB line: expected ERR LINE_TOO_LONG before the close, got nothing"
        expect_err(lines[0], "LINE_TOO_LONG")
        stats = parse_stats(probe.request("STATS"))     # served, and after the long line
        after = proc_status_kb(broker.pid)
        assert after - before < RSS_GROWTH_KB, (
            f"[{impl}] broker VmRSS grew by {after - before} kB with a 10 MB line without LF "
            f"(before {before} kB, after {after} kB); expected under {RSS_GROWTH_KB} kB")
        assert stats["waiting"] == 1, f"[{impl}] expected only the warm-up job waiting, got {stats}"
        print(f"\n10 MB line [{impl}]: {sent} bytes sent before the close, VmRSS {before} -> "
              f"{after} kB ({after - before:+d} kB)")
    finally:
        for thing in (probe, broker):
            if thing is not None:
                thing.close()


# -- --max-memory: bytes, not items ------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS, ids=IDS)
def test_startup_line_states_the_memory_budget_and_auth_timeout(impl, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    for options, expected in (((), f"max memory {default_max_memory()} bytes"),
                              (("--max-memory", "1000000"), "max memory 1000000 bytes"),
                              (("--token-file", token_file),
                               f"auth timeout {DEFAULT_AUTH_TIMEOUT:g} s")):
        broker = Process(f"{impl}.broker", 0, 0, *options)
        try:
            line = broker.startup_line()
        finally:
            broker.close()
        assert expected in line, f"[{impl}] {options}: expected {expected!r} in the start-up line {line!r}"


BIG_JOB = 60_000              # bytes of text per job, as in the issue
JOB_BUDGET = 16 << 20         # --max-memory for the job flood


def job_line(k):
    """A JOB line with BIG_JOB bytes of text, distinct per ``k``."""
    return f"JOB {k:08d}{'x' * (BIG_JOB - 8)}"


@pytest.mark.parametrize("impl", IMPLS, ids=IDS)
def test_memory_budget_refuses_big_jobs(impl):
    broker = client = worker = None
    fits = int(JOB_BUDGET * JOB_SHARE) // (BIG_JOB + JOB_OVERHEAD)
    try:
        broker = Broker(impl, "--max-memory", JOB_BUDGET)
        client = LineConnection(broker.client_port)
        assert client.request("STATS").startswith("STATS ")     # code paths loaded before measuring
        before = proc_status_kb(broker.pid)
        accepted, reply = 0, ""
        for k in range(fits + 10):                 # bounded: a few past where it must refuse
            reply = client.request(job_line(k))
            if not reply.startswith("ID "):
                break
            accepted += 1
        expect_err(reply, "QUEUE_FULL")
        after = proc_status_kb(broker.pid)
        assert accepted == fits, (f"[{impl}] --max-memory {JOB_BUDGET}: expected {fits} jobs of "
                                  f"{BIG_JOB} bytes accepted, got {accepted}")
        assert (after - before) * 1024 < JOB_BUDGET, (
            f"[{impl}] broker VmRSS grew by {after - before} kB holding {accepted} jobs of "
            f"{BIG_JOB} bytes; expected under the budget of {JOB_BUDGET >> 10} kB")
        worker = LineConnection(broker.worker_port)
        assert worker.request("FETCH").startswith("JOB 1 ")
        assert worker.request("DONE 1") == "OK"
        reply = client.request(job_line(fits))
        assert reply == f"ID {fits + 1}", (f"[{impl}] after a job was done: expected "
                                           f"'ID {fits + 1}', got {reply[:80]!r}")
        print(f"\nmemory budget [{impl}]: --max-memory {JOB_BUDGET}: {accepted} jobs of {BIG_JOB} "
              f"bytes accepted, then ERR QUEUE_FULL; VmRSS {before} -> {after} kB "
              f"(+{after - before} kB for {accepted * (BIG_JOB + JOB_OVERHEAD) >> 10} kB counted)")
    finally:
        for thing in (client, worker, broker):
            if thing is not None:
                thing.close()


LINE_BUDGET = 16 << 20        # --max-memory for the unfinished lines (4 MiB for buffers)
HOLDERS = 120                 # connections, each sending BIG_JOB bytes without LF


@pytest.mark.parametrize("impl", IMPLS, ids=IDS)
def test_unfinished_lines_share_the_memory_budget(impl):
    deadline = time.monotonic() + DEADLINE
    broker = probe = None
    socks = []
    fits = (LINE_BUDGET - int(LINE_BUDGET * JOB_SHARE)) // (BIG_JOB + LINE_OVERHEAD)
    try:
        broker = Broker(impl, "--max-memory", LINE_BUDGET)
        probe = LineConnection(broker.client_port)
        before = proc_status_kb(broker.pid)
        line = job_line(0).encode()
        for _ in range(HOLDERS):
            sock = socket.create_connection(("127.0.0.1", broker.client_port), timeout=10)
            sock.sendall(line)                    # no LF: the broker holds it
            socks.append(sock)
        refused = {}                              # the refused ones answer, then close
        while len(refused) < HOLDERS - fits and time.monotonic() < deadline:
            pending = [sock for sock in socks if sock not in refused]
            for sock in select.select(pending, [], [], 1.0)[0]:
                refused[sock] = sock.recv(4096).decode(errors="replace")
        stats = await_stats(probe, lambda s: s["clients"] == fits + 1, deadline)
        refused = list(refused.values())
        after = proc_status_kb(broker.pid)
        assert len(refused) == HOLDERS - fits and all(
            r.startswith("ERR MEMORY_FULL ") for r in refused), (
            f"[{impl}] {HOLDERS} unfinished lines of {BIG_JOB} bytes, --max-memory {LINE_BUDGET}: "
            f"expected {fits} held and {HOLDERS - fits} refused with ERR MEMORY_FULL, got "
            f"{len(refused)} refused: {refused[:3]}")
        for sock in socks:
            # A reset, not a FIN: at EOF the broker would answer the unfinished line.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        socks = []
        await_stats(probe, lambda s: s["clients"] == 1, deadline)
        reply = probe.request(job_line(1))
        assert reply == "ID 1", f"[{impl}] once those connections closed: expected ID 1, got {reply!r}"
        assert parse_stats(probe.request("STATS"))["waiting"] == 1, "no unfinished line became a job"
        print(f"\nunfinished lines [{impl}]: {HOLDERS} x {BIG_JOB} bytes, --max-memory "
              f"{LINE_BUDGET}: {fits} held, {len(refused)} got ERR MEMORY_FULL; {stats}; VmRSS "
              f"{before} -> {after} kB (+{after - before} kB)")
    finally:
        for sock in socks:
            sock.close()
        for thing in (probe, broker):
            if thing is not None:
                thing.close()


# -- --auth-timeout ------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS, ids=IDS)
def test_connection_that_never_authenticates_is_closed(impl, tmp_path):
    deadline = time.monotonic() + DEADLINE
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    broker = good = silent = None
    try:
        broker = Broker(impl, "--token-file", token_file, "--auth-timeout", "0.5")
        good = LineConnection(broker.client_port)
        assert good.request(f"AUTH {TOKEN}") == "OK"
        silent = socket.create_connection(("127.0.0.1", broker.client_port), timeout=10)
        data = read_until_closed(silent, deadline).decode(errors="replace")
        lines = data.splitlines()
        assert len(lines) == 1, f"[{impl}] expected one ERR AUTH_TIMEOUT line then the close, got {data!r}"
        expect_err(lines[0], "AUTH_TIMEOUT")
        reply = good.request("JOB authenticated before the timeout")
        assert reply == "ID 1", f"[{impl}] the authenticated connection: expected ID 1, got {reply!r}"
    finally:
        for thing in (good, silent, broker):
            if thing is not None:
                thing.close()
