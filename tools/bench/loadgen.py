"""The load generator: the same code drives every broker.

One thread, one ``epoll``, blocking sockets that are only read when epoll
says they are readable (so a read never waits), pipelining where the scenario
allows, requests built once as bytes, replies counted rather than parsed where
counting is enough. Every run is bounded in operations *and* in time, and a
broker that stops answering for ``STALL_TIMEOUT`` seconds ends the run with
an error instead of hanging it. For many-connection closed loops,
:func:`run_split` runs the same loop in several processes.

Every load function takes connected sockets and returns a :class:`Load`:
operations completed, errors, per-operation latencies (seconds), the wall
time and this process's own CPU time.
"""

import multiprocessing
import os
import random
import resource
import select
import socket
import time
import traceback
from array import array
from collections import deque

from .procstat import own_cpu_seconds
from .protocols import ProtocolError

STALL_TIMEOUT = 10.0
CONNECT_TIMEOUT = 30.0
RECV_SIZE = 256 * 1024
EPOLLIN = select.EPOLLIN
perf_counter = time.perf_counter


class LoadError(Exception):
    """The run could not go on (the broker stalled or closed every connection)."""


class Load:
    """What one load run did."""

    def __init__(self, ops=0, errors=0, latencies=None, elapsed=0.0, cpu=0.0, first_error=None):
        self.extra = {}          # counts a load function reports beside these (summed by merge)
        self.ops = ops
        self.errors = errors
        self.latencies = latencies if latencies is not None else array("d")
        self.elapsed = elapsed
        self.cpu = cpu
        self.first_error = first_error

    def merge(self, other):
        self.ops += other.ops
        self.errors += other.errors
        self.latencies.extend(other.latencies)
        self.elapsed = max(self.elapsed, other.elapsed)
        self.cpu += other.cpu
        self.first_error = self.first_error or other.first_error
        for key, value in other.extra.items():
            self.extra[key] = self.extra.get(key, 0) + value
        return self

    def __repr__(self):
        return (f"Load(ops={self.ops}, errors={self.errors}, elapsed={self.elapsed:.3f}, "
                f"samples={len(self.latencies)}, first_error={self.first_error!r})")


def raise_nofile(wanted):
    """Raise this process's RLIMIT_NOFILE towards ``wanted``; returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def connect(address, count=1, timeout=CONNECT_TIMEOUT, batch=512):
    """``count`` connected TCP sockets (blocking, TCP_NODELAY), opened ``batch``
    at a time without blocking. Raises OSError when they cannot all be opened;
    the ones that were are closed first."""
    socks = []
    deadline = time.monotonic() + timeout
    try:
        while len(socks) < count:
            pending = {}
            poller = select.epoll()
            try:
                for _ in range(min(batch, count - len(socks) - len(pending))):
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    sock.setblocking(False)
                    error = sock.connect_ex(address)
                    if error not in (0, 115):      # EINPROGRESS
                        sock.close()
                        raise OSError(error, os.strerror(error))
                    pending[sock.fileno()] = sock
                    poller.register(sock.fileno(), select.EPOLLOUT)
                while pending:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        for sock in pending.values():
                            sock.close()
                        raise OSError(f"connecting: {len(socks)} of {count} connections "
                                      f"open after {timeout:g} s")
                    for fd, _ in poller.poll(min(left, 1.0)):
                        sock = pending.pop(fd)
                        poller.unregister(fd)
                        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if error:
                            sock.close()
                            for other in pending.values():
                                other.close()
                            raise OSError(error, os.strerror(error))
                        sock.setblocking(True)
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        socks.append(sock)
            finally:
                poller.close()
    except BaseException:
        close_all(socks)
        raise
    return socks


def close_all(socks):
    for sock in socks:
        try:
            sock.close()
        except OSError:
            pass


def wait_readable(sock, timeout):
    """True once ``sock`` is readable within ``timeout`` seconds (poll: any descriptor number)."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(max(0.0, timeout) * 1000))


def request(sock, data, parse, timeout=10.0):
    """Send ``data`` on a blocking socket and read until ``parse(buffer)`` is not None."""
    sock.sendall(data)
    buf = b""
    deadline = time.monotonic() + timeout
    while True:
        result = parse(buf) if buf else None
        if result is not None:
            return result
        left = deadline - time.monotonic()
        if left <= 0 or not wait_readable(sock, left):
            raise LoadError(f"no complete reply to {data[:40]!r} within {timeout} s (got {buf[:80]!r})")
        chunk = sock.recv(RECV_SIZE)
        if not chunk:
            raise LoadError(f"connection closed while waiting for a reply to {data[:40]!r}")
        buf += chunk


# -- closed loop: one request in flight per connection ---------------------------------

def closed_loop(socks, line, ok_prefix, max_ops, duration):
    """Each connection sends ``line`` (one request whose reply is one line) and
    sends it again as soon as the reply is in, until ``max_ops`` requests or
    ``duration`` seconds. Latency: request written to reply read."""
    cpu0 = own_cpu_seconds()
    poller = select.epoll()
    recv_of, send_of, sent_at, partial = {}, {}, {}, {}
    for sock in socks:
        fd = sock.fileno()
        poller.register(fd, EPOLLIN)
        recv_of[fd], send_of[fd] = sock.recv, sock.send
    latencies = array("d")
    record = latencies.append
    ok = errors = sent = outstanding = 0
    first_error = None
    start = perf_counter()
    deadline = start + duration
    for fd in recv_of:
        if sent >= max_ops:
            break
        send_of[fd](line)
        sent_at[fd] = perf_counter()
        sent += 1
        outstanding += 1
    last_progress = start
    poll = poller.poll
    now = start
    while outstanding:
        events = poll(1.0)
        now = perf_counter()
        if not events:
            if now - last_progress > STALL_TIMEOUT:
                first_error = first_error or f"broker stalled: {outstanding} replies missing"
                errors += outstanding
                break
            continue
        last_progress = now
        for fd, _ in events:
            data = recv_of[fd](RECV_SIZE)
            if not data:
                poller.unregister(fd)
                errors += 1
                outstanding -= 1
                first_error = first_error or "broker closed a connection"
                continue
            if data[-1] != 10:                  # part of a line: wait for the rest
                partial[fd] = partial.get(fd, b"") + data
                continue
            if partial:
                data = partial.pop(fd, b"") + data
            now = perf_counter()
            record(now - sent_at[fd])
            outstanding -= 1
            if data.startswith(ok_prefix):
                ok += 1
            else:
                errors += 1
                first_error = first_error or data[:120].decode(errors="replace")
            if sent < max_ops and now < deadline:
                send_of[fd](line)
                sent_at[fd] = now
                sent += 1
                outstanding += 1
    poller.close()
    return Load(ok, errors, latencies, now - start, own_cpu_seconds() - cpu0, first_error)


# -- pipelined: batches of lines per write ----------------------------------------------

def pipelined(socks, line, ok_prefix, batch, depth, max_ops, duration):
    """Each connection keeps ``depth`` writes of ``batch`` requests in flight,
    until ``max_ops`` requests or ``duration`` seconds. Replies (one line each)
    are counted. Latency: per batch, written to its last reply read."""
    cpu0 = own_cpu_seconds()
    blob = line * batch
    poller = select.epoll()
    conns = {}
    for sock in socks:
        poller.register(sock.fileno(), EPOLLIN)
        # [recv, sendall, send times of batches in flight, replies counted, carried bytes]
        conns[sock.fileno()] = [sock.recv, sock.sendall, deque(), 0, b""]
    latencies = array("d")
    record = latencies.append
    ok = errors = sent = 0
    first_error = None
    start = perf_counter()
    deadline = start + duration
    in_flight = 0
    for _ in range(depth):
        for conn in conns.values():
            if sent + batch > max_ops:
                break
            conn[1](blob)
            conn[2].append(perf_counter())
            sent += batch
            in_flight += 1
    last_progress = now = start
    poll = poller.poll
    while in_flight:
        events = poll(1.0)
        now = perf_counter()
        if not events:
            if now - last_progress > STALL_TIMEOUT:
                first_error = first_error or f"broker stalled: {in_flight} batches unanswered"
                errors += in_flight * batch
                break
            continue
        last_progress = now
        for fd, _ in events:
            conn = conns[fd]
            data = conn[0](RECV_SIZE)
            if not data:
                poller.unregister(fd)
                lost = len(conn[2])
                in_flight -= lost
                errors += lost * batch
                conn[2].clear()
                first_error = first_error or "broker closed a connection"
                continue
            if conn[4]:
                data = conn[4] + data
            cut = data.rfind(b"\n") + 1
            if cut < len(data):
                conn[4] = data[cut:]
                data = data[:cut]
            else:
                conn[4] = b""
            lines = data.count(b"\n")
            good = data.count(ok_prefix)
            ok += good
            if good != lines:
                errors += lines - good
                if first_error is None:
                    for reply in data.split(b"\n"):
                        if reply and not reply.startswith(ok_prefix):
                            first_error = reply[:120].decode(errors="replace")
                            break
            got = conn[3] + lines
            if got >= batch:
                now = perf_counter()
                sent_times = conn[2]
                while got >= batch and sent_times:
                    got -= batch
                    record(now - sent_times.popleft())
                    in_flight -= 1
                    if sent + batch <= max_ops and now < deadline:
                        conn[1](blob)
                        sent_times.append(perf_counter())
                        sent += batch
                        in_flight += 1
            conn[3] = got
    poller.close()
    return Load(ok, errors, latencies, now - start, own_cpu_seconds() - cpu0, first_error)


# -- window: a fixed number of requests in flight, topped up per read -------------------

def window(socks, line, ok_prefix, in_flight, max_ops, duration, read_size=RECV_SIZE):
    """Each connection keeps ``in_flight`` requests outstanding: it starts with
    ``in_flight`` writes of one request each, and after every read writes as many
    new requests as complete replies it read (one write), until ``max_ops``
    requests or ``duration`` seconds. Unlike :func:`pipelined` (fixed batches),
    the writes are as small as the replies come back in, so the broker sees many
    small reads. Latency: per write, written to the reply of its last request.

    The returned Load's ``extra`` holds ``writes`` and ``reads`` (the generator's
    sends and receives), so requests per write can be reported."""
    cpu0 = own_cpu_seconds()
    poller = select.epoll()
    conns = {}
    for sock in socks:
        poller.register(sock.fileno(), EPOLLIN)
        # [recv, sendall, writes in flight as (send time, requests this connection had
        #  sent with it), replies counted, carried bytes]
        conns[sock.fileno()] = [sock.recv, sock.sendall, deque(), 0, b""]
    latencies = array("d")
    record = latencies.append
    ok = errors = sent = writes = reads = outstanding = 0
    first_error = None
    start = perf_counter()
    deadline = start + duration
    sent_by = dict.fromkeys(conns, 0)
    for _ in range(in_flight):                 # one request per write to start with
        for fd, conn in conns.items():
            if sent >= max_ops:
                break
            conn[1](line)
            sent += 1
            writes += 1
            outstanding += 1
            sent_by[fd] += 1
            conn[2].append((perf_counter(), sent_by[fd]))
    last_progress = now = start
    poll = poller.poll
    while outstanding:
        events = poll(1.0)
        now = perf_counter()
        if not events:
            if now - last_progress > STALL_TIMEOUT:
                first_error = first_error or f"broker stalled: {outstanding} replies missing"
                errors += outstanding
                break
            continue
        last_progress = now
        for fd, _ in events:
            conn = conns[fd]
            data = conn[0](read_size)
            reads += 1
            if not data:
                poller.unregister(fd)
                lost = sent_by[fd] - conn[3]
                outstanding -= lost
                errors += lost
                first_error = first_error or "broker closed a connection"
                continue
            if conn[4]:
                data = conn[4] + data
            cut = data.rfind(b"\n") + 1
            if cut < len(data):
                conn[4] = data[cut:]
                data = data[:cut]
            else:
                conn[4] = b""
            lines = data.count(b"\n")
            if not lines:
                continue
            good = data.count(ok_prefix)
            ok += good
            if good != lines:
                errors += lines - good
                if first_error is None:
                    for reply in data.split(b"\n"):
                        if reply and not reply.startswith(ok_prefix):
                            first_error = reply[:120].decode(errors="replace")
                            break
            outstanding -= lines
            got = conn[3] = conn[3] + lines
            pending = conn[2]
            while pending and pending[0][1] <= got:
                record(now - pending.popleft()[0])
            more = min(lines, max_ops - sent)
            if more > 0 and now < deadline:
                conn[1](line * more)
                sent += more
                writes += 1
                outstanding += more
                sent_by[fd] += more
                pending.append((perf_counter(), sent_by[fd]))
    poller.close()
    load = Load(ok, errors, latencies, now - start, own_cpu_seconds() - cpu0, first_error)
    load.extra.update(writes=writes, reads=reads, sent=sent)
    return load


# -- job cycle: FETCH + DONE ------------------------------------------------------------

def cycle(socks, protocol, max_ops, duration):
    """Workers: fetch a job, report it done, again, until ``max_ops`` cycles,
    ``duration`` seconds, or an empty queue. Latency: fetch written to the
    done acknowledged (two round trips)."""
    cpu0 = own_cpu_seconds()
    fetch, done, parse_fetch, done_ok = (protocol.fetch, protocol.done, protocol.parse_fetch,
                                         protocol.done_ok)
    poller = select.epoll()
    conns = {}
    for sock in socks:
        poller.register(sock.fileno(), EPOLLIN)
        # [recv, send, buffer, fetching?, cycle start]
        conns[sock.fileno()] = [sock.recv, sock.sendall, b"", True, 0.0]
    latencies = array("d")
    record = latencies.append
    ok = errors = started = 0
    first_error = None
    start = perf_counter()
    deadline = start + duration
    active = 0
    for conn in conns.values():
        if started >= max_ops:
            break
        conn[1](fetch)
        conn[4] = perf_counter()
        started += 1
        active += 1
    last_progress = now = start
    poll = poller.poll
    while active:
        events = poll(1.0)
        now = perf_counter()
        if not events:
            if now - last_progress > STALL_TIMEOUT:
                first_error = first_error or f"broker stalled: {active} workers waiting"
                errors += active
                break
            continue
        last_progress = now
        for fd, _ in events:
            conn = conns[fd]
            data = conn[0](RECV_SIZE)
            if not data:
                poller.unregister(fd)
                active -= 1
                errors += 1
                first_error = first_error or "broker closed a connection"
                continue
            buf = conn[2] + data if conn[2] else data
            if conn[3]:                               # waiting for the fetched job
                try:
                    parsed = parse_fetch(buf)
                except (ProtocolError, ValueError) as error:
                    errors += 1
                    first_error = first_error or str(error)
                    poller.unregister(fd)
                    active -= 1
                    continue
                if parsed is None:
                    conn[2] = buf
                    continue
                used, job_id = parsed
                conn[2] = buf[used:]
                if not job_id:                        # queue empty: this worker is done
                    poller.unregister(fd)
                    active -= 1
                    started -= 1
                    continue
                conn[1](done(job_id))
                conn[3] = False
            else:                                     # waiting for the done acknowledgement
                end = buf.find(b"\n")
                if end < 0:
                    conn[2] = buf
                    continue
                conn[2] = buf[end + 1:]
                now = perf_counter()
                record(now - conn[4])
                if buf.startswith(done_ok):
                    ok += 1
                else:
                    errors += 1
                    first_error = first_error or buf[:end].decode(errors="replace")
                if started < max_ops and now < deadline:
                    conn[1](fetch)
                    conn[3] = True
                    conn[4] = perf_counter()
                    started += 1
                else:
                    poller.unregister(fd)
                    active -= 1
    poller.close()
    return Load(ok, errors, latencies, now - start, own_cpu_seconds() - cpu0, first_error)


# -- dispatch latency -------------------------------------------------------------------

def dispatch_waiting(client, worker, protocol, samples, settle=0.003):
    """An idle worker waits (``FETCH 30`` / ``reserve``); a job is submitted;
    latency: the submission written to the job read by the worker."""
    cpu0 = own_cpu_seconds()
    latencies = array("d")
    errors = 0
    first_error = None
    submit = protocol.submit()
    start = perf_counter()
    for _ in range(samples):
        worker.sendall(protocol.wait_fetch(30))
        time.sleep(settle)                       # let the worker's request reach the broker
        t0 = perf_counter()
        client.sendall(submit)
        buf = b""
        parsed = None
        while parsed is None:
            if not wait_readable(worker, 10.0):
                raise LoadError("the waiting worker got no job within 10 s")
            chunk = worker.recv(RECV_SIZE)
            if not chunk:
                raise LoadError("broker closed the waiting worker's connection")
            buf += chunk
            parsed = protocol.parse_fetch(buf)
        t1 = perf_counter()
        used, job_id = parsed
        reply = read_line(client)
        if not reply.startswith(protocol.submit_ok):
            errors += 1
            first_error = first_error or reply.decode(errors="replace")
        if not job_id:
            errors += 1
            first_error = first_error or "the waiting worker was answered without a job"
            continue
        latencies.append(t1 - t0)
        worker.sendall(protocol.done(job_id))
        reply = read_line(worker, buf[used:])
        if not reply.startswith(protocol.done_ok):
            errors += 1
            first_error = first_error or reply.decode(errors="replace")
    return Load(len(latencies), errors, latencies, perf_counter() - start,
                own_cpu_seconds() - cpu0, first_error)


def dispatch_polling(client, worker, protocol, samples, interval=0.5, rng=None):
    """A worker polls with plain ``FETCH`` every ``interval`` seconds; a job is
    submitted at a random moment between two polls; latency: the submission
    to the poll that gets it."""
    rng = rng or random.Random(6)
    cpu0 = own_cpu_seconds()
    latencies = array("d")
    errors = 0
    first_error = None
    submit = protocol.submit()
    start = perf_counter()
    for _ in range(samples):
        used, job_id = request(worker, protocol.fetch, protocol.parse_fetch)
        next_poll = perf_counter() + interval
        time.sleep(rng.uniform(0, interval))
        t0 = perf_counter()
        reply = request(client, submit, _line_parser)
        if not reply.startswith(protocol.submit_ok):
            errors += 1
            first_error = first_error or reply.decode(errors="replace")
            continue
        while True:
            time.sleep(max(0.0, next_poll - perf_counter()))
            used, job_id = request(worker, protocol.fetch, protocol.parse_fetch)
            if job_id:
                break
            next_poll += interval
        latencies.append(perf_counter() - t0)
        reply = request(worker, protocol.done(job_id), _line_parser)
        if not reply.startswith(protocol.done_ok):
            errors += 1
            first_error = first_error or reply.decode(errors="replace")
    return Load(len(latencies), errors, latencies, perf_counter() - start,
                own_cpu_seconds() - cpu0, first_error)


def _line_parser(buf):
    end = buf.find(b"\n")
    return None if end < 0 else buf[:end + 1]


def read_line(sock, buf=b"", timeout=10.0):
    """The first line of ``buf`` and what ``sock`` sends next (bytes, LF included).
    Raises LoadError when no whole line comes within ``timeout`` seconds."""
    while b"\n" not in buf:
        if not wait_readable(sock, timeout):
            raise LoadError(f"no reply line within {timeout} s")
        chunk = sock.recv(RECV_SIZE)
        if not chunk:
            raise LoadError("connection closed while waiting for a reply")
        buf += chunk
    return buf[:buf.index(b"\n") + 1]


# -- several generator processes ---------------------------------------------------------

def run_split(address, connections, procs, load, args, on_start, on_end, timeout):
    """Run ``load(socks, *args)`` in ``procs`` processes that share ``connections``
    between them. ``on_start()`` is called once every process has connected and
    before any sends; ``on_end()`` once every process has finished, before the
    connections close. ``args`` is a tuple, its ``max_ops`` (first after socks
    the load function knows by position) shared out by the caller.

    ``args`` may be a callable ``args(index)`` giving each process its own."""
    ctx = multiprocessing.get_context("fork")
    shares = [connections // procs + (1 if i < connections % procs else 0) for i in range(procs)]
    ready, results = ctx.Queue(), ctx.Queue()
    go, finish = ctx.Event(), ctx.Event()
    children = []
    for index, share in enumerate(shares):
        child_args = args(index) if callable(args) else args
        child = ctx.Process(target=_child, args=(address, share, load, child_args, ready, go,
                                                  results, finish, timeout), daemon=True)
        child.start()
        children.append(child)
    try:
        for _ in children:
            status = ready.get(timeout=CONNECT_TIMEOUT + 10)
            if status is not True:
                raise LoadError(f"a generator process could not connect: {status}")
        on_start()
        go.set()
        total = Load()
        for _ in children:
            outcome = results.get(timeout=timeout + STALL_TIMEOUT + 30)
            if isinstance(outcome, str):
                raise LoadError(f"a generator process failed: {outcome}")
            total.merge(outcome)
        on_end()
        return total
    finally:
        finish.set()
        go.set()
        for child in children:
            child.join(10)
            if child.is_alive():
                child.kill()
                child.join()


def _child(address, share, load, args, ready, go, results, finish, timeout):
    socks = []
    try:
        try:
            socks = connect(address, share)
        except OSError as error:
            ready.put(str(error))
            return
        ready.put(True)
        go.wait(timeout + 60)
        try:
            results.put(load(socks, *args))
        except Exception:           # noqa: BLE001 - reported to the parent as text
            results.put(traceback.format_exc(limit=3))
        finish.wait(60)
    finally:
        close_all(socks)
