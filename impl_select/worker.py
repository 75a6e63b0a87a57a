"""Select-based worker: one thread, every broker connection multiplexed with ``selectors``.

    python3 -m impl_select.worker [HOST:PORT [OUTPUT_PORT [SYSLOG_PORT]]] [options]

A thin I/O shell around core.worker.WorkerSlot (one slot per --concurrency):
it owns the non-blocking sockets, the selector and the clock, feeds each slot
what happened and carries out the actions the slot returns. The command
line is core.worker_options; start-up, outputs and carrying out actions are
shell.worker_io, shared by both workers.
"""

import errno
import os
import selectors
import socket
import sys
import time

from shell.worker_io import ConnectFailed, SlotShell, describe, resolve, worker_main

FLAVOUR = "select"
PROG = "python3 -m impl_select.worker"


class _Connection(SlotShell):
    """One slot's socket side, on the worker's shared selector."""

    def __init__(self, slot, outputs, broker, selector):
        super().__init__(slot, outputs)
        self.broker = broker          # (host, port)
        self.selector = selector
        self.sock = None
        self.connecting = False
        self.addresses = []           # getaddrinfo results not yet tried in this attempt
        self.outbuf = bytearray()

    # --- actions ---

    def send(self, data):
        if self.sock is not None:     # skipped once the socket broke in this batch
            self.outbuf += data
            self._flush()

    def connect(self):
        try:
            self.addresses = resolve(*self.broker)
        except ConnectFailed as e:
            return self.connect_failed(e.reason)
        self._try_next_address("no address")

    def close(self):
        if self.sock is not None:
            self.selector.unregister(self.sock)
            self.sock.close()
        self.sock = None
        self.connecting = False
        self.outbuf.clear()

    # --- socket events ---

    def on_ready(self, mask):
        if self.connecting:
            if mask & selectors.EVENT_WRITE:
                self._finish_connect()
            return
        if mask & selectors.EVENT_READ:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError as e:
                return self.lost(describe(e))
            if data == b"":
                return self.lost("closed by broker")
            if data:
                self.execute(self.slot.data_received(data, time.monotonic()))
        if self.sock is not None and mask & selectors.EVENT_WRITE and self.outbuf:
            self._flush()
            self.report_broken()

    def _flush(self):
        try:
            sent = self.sock.send(self.outbuf)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as e:
            return self.broke(describe(e))
        del self.outbuf[:sent]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.outbuf else 0)
        if self.selector.get_key(self.sock).events != events:
            self.selector.modify(self.sock, events, self)

    def _try_next_address(self, reason):
        """Try the addresses left until a connect is pending; writable once it finished."""
        while self.addresses:
            family, type_, proto, _, address = self.addresses.pop(0)
            sock = socket.socket(family, type_, proto)
            sock.setblocking(False)
            code = sock.connect_ex(address)
            if code in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
                self.sock, self.connecting = sock, True
                self.selector.register(sock, selectors.EVENT_WRITE, self)
                return
            sock.close()
            reason = os.strerror(code)
        self.connect_failed(reason)

    def _finish_connect(self):
        code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self.close()
            return self._try_next_address(os.strerror(code))
        self.connecting = False
        self.addresses = []
        self.selector.modify(self.sock, selectors.EVENT_READ, self)
        self.connected()


class SelectWorker:
    def __init__(self, broker, slots, outputs, stop):
        self.selector = selectors.DefaultSelector()
        self.conns = [_Connection(slot, outputs, broker, self.selector) for slot in slots]
        self.outputs = outputs
        self.stop = stop              # a StopRequest: its fd turns readable on SIGINT/SIGTERM

    def run(self):
        """Serve until the stop request; then stop every slot (no DONE for unfinished jobs)."""
        self.selector.register(self.stop, selectors.EVENT_READ, None)
        now = time.monotonic()
        for conn in self.conns:
            conn.execute(conn.slot.start(now))
        while not self.stop.requested:
            for key, mask in self.selector.select(self._timeout()):
                conn = key.data
                if conn is not None and conn.sock is key.fileobj:  # not closed earlier this round
                    conn.on_ready(mask)
            now = time.monotonic()
            for conn in self.conns:
                due = conn.slot.next_deadline()
                if due is not None and due <= now:
                    conn.execute(conn.slot.tick(now))
        self.outputs.log("stopping")
        now = time.monotonic()
        for conn in self.conns:
            conn.execute(conn.slot.stop(now))
        self.selector.close()
        return 0

    def _timeout(self):
        deadlines = [d for d in (c.slot.next_deadline() for c in self.conns) if d is not None]
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())


def serve(broker, slots, outputs, stop):
    return SelectWorker(broker, slots, outputs, stop).run()


def main(argv=None):
    return worker_main(PROG, FLAVOUR, argv, serve)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:   # Ctrl-C before the handlers were installed
        sys.exit(0)
