"""The select-based broker: one thread, every socket multiplexed with epoll.

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

The loop talks to ``select.epoll`` directly (``select.poll`` where there is no
epoll) with a dict from descriptor to peer, not through ``selectors``: the
selector's ``select()`` builds a key object list in Python for every wake-up,
about 0.7 us per request of a broker that costs a few (BENCHMARKS.md, "Where
the remaining time goes"). Both report readiness in the same bits.
"""

import errno
import select
import signal
import socket
import sys
from time import monotonic

from core.options import DEFAULT_MAX_OUTPUT, DEFAULT_PEER_TIMEOUT

from shell.broker_main import run_broker
from shell.logs import BROKER_LOG, SetUpWarning
from shell.netutil import READ_SIZE, set_up_accepted

FLAVOUR = "select"
# After accept() fails for lack of descriptors, listen again this much later
# instead of spinning on a listener that stays readable.
ACCEPT_PAUSE = 0.1
# At most this many connections shed per readable listener (chosen in one pass
# over the connections), so a flood of new connections cannot churn through
# every quiet one at once; then pause as above.
SHED_PER_ACCEPT = 16
if hasattr(select, "epoll"):
    READ, WRITE = select.EPOLLIN, select.EPOLLOUT
else:                                   # BSD, macOS: poll(2), the same bits
    READ, WRITE = select.POLLIN, select.POLLOUT
# An error or hang-up is reported to both sides: the next recv or send says which.
NOT_WRITE, NOT_READ = ~WRITE, ~READ


class _Poll:
    """select.poll with epoll's calling convention (timeout in seconds, None:
    block), for systems without epoll."""

    def __init__(self):
        self._poll = select.poll()
        self.register, self.modify, self.unregister = (
            self._poll.register, self._poll.modify, self._poll.unregister)

    def poll(self, timeout=None):
        return self._poll.poll(None if timeout is None else timeout * 1000)

    def close(self):
        pass


_WAKEUP = object()      # the value of the signal wake-up socket in SelectBroker.others


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
        self.poller = select.epoll() if hasattr(select, "epoll") else _Poll()
        # What poll() reports, by descriptor: connections in ``peers`` (-> Peer),
        # listeners and the wake-up socket in ``others`` (-> port name or _WAKEUP).
        # Apart, so the loop tells a connection by one lookup and a None test.
        self.peers = {}
        self.others = {}
        self.listeners = listeners            # port name -> listening socket
        self.paused_until = None
        self.quiet_until = 0.0
        self._warn_set_up = SetUpWarning()    # one "cannot set up the connection" line per 10 s
        self.running = True
        # Group commit: with a store, replies wait for the end of the iteration.
        self.deferred = core.store is not None
        # Logs each accepted connection (shell.logs.TracingCore, --log-level debug only).
        self.accepted = getattr(core, "accepted", None)
        self.answered = []                    # peers with deferred replies
        for port, sock in listeners.items():
            self._register(sock, port)
        # Signals write a byte here, so poll() wakes at once to stop.
        self.wakeup_r, self.wakeup_w = socket.socketpair()
        self.wakeup_r.setblocking(False)
        self.wakeup_w.setblocking(False)
        self._register(self.wakeup_r, _WAKEUP)

    def _register(self, sock, value):
        (self.peers if value.__class__ is Peer else self.others)[sock.fileno()] = value
        self.poller.register(sock.fileno(), READ)

    def _unregister(self, sock):
        if self.peers.pop(sock.fileno(), None) is None:
            del self.others[sock.fileno()]
        self.poller.unregister(sock.fileno())

    def serve(self):
        signal.set_wakeup_fd(self.wakeup_w.fileno(), warn_on_full_buffer=False)
        poll, peers, others, core = self.poller.poll, self.peers, self.others, self.core
        readable, receive, write = self._readable, core.receive, self._write
        deliveries = core.deliveries
        # The events of the usual case below; with a store (replies deferred), none.
        fast = None if self.deferred else READ
        deadline = None          # the core's next deadline, taken once per iteration
        while self.running:
            if deadline is None and self.paused_until is None:
                events = poll()
            else:
                events = poll(self._timeout(deadline))
            now = monotonic()
            for fd, mask in events:
                peer = peers.get(fd)
                if peer is not None:
                    # The general way first: CPython 3.11 specializes a comparison
                    # only when a short jump follows it, and this one is short.
                    if mask != fast:
                        if mask & NOT_WRITE:
                            readable(peer, now)
                        if mask & NOT_READ and peer.conn.io is peer:
                            self._flush(peer)
                    else:
                        # _readable's usual case inline, the request of a closed loop: a
                        # read answered with one send that the kernel takes whole. It
                        # saves a call and its attribute lookups per request (about 600
                        # of the loop's instructions, counted with cachegrind); anything
                        # else (EOF, errors, a backlog, closing) goes the general way,
                        # from the bytes already read.
                        sock = peer.sock
                        try:
                            data = sock.recv(READ_SIZE)
                        except OSError as error:
                            self._recv_failed(peer, error)
                            data = None
                        if data:
                            conn = peer.conn
                            reply = receive(conn, data, now)
                            if reply and not peer.outbox and not conn.closing:
                                try:
                                    sent = sock.send(reply)
                                except OSError:
                                    sent = 0       # write() sends again: it queues or drops
                                if sent != len(reply):
                                    write(peer, memoryview(reply)[sent:])
                            else:
                                self._answer(peer, reply)
                        elif data is not None:
                            self._answer(peer, core.end_of_input(peer.conn, now))
                else:
                    other = others.get(fd)      # None: a peer dropped earlier in this pass
                    if other is _WAKEUP:
                        self._drain_wakeup()
                    elif other is not None:
                        self._accept(self.listeners[other], other)
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
            try:
                sock.setblocking(False)
                set_up_accepted(sock, self.peer_timeout)
            except OSError as error:     # this connection only: the broker goes on
                sock.close()
                self._warn_set_up(error, address)
                continue
            peer = Peer(sock, self.core.open(port, monotonic()))
            peer.conn.io = peer
            self._register(sock, peer)
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
                self._unregister(sock)
        self.paused_until = now + ACCEPT_PAUSE

    def _resume_accepting(self):
        self.paused_until = None
        for port, sock in self.listeners.items():
            self._register(sock, port)

    # -- reading and answering ----------------------------------------------------

    def _readable(self, peer, now):
        """Read what ``peer`` sent and answer it (serve() inlines the usual case)."""
        try:
            data = peer.sock.recv(READ_SIZE)
        except OSError as error:
            self._recv_failed(peer, error)
            return
        if data:
            self._answer(peer, self.core.receive(peer.conn, data, now))
        else:
            self._answer(peer, self.core.end_of_input(peer.conn, now))

    def _recv_failed(self, peer, error):
        """recv() raised ``error``: nothing to read yet, or the connection is gone."""
        if not isinstance(error, (BlockingIOError, InterruptedError)):
            self._drop(peer)

    def _answer(self, peer, reply):
        """Send ``reply`` (bytes, maybe empty), the core's answer to ``peer``'s read,
        or queue it; drop ``peer`` once the core closes it and nothing is left to send."""
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
            self.poller.modify(peer.sock.fileno(), events)

    def _drop(self, peer):
        if peer.conn.io is not peer:
            return
        peer.conn.io = None
        self._unregister(peer.sock)
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
        for peer in self.peers.values():
            peer.sock.close()
        for sock in self.listeners.values():
            sock.close()
        self.wakeup_r.close()
        self.poller.close()
        self.wakeup_w.close()


def main(argv=None):
    return run_broker("impl_select.broker", FLAVOUR, argv, lambda core, listeners, args:
                      SelectBroker(core, listeners, args.max_output, args.peer_timeout))


if __name__ == "__main__":
    sys.exit(main())
