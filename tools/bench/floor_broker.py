"""The floor: the least a Python broker of this design can cost per request.

Not a broker: a raw epoll loop that reads, answers by the request's first
letter, and sends, with no parsing, no job table, no limits and no checks
(``JOB ...`` -> ``ID n``, ``FETCH`` -> ``JOB n <25 bytes>``, anything else ->
``OK``). The bench runs it in the closed loop and the job cycle, so that a
target below it is seen to be out of reach of any CPython broker on this
machine, not of ours alone.

    python3 -m tools.bench.floor_broker CLIENT_PORT WORKER_PORT     (0: any free port)
"""

import select
import socket
import sys

from core.grammar import NumberError, parse_port

JOB_TEXT = b"x" * 25


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


def serve(client_port, worker_port):
    listeners = {sock.fileno(): sock for sock in (listener(client_port), listener(worker_port))}
    ports = [sock.getsockname()[1] for sock in listeners.values()]
    print(f"workq broker (floor): clients on 127.0.0.1:{ports[0]}, "
          f"workers on 127.0.0.1:{ports[1]}", flush=True)
    poller = select.epoll()
    for fd in listeners:
        poller.register(fd, select.EPOLLIN)
    peers, partial = {}, {}
    counter = 0
    while True:
        for fd, _ in poller.poll():
            sock = peers.get(fd)
            if sock is None:
                conn, _ = listeners[fd].accept()
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                peers[conn.fileno()] = conn
                poller.register(conn.fileno(), select.EPOLLIN)
                continue
            data = sock.recv(65536)
            if not data:
                poller.unregister(fd)
                del peers[fd]
                partial.pop(fd, None)
                sock.close()
                continue
            counter += 1
            if data[-1] == 10 and data.find(b"\n") == len(data) - 1 and fd not in partial:
                sock.send(answer(data, counter))          # the measured case: one line
                continue
            lines = (partial.pop(fd, b"") + data).split(b"\n")   # prefill: many lines
            if lines[-1]:
                partial[fd] = lines[-1]
            sock.sendall(b"".join(answer(line, counter + n) for n, line in enumerate(lines[:-1])))
            counter += len(lines)


if __name__ == "__main__":
    try:
        try:
            if len(sys.argv) != 3:
                raise NumberError("expected CLIENT_PORT WORKER_PORT")
            ports = [parse_port(arg, lowest=0) for arg in sys.argv[1:]]
        except NumberError as error:
            print(f"python3 -m tools.bench.floor_broker: error: {error}", file=sys.stderr)
            sys.exit(2)
        serve(*ports)
    except KeyboardInterrupt:
        pass
