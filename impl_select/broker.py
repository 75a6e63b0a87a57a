"""The select-based broker: one thread, every socket multiplexed with selectors.

A thin I/O shell around core.broker.BrokerCore. Each read's lines are answered
in one pass and the replies sent with one send. Replies the core addresses to
other connections (a JOB for a waiting FETCH) are passed on right after the
event that caused them, so each connection sees its replies in order. With a
durable store, replies instead wait until the end of the loop iteration: the
store commits everything the iteration changed at once (group commit), then
each connection's replies go out with one send. What the kernel does not take
waits in a per-connection output buffer, so a peer that stops reading slows
nobody else (and is dropped past --max-output, or when the core's memory
budget cannot take it). When accept fails for lack of descriptors, the core
chooses quiet connections to shed; they are closed and accepting goes on.
"""

import errno
import selectors
import signal
import socket
import sys
from time import monotonic

from core.options import DEFAULT_MAX_OUTPUT, DEFAULT_PEER_TIMEOUT

from shell.broker_main import run_broker
from shell.logs import BROKER_LOG
from shell.netutil import READ_SIZE, keep_alive

FLAVOUR = "select"
# After accept() fails for lack of descriptors, listen again this much later
# instead of spinning on a listener that stays readable.
ACCEPT_PAUSE = 0.1
# At most this many connections shed per readable listener (chosen in one pass
# over the connections), so a flood of new connections cannot churn through
# every quiet one at once; then pause as above.
SHED_PER_ACCEPT = 16
READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


class Peer:
    """A connected socket and what the shell keeps for it."""

    __slots__ = ("sock", "conn", "outbox", "events", "replies")

    def __init__(self, sock, conn):
        self.sock = sock
        self.conn = conn
        self.outbox = bytearray()    # accepted replies the kernel has not taken yet
        self.events = READ
        self.replies = []            # with a store: replies waiting for the iteration's commit


class SelectBroker:
    def __init__(self, core, listeners, max_output=DEFAULT_MAX_OUTPUT,
                 peer_timeout=DEFAULT_PEER_TIMEOUT):
        self.core = core
        self.max_output = max_output
        self.peer_timeout = peer_timeout
        self.selector = selectors.DefaultSelector()
        self.listeners = listeners            # port name -> listening socket
        self.paused_until = None
        self.quiet_until = 0.0
        self.running = True
        # Group commit: with a store, replies wait for the end of the iteration.
        self.deferred = core.store is not None
        # Logs each accepted connection (shell.logs.TracingCore, --log-level debug only).
        self.accepted = getattr(core, "accepted", None)
        self.answered = []                    # peers with deferred replies
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
        deliveries = core.deliveries
        deadline = None          # the core's next deadline, taken once per iteration
        while self.running:
            events = select(self._timeout(deadline))
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
                if deliveries:
                    self._deliver()
            if deadline is not None and deadline <= now:
                core.tick(now)
                self._deliver()
            if self.paused_until is not None and now >= self.paused_until:
                self._resume_accepting()
            if self.answered:
                self._send_answers()
            deadline = core.next_deadline()
        self._shutdown()

    def stop(self, *_):
        self.running = False

    def _timeout(self, deadline):
        if self.paused_until is not None:
            deadline = self.paused_until if deadline is None else min(deadline, self.paused_until)
        return None if deadline is None else max(0.0, deadline - monotonic())

    # -- accepting ------------------------------------------------------------

    def _accept(self, listener, port):
        victims = None       # connections to shed, in order, chosen once per burst
        while True:
            try:
                sock, address = listener.accept()
            except BlockingIOError:
                return
            except OSError as error:
                if error.errno in (errno.EMFILE, errno.ENFILE):
                    if victims is None:
                        victims = self.core.shed(monotonic(), SHED_PER_ACCEPT)
                    if self._shed(victims):
                        continue              # a descriptor is free: accept again
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._pause_accepting()
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            keep_alive(sock, self.peer_timeout)
            peer = Peer(sock, self.core.open(port, monotonic()))
            peer.conn.io = peer
            self.selector.register(sock, READ, peer)
            if self.accepted is not None:
                self.accepted(peer.conn, address)

    def _shed(self, victims):
        """Close the next of ``victims`` (the core's choice) to free a descriptor;
        False when none is left."""
        while victims:
            conn = victims.pop(0)
            if conn.io is not None and not conn.closing:
                conn.closing = True
                self._drop(conn.io)
                return True
        return False

    def _pause_accepting(self):
        now = monotonic()
        if self.paused_until is None:
            if now >= self.quiet_until:
                BROKER_LOG.error("out of file descriptors; not accepting until some close")
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
            if self.deferred:
                self._defer(peer, reply)
            else:
                self._write(peer, reply)
        elif peer.conn.closing and not peer.replies:
            if peer.outbox:
                self._want(peer, WRITE)     # EOF stays readable: stop listening
            else:
                self._drop(peer)

    def _deliver(self):
        """Pass on the replies the core addressed to other connections, in order.
        A drop while sending may requeue jobs and add more: taken in the same pass."""
        deliveries = self.core.deliveries
        index = 0
        while index < len(deliveries):
            conn, data = deliveries[index]
            index += 1
            peer = conn.io
            if peer is not None:
                if self.deferred:
                    self._defer(peer, data)
                else:
                    self._write(peer, data)
        deliveries.clear()

    def _defer(self, peer, data):
        if not peer.replies:
            self.answered.append(peer)
        peer.replies.append(data)

    def _send_answers(self):
        """Commit what this iteration changed, then send every reply it produced."""
        while self.answered:
            self.core.store.sync()
            answered, self.answered = self.answered, []
            for peer in answered:
                replies, peer.replies = peer.replies, []
                if peer.conn.io is peer:
                    self._write(peer, replies[0] if len(replies) == 1 else b"".join(replies))
            self._deliver()        # a peer dropped while sending may have held jobs

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
            data = memoryview(data)[sent:]      # no copy: it may be large
        if len(peer.outbox) + len(data) > self.max_output or not self.core.charge_output(
                peer.conn, len(data)):
            self._drop(peer)      # it does not read; keep memory bounded for everyone else
            return
        peer.outbox += data
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
        self.core.output_taken(peer.conn, sent)
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
                      SelectBroker(core, listeners, args.max_output, args.peer_timeout))


if __name__ == "__main__":
    sys.exit(main())
