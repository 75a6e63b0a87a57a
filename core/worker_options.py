"""Command line of the worker, shared by every implementation (DESIGN.md contract).

    python3 -m impl_<flavour>.worker [HOST:PORT [OUTPUT_PORT [SYSLOG_PORT]]] [options]

Pure argparse: every implementation gets the same arguments, options,
defaults, help, error messages and start-up line; only the flavour word
("select", "threads") and the prog name differ. The broker's command line is
in ``core.options``.
"""

import argparse
import ipaddress

from .broker import MAX_FETCH_WAIT
from .worker import DEFAULT_RENEW_INTERVAL
from .grammar import parse_seconds, parse_whole
from .options import (
    DEFAULT_WORKER_PORT, HostError, UsageParser, add_log_level, check_host, number_type,
    port_number, positive_float, seconds,
)

__all__ = [
    "DEFAULT_BROKER", "DEFAULT_OUTPUT_PORT", "DEFAULT_SYSLOG_PORT", "SYSLOG_HOST",
    "worker_parser", "parse_worker_args", "broker_label", "startup_line",
]

DEFAULT_BROKER = f"127.0.0.1:{DEFAULT_WORKER_PORT}"
DEFAULT_OUTPUT_PORT = 30000
DEFAULT_SYSLOG_PORT = 30001
SYSLOG_HOST = "127.0.0.1"
MAX_CONCURRENCY = 10000
DEFAULT_LONG_POLL = 10.0


# --- argument types --------------------------------------------------------------

def _host_port(text):
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        hint = f" (the broker on this machine: 127.0.0.1:{text})" if text.isdigit() else ""
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}{hint}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]   # [::1]:50001
    try:
        check_host(host, "broker host")
    except HostError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return host, _port(port)


def _port(text):
    return port_number(text, lowest=1)   # a worker cannot connect or send to port 0


def _seconds(text):
    # grammar rule seconds: 0 to MAX_SECONDS; float() alone would take 1e3, nan, 0_5
    return seconds(text)


def _ipv4(text):
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IPv4 address: {text!r}") from None


def _interface(text):
    """--mcast-if: an interface's IPv4 address. 0.0.0.0 (INADDR_ANY) is no
    interface: with it the kernel sends through the default route's, off
    this machine (ip(7), IP_MULTICAST_IF), the trap --mcast-if exists to
    avoid; so it is refused like an empty value."""
    address = _ipv4(text)
    if ipaddress.IPv4Address(address).is_unspecified:
        raise argparse.ArgumentTypeError(
            f"{text!r} names no interface (the kernel would pick the default route's, "
            "off this machine): give an interface's address, e.g. 127.0.0.1")
    return address


def _multicast_group(text):
    address = _ipv4(text)
    if not ipaddress.IPv4Address(address).is_multicast:
        raise argparse.ArgumentTypeError(f"not a multicast address (224.0.0.0/4): {text!r}")
    return address


def _int_range(low, high):
    return number_type(parse_whole, low, high)


MAX_NAME = 32   # RFC 3164 section 4.1.3: a TAG "MUST NOT exceed 32 characters"


def _name(text):
    if not text or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"name must be non-empty, without spaces: {text!r}")
    if len(text) > MAX_NAME:
        # with it, the syslog header leaves a message room in a 1,024-byte datagram
        raise argparse.ArgumentTypeError(f"name must have at most {MAX_NAME} characters "
                                         f"(RFC 3164), got {len(text)}")
    return text


# --- the parser ----------------------------------------------------------------------

def worker_parser(prog, flavour):
    """The worker's parser; errors are one line on stderr and exit status 2."""
    parser = UsageParser(
        prog=prog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            f"workq worker ({flavour}): fetches jobs from the broker's worker port, sends each\n"
            "word of a job as one UDP multicast datagram (word + LF), reports DONE, and\n"
            f"logs its progress to UDP syslog on {SYSLOG_HOST}. Reconnects with backoff\n"
            "(1 s doubling to 8 s) when the broker goes away; stops on SIGINT/SIGTERM.\n"
            "Says on stderr what goes wrong, and more with --log-level."),
        epilog=(
            "network safety: multicast sent through the default interface leaves the\n"
            "machine on the real network card. --mcast-if therefore defaults to\n"
            "127.0.0.1 (loopback) and --mcast-ttl to 1; choose a LAN interface address\n"
            "only when you mean to send on that LAN.\n\n"
            f"example: {prog} {DEFAULT_BROKER} {DEFAULT_OUTPUT_PORT} {DEFAULT_SYSLOG_PORT} "
            "--word-delay 0.1"),
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
    parser.add_argument("--fetch-interval", type=positive_float, default=0.5, metavar="S",
                        help="seconds to wait after NOJOB before asking again, more than 0: "
                             "0 would ask in a loop (default %(default)s)")
    parser.add_argument("--long-poll", type=number_type(parse_seconds, high=MAX_FETCH_WAIT),
                        default=DEFAULT_LONG_POLL, metavar="S",
                        help="ask with FETCH <S>: the broker holds the request until a job "
                             f"arrives (up to S seconds, at most {MAX_FETCH_WAIT:g}), so jobs "
                             "start at once; 0 polls with plain FETCH. A broker that refuses it, "
                             "or answers NOJOB at once, is asked every --fetch-interval "
                             "(default %(default)s)")
    parser.add_argument("--renew-interval", type=_seconds, metavar="S",
                        default=DEFAULT_RENEW_INTERVAL,
                        help="while streaming a job, send TOUCH <n> every S seconds (and once "
                             "when it starts) so the broker's lease (default 10 s) keeps it; "
                             "a broker that does not know TOUCH is not asked again; 0 never "
                             "renews: the job is then held until the connection is lost "
                             "(default %(default)s)")
    parser.add_argument("--token-file", metavar="PATH",
                        help="send AUTH <token> first, the token being the first line of PATH "
                             "(for a broker started with --token-file)")
    parser.add_argument("--mcast-group", type=_multicast_group, default="239.0.0.1",
                        metavar="ADDR", help="multicast group for the words (default %(default)s)")
    parser.add_argument("--mcast-if", type=_interface, default="127.0.0.1", metavar="ADDR",
                        help="address of the interface multicast leaves through (default "
                             "%(default)s, loopback: nothing leaves this machine; see below)")
    parser.add_argument("--mcast-ttl", type=_int_range(0, 255), default=1, metavar="N",
                        help="multicast TTL, 0-255 (default %(default)s: never routed)")
    parser.add_argument("--concurrency", type=_int_range(1, MAX_CONCURRENCY), default=1,
                        metavar="N",
                        help="job slots, each with its own broker connection and word timer, "
                             f"1-{MAX_CONCURRENCY} (default %(default)s)")
    parser.add_argument("--name", type=_name, default="workq-worker",
                        help="syslog ident, at most 32 characters: messages read NAME[PID]: ... "
                             "(default %(default)s)")
    add_log_level(parser, "every syslog message: fetching, starting and completing jobs, "
                          "each failed connection attempt")
    return parser


def parse_worker_args(prog, flavour, argv):
    """Parse ``argv`` (options may come between the positional arguments)."""
    return worker_parser(prog, flavour).parse_intermixed_args(argv)


def broker_label(host, port):
    """HOST:PORT as the worker prints and logs it; [ADDR]:PORT for IPv6."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def startup_line(flavour, args):
    return (f"workq worker ({flavour}): broker {broker_label(*args.broker)}, "
            f"output {args.mcast_group}:{args.output_port} via {args.mcast_if} "
            f"ttl {args.mcast_ttl}, syslog {SYSLOG_HOST}:{args.syslog_port}, "
            f"word delay {args.word_delay:g} s, fetch interval {args.fetch_interval:g} s, "
            f"long poll {args.long_poll:g} s, renew interval {args.renew_interval:g} s, "
            f"concurrency {args.concurrency}")
