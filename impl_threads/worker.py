"""Thread-per-slot worker: each --concurrency slot in its own thread, on its own blocking socket.

    python3 -m impl_threads.worker [HOST:PORT [OUTPUT_PORT [SYSLOG_PORT]]] [options]

A thin I/O shell around core.worker.WorkerSlot. Each slot thread loops:
wait for the broker's data until the slot's next deadline (a socket
timeout), feed the slot, tick it when the deadline is due. Connecting is a
blocking connect with the slot's connect timeout. The multicast socket and
the syslog logger are shared (both thread-safe). The command line is
core.worker_options; start-up, outputs and carrying out actions are
shell.worker_io, shared by both workers.

Stopping: the main thread waits for SIGINT/SIGTERM, logs "stopping", then
wakes every slot thread out of its blocking call at once: an Event for a
thread that waits between connections, shutdown() of the socket for one in
connect, recv or send (as impl_threads.broker does for its peers). Each
thread then stops its slot (no DONE for an unfinished job) and ends.
"""

import socket
import sys
import threading
import time

from shell.netutil import READ_SIZE
from shell.worker_io import ConnectFailed, SlotShell, describe, resolve, worker_main

FLAVOUR = "threads"
PROG = "python3 -m impl_threads.worker"
JOIN_TIMEOUT = 0.8    # seconds for all slot threads to finish once stopping (see serve)


class Stopping:
    """Tells the slot threads to stop and wakes them out of blocking calls.

    A thread registers its socket with ``adopt`` before blocking on it; ``set``
    shuts down every registered socket. One lock orders the two, so a socket
    is either shut down or its thread sees the flag before it blocks; the same
    lock keeps a socket from being closed (and its descriptor reused) while
    ``set`` shuts it down.
    """

    def __init__(self):
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._sockets = set()

    def is_set(self):
        return self._event.is_set()

    def wait(self, timeout):
        self._event.wait(timeout)

    def set(self):
        with self._lock:
            self._event.set()
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:      # not connected (yet): the connect fails, which is enough
                    pass

    def adopt(self, sock):
        """Register ``sock``; False (and the socket closed) if already stopping."""
        with self._lock:
            if self._event.is_set():
                sock.close()
                return False
            self._sockets.add(sock)
            return True

    def release(self, sock):
        with self._lock:
            self._sockets.discard(sock)
            sock.close()


class SlotThread(SlotShell):
    def __init__(self, slot, outputs, broker, stopping, stop):
        super().__init__(slot, outputs)
        self.broker = broker          # (host, port)
        self.stopping = stopping      # Stopping: main thread -> slot threads
        self.stop = stop              # StopRequest: to bring the worker down if this thread fails
        self.sock = None
        self.failed = False

    def run(self):
        try:
            self._serve()
        except BaseException:
            self.failed = True
            self.stop.request()
            raise                     # threading's excepthook prints the traceback

    def _serve(self):
        self.execute(self.slot.start(time.monotonic()))
        while not self.stopping.is_set():
            due = self.slot.next_deadline()
            timeout = None if due is None else due - time.monotonic()
            if timeout is None or timeout > 0:
                if self.sock is None:
                    self.stopping.wait(timeout)
                else:
                    self._receive(timeout)
            if not self.stopping.is_set():
                self.execute(self.slot.tick(time.monotonic()))   # nothing unless due
        self.execute(self.slot.stop(time.monotonic()))

    def _receive(self, timeout):
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(READ_SIZE)
        except TimeoutError:
            return                    # the deadline is due
        except OSError as e:
            data, reason = b"", describe(e)
        else:
            reason = "closed by broker"
        if self.stopping.is_set():
            return                    # woken by our own shutdown(): stop, not "lost"
        if data:
            self.execute(self.slot.data_received(data, time.monotonic()))
        else:
            self.lost(reason)

    # --- actions ---

    def send(self, data):
        if self.sock is None:         # skipped once the socket broke in this batch
            return
        self.sock.settimeout(None)    # a line or two: never waits long, shutdown() wakes it
        try:
            self.sock.sendall(data)
        except OSError as e:
            if self.stopping.is_set():
                self.close()          # our own shutdown() broke it: stop, not "lost"
                return
            self.broke(describe(e))

    def connect(self):
        """Blocking connect to each address in turn, within the slot's connect timeout."""
        try:
            addresses = resolve(*self.broker)
        except ConnectFailed as e:
            return self.connect_failed(e.reason)
        reason = "no address"
        for family, type_, proto, _, address in addresses:
            left = self.slot.next_deadline() - time.monotonic()
            if left <= 0:
                reason = "timed out"
                break
            sock = socket.socket(family, type_, proto)
            if not self.stopping.adopt(sock):
                return                # stopping: the slot stops in CONNECTING
            self.sock = sock
            sock.settimeout(left)
            try:
                sock.connect(address)
            except OSError as e:      # TimeoutError too: "timed out"
                self.close()
                if self.stopping.is_set():
                    return
                reason = describe(e)
                continue
            return self.connected()
        self.connect_failed(reason)

    def close(self):
        if self.sock is not None:
            self.stopping.release(self.sock)
            self.sock = None


def serve(broker, slots, outputs, stop):
    stopping = Stopping()
    shells = [SlotThread(slot, outputs, broker, stopping, stop) for slot in slots]
    threads = [threading.Thread(target=shell.run, name=f"slot-{i}", daemon=True)
               for i, shell in enumerate(shells, 1)]
    for thread in threads:
        thread.start()
    stop.wait()
    outputs.log("stopping")
    stopping.set()
    # Every blocking call wakes at once; only a host name lookup (getaddrinfo)
    # cannot be interrupted. Such a thread has no job, so it is left behind
    # (a daemon) rather than keeping the worker from exiting.
    deadline = time.monotonic() + JOIN_TIMEOUT
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return 1 if any(shell.failed for shell in shells) else 0


def main(argv=None):
    return worker_main(PROG, FLAVOUR, argv, serve)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:   # Ctrl-C before the handlers were installed
        sys.exit(0)
