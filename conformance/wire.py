"""What the suite sees on the wire: TCP connections read line by line,
multicast and syslog datagrams, and the timestamped transcript of it all."""

import re
import socket
import sys
import time

__all__ = ["Transcript", "Connection", "Datagram", "DatagramReceiver",
           "show", "syslog_message"]

# Linux <linux/in.h>; absent from the socket module before Python 3.12.
IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)


def show(text, limit=300):
    """Text for the transcript: control characters escaped, long text cut."""
    shown = "".join(
        ch if ch.isprintable() or ch == " " else ascii(ch)[1:-1] for ch in text)
    if len(shown) > limit:
        shown = f"{shown[:limit]}... ({len(text)} characters)"
    return shown


class Transcript:
    """Timestamped lines, relative to the start of the exchange."""

    def __init__(self):
        self.start = time.monotonic()
        self.entries = []

    def add(self, text, step=None):
        """Add a line; ``step`` (a number) marks the line that starts a step."""
        label = f"step {step}" if step is not None else ""
        self.entries.append((time.monotonic() - self.start, label, text))

    def render(self):
        return "\n".join(f"{seconds:8.3f}s  {label:>8}  {text}"
                         for seconds, label, text in self.entries)


class Connection:
    """A TCP connection of the suite; received lines queue up in ``lines``."""

    def __init__(self, name, sock, transcript, quiet=False):
        self.name = name
        self.sock = sock
        self.transcript = transcript
        self.quiet = quiet  # wait_state logs its polls itself, compressed
        self.lines = []
        self.buffer = bytearray()
        self.closed_by_peer = None  # "EOF" or "reset" once the peer closed
        self.closed_by_us = False
        self.reads = True   # False: the suite never reads it (a client ignoring its replies)
        sock.setblocking(False)

    @property
    def readable(self):
        return self.reads and not (self.closed_by_peer or self.closed_by_us)

    def on_readable(self):
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:  # reset by the peer
            data, self.closed_by_peer = b"", "reset"
        if not data:
            self.closed_by_peer = self.closed_by_peer or "EOF"
            if self.buffer:
                self._log(f"S< {show(self.buffer.decode('utf-8', 'replace'))} (no LF)")
            self._log(f"-- connection closed by the peer ({self.closed_by_peer})")
            return
        self.buffer += data
        *complete, rest = self.buffer.split(b"\n")
        self.buffer = bytearray(rest)
        for raw in complete:
            line = raw[:-1] if raw.endswith(b"\r") else raw
            text = line.decode("utf-8", "replace")
            self.lines.append(text)
            if not self.quiet:
                self._log(f"S< {show(text)}")

    def _log(self, text):
        self.transcript.add(f"{self.name} {text}")

    def close(self):
        self.closed_by_us = True
        self.sock.close()


class Datagram:
    __slots__ = ("source", "payload", "sender")

    def __init__(self, source, payload, sender):
        self.source = source    # (host, port)
        self.payload = payload  # bytes
        self.sender = sender    # worker name, if traced, else None

    def origin(self):
        return self.sender or f"{self.source[0]}:{self.source[1]}"


# <PRI>, an optional RFC 3164 timestamp and host, then `ident[pid]: ` or
# `ident: `; what follows is the message.
SYSLOG_PREFIX = re.compile(
    r"<\d{1,3}>(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ )?"
    r"(?:[^\s\[\]:]+\[\d+\]: |[^\s\[\]:]+: )?")


def syslog_message(payload):
    text = payload.decode("utf-8", "replace").rstrip("\x00").rstrip("\r\n")
    prefix = SYSLOG_PREFIX.match(text)
    return text[prefix.end():] if prefix else text


class DatagramReceiver:
    """A UDP socket whose datagrams are kept, in arrival order."""

    def __init__(self, kind, sock, transcript, trace_sender):
        self.kind = kind  # "mcast" or "syslog"
        self.sock = sock
        self.transcript = transcript
        self.trace_sender = trace_sender  # source port -> worker name or None
        self.datagrams = []
        sock.setblocking(False)

    @classmethod
    def multicast(cls, group, interface, transcript, trace_sender):
        """A receiver of ``group`` only: bound to the group address, not the
        wildcard (which on Linux also gets every other group joined on the host
        for that port), and IP_MULTICAST_ALL off (Linux). The same as
        tools.mcast_listen.open_receiver, which the suite may not import."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if sys.platform.startswith("linux"):
            sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
        sock.bind((group, 0))
        membership = socket.inet_aton(group) + socket.inet_aton(interface)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        return cls("mcast", sock, transcript, trace_sender)

    @classmethod
    def syslog(cls, transcript, trace_sender):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        return cls("syslog", sock, transcript, trace_sender)

    @property
    def port(self):
        return self.sock.getsockname()[1]

    def text(self, payload):
        """What a datagram says: the syslog message, or the multicast word."""
        if self.kind == "syslog":
            return syslog_message(payload)
        text = payload.decode("utf-8", "replace")
        return text[:-1] if text.endswith("\n") else text + " [no LF]"

    def on_readable(self):
        while True:
            try:
                payload, source = self.sock.recvfrom(65536)
            except BlockingIOError:
                return
            datagram = Datagram(source[:2], payload, self.trace_sender(source[1]))
            self.datagrams.append(datagram)
            self.transcript.add(
                f"{self.kind}< {show(self.text(payload))}  (from {datagram.origin()})")

    def close(self):
        self.sock.close()
