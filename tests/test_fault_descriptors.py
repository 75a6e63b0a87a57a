"""Descriptors: many connections, and running out of them.

- ``test_select_broker_holds_10000_connections``: the select broker (epoll,
  no 1,024 ceiling) serves 10,000 concurrent client connections, each of
  which gets an answer, and a new client is still served; STATS counts them.
  (The threads broker's ceiling is measured once by hand: RELIABILITY.md.)
- ``test_silent_connections_do_not_keep_a_client_out``: both brokers with a
  token and RLIMIT_NOFILE 256, 400 connections that never send anything
  (more than the broker can hold): an authenticated client still gets its
  ID, because the broker sheds silent connections to accept it (some of the
  silent ones see their connection closed without a reply).
- ``test_out_of_descriptors``: both brokers, with RLIMIT_NOFILE lowered to 64
  (soft and hard) once running: worker connections, each with a FETCH
  waiting (which the broker never sheds), are opened until accept fails; the
  broker neither crashes nor spins (its CPU time over a short window), and
  once some connections close the waiting ones and new ones are served.
"""

import resource
import selectors
import socket
import time

import pytest

from tests.support import (
    IMPLS,
    Broker,
    LineConnection,
    open_descriptors,
    parse_stats,
    proc_cpu_seconds,
    proc_status_kb,
)

IDS = [impl.split("_", 1)[1] for impl in IMPLS]
DEADLINE = 60.0


def raised_nofile(need):
    """Raise this process's soft RLIMIT_NOFILE to at least ``need`` (up to the hard
    limit); returns the old soft limit (skips if the hard limit is too low)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need} descriptors needed")
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need if hard == resource.RLIM_INFINITY
                                                    else hard, hard))
    return soft


def answers(socks, deadline, expected=None):
    """Read one line from each socket in ``socks`` (they were sent one request):
    {sock: line}. Stops at ``deadline`` (then returns what came) or when
    ``expected`` sockets have answered."""
    selector = selectors.DefaultSelector()
    buffers = {}
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        buffers[sock] = b""
    done = {}
    try:
        while len(done) < (len(socks) if expected is None else expected):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, _ in selector.select(min(left, 1.0)):
                sock = key.fileobj
                try:
                    chunk = sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError as error:
                    chunk, buffers[sock] = b"", buffers[sock] + f"<{error}>".encode()
                buffers[sock] += chunk
                if b"\n" in buffers[sock] or not chunk:
                    done[sock] = buffers[sock].split(b"\n", 1)[0].decode(errors="replace")
                    if not chunk:
                        done[sock] += " <closed>"
                    selector.unregister(sock)
    finally:
        selector.close()
    return done


# -- 10,000 connections --------------------------------------------------------------------

MANY = 10_000


def test_select_broker_holds_10000_connections():
    deadline = time.monotonic() + DEADLINE
    old_soft = raised_nofile(MANY + 200)
    broker = extra = None
    socks = []
    try:
        broker = Broker("impl_select")
        for k in range(MANY):
            assert time.monotonic() < deadline, f"only {k} of {MANY} connections opened in time"
            socks.append(socket.create_connection(("127.0.0.1", broker.client_port), timeout=10))
        for sock in socks:
            sock.sendall(b"STATUS 1\n")
        replies = answers(socks, deadline)
        wrong = [line for line in replies.values() if line != "unknown"]
        assert len(replies) == MANY and not wrong, (
            f"expected all {MANY} connections answered 'unknown', got {len(replies)} answers, "
            f"{len(wrong)} of them otherwise, e.g. {wrong[:5]}; broker running "
            f"{broker.running()}, stderr {broker.stderr()[-500:]!r}")
        extra = LineConnection(broker.client_port)
        reply = extra.request("JOB one more client")
        assert reply == "ID 1", f"a new client next to {MANY} others: expected ID 1, got {reply!r}"
        stats_line = extra.request("STATS")
        clients = parse_stats(stats_line)["clients"]
        assert clients == MANY + 1, f"expected clients={MANY + 1}, got {stats_line!r}"
        print(f"\n10,000 connections [select]: all {MANY} answered, a new client served, "
              f"STATS clients={clients}, broker holds {open_descriptors(broker.pid)} descriptors, "
              f"VmRSS {proc_status_kb(broker.pid)} kB")
    finally:
        for sock in socks:
            sock.close()
        for thing in (extra, broker):
            if thing is not None:
                thing.close()
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (old_soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


# -- EMFILE --------------------------------------------------------------------------------

NOFILE = 64
BEYOND = 5                # connections opened past the broker's last free descriptor
CPU_WINDOW = 1.5          # seconds over which the broker's CPU time is measured
CPU_LIMIT = 0.5           # CPU seconds it may use in that window (a spinning loop uses ~1.5)
FREED = 20                # connections closed to give descriptors back


@pytest.mark.parametrize("impl", IMPLS, ids=IDS)
def test_out_of_descriptors(impl):
    deadline = time.monotonic() + DEADLINE
    broker = fresh = None
    socks = []
    try:
        broker = Broker(impl)
        # Soft and hard: the broker raises its soft limit to the hard one at start-up.
        resource.prlimit(broker.pid, resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
        used = open_descriptors(broker.pid)
        # Linux reserves the new descriptor's number before accept() blocks, so the
        # threads broker's acceptor waiting on the (idle) worker port holds one.
        room = NOFILE - used - (1 if impl == "impl_threads" else 0)
        assert room > FREED, f"broker already uses {used} descriptors of {NOFILE}"
        for _ in range(room + BEYOND):
            # A waiting FETCH: a connection the broker may not shed to make room.
            sock = socket.create_connection(("127.0.0.1", broker.worker_port), timeout=10)
            sock.sendall(b"STATS\nFETCH 600\n")
            socks.append(sock)
        served = answers(socks, deadline, expected=room)
        assert len(served) == room, (
            f"[{impl}] with {used} descriptors in use and a limit of {NOFILE}, expected {room} "
            f"connections served, got {len(served)}; broker running {broker.running()}, "
            f"stderr {broker.stderr()[-500:]!r}")
        closed = [line for line in served.values() if not line.startswith("STATS ")]
        assert not closed, f"[{impl}] expected STATS replies, got {closed[:5]}"

        cpu_before = proc_cpu_seconds(broker.pid)
        time.sleep(CPU_WINDOW)      # a measurement window, not a synchronisation
        cpu = proc_cpu_seconds(broker.pid) - cpu_before
        assert broker.running(), f"[{impl}] broker died out of descriptors: {broker.stderr()!r}"
        assert cpu < CPU_LIMIT, (f"[{impl}] out of descriptors, the broker used {cpu:.2f} s of CPU "
                                 f"in {CPU_WINDOW} s; expected under {CPU_LIMIT} s (no busy loop)")
        waiting = [s for s in socks if s not in served]
        early = answers(waiting, time.monotonic() + 0.01)
        assert not early, f"[{impl}] connections past the limit were served: {list(early.values())}"

        for sock in list(served)[:FREED]:
            sock.close()
            socks.remove(sock)
        late = answers(waiting, deadline)
        assert len(late) == BEYOND and all(v.startswith("STATS ") for v in late.values()), (
            f"[{impl}] after {FREED} connections closed: expected the {BEYOND} waiting ones "
            f"served, got {list(late.values())}")
        fresh = LineConnection(broker.client_port)
        reply = fresh.request("JOB after running out")
        assert reply.startswith("ID "), f"[{impl}] a new client after EMFILE: expected ID, got {reply!r}"
        print(f"\nEMFILE [{impl}]: limit {NOFILE}, {used} in use at start, {room} served, "
              f"{BEYOND} waited; CPU {cpu:.3f} s in {CPU_WINDOW} s out of descriptors; "
              f"served again after {FREED} closed")
    finally:
        for sock in socks:
            sock.close()
        for thing in (fresh, broker):
            if thing is not None:
                thing.close()


# -- silent connections past the descriptor limit (issue 10, kind 9) -----------------------

SILENT = 400
SILENT_NOFILE = 256
TOKEN = "descriptor-test-token"
PROMPT = 15.0          # seconds the authenticated client may wait (it waited 90 s before)


@pytest.mark.parametrize("impl", IMPLS, ids=IDS)
def test_silent_connections_do_not_keep_a_client_out(impl, tmp_path):
    deadline = time.monotonic() + DEADLINE
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    raised_nofile(SILENT + 100)
    broker = client = None
    silent = []
    try:
        # A long auth timeout: what lets the client in here is shedding, not the timeout.
        broker = Broker(impl, "--token-file", token_file, "--auth-timeout", "600")
        resource.prlimit(broker.pid, resource.RLIMIT_NOFILE, (SILENT_NOFILE, SILENT_NOFILE))
        for _ in range(SILENT):
            silent.append(socket.create_connection(("127.0.0.1", broker.client_port), timeout=10))
        started = time.monotonic()
        client = LineConnection(broker.client_port, timeout=PROMPT)
        client.send_lines([f"AUTH {TOKEN}", "JOB behind 400 silent connections"])
        replies = [client.read_line(timeout=PROMPT), client.read_line(timeout=PROMPT)]
        waited = time.monotonic() - started
        assert replies == ["OK", "ID 1"], (
            f"[{impl}] authenticated client behind {SILENT} silent connections, descriptor limit "
            f"{SILENT_NOFILE}: expected ['OK', 'ID 1'], got {replies}")
        shed = answers(silent, time.monotonic() + 5.0, expected=1)
        assert shed and all(line == " <closed>" for line in shed.values()), (
            f"[{impl}] expected silent connections closed without a reply to make room, "
            f"got {list(shed.values())[:5]}")
        assert broker.running(), f"[{impl}] broker died: {broker.stderr()[-500:]!r}"
        print(f"\nsilent connections [{impl}]: {SILENT} silent, limit {SILENT_NOFILE}: the "
              f"authenticated client got its ID after {waited:.2f} s; at least {len(shed)} "
              f"silent ones shed (closed without a reply)")
        assert time.monotonic() < deadline
    finally:
        for sock in silent:
            sock.close()
        for thing in (client, broker):
            if thing is not None:
                thing.close()
