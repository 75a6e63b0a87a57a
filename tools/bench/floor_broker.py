"""The floor: the least a Python broker of this design can cost per request.

Not a broker: a raw epoll loop that reads, answers by the request's first
letter, and sends, with no parsing, no job table, no limits and no checks
(``JOB ...`` -> ``ID n``, ``FETCH`` -> ``JOB n <25 bytes>``, anything else ->
``OK``). The bench runs it in the closed loop and the job cycle, so that a
target below it is seen to be out of reach of any CPython broker on this
machine, not of ours alone.

With ``--journal PATH`` it is the durable floor, for the durable scenario: every
read is written to a preallocated journal with one ``pwrite`` and made durable
with one ``fdatasync`` before it is answered (the reads of one epoll wake-up
share them: group commit), with no records, no checksums and no recovery: the
least any durable CPython broker of this design pays per commit. beanstalkd's
binlog at ``-f 0`` does as much I/O per job (a few writes and an fsync of a
preallocated file, beanstalkd(1) ``-b``, ``-f``).

    python3 -m tools.bench.floor_broker CLIENT_PORT WORKER_PORT [--journal PATH]
    (0: any free port)
"""

import os
import select
import socket
import sys

from core.grammar import NumberError, parse_port

JOB_TEXT = b"x" * 25
# The journal is preallocated (zeros written and synced once) in steps of this
# many bytes, so a commit overwrites allocated blocks and its fdatasync flushes
# data, not the file's size (as beanstalkd preallocates its binlog files).
JOURNAL_STEP = 16 << 20


def listener(port):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def answer(line, counter):
    first = line[:1]
    if first == b"J":
        return b"ID %d\n" % counter
    if first == b"F":
        return b"JOB %d %s\n" % (counter, JOB_TEXT)
    return b"OK\n"


def accept(listener, peers, poller):
    """Take one connection from ``listener`` into ``peers`` (descriptor -> socket)
    and ``poller``."""
    conn, _ = listener.accept()
    conn.setblocking(False)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    peers[conn.fileno()] = conn
    poller.register(conn.fileno(), select.EPOLLIN)


def close(fd, peers, poller):
    """Forget and close the connection on descriptor ``fd``."""
    poller.unregister(fd)
    peers.pop(fd).close()


class Journal:
    """An append-only file, preallocated in JOURNAL_STEP steps: ``commit(data)``
    writes ``data`` at the end and returns once it is on disk (one pwrite and one
    fdatasync). Raises OSError as the system calls do."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self.end = self.size = 0
        self._grow()                   # before the first client, not in its first commit

    def _grow(self):
        os.pwrite(self.fd, bytes(JOURNAL_STEP), self.size)
        os.fsync(self.fd)
        self.size += JOURNAL_STEP

    def commit(self, data):
        while self.end + len(data) > self.size:
            self._grow()
        os.pwrite(self.fd, data, self.end)
        self.end += len(data)
        os.fdatasync(self.fd)


def serve(client_port, worker_port, journal=None):
    """Answer on the two ports until interrupted; with ``journal`` (a path), the
    durable floor (serve_durable)."""
    journal = None if journal is None else Journal(journal)
    listeners = {sock.fileno(): sock for sock in (listener(client_port), listener(worker_port))}
    ports = [sock.getsockname()[1] for sock in listeners.values()]
    print(f"workq broker (floor): clients on 127.0.0.1:{ports[0]}, "
          f"workers on 127.0.0.1:{ports[1]}", flush=True)
    poller = select.epoll()
    for fd in listeners:
        poller.register(fd, select.EPOLLIN)
    peers, partial = {}, {}
    counter = 0
    if journal is not None:
        serve_durable(poller, listeners, peers, journal)
    while True:
        for fd, _ in poller.poll():
            sock = peers.get(fd)
            if sock is None:
                accept(listeners[fd], peers, poller)
                continue
            data = sock.recv(65536)
            if not data:
                close(fd, peers, poller)
                partial.pop(fd, None)
                continue
            counter += 1
            # One line: `in` on the rest, not bytes.find, whose argument parsing
            # costs more than the search in Python 3.11 (cachegrind).
            if data[-1] == 10 and 10 not in data[:-1] and fd not in partial:
                sock.send(answer(data, counter))          # the measured case: one line
                continue
            lines = (partial.pop(fd, b"") + data).split(b"\n")   # prefill: many lines
            if lines[-1]:
                partial[fd] = lines[-1]
            sock.sendall(b"".join(answer(line, counter + n) for n, line in enumerate(lines[:-1])))
            counter += len(lines)


def serve_durable(poller, listeners, peers, journal):
    """The durable floor's loop: the reads of each wake-up are committed to
    ``journal`` together, then each is answered (one reply per line; the closed
    loop it serves writes whole lines). Runs until interrupted."""
    counter = 0
    while True:
        reads = []
        for fd, _ in poller.poll():
            sock = peers.get(fd)
            if sock is None:
                accept(listeners[fd], peers, poller)
                continue
            data = sock.recv(65536)
            if not data:
                close(fd, peers, poller)
                continue
            reads.append((sock, data))
        if reads:
            journal.commit(b"".join(data for _, data in reads))
            for sock, data in reads:
                lines = data.split(b"\n")[:-1]
                sock.sendall(b"".join(answer(line, counter + n) for n, line in enumerate(lines)))
                counter += len(lines)


if __name__ == "__main__":
    try:
        try:
            args = sys.argv[1:]
            journal = None
            if args[2:3] == ["--journal"] and len(args) == 4:
                journal = args.pop()
                args.pop()
            if len(args) != 2:
                raise NumberError("expected CLIENT_PORT WORKER_PORT [--journal PATH]")
            ports = [parse_port(arg, lowest=0) for arg in args]
        except NumberError as error:
            print(f"python3 -m tools.bench.floor_broker: error: {error}", file=sys.stderr)
            sys.exit(2)
        serve(*ports, journal)
    except KeyboardInterrupt:
        pass
