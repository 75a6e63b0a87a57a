"""Command lines of the broker, shared by every implementation (DESIGN.md contract)."""

import argparse

from .framing import DEFAULT_MAX_LINE

DEFAULT_CLIENT_PORT = 50000
DEFAULT_WORKER_PORT = 50001
DEFAULT_MAX_OUTPUT = 4 * 1024 * 1024


def port_number(text):
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0-65535: {port}")
    return port


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value}")
    return value


def broker_parser(prog, flavour):
    parser = argparse.ArgumentParser(
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
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1, this machine only; "
                             "the original system listened everywhere: use 0.0.0.0 for that)")
    parser.add_argument("--max-line", type=positive_int, default=DEFAULT_MAX_LINE,
                        help=f"longest line accepted, in bytes (default {DEFAULT_MAX_LINE}); "
                             "a longer one gets ERR LINE_TOO_LONG and the connection is closed")
    parser.add_argument("--max-output", type=positive_int, default=DEFAULT_MAX_OUTPUT,
                        help="replies buffered for a peer that does not read, in bytes, before "
                             f"it is disconnected (default {DEFAULT_MAX_OUTPUT})")
    return parser


def startup_line(flavour, args):
    return (f"workq broker ({flavour}): clients on {args.host}:{args.client_port}, "
            f"workers on {args.host}:{args.worker_port}, max line {args.max_line} bytes")
