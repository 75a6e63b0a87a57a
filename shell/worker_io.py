"""What both worker shells share: command line, outputs, reconnect loop.

The part of a worker that does not depend on the I/O model: start-up
(``worker_main``), the outputs every slot shares, carrying out a slot's
actions (``SlotShell``), resolving the broker's address, and the stop
request that SIGINT/SIGTERM raise. Each shell adds only how its broker
sockets connect, send and wait.
"""

import select
import signal
import socket
import sys
import threading
import time

from core.logline import escape, syslog_message
from core.worker import Close, Connect, Emit, Log, Send, WorkerSlot
from core.worker_options import SYSLOG_HOST, broker_label, parse_worker_args, startup_line
from shell.broker_main import read_token
from shell.logs import EXIT_STDOUT_CLOSED, LEVELS, WORKER_LOG, configure, say
from shell.netutil import open_descriptors, raise_descriptor_limit
from shell.output import multicast_sender, syslog_header_bytes, syslog_logger

# Descriptors a worker opens besides one socket per slot, counted once at
# start-up: the selector (epoll), the stop request's socket pair, the
# multicast and syslog sockets, the token file while it is read, and the
# files name resolution reads (/etc/hosts, resolv.conf) for the broker's host;
# a margin on top for what the runtime opens.
WORKER_SPARE_DESCRIPTORS = 16

__all__ = ["ConnectFailed", "Outputs", "SlotShell", "StopRequest",
           "describe", "resolve", "worker_main"]


def describe(error):
    """An OSError (or the like) as a short reason: "Connection refused"."""
    return getattr(error, "strerror", None) or str(error)


class ConnectFailed(Exception):
    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def resolve(host, port):
    """getaddrinfo for a TCP connection to the broker, each address to try in turn
    (e.g. ::1 then 127.0.0.1 for localhost); ConnectFailed if there is none."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise ConnectFailed(describe(e)) from None
    if not addresses:
        raise ConnectFailed("no address")
    return addresses


class Outputs:
    """The multicast word sender, the syslog logger and stderr (shell.logs.WORKER_LOG),
    shared by every slot.

    All are safe to use from several threads: a UDP sendto is one system
    call, and logging handlers take their own lock.
    """

    def __init__(self, mcast, address, logger):
        self.mcast = mcast
        self.address = address        # (group, port)
        self.logger = logger
        self._header_bytes = syslog_header_bytes(logger)
        self._failing = False         # a flag, not a lock: at worst a failure is reported twice
        self._said = None             # the last line on stderr above debug
        self._said_lock = threading.Lock()

    def emit(self, payload):
        # a blocking sendto is fine: a UDP send buffer drains at once, nothing waits on a peer
        try:
            self.mcast.sendto(payload, self.address)
        except OSError as e:
            if not self._failing:   # report once per run of failures, not per word
                WORKER_LOG.error("cannot send to %s:%s: %s", *self.address, describe(e))
            self._failing = True
        else:
            self._failing = False

    def log(self, message, level="debug"):
        """Send one syslog datagram: ``message`` escaped and cut as the spec says
        (core.logline), whatever bytes of the broker it holds; never raises.
        Also a line on stderr when --log-level lets ``level`` ("error", "info",
        "debug") through. Above debug, a line the same as the one before is not
        repeated: each of --concurrency slots reports the same outage."""
        self.logger.info(syslog_message(message, self._header_bytes))
        number = LEVELS[level]
        if WORKER_LOG.isEnabledFor(number):
            if number > LEVELS["debug"]:
                with self._said_lock:      # slot threads report the same outage at once
                    if message == self._said:
                        return
                    self._said = message
                    WORKER_LOG.log(number, "%s", escape(message))
            else:
                WORKER_LOG.log(number, "%s", escape(message))

    def close(self):
        self.mcast.close()
        for handler in self.logger.handlers:
            handler.close()


class SlotShell:
    """Carries out one WorkerSlot's actions, in order.

    A shell subclasses it and supplies the broker socket's side: ``send(data)``
    (skipped when there is no socket), ``connect()`` and ``close()``.
    """

    def __init__(self, slot, outputs):
        self.slot = slot
        self.outputs = outputs
        self._broken = None     # why the socket broke while carrying out actions

    def execute(self, actions):
        for action in actions:
            if isinstance(action, Send):
                self.send(action.data)
            elif isinstance(action, Emit):
                self.outputs.emit(action.payload)
            elif isinstance(action, Log):
                self.outputs.log(action.message, action.level)
            elif isinstance(action, Connect):
                self.connect()
            elif isinstance(action, Close):
                self.close()
            else:
                raise TypeError(f"unknown action {action!r}")
        self.report_broken()

    def broke(self, reason):
        """A send failed: drop the socket now, tell the slot once the batch is done
        (so the batch's later actions run in the order the slot meant them)."""
        self.close()
        self._broken = reason

    def report_broken(self):
        if self._broken is not None:
            reason, self._broken = self._broken, None
            self.execute(self.slot.connection_lost(reason, time.monotonic()))

    def lost(self, reason):
        """EOF or an error on the socket, outside a batch of actions."""
        self.close()
        self.execute(self.slot.connection_lost(reason, time.monotonic()))

    def connect_failed(self, reason):
        self.execute(self.slot.connect_failed(reason, time.monotonic()))

    def connected(self):
        self.execute(self.slot.connected(time.monotonic()))

    # --- the shell's part ---

    def send(self, data):
        raise NotImplementedError

    def connect(self):
        raise NotImplementedError

    def close(self):
        raise NotImplementedError


class StopRequest:
    """Raised by SIGINT/SIGTERM (or by a thread that must bring the worker down).

    ``fileno()`` turns readable once requested and stays so, for a selector to
    wake on. ``request`` only sets a flag and writes a byte, so it is safe in a
    signal handler (no lock it could deadlock on) and from any thread.
    """

    def __init__(self):
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self.requested = False

    def install(self):
        """Handle SIGINT/SIGTERM; call from the main thread. The kernel may deliver
        the signal to any thread, and Python runs its handler only in the main one,
        between bytecodes: a main thread blocked in select() would never see it
        (the threads worker then ignored SIGTERM now and then). The wake-up fd
        (signal.set_wakeup_fd) gets a byte from the C-level handler whatever the
        thread, so select() returns and the handler runs."""
        signal.signal(signal.SIGINT, self.request)
        signal.signal(signal.SIGTERM, self.request)
        signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)

    def request(self, signum=None, frame=None):
        self.requested = True
        try:
            self._writer.send(b"\0")
        except OSError:    # buffer full (already readable) or closed
            pass

    def fileno(self):
        return self._reader.fileno()

    def wait(self):
        while not self.requested:
            select.select([self._reader], [], [])

    def close(self):
        signal.set_wakeup_fd(-1)       # before the socket it names closes
        self._reader.close()
        self._writer.close()


def worker_main(prog, flavour, argv, serve):
    """Parse the command line, open the outputs, print the start-up line and
    ``serve(broker, slots, outputs, stop)`` until SIGINT/SIGTERM; its return is the exit status.
    Then says "stopped" on stderr (after "abandoned job N" if a job was cut short).
    Returns 1 without a word when stdout is a closed pipe (shell.logs.say)."""
    args = parse_worker_args(prog, flavour, sys.argv[1:] if argv is None else argv)
    configure(WORKER_LOG, "workq worker", args.log_level)
    # A socket per slot: --concurrency may pass the default 1,024. Past the hard
    # limit the slots' sockets fail with EMFILE (the select worker died of it, the
    # threads worker's threads each printed a traceback): refuse at start-up.
    limit = raise_descriptor_limit()
    needed = args.concurrency + open_descriptors() + WORKER_SPARE_DESCRIPTORS
    if limit is not None and needed > limit:
        most = limit - (needed - args.concurrency)
        advice = (f"lower --concurrency to at most {most}, or raise" if most >= 1 else "raise")
        WORKER_LOG.error("--concurrency %d needs %d open files, more than the limit on open "
                         "files allows (RLIMIT_NOFILE %d): %s the hard limit (ulimit -Hn as "
                         "root; systemd LimitNOFILE=)", args.concurrency, needed, limit, advice)
        return 1
    try:
        mcast = multicast_sender(args.mcast_if, args.mcast_ttl)
    except OSError as e:
        WORKER_LOG.error("cannot use --mcast-if %s: %s", args.mcast_if, describe(e))
        return 1
    try:
        token = read_token(args.token_file) if args.token_file else None
    except (OSError, ValueError) as e:
        mcast.close()
        WORKER_LOG.error("%s", describe(e))
        return 1
    logger = syslog_logger(args.syslog_port, name=args.name, host=SYSLOG_HOST)
    outputs = Outputs(mcast, (args.mcast_group, args.output_port), logger)
    slots = [WorkerSlot(broker_label(*args.broker), word_delay=args.word_delay,
                        fetch_interval=args.fetch_interval, long_poll=args.long_poll,
                        token=token, renew_interval=args.renew_interval)
             for _ in range(args.concurrency)]
    stop = StopRequest()
    stop.install()
    if not say(startup_line(flavour, args)):    # stdout closed: stop quietly, as tools do
        outputs.close()
        stop.close()
        return EXIT_STDOUT_CLOSED
    try:
        status = serve(args.broker, slots, outputs, stop)
    finally:
        outputs.close()
        stop.close()
    WORKER_LOG.info("stopped")
    return status
