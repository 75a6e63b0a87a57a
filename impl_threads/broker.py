"""The thread-per-connection broker: one acceptor thread per port, one thread per peer.

A thin I/O shell around core.broker.BrokerCore, which is not thread-safe: one
lock serialises every call into it, so no job goes to two workers and no id
is issued twice however the threads race. Every reply is queued on its peer
under that lock, so each peer's replies keep the core's order whichever thread
made them; they are sent outside the lock, so a peer that stops reading blocks
only its own thread (and is dropped once a send has waited SEND_TIMEOUT). With
a store, a reply waits in the queue until the changes it acknowledges are on
disk. A timer thread answers FETCH <seconds> that run out and closes
connections that never finish a line or never authenticate. Replies the
kernel does not take at once are charged to the core's memory budget while
a send waits; a peer whose replies do not fit is shut down. Out of
descriptors, the acceptor sheds the quiet connections the core chooses and
accepts again.
"""

import errno
import socket
import sys
import threading
from collections import deque
from time import monotonic

from core.options import DEFAULT_PEER_TIMEOUT
from shell.broker_main import run_broker
from shell.logs import BROKER_LOG, SetUpWarning
from shell.netutil import READ_SIZE, set_up_accepted

FLAVOUR = "threads"
# A peer whose kernel buffer stays full this long does not read: drop it.
SEND_TIMEOUT = 30.0
# Out of descriptors after shedding, wait this long for a descriptor to free.
ACCEPT_PAUSE = 0.1
# Seconds a stopping broker waits for its threads to end (ThreadedBroker._shutdown).
SHUTDOWN_WAIT = 5.0


class Peer:
    """A connected socket; its own thread reads, anyone may send (under send_lock)."""

    __slots__ = ("sock", "conn", "send_lock", "outbox")

    def __init__(self, sock, conn):
        self.sock = sock
        self.conn = conn
        self.send_lock = threading.Lock()
        # (store changes it acknowledges, bytes), queued under the core lock.
        self.outbox = deque()


class ThreadedBroker:
    def __init__(self, core, listeners, peer_timeout=DEFAULT_PEER_TIMEOUT):
        self.core = core
        self.peer_timeout = peer_timeout
        self.listeners = listeners
        self.lock = threading.Lock()            # every call into core
        self.timer_wakeup = threading.Condition(self.lock)
        self.stopping = threading.Event()
        self.peers = set()                      # open peers, shut down on stop
        self.freed = threading.Event()          # a peer closed: a descriptor is free
        # Logs each accepted connection (shell.logs.TracingCore, --log-level debug only).
        self.accepted = getattr(core, "accepted", None)
        self.quiet_until = 0.0                  # no "out of descriptors" line again before
        self._warn_set_up = SetUpWarning()    # one "cannot set up the connection" line per 10 s

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
                sock, address = listener.accept()
            except OSError as error:
                if self.stopping.is_set():
                    return
                if error.errno in (errno.EMFILE, errno.ENFILE) and self._shed():
                    # The shed peer's thread closes its socket: wait for that.
                    self.freed.wait(ACCEPT_PAUSE)
                    continue
                # Out of descriptors or threads: wait a little instead of spinning.
                self._warn_accept(error)
                self.stopping.wait(ACCEPT_PAUSE)
                continue
            try:
                # A kernel-level send timeout: unlike settimeout() it leaves recv blocking.
                set_up_accepted(sock, self.peer_timeout, send_timeout=SEND_TIMEOUT)
            except OSError as error:     # this connection only: the accept loop goes on
                sock.close()
                self._warn_set_up(error, address)
                continue
            with self.lock:
                peer = Peer(sock, self.core.open(port, monotonic()))
                peer.conn.io = peer
                self.peers.add(peer)
                if self.accepted is not None:
                    self.accepted(peer.conn, address)
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
                    if conn.io is not peer:     # dropped by a sender: its jobs are requeued
                        break
                    now = monotonic()
                    reply = core.receive(conn, data, now) if data else core.end_of_input(conn, now)
                    mark = self._recorded()
                    if reply:
                        peer.outbox.append((mark, reply))
                    others = self._post_deliveries(mark)
                self._send_posted(mark, peer, *others)
        except OSError:
            pass
        finally:
            self._close_peer(peer)

    def _warn_accept(self, error):
        """accept() failed even after shedding: one line per 10 s, not per retry."""
        now = monotonic()
        if now >= self.quiet_until:
            self.quiet_until = now + 10.0
            BROKER_LOG.error("cannot accept connections: %s; retrying until some close",
                             error.strerror or error)

    def _recorded(self):
        return 0 if self.core.store is None else self.core.store.recorded

    def _post_deliveries(self, mark):
        """Under the lock: queue the replies core made for other connections;
        returns their peers."""
        self.timer_wakeup.notify()      # a FETCH <seconds> may have started waiting
        deliveries = self.core.deliveries
        if not deliveries:
            return ()
        self.core.deliveries = []
        peers = []
        for conn, data in deliveries:
            peer = conn.io
            if peer is not None:
                peer.outbox.append((mark, data))
                peers.append(peer)
        return peers

    def _shed(self):
        """Out of descriptors: close the connection the core chooses in the core and shut
        its socket down (its thread then closes it and sets ``freed``). False: none
        may be shed."""
        with self.lock:
            victims = [conn.io for conn in self.core.shed(monotonic(), 1) if conn.io is not None]
            mark, posted = self._drop(victims)
            self.freed.clear()
        if posted:                         # none: the core sheds no connection holding a job
            self._send_posted(mark, *posted)
        return bool(victims)

    def _send_posted(self, mark, *peers):
        """Outside the lock: once changes up to ``mark`` are durable, send what the
        peers' queues hold. Whoever queued a reply sends it, or finds it sent. A
        peer that does not take its replies (a send failed, or they do not fit the
        memory budget) is dropped: the core closes it, which may requeue jobs and
        post them to others, sent in the next round (a loop, not recursion: a run
        of dead peers waiting in FETCH <seconds> may be long)."""
        store = self.core.store
        while True:
            if store is not None:
                store.sync(mark)      # group commit: threads share it
            posted = []
            for peer in peers:
                dropped = self._flush(peer)
                if dropped is not None:
                    mark = max(mark, dropped[0])
                    posted.extend(dropped[1])
                elif peer.conn.closing:
                    # Its last reply is out (ERR IDLE_TIMEOUT, AUTH_FAILED...): wake its
                    # reader, maybe blocked on an unfinished line, to close it; SHUT_RD
                    # leaves sending intact.
                    _shut(peer.sock, socket.SHUT_RD)
            if not posted:
                return
            peers = posted

    def _flush(self, peer):
        """Send what ``peer``'s queue holds once durable, under its send_lock. None, or
        when the peer does not take its replies, _drop's (mark, peers) after dropping
        it: still under send_lock, so no reply follows one cut short."""
        store, outbox = self.core.store, peer.outbox
        with peer.send_lock:
            synced = None if store is None else store.synced
            ready = []
            while outbox and (synced is None or outbox[0][0] <= synced):
                ready.append(outbox.popleft()[1])
            if not ready:
                return None
            data = ready[0] if len(ready) == 1 else b"".join(ready)
            ready.clear()             # only data stays alive while a send waits
            try:
                try:
                    sent = peer.sock.send(data, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    sent = 0
                kept = sent == len(data) or self._send_rest(peer, data, sent)
            except OSError:           # reset, or SO_SNDTIMEO ran out: it does not read
                kept = False
            if kept:
                return None
            with self.lock:
                outbox.clear()
                return self._drop([peer])

    def _send_rest(self, peer, data, sent):
        """Under send_lock: the kernel took only ``sent`` bytes of ``data``. While
        sendall waits for the rest, all of ``data`` stays in memory: it is charged
        to the core's memory budget. Returns True once all is sent, False when it
        does not fit the budget (the caller drops the peer). Raises OSError as
        sendall does."""
        with self.lock:
            if not self.core.charge_output(peer.conn, len(data)):
                return False
        try:
            peer.sock.sendall(memoryview(data)[sent:])
        finally:
            with self.lock:           # sent (or lost): no longer held
                self.core.output_taken(peer.conn, len(data))
        return True

    def _timer_loop(self):
        core = self.core
        with self.lock:
            while not self.stopping.is_set():
                deadline = core.next_deadline()
                now = monotonic()
                if deadline is not None and deadline <= now:
                    core.tick(now)
                    mark = self._recorded()
                    peers = self._post_deliveries(mark)
                    self.lock.release()
                    try:
                        self._send_posted(mark, *peers)   # wakes an IDLE_TIMEOUT's reader
                    finally:
                        self.lock.acquire()
                    continue
                self.timer_wakeup.wait(0.5 if deadline is None else min(0.5, deadline - now))

    def _forget(self, peer):
        """Under the lock, once per peer: the core closes its connection (the jobs it
        held go back to waiting). Returns the store mark and the peers that got
        deliveries (a requeued job may wake a waiting FETCH), for _send_posted; None
        when it was forgotten before."""
        if peer.conn.io is not peer:
            return None
        self.peers.discard(peer)
        self.core.close(peer.conn, monotonic())
        peer.conn.io = None
        mark = self._recorded()
        return mark, self._post_deliveries(mark)

    def _drop(self, peers):
        """Under the lock: _forget each of ``peers``, then shut its socket down (after
        the core's close, so its jobs are back before its peer sees the FIN); its
        reader thread then ends and closes it. Returns the highest store mark and
        the peers that got deliveries, for _send_posted."""
        mark, posted = 0, []
        for peer in peers:
            forgotten = self._forget(peer)
            if forgotten is not None:      # else closed already: its socket may be gone
                _shut(peer.sock)
                mark = max(mark, forgotten[0])
                posted.extend(forgotten[1])
        return mark, posted

    def _close_peer(self, peer):
        """Requeue what ``peer`` held, then close its socket: a peer that sees the close
        (after a half-close) and at once FETCHes on a new connection must find its
        jobs waiting (spec worker.ownership). Closed first, a FETCH handled by another
        thread before this one took the lock got NOJOB (seen in CI). The same order
        holds where a peer is dropped (_drop). Replies another thread queued for it
        (the JOB and ERR AUTH_FAILED of a wait that thread ended) are sent before
        the close: its reader can see ``closing`` and come here first."""
        with self.lock:
            mark, peers = self._forget(peer) or (0, ())
        self._send_posted(mark, peer)     # nothing is queued for it after _forget
        peer.sock.close()
        self.freed.set()
        self._send_posted(mark, *peers)

    def _shutdown(self):
        """Stop accepting, shut every peer's socket (its thread then requeues what
        it held, sends what is on disk, and ends), and wait up to SHUTDOWN_WAIT
        seconds for every other thread to end. run_broker closes the store next:
        a thread still using it then found it closed ("Cannot operate on a closed
        database", exit 1) or, inside SQLite, crashed the process (SIGSEGV), when
        a worker holding a job disconnected as the broker was stopped."""
        for sock in self.listeners.values():
            _shut(sock)
        deadline = monotonic() + SHUTDOWN_WAIT
        others = [thread for thread in threading.enumerate()
                  if thread is not threading.current_thread()]
        for thread in others:          # accept threads first: no peer is added after
            if thread.name.startswith("accept-"):
                thread.join(max(0.0, deadline - monotonic()))
        with self.lock:
            peers = list(self.peers)
            self.timer_wakeup.notify_all()
        for peer in peers:
            _shut(peer.sock)       # wakes the thread blocked in recv
        for thread in threading.enumerate():
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - monotonic()))


def _shut(sock, how=socket.SHUT_RDWR):
    try:
        sock.shutdown(how)
    except OSError:
        pass


def main(argv=None):
    return run_broker("impl_threads.broker", FLAVOUR, argv,
                      lambda core, listeners, args: ThreadedBroker(core, listeners, args.peer_timeout))


if __name__ == "__main__":
    sys.exit(main())
