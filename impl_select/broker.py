"""The select-based broker: one thread, every socket multiplexed with selectors.

A thin I/O shell around core.broker.BrokerCore. Each read's lines are answered
in one pass and their replies written with one send; what the kernel does not
take waits in a per-connection output buffer, so a peer that stops reading
slows nobody else (and is dropped past --max-output).
"""

import errno
import selectors
import signal
import socket
import sys
from time import monotonic as _monotonic

from core.broker import CLIENT, WORKER, BrokerCore
from core.options import broker_parser, startup_line

from .netutil import READ_SIZE, keep_alive, listen, raise_descriptor_limit

FLAVOUR = "select"
# After accept() fails for lack of descriptors, listen again this much later
# instead of spinning on a listener that stays readable.
ACCEPT_PAUSE = 0.1


class Peer:
    """A connected socket and what the shell keeps for it."""

    __slots__ = ("sock", "conn", "outbox", "events")

    def __init__(self, sock, conn):
        self.sock = sock
        self.conn = conn
        self.outbox = bytearray()
        self.events = selectors.EVENT_READ


class SelectBroker:
    def __init__(self, core, listeners, max_output):
        self.core = core
        self.max_output = max_output
        self.selector = selectors.DefaultSelector()
        self.listeners = listeners            # port name -> listening socket
        self.paused_until = None
        self.running = True
        for port, sock in listeners.items():
            self.selector.register(sock, selectors.EVENT_READ, port)
        # Signals write a byte here, so select() wakes at once to stop.
        self.wakeup_r, self.wakeup_w = socket.socketpair()
        self.wakeup_r.setblocking(False)
        self.wakeup_w.setblocking(False)
        self.selector.register(self.wakeup_r, selectors.EVENT_READ, None)

    def serve(self):
        signal.set_wakeup_fd(self.wakeup_w.fileno(), warn_on_full_buffer=False)
        select = self.selector.select
        while self.running:
            timeout = None
            if self.paused_until is not None:
                timeout = max(0.0, self.paused_until - _monotonic())
            events = select(timeout)
            if self.paused_until is not None and _monotonic() >= self.paused_until:
                self._resume_accepting()
            for key, mask in events:
                data = key.data
                if data.__class__ is Peer:
                    if mask & selectors.EVENT_READ:
                        self._readable(data)
                    if mask & selectors.EVENT_WRITE and data.sock.fileno() >= 0:
                        self._flush(data)
                elif data is None:
                    self._drain_wakeup()
                else:
                    self._accept(key.fileobj, data)
        self._shutdown()

    def stop(self, *_):
        self.running = False

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
            self.selector.register(sock, selectors.EVENT_READ, peer)

    def _pause_accepting(self):
        if self.paused_until is None:
            print("broker: out of file descriptors; not accepting for a moment",
                  file=sys.stderr, flush=True)
            for sock in self.listeners.values():
                self.selector.unregister(sock)
        self.paused_until = _monotonic() + ACCEPT_PAUSE

    def _resume_accepting(self):
        self.paused_until = None
        for port, sock in self.listeners.items():
            self.selector.register(sock, selectors.EVENT_READ, port)

    # -- reading and writing ------------------------------------------------------

    def _readable(self, peer):
        try:
            data = peer.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(peer)
            return
        if data:
            reply = self.core.receive(peer.conn, data)
        else:
            reply = self.core.end_of_input(peer.conn)
        if reply:
            self._write(peer, reply)
        elif peer.conn.closing:
            if peer.outbox:
                self._want(peer, selectors.EVENT_WRITE)   # EOF stays readable: stop listening
            else:
                self._drop(peer)

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
        self._want(peer, selectors.EVENT_WRITE if peer.conn.closing
                   else selectors.EVENT_READ | selectors.EVENT_WRITE)

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
                self._want(peer, selectors.EVENT_READ)

    def _want(self, peer, events):
        if peer.events != events:
            peer.events = events
            self.selector.modify(peer.sock, events, peer)

    def _drop(self, peer):
        if peer.sock.fileno() < 0:
            return
        self.selector.unregister(peer.sock)
        peer.sock.close()
        self.core.close(peer.conn)
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
    prog = "python3 -m impl_select.broker"
    args = broker_parser(prog, FLAVOUR).parse_args(argv)
    raise_descriptor_limit()
    try:
        listeners = {CLIENT: listen(args.host, args.client_port),
                     WORKER: listen(args.host, args.worker_port)}
    except OSError as error:
        print(f"broker: cannot listen on {args.host} ports {args.client_port}/{args.worker_port}: "
              f"{error.strerror or error}", file=sys.stderr)
        return 1
    args.client_port = listeners[CLIENT].getsockname()[1]
    args.worker_port = listeners[WORKER].getsockname()[1]
    broker = SelectBroker(BrokerCore(max_line=args.max_line), listeners, args.max_output)
    signal.signal(signal.SIGINT, broker.stop)
    signal.signal(signal.SIGTERM, broker.stop)
    print(startup_line(FLAVOUR, args), flush=True)
    broker.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
