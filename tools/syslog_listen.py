"""Watch the workers' syslog messages.

    python3 -m tools.syslog_listen [PORT] [--count N] [--timeout S]

Binds 127.0.0.1:PORT (UDP, default 30001) and prints each message as
``HH:MM:SS.mmm  facility.severity  message``.
"""

import argparse
import re
import socket
import sys

from core.logline import syslog_message
from core.options import UsageParser
from tools.mcast_listen import _port, _positive, receive_each, serve, timestamp

__all__ = [
    "DEFAULT_PORT",
    "FACILITIES",
    "SEVERITIES",
    "format_syslog",
    "listen",
    "main",
    "open_syslog_socket",
    "parse_syslog",
]

DEFAULT_PORT = 30001

# RFC 3164 / RFC 5424 facility codes, named as logging.handlers.SysLogHandler
# and syslog.conf name them.
FACILITIES = {
    0: "kern", 1: "user", 2: "mail", 3: "daemon", 4: "auth", 5: "syslog",
    6: "lpr", 7: "news", 8: "uucp", 9: "cron", 10: "authpriv", 11: "ftp",
    12: "ntp", 13: "security", 14: "console", 15: "solaris-cron",
    16: "local0", 17: "local1", 18: "local2", 19: "local3",
    20: "local4", 21: "local5", 22: "local6", 23: "local7",
}
SEVERITIES = {
    0: "emerg", 1: "alert", 2: "crit", 3: "err",
    4: "warning", 5: "notice", 6: "info", 7: "debug",
}

_PRI = re.compile(rb"<([0-9]{1,3})>")


def parse_syslog(data):
    """Split one syslog datagram into ``(facility, severity, message)``.

    ``facility`` and ``severity`` are names ("daemon", "info"); a facility
    code without a name comes back as its number in a string. The message
    is the text after ``<PRI>``, decoded as UTF-8 (a leading BOM dropped),
    without the trailing NUL and line break that some senders
    (SysLogHandler's ``append_nul``) add. A datagram without a valid
    ``<PRI>`` (0-191) gives ``(None, None, whole text)``.

    The message is safe to print, whatever the datagram held: one line,
    bytes that are not UTF-8 and control characters escaped as the spec's
    output.syslog writes them (``\\xff``, ``\\x1b``, ``\\u0085``; backslashes
    left as they are, so a worker's escapes show once), and cut with the
    spec's marker where the datagram passes RFC 3164's 1,024 bytes
    (core.logline).
    """
    data = bytes(data)
    match = _PRI.match(data)
    digits = match.group(1) if match else b""
    # RFC 5424: 0-191, no leading zeros ("<0>" itself is fine).
    if digits and int(digits) <= 191 and (digits == b"0" or not digits.startswith(b"0")):
        facility_code, severity_code = divmod(int(digits), 8)
        facility = FACILITIES.get(facility_code, str(facility_code))
        severity = SEVERITIES[severity_code]
        body = data[match.end():]
    else:
        facility = severity = None
        body = data
    body = body.rstrip(b"\x00").rstrip(b"\r\n").rstrip(b"\x00")
    text = body.decode("utf-8", "surrogateescape").removeprefix("\ufeff")
    header = match.end() if match else 0
    return facility, severity, syslog_message(text, header, backslash=False)


def format_syslog(data, when=None):
    """``HH:MM:SS.mmm  facility.severity  message`` for one datagram
    (``?.?`` when it has no valid priority)."""
    facility, severity, message = parse_syslog(data)
    label = f"{facility}.{severity}" if facility is not None else "?.?"
    return f"{timestamp(when)}  {label}  {message}"


def open_syslog_socket(port=DEFAULT_PORT, host="127.0.0.1"):
    """Return a UDP socket bound to (host, port); port 0 picks a free one."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def listen(sock, count=None, timeout=None, out=None, on_message=None):
    """Receive syslog datagrams from ``sock``, print each (formatted) to
    ``out`` (None: do not print) and call ``on_message(facility, severity,
    message, addr, when)``. Stops after ``count`` datagrams or ``timeout``
    seconds of silence. Returns the number received."""
    def handle(data, addr, when):
        if out is not None:
            print(format_syslog(data, when), file=out, flush=True)
        if on_message is not None:
            on_message(*parse_syslog(data), addr, when)
    return receive_each(sock, count, timeout, handle)


def main(argv=None):
    parser = UsageParser(
        prog="python3 -m tools.syslog_listen",
        description="Print the syslog messages workers send to 127.0.0.1:PORT, "
                    "one line each: HH:MM:SS.mmm  facility.severity  message.",
        epilog="examples:\n"
               "  python3 -m tools.syslog_listen               # 127.0.0.1:30001\n"
               "  python3 -m tools.syslog_listen 30001 --count 3 --timeout 10\n"
               "exit status: 0 normally (also on Ctrl-C); 1 when --count was given and "
               "--timeout expired first; 2 bad arguments or cannot listen.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("port", nargs="?", type=_port, default=DEFAULT_PORT,
                        help=f"UDP port the workers send syslog to (default {DEFAULT_PORT})")
    parser.add_argument("--count", type=_positive(int), metavar="N",
                        help="exit after N messages")
    parser.add_argument("--timeout", type=_positive(float), metavar="S",
                        help="exit after S seconds without a message")
    args = parser.parse_args(argv)
    try:
        sock = open_syslog_socket(args.port)
    except OSError as exc:
        print(f"error: cannot listen on 127.0.0.1:{args.port} (UDP): "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 2
    return serve(sock, listen, args.count, args.timeout, "message(s)",
                 f"listening for syslog on 127.0.0.1:{sock.getsockname()[1]} (UDP); "
                 "Ctrl-C to stop")


if __name__ == "__main__":
    sys.exit(main())
