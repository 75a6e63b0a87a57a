#!/usr/bin/env python3
"""workQueue.py: the work queue broker of the original assignment.

A faithful reconstruction of the system that seeds/system-description.md
describes, kept as a test fixture: the conformance suite's core level must be
exactly what this program does (tests/test_original_system.py). Standard
library only; it imports nothing from this checkout.

    python3 workQueue.py [CLIENT_PORT [WORKER_PORT]]      (defaults 50000 50001)

One select() loop over two listening sockets and every connection:

* clients: ``JOB <text>`` -> ``ID <n>``; ``STATUS <n>`` -> waiting, running,
  completed or unknown;
* workers: ``FETCH`` -> ``JOB <n> <text>`` or ``NOJOB``; ``DONE <n>`` -> ``OK``.

What it does not do, on purpose (workq's extended level): no ERR codes (an
unknown command, or an empty line, gets a plain ``ERROR unknown command``), no
line-length limit, no check of who sends DONE, no requeue of a dead worker's
job, no STATS, no long-poll (``FETCH <anything>`` is a plain FETCH). A line it
cannot decode, or a STATUS/DONE whose id is not a number, closes that
connection (the original closes a socket "on disconnects or errors").

The original listened on every interface; this copy listens on 127.0.0.1
only, so that the tests never open a port to the network.
"""

import select
import socket
import sys
from collections import deque

HOST = "127.0.0.1"


def make_listener(port):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, port))
    listener.listen(16)
    return listener


class WorkQueue:
    def __init__(self, client_port, worker_port):
        self.client_listener = make_listener(client_port)
        self.worker_listener = make_listener(worker_port)
        self.jobs = {}          # id -> {"text": ..., "state": ...}
        self.waiting = deque()  # ids of waiting jobs, first in first out
        self.running = {}       # id -> the worker socket it was handed to
        self.next_id = 1
        self.clients = []
        self.workers = []
        self.buffers = {}       # socket -> bytes received but not yet a whole line

    # -- the select loop ---------------------------------------------------------

    def serve(self):
        while True:
            sockets = [self.client_listener, self.worker_listener] + self.clients + self.workers
            readable, _, _ = select.select(sockets, [], [])
            for sock in readable:
                if sock is self.client_listener:
                    conn, address = sock.accept()
                    print(f"client connected from {address[0]}:{address[1]}", flush=True)
                    self.clients.append(conn)
                    self.buffers[conn] = b""
                elif sock is self.worker_listener:
                    conn, address = sock.accept()
                    print(f"worker connected from {address[0]}:{address[1]}", flush=True)
                    self.workers.append(conn)
                    self.buffers[conn] = b""
                else:
                    self.read_from(sock)

    def read_from(self, sock):
        try:
            data = sock.recv(4096)
        except OSError:
            data = b""
        if not data:
            self.close(sock)
            return
        self.buffers[sock] += data
        try:
            while b"\n" in self.buffers[sock]:
                raw, self.buffers[sock] = self.buffers[sock].split(b"\n", 1)
                line = raw.decode().strip()
                if sock in self.clients:
                    reply = self.handle_client(line)
                else:
                    reply = self.handle_worker(sock, line)
                sock.sendall((reply + "\n").encode())
        except (OSError, ValueError) as error:
            print(f"error: {error}; closing the connection", flush=True)
            self.close(sock)

    def close(self, sock):
        if sock in self.clients:
            self.clients.remove(sock)
        if sock in self.workers:
            self.workers.remove(sock)
        self.buffers.pop(sock, None)
        sock.close()
        # The jobs it was running stay "running": the original has no requeue.

    # -- the protocol ------------------------------------------------------------

    def handle_client(self, line):
        command, _, arg = line.partition(" ")
        command, arg = command.upper(), arg.strip()
        if command == "JOB" and arg:
            job_id = self.next_id
            self.next_id += 1
            self.jobs[job_id] = {"text": arg, "state": "waiting"}
            self.waiting.append(job_id)
            print(f"job {job_id} queued: {arg}", flush=True)
            return f"ID {job_id}"
        if command == "STATUS" and arg:
            job = self.jobs.get(int(arg))
            return job["state"] if job else "unknown"
        return "ERROR unknown command"

    def handle_worker(self, sock, line):
        command, _, arg = line.partition(" ")
        command, arg = command.upper(), arg.strip()
        if command == "FETCH":
            if not self.waiting:
                return "NOJOB"
            job_id = self.waiting.popleft()
            self.jobs[job_id]["state"] = "running"
            self.running[job_id] = sock
            return f"JOB {job_id} {self.jobs[job_id]['text']}"
        if command == "DONE" and arg:
            job_id = int(arg)
            if job_id in self.jobs:
                self.jobs[job_id]["state"] = "completed"
            self.running.pop(job_id, None)
            print(f"job {job_id} completed", flush=True)
            return "OK"
        return "ERROR unknown command"


def main():
    client_port = int(sys.argv[1]) if len(sys.argv) > 1 else 50000
    worker_port = int(sys.argv[2]) if len(sys.argv) > 2 else 50001
    queue = WorkQueue(client_port, worker_port)
    print(f"work queue: clients on port {client_port}, workers on port {worker_port}",
          flush=True)
    try:
        queue.serve()
    except KeyboardInterrupt:
        print("work queue stopped", flush=True)


if __name__ == "__main__":
    main()
