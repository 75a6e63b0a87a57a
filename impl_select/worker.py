"""Select-based worker: one thread, every broker connection multiplexed with ``selectors``.

    python3 -m impl_select.worker [HOST:PORT [OUTPUT_PORT [SYSLOG_PORT]]] [options]

A thin I/O shell around core.worker.WorkerSlot (one slot per --concurrency):
it owns the sockets, the selector and the clock, feeds each slot what
happened and carries out the actions the slot returns.
"""

import argparse
import errno
import ipaddress
import math
import os
import selectors
import signal
import socket
import sys
import time

from core.worker import Close, Connect, Emit, Log, Send, WorkerSlot
from impl_select.output import multicast_sender, syslog_logger

DEFAULT_BROKER = "127.0.0.1:50001"
DEFAULT_OUTPUT_PORT = 30000
DEFAULT_SYSLOG_PORT = 30001
SYSLOG_HOST = "127.0.0.1"


# --- command line ----------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # one line, no usage block, exit 2
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _host_port(text):
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]   # [::1]:50001
    return host, _port(port)


def _port(text):
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 1-65535: {port}")
    return port


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"seconds must be 0 or more: {text!r}")
    return value


def _ipv4(text):
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IPv4 address: {text!r}") from None


def _multicast_group(text):
    address = _ipv4(text)
    if not ipaddress.IPv4Address(address).is_multicast:
        raise argparse.ArgumentTypeError(f"not a multicast address (224.0.0.0/4): {text!r}")
    return address


def _int_range(low, high):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"out of range {low}-{high}: {value}")
        return value
    return parse


def _name(text):
    if not text or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"name must be non-empty, without spaces: {text!r}")
    return text


def parse_args(argv):
    parser = _Parser(
        prog="python3 -m impl_select.worker",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "workq worker (select): fetches jobs from the broker's worker port, sends each\n"
            "word of a job as one UDP multicast datagram (word + LF), reports DONE, and\n"
            "logs its progress to UDP syslog on 127.0.0.1. Reconnects with backoff\n"
            "(1 s doubling to 8 s) when the broker goes away; stops on SIGINT/SIGTERM."),
        epilog=(
            "network safety: multicast sent through the default interface leaves the\n"
            "machine on the real network card. --mcast-if therefore defaults to\n"
            "127.0.0.1 (loopback) and --mcast-ttl to 1; choose a LAN interface address\n"
            "only when you mean to send on that LAN.\n\n"
            "example: python3 -m impl_select.worker 127.0.0.1:50001 30000 30001 --word-delay 0.1"),
    )
    parser.add_argument("broker", nargs="?", default=DEFAULT_BROKER, type=_host_port,
                        metavar="HOST:PORT",
                        help=f"the broker's worker port (default {DEFAULT_BROKER}); "
                             "IPv6 as [ADDR]:PORT")
    parser.add_argument("output_port", nargs="?", default=DEFAULT_OUTPUT_PORT, type=_port,
                        metavar="OUTPUT_PORT",
                        help=f"UDP port the words are sent to (default {DEFAULT_OUTPUT_PORT})")
    parser.add_argument("syslog_port", nargs="?", default=DEFAULT_SYSLOG_PORT, type=_port,
                        metavar="SYSLOG_PORT",
                        help=f"UDP syslog port on {SYSLOG_HOST} (default {DEFAULT_SYSLOG_PORT})")
    parser.add_argument("--word-delay", type=_seconds, default=0.25, metavar="S",
                        help="seconds between consecutive words of a job (default %(default)s)")
    parser.add_argument("--fetch-interval", type=_seconds, default=0.5, metavar="S",
                        help="seconds to wait after NOJOB before asking again (default %(default)s)")
    parser.add_argument("--mcast-group", type=_multicast_group, default="239.0.0.1",
                        metavar="ADDR", help="multicast group for the words (default %(default)s)")
    parser.add_argument("--mcast-if", type=_ipv4, default="127.0.0.1", metavar="ADDR",
                        help="address of the interface multicast leaves through (default "
                             "%(default)s, loopback: nothing leaves this machine; see below)")
    parser.add_argument("--mcast-ttl", type=_int_range(0, 255), default=1, metavar="N",
                        help="multicast TTL, 0-255 (default %(default)s: never routed)")
    parser.add_argument("--concurrency", type=_int_range(1, 10000), default=1, metavar="N",
                        help="job slots, each with its own broker connection and word timer, "
                             "all on one thread (default %(default)s)")
    parser.add_argument("--name", type=_name, default="workq-worker",
                        help="syslog ident: messages read NAME[PID]: ... (default %(default)s)")
    return parser.parse_intermixed_args(argv)


def _label(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def startup_line(args):
    return (f"workq worker (select): broker {_label(*args.broker)}, "
            f"output {args.mcast_group}:{args.output_port} via {args.mcast_if} "
            f"ttl {args.mcast_ttl}, syslog {SYSLOG_HOST}:{args.syslog_port}, "
            f"word delay {args.word_delay:g} s, fetch interval {args.fetch_interval:g} s, "
            f"concurrency {args.concurrency}")


# --- the I/O shell -------------------------------------------------------------------

class _Connection:
    """One slot's socket side."""

    __slots__ = ("slot", "sock", "connecting", "addresses", "outbuf", "failure")

    def __init__(self, slot):
        self.slot = slot
        self.sock = None
        self.connecting = False
        self.addresses = []       # getaddrinfo results not yet tried in this attempt
        self.outbuf = bytearray()
        self.failure = None       # why the socket broke while carrying out actions


class SelectWorker:
    def __init__(self, broker, output, mcast, logger, slots):
        self.broker = broker          # (host, port)
        self.output = output          # (group, port)
        self.mcast = mcast
        self.logger = logger
        self.conns = [_Connection(slot) for slot in slots]
        self.selector = selectors.DefaultSelector()
        self.stop_requested = False
        self._emit_failing = False

    def request_stop(self, signum=None, frame=None):
        self.stop_requested = True    # the wakeup fd gets select() to return

    def run(self, wakeup):
        """Serve until request_stop(); ``wakeup`` is the read end of signal.set_wakeup_fd."""
        self.selector.register(wakeup, selectors.EVENT_READ, None)
        now = time.monotonic()
        for conn in self.conns:
            self._execute(conn, conn.slot.start(now))
        while not self.stop_requested:
            for key, mask in self.selector.select(self._timeout()):
                if key.data is None:
                    _drain(wakeup)
                elif key.data.sock is key.fileobj:   # not closed earlier in this round
                    self._on_ready(key.data, mask)
            now = time.monotonic()
            for conn in self.conns:
                due = conn.slot.next_deadline()
                if due is not None and due <= now:
                    self._execute(conn, conn.slot.tick(now))
        self.logger.info("stopping")
        now = time.monotonic()
        for conn in self.conns:
            self._execute(conn, conn.slot.stop(now))
        self.selector.close()

    def _timeout(self):
        deadlines = [d for d in (c.slot.next_deadline() for c in self.conns) if d is not None]
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    # --- socket events ---

    def _on_ready(self, conn, mask):
        if conn.connecting:
            if mask & selectors.EVENT_WRITE:
                self._finish_connect(conn)
            return
        if mask & selectors.EVENT_READ:
            try:
                data = conn.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError as e:
                return self._lost(conn, e.strerror or str(e))
            if data == b"":
                return self._lost(conn, "closed by broker")
            if data:
                self._execute(conn, conn.slot.data_received(data, time.monotonic()))
        if conn.sock is not None and mask & selectors.EVENT_WRITE and conn.outbuf:
            self._flush(conn)
            self._after_failure(conn)

    def _lost(self, conn, reason):
        self._drop(conn)
        self._execute(conn, conn.slot.connection_lost(reason, time.monotonic()))

    # --- actions ---

    def _execute(self, conn, actions):
        for action in actions:
            if isinstance(action, Send):
                if conn.sock is not None:   # skipped once the socket broke in this batch
                    conn.outbuf += action.data
                    self._flush(conn)
            elif isinstance(action, Emit):
                self._emit(action.payload)
            elif isinstance(action, Log):
                self.logger.info(action.message)
            elif isinstance(action, Connect):
                self._start_connect(conn)
            elif isinstance(action, Close):
                self._drop(conn)
            else:
                raise TypeError(f"unknown action {action!r}")
        self._after_failure(conn)

    def _after_failure(self, conn):
        # a send error is reported after the batch, so the batch's later actions
        # run in the order the slot meant them
        if conn.failure is not None:
            reason, conn.failure = conn.failure, None
            self._execute(conn, conn.slot.connection_lost(reason, time.monotonic()))

    def _flush(self, conn):
        try:
            sent = conn.sock.send(conn.outbuf)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as e:
            conn.failure = e.strerror or str(e)
            self._drop(conn)
            return
        del conn.outbuf[:sent]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.outbuf else 0)
        if self.selector.get_key(conn.sock).events != events:
            self.selector.modify(conn.sock, events, conn)

    def _emit(self, payload):
        # a blocking sendto is fine: a UDP send buffer drains at once, nothing waits on a peer
        try:
            self.mcast.sendto(payload, self.output)
        except OSError as e:
            if not self._emit_failing:   # report once per run of failures, not per word
                print(f"workq worker: cannot send to {self.output[0]}:{self.output[1]}: "
                      f"{e.strerror or e}", file=sys.stderr, flush=True)
            self._emit_failing = True
        else:
            self._emit_failing = False

    def _start_connect(self, conn):
        host, port = self.broker
        try:
            conn.addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as e:
            return self._connect_failed(conn, getattr(e, "strerror", None) or str(e))
        self._try_next_address(conn, "no address")

    def _try_next_address(self, conn, reason):
        """Try the addresses left (e.g. ::1 then 127.0.0.1 for localhost) until one is pending."""
        while conn.addresses:
            family, type_, proto, _, address = conn.addresses.pop(0)
            sock = socket.socket(family, type_, proto)
            sock.setblocking(False)
            code = sock.connect_ex(address)
            if code in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
                conn.sock, conn.connecting = sock, True
                # writable once the connect finished, either way
                self.selector.register(sock, selectors.EVENT_WRITE, conn)
                return
            sock.close()
            reason = os.strerror(code)
        self._connect_failed(conn, reason)

    def _finish_connect(self, conn):
        code = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._drop(conn)
            return self._try_next_address(conn, os.strerror(code))
        conn.connecting = False
        conn.addresses = []
        self.selector.modify(conn.sock, selectors.EVENT_READ, conn)
        self._execute(conn, conn.slot.connected(time.monotonic()))

    def _connect_failed(self, conn, reason):
        self._execute(conn, conn.slot.connect_failed(reason, time.monotonic()))

    def _drop(self, conn):
        if conn.sock is not None:
            self.selector.unregister(conn.sock)
            conn.sock.close()
        conn.sock = None
        conn.connecting = False
        conn.outbuf.clear()


def _drain(sock):
    try:
        while sock.recv(512):
            pass
    except (BlockingIOError, InterruptedError):
        pass


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        mcast = multicast_sender(args.mcast_if, args.mcast_ttl)
    except OSError as e:
        sys.exit(f"workq worker: cannot use --mcast-if {args.mcast_if}: {e.strerror or e}")
    logger = syslog_logger(args.syslog_port, name=args.name, host=SYSLOG_HOST)
    slots = [WorkerSlot(_label(*args.broker), word_delay=args.word_delay,
                        fetch_interval=args.fetch_interval)
             for _ in range(args.concurrency)]
    worker = SelectWorker(args.broker, (args.mcast_group, args.output_port), mcast, logger, slots)

    wakeup, wakeup_writer = socket.socketpair()
    wakeup.setblocking(False)
    wakeup_writer.setblocking(False)
    signal.set_wakeup_fd(wakeup_writer.fileno(), warn_on_full_buffer=False)
    signal.signal(signal.SIGINT, worker.request_stop)
    signal.signal(signal.SIGTERM, worker.request_stop)

    print(startup_line(args), flush=True)
    worker.run(wakeup)
    mcast.close()
    for handler in logger.handlers:
        handler.close()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:   # Ctrl-C before the handlers were installed
        sys.exit(0)
