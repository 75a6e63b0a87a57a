#!/usr/bin/env python3
"""A student's broker for the original assignment, as a grading fixture.

The assignment fixes only the client side: ``JOB <text>`` returns the job's
id and ``STATUS <n>`` its state. Like the assignment's own text, this broker
answers ``JOB`` with a bare number (``7``) and names the states
``waiting``, ``running``, ``complete`` (and ``unknown``). Its workers speak
a protocol of its own design, nothing like workq's:

    worker: GIMME                ->  broker: TASK <n>|<text>   or  EMPTY
    worker: FINISHED <n>         ->  broker: ACK

Standard library only, one select() loop; it imports nothing from this
checkout (tests/test_grading.py grades it through the client port and the
worker's outputs only).

    python3 broker.py CLIENT_PORT WORKER_PORT
"""

import select
import socket
import sys
from collections import deque


def listen(port):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(16)
    return sock


def main():
    client_port, worker_port = int(sys.argv[1]), int(sys.argv[2])
    clients, workers = listen(client_port), listen(worker_port)
    print(f"broker: clients on {client_port}, workers on {worker_port}", flush=True)
    texts, states, queue = {}, {}, deque()
    kind, buffers = {}, {}
    while True:
        readable, _, _ = select.select([clients, workers, *kind], [], [])
        for sock in readable:
            if sock in (clients, workers):
                conn, _ = sock.accept()
                kind[conn] = "client" if sock is clients else "worker"
                buffers[conn] = b""
                continue
            data = sock.recv(4096)
            if not data:
                del kind[sock], buffers[sock]
                sock.close()
                continue
            buffers[sock] += data
            while b"\n" in buffers[sock]:
                line, buffers[sock] = buffers[sock].split(b"\n", 1)
                sock.sendall(answer(kind[sock], line.decode().strip(), texts, states, queue)
                             .encode() + b"\n")


def answer(kind, line, texts, states, queue):
    command, _, rest = line.partition(" ")
    if kind == "client" and command == "JOB":
        number = len(texts) + 1
        texts[number], states[number] = rest, "waiting"
        queue.append(number)
        return str(number)
    if kind == "client" and command == "STATUS":
        return states.get(int(rest), "unknown") if rest.isdigit() else "unknown"
    if kind == "worker" and command == "GIMME":
        if not queue:
            return "EMPTY"
        number = queue.popleft()
        states[number] = "running"
        return f"TASK {number}|{texts[number]}"
    if kind == "worker" and command == "FINISHED" and rest.isdigit():
        states[int(rest)] = "complete"
        return "ACK"
    return "WHAT?"


if __name__ == "__main__":
    main()
