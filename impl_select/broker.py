"""The select-based broker: one thread, every socket multiplexed with selectors.

A thin I/O shell around core.broker.BrokerCore. Each read's lines are answered
in one pass. Replies wait until the end of the loop iteration: then a durable
store commits everything the iteration changed at once (group commit), and
each connection's replies go out with one send. What the kernel does not take
waits in a per-connection output buffer, so a peer that stops reading slows
nobody else (and is dropped past --max-output).
"""

import errno
import selectors
import signal
import socket
import sys
from time import monotonic

from core.options import DEFAULT_MAX_OUTPUT

from .broker_main import run_broker
from .netutil import READ_SIZE, keep_alive

FLAVOUR = "select"
# After accept() fails for lack of descriptors, listen again this much later
# instead of spinning on a listener that stays readable.
ACCEPT_PAUSE = 0.1
READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


class Peer:
    """A connected socket and what the shell keeps for it."""

    __slots__ = ("sock", "conn", "outbox", "events", "replies")

    def __init__(self, sock, conn):
        self.sock = sock
        self.conn = conn
        self.outbox = bytearray()    # accepted replies the kernel has not taken yet
        self.events = READ
        self.replies = []            # replies of this iteration, sent after the commit


class SelectBroker:
    def __init__(self, core, listeners, max_output=DEFAULT_MAX_OUTPUT):
        self.core = core
        self.max_output = max_output
        self.selector = selectors.DefaultSelector()
        self.listeners = listeners            # port name -> listening socket
        self.paused_until = None
        self.quiet_until = 0.0
        self.running = True
        self.answered = []                    # peers with replies this iteration
        for port, sock in listeners.items():
            self.selector.register(sock, READ, port)
        # Signals write a byte here, so select() wakes at once to stop.
        self.wakeup_r, self.wakeup_w = socket.socketpair()
        self.wakeup_r.setblocking(False)
        self.wakeup_w.setblocking(False)
        self.selector.register(self.wakeup_r, READ, None)

    def serve(self):
        signal.set_wakeup_fd(self.wakeup_w.fileno(), warn_on_full_buffer=False)
        select, core = self.selector.select, self.core
        while self.running:
            events = select(self._timeout())
            now = monotonic()
            for key, mask in events:
                peer = key.data
                if peer.__class__ is Peer:
                    if mask & READ:
                        self._readable(peer, now)
                    if mask & WRITE and peer.conn.io is peer:
                        self._flush(peer)
                elif peer is None:
                    self._drain_wakeup()
                else:
                    self._accept(key.fileobj, peer)
            deadline = core.next_deadline()
            if deadline is not None and deadline <= now:
                core.tick(now)
            if self.paused_until is not None and now >= self.paused_until:
                self._resume_accepting()
            self._send_answers()
        self._shutdown()

    def stop(self, *_):
        self.running = False

    def _timeout(self):
        deadline = self.core.next_deadline()
        if self.paused_until is not None:
            deadline = self.paused_until if deadline is None else min(deadline, self.paused_until)
        return None if deadline is None else max(0.0, deadline - monotonic())

    # -- accepting ------------------------------------------------------------

    def _accept(self, listener, port):
        while True:
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                return
            except OSError as error:
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._pause_accepting()
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            keep_alive(sock)
            peer = Peer(sock, self.core.open(port))
            peer.conn.io = peer
            self.selector.register(sock, READ, peer)

    def _pause_accepting(self):
        now = monotonic()
        if self.paused_until is None:
            if now >= self.quiet_until:
                print("broker: out of file descriptors; not accepting until some close",
                      file=sys.stderr, flush=True)
                self.quiet_until = now + 10.0      # one warning per 10 s, not per retry
            for sock in self.listeners.values():
                self.selector.unregister(sock)
        self.paused_until = now + ACCEPT_PAUSE

    def _resume_accepting(self):
        self.paused_until = None
        for port, sock in self.listeners.items():
            self.selector.register(sock, READ, port)

    # -- reading and answering ----------------------------------------------------

    def _readable(self, peer, now):
        try:
            data = peer.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(peer)
            return
        if data:
            reply = self.core.receive(peer.conn, data, now)
        else:
            reply = self.core.end_of_input(peer.conn, now)
        if reply:
            if not peer.replies:
                self.answered.append(peer)
            peer.replies.append(reply)
        elif peer.conn.closing and not peer.replies:
            if peer.outbox:
                self._want(peer, WRITE)     # EOF stays readable: stop listening
            else:
                self._drop(peer)

    def _send_answers(self):
        """Commit what this iteration changed, then send every reply it produced."""
        core = self.core
        for conn, data in core.deliveries:
            peer = conn.io
            if peer is not None:
                if not peer.replies:
                    self.answered.append(peer)
                peer.replies.append(data)
        core.deliveries.clear()
        if not self.answered:
            return
        if core.store is not None:
            core.store.sync()
        answered, self.answered = self.answered, []
        for peer in answered:
            replies, peer.replies = peer.replies, []
            if peer.conn.io is peer:
                self._write(peer, replies[0] if len(replies) == 1 else b"".join(replies))

    def _write(self, peer, data):
        if not peer.outbox:
            try:
                sent = peer.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._drop(peer)
                return
            if sent == len(data):
                if peer.conn.closing:
                    self._drop(peer)
                return
            data = data[sent:]
        peer.outbox += data
        if len(peer.outbox) > self.max_output:
            self._drop(peer)      # it does not read; keep memory bounded for everyone else
            return
        self._want(peer, WRITE if peer.conn.closing else READ | WRITE)

    def _flush(self, peer):
        try:
            sent = peer.sock.send(peer.outbox)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(peer)
            return
        del peer.outbox[:sent]
        if not peer.outbox:
            if peer.conn.closing:
                self._drop(peer)
            else:
                self._want(peer, READ)

    def _want(self, peer, events):
        if peer.events != events:
            peer.events = events
            self.selector.modify(peer.sock, events, peer)

    def _drop(self, peer):
        if peer.conn.io is not peer:
            return
        peer.conn.io = None
        self.selector.unregister(peer.sock)
        peer.sock.close()
        self.core.close(peer.conn, monotonic())
        if self.paused_until is not None:
            self._resume_accepting()     # a descriptor is free again

    def _drain_wakeup(self):
        try:
            while self.wakeup_r.recv(512):
                pass
        except BlockingIOError:
            pass

    def _shutdown(self):
        signal.set_wakeup_fd(-1)
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()
        self.selector.close()
        self.wakeup_w.close()


def main(argv=None):
    return run_broker("impl_select.broker", FLAVOUR, argv, lambda core, listeners, args:
                      SelectBroker(core, listeners, args.max_output))


if __name__ == "__main__":
    sys.exit(main())
