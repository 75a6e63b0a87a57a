"""The thread-per-connection broker: one acceptor thread per port, one thread per peer.

A thin I/O shell around core.broker.BrokerCore, which is not thread-safe: one
lock serialises every call into it, so no job goes to two workers and no id
is issued twice however the threads race. Replies are sent outside the lock,
so a peer that stops reading blocks only its own thread.
"""

import signal
import socket
import sys
import threading

from core.broker import CLIENT, WORKER, BrokerCore
from core.options import broker_parser, startup_line
from impl_select.netutil import READ_SIZE, keep_alive, listen, raise_descriptor_limit

FLAVOUR = "threads"


class ThreadedBroker:
    def __init__(self, core, listeners):
        self.core = core
        self.listeners = listeners
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.peers = set()            # open peer sockets, shut down on stop
        self.peers_lock = threading.Lock()

    def serve(self):
        for port, sock in self.listeners.items():
            sock.setblocking(True)
            threading.Thread(target=self._accept_loop, args=(sock, port),
                             name=f"accept-{port}", daemon=True).start()
        self.stopping.wait()
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
            keep_alive(sock)
            with self.lock:
                conn = self.core.open(port)
            with self.peers_lock:
                self.peers.add(sock)
            try:
                threading.Thread(target=self._serve_peer, args=(sock, conn), daemon=True).start()
            except RuntimeError:      # cannot start a new thread: refuse this peer
                self._close_peer(sock, conn)

    def _serve_peer(self, sock, conn):
        core, lock = self.core, self.lock
        try:
            while not conn.closing:
                data = sock.recv(READ_SIZE)
                with lock:
                    reply = core.receive(conn, data) if data else core.end_of_input(conn)
                if reply:
                    sock.sendall(reply)
        except OSError:
            pass
        finally:
            self._close_peer(sock, conn)

    def _close_peer(self, sock, conn):
        with self.peers_lock:
            self.peers.discard(sock)
        sock.close()
        with self.lock:
            self.core.close(conn)

    def _shutdown(self):
        for sock in self.listeners.values():
            _shut(sock)
        with self.peers_lock:
            peers = list(self.peers)
        for sock in peers:
            _shut(sock)       # wakes the thread blocked in recv


def _shut(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def main(argv=None):
    prog = "python3 -m impl_threads.broker"
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
    broker = ThreadedBroker(BrokerCore(max_line=args.max_line), listeners)
    signal.signal(signal.SIGINT, broker.stop)
    signal.signal(signal.SIGTERM, broker.stop)
    print(startup_line(FLAVOUR, args), flush=True)
    broker.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
