"""Watch the words the workers multicast (instead of ``nc -ul 30000``).

    python3 -m tools.mcast_listen [PORT] [--group 239.0.0.1] [--iface 127.0.0.1]
                                  [--count N] [--timeout S]

Binds (GROUP, PORT), joins GROUP on the interface with address IFACE and
prints every datagram to GROUP:PORT as ``HH:MM:SS.mmm  SOURCE_IP:PORT  word``
(control characters and bytes that are not UTF-8 escaped, see
``decode_word``). It only receives, and only its own group: on Linux a
socket bound to the wildcard address gets the datagrams of every group any
socket of the host joined on that port, so the socket is bound to the group
address and IP_MULTICAST_ALL is off.
"""

import argparse
import signal
import socket
import sys
import time

from core.logline import escape
from core.options import UsageParser, port_number, positive_float, positive_int
from shell.logs import silence_stdout

__all__ = [
    "DEFAULT_GROUP",
    "DEFAULT_IFACE",
    "DEFAULT_PORT",
    "decode_word",
    "format_datagram",
    "listen",
    "main",
    "open_receiver",
    "timestamp",
]

DEFAULT_PORT = 30000
DEFAULT_GROUP = "239.0.0.1"
DEFAULT_IFACE = "127.0.0.1"
# Linux <linux/in.h>: 0 = deliver only the groups this socket joined; the
# socket module lacks the name before Python 3.12 (or on some builds).
IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)


def open_receiver(port=DEFAULT_PORT, group=DEFAULT_GROUP, iface=DEFAULT_IFACE):
    """Return a UDP socket that receives only datagrams sent to ``group``:``port``,
    having joined ``group`` on the interface whose address is ``iface``.

    Bound to (group, port), not the wildcard address, with IP_MULTICAST_ALL
    off on Linux: either alone keeps out another group's datagrams to the
    same port (see the module). ``port`` 0 picks a free port (read it back
    with ``getsockname()``). Raises OSError/ValueError."""
    try:
        mreq = socket.inet_aton(group) + socket.inet_aton(iface)
    except OSError:
        raise ValueError(f"bad IPv4 address in group {group!r} / iface {iface!r}") from None
    if not 224 <= int(group.split(".")[0]) <= 239:
        raise ValueError(f"{group} is not a multicast address (224.0.0.0/4)")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        # Several listeners (and workers' own tools) may share the port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if sys.platform.startswith("linux"):
            sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
        sock.bind((group, port))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    except BaseException:
        sock.close()
        raise
    return sock


def timestamp(when=None):
    """Local time as ``HH:MM:SS.mmm``."""
    when = time.time() if when is None else when
    return time.strftime("%H:%M:%S", time.localtime(when)) + f".{int(when % 1 * 1000):03d}"


def decode_word(data):
    """Datagram payload as text safe to print on one line: UTF-8, the
    trailing line break removed, bytes that are not UTF-8 and control
    characters escaped as in syslog (``\\xff``, ``\\x1b``; core.logline)."""
    text = data.decode("utf-8", "surrogateescape")
    return escape(text[:-1] if text.endswith("\n") else text, backslash=False)


def format_datagram(data, addr, when=None):
    """``HH:MM:SS.mmm  SOURCE_IP:PORT  word`` for one datagram."""
    return f"{timestamp(when)}  {addr[0]}:{addr[1]}  {decode_word(data)}"


def listen(sock, count=None, timeout=None, out=None, on_datagram=None):
    """Receive from ``sock`` and print each datagram to ``out`` (None: do
    not print). ``on_datagram(data, addr, when)`` is called for each one.
    Stops after ``count`` datagrams or ``timeout`` seconds of silence
    (either may be None). Returns the number received."""
    def handle(data, addr, when):
        if out is not None:
            print(format_datagram(data, addr, when), file=out, flush=True)
        if on_datagram is not None:
            on_datagram(data, addr, when)
    return receive_each(sock, count, timeout, handle)


def receive_each(sock, count, timeout, handle):
    """Call ``handle(data, addr, when)`` for each datagram until ``count`` of
    them or ``timeout`` seconds of silence (either may be None); return how
    many arrived. Shared with tools.syslog_listen."""
    received = 0
    sock.settimeout(timeout)
    while count is None or received < count:
        try:
            data, addr = sock.recvfrom(65535)
        except TimeoutError:
            break
        received += 1
        handle(data, addr, time.time())
    return received


def _port(text):
    """A port to listen on, 0-65535 (grammar rule ``port``; 0: any free port)."""
    return port_number(text, lowest=0)


def _positive(kind):
    """The argparse type of --count (``int``: grammar rule ``whole_number``) or
    --timeout (``float``: rule ``seconds``), greater than 0."""
    if kind is int:
        return positive_int
    return positive_float


def _sigterm(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    parser = UsageParser(
        prog="python3 -m tools.mcast_listen",
        description="Print the words workers send to the multicast group, one "
                    "line per datagram: HH:MM:SS.mmm  SOURCE_IP:PORT  word. "
                    "Only receives, never sends.",
        epilog="examples:\n"
               "  python3 -m tools.mcast_listen                # 239.0.0.1:30000 on 127.0.0.1\n"
               "  python3 -m tools.mcast_listen 30000 --count 10 --timeout 5\n"
               "exit status: 0 normally (also on Ctrl-C); 1 when --count was given and "
               "--timeout expired first; 2 bad arguments or cannot listen.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("port", nargs="?", type=_port, default=DEFAULT_PORT,
                        help=f"UDP port the workers send to (default {DEFAULT_PORT})")
    parser.add_argument("--group", default=DEFAULT_GROUP,
                        help=f"multicast group to join (default {DEFAULT_GROUP})")
    parser.add_argument("--iface", default=DEFAULT_IFACE,
                        help="address of the interface to join on (default "
                             f"{DEFAULT_IFACE}, the loopback, where our workers send)")
    parser.add_argument("--count", type=_positive(int), metavar="N",
                        help="exit after N datagrams")
    parser.add_argument("--timeout", type=_positive(float), metavar="S",
                        help="exit after S seconds without a datagram")
    args = parser.parse_args(argv)

    try:
        sock = open_receiver(args.port, args.group, args.iface)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"error: cannot listen on {args.group}:{args.port} (interface "
              f"{args.iface}): {reason}", file=sys.stderr)
        return 2
    port = sock.getsockname()[1]
    return serve(sock, listen, args.count, args.timeout, "datagram(s)",
                 f"listening on {args.group}:{port} (interface {args.iface}); Ctrl-C to stop")


def serve(sock, listen, count, timeout, unit, banner):
    """The loop of a listener's command line; returns its exit status.

    Shared with tools.syslog_listen: print the banner, run ``listen`` until
    --count or --timeout, Ctrl-C / SIGTERM / a closed stdout end it quietly.
    """
    try:
        signal.signal(signal.SIGTERM, _sigterm)
    except ValueError:
        pass  # not the main thread
    print(banner, file=sys.stderr, flush=True)
    received = 0
    try:
        received = listen(sock, count, timeout, out=sys.stdout)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 0
    except BrokenPipeError:
        silence_stdout()
        return 0
    finally:
        sock.close()
    if count is not None and received < count:
        print(f"timed out after {timeout:g} s of silence: received {received} "
              f"of {count} {unit}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
