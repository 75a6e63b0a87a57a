"""Command lines of the broker, shared by every implementation (DESIGN.md contract).

Every number on a command line is read by the grammar (``core.grammar``):
``5_0000``, `` 50000``, ``1e3``, ``nan`` and non-ASCII digits are usage
errors, one line, exit status 2.
"""

import argparse

from .broker import (
    DEFAULT_AUTH_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_LEASE, DEFAULT_MAX_DELIVERIES,
    DEFAULT_MAX_WAITING, DEFAULT_MEMORY_FRACTION, JOB_SHARE, default_max_memory,
)
from .framing import DEFAULT_MAX_LINE
from .grammar import NumberError, parse_port, parse_seconds, parse_whole

# The longest number of seconds any option takes (a week): every wait the
# programs make must fit what the system calls take. epoll_wait(2) takes a C
# int of milliseconds (Python: "OverflowError: timeout is too large" beyond
# 2,147,483 s, about 24.8 days), and a deadline far enough out overflows
# time_t ("timestamp out of range"). A week is far beyond any sensible
# delay, interval, timeout or lease, and well inside both.
MAX_SECONDS = 7 * 24 * 3600

DEFAULT_CLIENT_PORT = 50000
DEFAULT_WORKER_PORT = 50001
DEFAULT_MAX_OUTPUT = 4 * 1024 * 1024
# Seconds of silence after which a peer that vanished without FIN or RST (a
# partition, a powered-off host) is dropped and its jobs requeued (spec
# leases.peers): TCP keepalive plus TCP_USER_TIMEOUT, see shell.netutil.
DEFAULT_PEER_TIMEOUT = 20.0
# --log-level names, least to most verbose: what the broker and the worker say
# on stderr (README "Running as a service"). error: only what went wrong
# (a lost or refused connection, a failing store); info (default): also
# connections regained and the line saying it stopped; debug: also every
# connection and every job. The start-up line is on stdout at every level.
LOG_LEVELS = ("error", "info", "debug")
DEFAULT_LOG_LEVEL = "info"


class UsageParser(argparse.ArgumentParser):
    """argparse with the project's usage errors: one line on stderr naming the
    program and the problem, exit status 2 (no usage block)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def number_type(parse, *args, **kwargs):
    """An argparse ``type`` from a ``core.grammar`` parser: its NumberError
    becomes argparse's one-line error; the function keeps a readable name."""
    def convert(text):
        try:
            return parse(text, *args, **kwargs)
        except NumberError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    convert.__name__ = parse.__name__
    return convert


def port_number(text, lowest=0):
    """A port argument (grammar rule ``port``); a listener may take 0 ("any free
    port"), a sender may not. Raises argparse.ArgumentTypeError."""
    return number_type(parse_port, lowest)(text)


class HostError(ValueError):
    """A host on a command line that names no host: empty, blank, or holding
    whitespace; the message is one line for the user."""


def check_host(text, what="host"):
    """``text`` as a host or address to bind to or send to, refused when it
    is empty, blank or holds whitespace or control characters: the sockets
    API reads an empty host as "any" (bind: every interface, INADDR_ANY;
    ip(7)), so an unset shell variable in ``--host ${HOST}`` would silently
    listen everywhere. Returns ``text``; raises HostError naming ``what``."""
    if not text.strip():
        raise HostError(f"empty {what} {text!r}: give an address such as 127.0.0.1")
    if any(c.isspace() or not c.isprintable() for c in text):
        raise HostError(f"bad {what} {text!r}: no spaces or control characters in a "
                        "host name or address")
    return text


def host_type(what="host"):
    """An argparse ``type`` from ``check_host``: its HostError becomes
    argparse's one-line usage error (exit status 2)."""
    def convert(text):
        try:
            return check_host(text, what)
        except HostError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    convert.__name__ = "host"
    return convert


def positive_int(text):
    """A count or byte limit of 1 or more (grammar rule ``whole_number``).
    Raises argparse.ArgumentTypeError."""
    return number_type(parse_whole, 1)(text)


def max_line_bytes(text):
    """--max-line: a positive whole number no larger than the spec's line limit,
    which every reader accepts (spec: framing); raising it would let the broker
    accept what nobody downstream can read."""
    value = positive_int(text)
    if value > DEFAULT_MAX_LINE:
        raise argparse.ArgumentTypeError(
            f"at most {DEFAULT_MAX_LINE} (the line limit every reader accepts): {value}")
    return value


def add_log_level(parser, debug_says):
    """Add ``--log-level {error,info,debug}`` to ``parser``; ``debug_says`` is what
    debug adds, for --help. A bad name is argparse's one-line usage error."""
    parser.add_argument("--log-level", choices=LOG_LEVELS, default=DEFAULT_LOG_LEVEL,
                        metavar="LEVEL",
                        help="what to say on stderr, one line per event: error (only what "
                             "went wrong), info (also connections regained and the line "
                             f"saying it stopped; the default) or debug (also {debug_says}). "
                             "The start-up line goes to stdout at every level")


class StoreError(ValueError):
    """A --store value that names no store; the message is one line for the user."""


def parse_store(text):
    """``--store`` value -> ``("memory", None)`` or ``("sqlite", PATH)``.

    Accepted, exactly as written (lower case): ``memory``, and ``sqlite:PATH``
    with a non-empty PATH. Anything else raises StoreError: an empty value (an
    unset variable in ``--store ${STORE}`` must not silently lose the jobs),
    ``memory:``, ``SQLITE:/x``, ``foo``, ``sqlite:`` without a path."""
    if text == "memory":
        return "memory", None
    if not text.strip():
        raise StoreError(f"empty store {text!r}: use memory or sqlite:PATH")
    kind, colon, path = text.partition(":")
    if kind == "sqlite" and path:
        return "sqlite", path
    if kind == "sqlite" and colon:
        raise StoreError(f"no path in --store {text!r}: use sqlite:PATH, e.g. sqlite:jobs.db")
    raise StoreError(f"unknown store {text!r}: use memory or sqlite:PATH")


def store_type(text):
    """argparse ``type`` for --store: ``parse_store``'s StoreError becomes
    argparse's one-line usage error (exit status 2). Returns ``text``."""
    try:
        parse_store(text)
    except StoreError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


store_type.__name__ = "store"


def broker_parser(prog, flavour):
    parser = UsageParser(
        prog=prog,
        description=f"workq broker ({flavour}): queues text jobs from clients and hands "
                    "them to workers. Clients speak JOB/STATUS on the client port, "
                    "workers FETCH/DONE on the worker port; see PROTOCOL.md.",
        epilog="example: python3 -m %s 50000 50001   then   "
               "printf 'JOB a b\\n' | nc -q1 127.0.0.1 50000" % prog.split()[-1],
    )
    parser.add_argument("client_port", nargs="?", type=port_number, default=DEFAULT_CLIENT_PORT,
                        help=f"TCP port for clients (default {DEFAULT_CLIENT_PORT})")
    parser.add_argument("worker_port", nargs="?", type=port_number, default=DEFAULT_WORKER_PORT,
                        help=f"TCP port for workers (default {DEFAULT_WORKER_PORT})")
    parser.add_argument("--host", default="127.0.0.1", type=host_type(),
                        help="address to listen on (default 127.0.0.1, this machine only; "
                             "the original system listened everywhere: use 0.0.0.0 for that; "
                             "an empty value is refused, not read as every interface)")
    parser.add_argument("--max-line", type=max_line_bytes, default=DEFAULT_MAX_LINE,
                        help=f"longest line accepted, in bytes, 1-{DEFAULT_MAX_LINE} (default "
                             f"{DEFAULT_MAX_LINE}, the line limit every reader accepts); a longer "
                             "one gets ERR LINE_TOO_LONG and the connection is closed")
    parser.add_argument("--max-output", type=positive_int, default=DEFAULT_MAX_OUTPUT,
                        help="replies buffered for a peer that does not read, in bytes, before "
                             f"it is disconnected (default {DEFAULT_MAX_OUTPUT})")
    parser.add_argument("--max-waiting", type=positive_int, default=DEFAULT_MAX_WAITING,
                        help=f"jobs allowed to wait at once (default {DEFAULT_MAX_WAITING}); "
                             "past it JOB gets ERR QUEUE_FULL")
    parser.add_argument("--idle-timeout", type=positive_float, default=DEFAULT_IDLE_TIMEOUT,
                        help="seconds a connection may take to finish a line it started "
                             f"(default {DEFAULT_IDLE_TIMEOUT:g}); then ERR IDLE_TIMEOUT and it is closed. "
                             "Connections that are merely quiet are closed only when the "
                             "broker runs out of descriptors")
    parser.add_argument("--max-memory", type=positive_int, default=None, metavar="BYTES",
                        help="bytes the broker may hold in total: job texts, unfinished lines, "
                             "lines behind a waiting FETCH, unsent replies (default "
                             f"{DEFAULT_MEMORY_FRACTION:g} of physical memory, here "
                             f"{default_max_memory()}). Jobs may fill {JOB_SHARE:g} of it, then "
                             "JOB gets ERR QUEUE_FULL; a connection whose buffer does not fit "
                             "gets ERR MEMORY_FULL and is closed")
    parser.add_argument("--auth-timeout", type=positive_float, default=DEFAULT_AUTH_TIMEOUT,
                        metavar="SECONDS",
                        help="with --token-file, seconds a connection has to send AUTH "
                             f"(default {DEFAULT_AUTH_TIMEOUT:g}); then ERR AUTH_TIMEOUT "
                             "and it is closed")
    parser.add_argument("--lease", type=positive_float, default=DEFAULT_LEASE, metavar="SECONDS",
                        help="seconds a TOUCH <n> keeps job n for the worker that sent it "
                             f"(default {DEFAULT_LEASE:g}); when it runs out without DONE or "
                             "another TOUCH the job goes back to the head of the line. A worker "
                             "that never sends TOUCH keeps its job until it disconnects")
    parser.add_argument("--max-deliveries", type=positive_int, default=DEFAULT_MAX_DELIVERIES,
                        metavar="N",
                        help="deliveries of a job that may end without DONE (worker lost, lease "
                             f"run out) before the job is buried (default {DEFAULT_MAX_DELIVERIES}); "
                             "KICK <n> on the client port puts a buried job back")
    parser.add_argument("--peer-timeout", type=positive_float, default=DEFAULT_PEER_TIMEOUT,
                        metavar="SECONDS",
                        help="seconds after which a peer that vanished without closing (network "
                             "fault) is dropped and the jobs it held requeued "
                             f"(default {DEFAULT_PEER_TIMEOUT:g}; TCP keepalive and "
                             "TCP_USER_TIMEOUT)")
    parser.add_argument("--token-file", metavar="PATH",
                        help="require every connection to start with AUTH <token>, the token "
                             "being the first line of PATH (default: no authentication)")
    parser.add_argument("--store", default="memory", type=store_type, metavar="memory|sqlite:PATH",
                        help="where jobs live: memory (default; lost when the broker stops) or "
                             "sqlite:PATH (durable: ID and OK are sent only once on disk, and a "
                             "restarted broker continues where it stopped)")
    add_log_level(parser, "every connection accepted and closed, and every job submitted, "
                          "handed out, completed, requeued, buried or kicked")
    return parser


def positive_float(text):
    """Seconds greater than 0 and at most MAX_SECONDS (grammar rule
    ``seconds``). Raises argparse.ArgumentTypeError."""
    return number_type(parse_seconds, positive=True, high=MAX_SECONDS)(text)


def seconds(text):
    """Seconds from 0 to MAX_SECONDS (grammar rule ``seconds``). Raises
    argparse.ArgumentTypeError."""
    return number_type(parse_seconds, high=MAX_SECONDS)(text)


def startup_line(flavour, args):
    return (f"workq broker ({flavour}): clients on {args.host}:{args.client_port}, "
            f"workers on {args.host}:{args.worker_port}, store {args.store}, "
            f"max line {args.max_line} bytes, max waiting {args.max_waiting}, "
            f"max memory {args.max_memory} bytes, "
            f"idle timeout {args.idle_timeout:g} s, lease {args.lease:g} s, "
            f"max deliveries {args.max_deliveries}, peer timeout {args.peer_timeout:g} s, "
            f"auth {'token from ' + args.token_file if args.token_file else 'off'}"
            f"{f', auth timeout {args.auth_timeout:g} s' if args.token_file else ''}")
