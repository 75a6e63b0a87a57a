"""The thread-per-connection broker: one acceptor thread per port, one thread per peer.

A thin I/O shell around core.broker.BrokerCore, which is not thread-safe: one
lock serialises every call into it, so no job goes to two workers and no id
is issued twice however the threads race. Replies are sent outside that lock,
so a peer that stops reading blocks only its own thread (and is dropped once a
send has waited --send-timeout). A timer thread answers FETCH <seconds> that
run out and closes connections that never finish a line.
"""

import socket
import struct
import sys
import threading
from time import monotonic

from impl_select.broker_main import run_broker
from impl_select.netutil import READ_SIZE, keep_alive

FLAVOUR = "threads"
# A peer whose kernel buffer stays full this long does not read: drop it.
SEND_TIMEOUT = 30.0


class Peer:
    """A connected socket; its own thread reads, anyone may send (under send_lock)."""

    __slots__ = ("sock", "conn", "send_lock")

    def __init__(self, sock, conn):
        self.sock = sock
        self.conn = conn
        self.send_lock = threading.Lock()


class ThreadedBroker:
    def __init__(self, core, listeners):
        self.core = core
        self.listeners = listeners
        self.lock = threading.Lock()            # every call into core
        self.timer_wakeup = threading.Condition(self.lock)
        self.stopping = threading.Event()
        self.peers = set()                      # open peers, shut down on stop

    def serve(self):
        for port, sock in self.listeners.items():
            sock.setblocking(True)
            threading.Thread(target=self._accept_loop, args=(sock, port),
                             name=f"accept-{port}", daemon=True).start()
        threading.Thread(target=self._timer_loop, name="timers", daemon=True).start()
        while not self.stopping.wait(0.5):      # the main thread stays free for signals
            pass
        self._shutdown()

    def stop(self, *_):
        self.stopping.set()

    def _accept_loop(self, listener, port):
        while not self.stopping.is_set():
            try:
                sock, _ = listener.accept()
            except OSError:
                if self.stopping.is_set():
                    return
                # Out of descriptors or threads: wait a little instead of spinning.
                self.stopping.wait(0.1)
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # A kernel-level send timeout: unlike settimeout() it leaves recv blocking.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                            struct.pack("ll", int(SEND_TIMEOUT), 0))
            keep_alive(sock)
            with self.lock:
                peer = Peer(sock, self.core.open(port))
                peer.conn.io = peer
                self.peers.add(peer)
            try:
                threading.Thread(target=self._serve_peer, args=(peer,), daemon=True).start()
            except RuntimeError:      # cannot start a new thread: refuse this peer
                self._close_peer(peer)

    def _serve_peer(self, peer):
        core, lock, conn, sock = self.core, self.lock, peer.conn, peer.sock
        try:
            while not conn.closing:
                data = sock.recv(READ_SIZE)
                with lock:
                    now = monotonic()
                    reply = core.receive(conn, data, now) if data else core.end_of_input(conn, now)
                    deliveries = self._take_deliveries()
                    synced_through = core.store.recorded if core.store is not None else 0
                if core.store is not None:
                    core.store.sync(synced_through)     # group commit: threads share it
                if reply:
                    self._send(peer, reply)
                self._deliver(deliveries)
        except OSError:
            pass
        finally:
            self._close_peer(peer)

    def _take_deliveries(self):
        """Under the lock: the replies core produced for other connections.

        The core's list is never handed out itself: another thread may append
        to it as soon as the lock is released, and both would send that line.
        """
        self.timer_wakeup.notify()      # a FETCH <seconds> may have started waiting
        deliveries = self.core.deliveries
        if not deliveries:
            return ()
        self.core.deliveries = []
        return deliveries

    def _deliver(self, deliveries):
        for conn, data in deliveries:
            peer = conn.io
            if peer is not None:
                self._send(peer, data)

    def _send(self, peer, data):
        with peer.send_lock:
            try:
                peer.sock.sendall(data)
            except OSError:           # reset, or SO_SNDTIMEO ran out: it does not read
                _shut(peer.sock)

    def _timer_loop(self):
        core = self.core
        with self.lock:
            while not self.stopping.is_set():
                deadline = core.next_deadline()
                now = monotonic()
                if deadline is not None and deadline <= now:
                    core.tick(now)
                    deliveries = self._take_deliveries()
                    self.lock.release()
                    try:
                        self._deliver(deliveries)
                        for conn, _ in deliveries:
                            peer = conn.io
                            if conn.closing and peer is not None:
                                # IDLE_TIMEOUT: wake its reader, which is blocked on an
                                # unfinished line; SHUT_RD leaves sending intact.
                                _shut(peer.sock, socket.SHUT_RD)
                    finally:
                        self.lock.acquire()
                    continue
                self.timer_wakeup.wait(0.5 if deadline is None else min(0.5, deadline - now))

    def _close_peer(self, peer):
        peer.sock.close()
        with self.lock:
            self.peers.discard(peer)
            peer.conn.io = None
            self.core.close(peer.conn, monotonic())
            deliveries = self._take_deliveries()      # a requeued job may wake a waiting FETCH
        self._deliver(deliveries)

    def _shutdown(self):
        for sock in self.listeners.values():
            _shut(sock)
        with self.lock:
            peers = list(self.peers)
        for peer in peers:
            _shut(peer.sock)       # wakes the thread blocked in recv


def _shut(sock, how=socket.SHUT_RDWR):
    try:
        sock.shutdown(how)
    except OSError:
        pass


def main(argv=None):
    return run_broker("impl_threads.broker", FLAVOUR, argv,
                      lambda core, listeners, args: ThreadedBroker(core, listeners))


if __name__ == "__main__":
    sys.exit(main())
