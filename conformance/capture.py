"""Multicast checks: what the workers really put on the wire.

``expect_words`` finds a job's words among the datagrams that the suite's
joined receiver socket gets (runner.py). This module checks the rest of the
spec's ``multicast`` entry, in one of two modes, decided once per test
process (``probe_capture``) and shown in the pytest report header and at the
top of each exchange's transcript:

- **scapy capture on lo** (root, or capabilities in the test's private
  network namespace): a packet socket opened with scapy on ``lo``, with a
  kernel filter that keeps UDP datagrams to a multicast group or to the
  output port. Each datagram shows up on ``lo`` twice (going out and coming
  back in); only the outgoing copy counts. Checked: the destination (group
  and output port), the IP TTL, the spacing of a job's words (kernel
  timestamps), and the order and completeness of the words.
- **joined receiver socket**, where capturing is not permitted (or
  ``--mcast-capture off``): the receiver socket cannot see a datagram's TTL
  or where it was sent (a datagram to another group never arrives), so only
  the words, their order and their spacing (kernel receive timestamps,
  SO_TIMESTAMPNS) are checked; the transcript says so.

The TTL is checked only where a step asks for it (``ttl: true``): TTL 1 is
workq's safety default, not a requirement of the assignment, so it is one
extended case of its own rather than a condition of every word case.

The capture socket is open before any worker starts, so nothing is missed:
no thread, nothing to wait for. Datagrams of several workers are told apart
by their source port, traced to the worker that owns it.
"""

import ctypes
import socket
import struct
import sys

from .patterns import substitute
from .wire import show

__all__ = ["CaptureMode", "probe_capture", "MulticastChecks", "word_defects",
           "SPACING_FRACTION"]

CAPTURE_IFACE = "lo"
SPACING_FRACTION = 0.5       # a job's words at least word_delay x this apart
PACKET_OUTGOING = 4          # linux/if_packet.h: the copy of a frame going out
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
CAPTURE_BUFFER = 4 * 1024 * 1024


class CaptureMode:
    """How multicast output is checked in this process."""

    def __init__(self, capture, reason="", detail=""):
        self.capture = capture
        self.reason = reason    # why not, when not capturing
        self.detail = detail

    def describe(self):
        if self.capture:
            return f"scapy capture on {CAPTURE_IFACE}"
        text = f"joined receiver socket ({self.reason}: TTL and destination unchecked)"
        return f"{text}; {self.detail}" if self.detail else text


def probe_capture(wanted="auto"):
    """Decide the mode: capture on lo if a packet socket can be opened there.

    Call it after entering the private network namespace (its ``lo`` is the
    one the tests use).
    """
    if wanted == "off":
        return CaptureMode(False, "capture off", "--mcast-capture off")
    if not sys.platform.startswith("linux"):
        return CaptureMode(False, "no capture", "packet sockets exist only on Linux")
    try:
        _scapy()
    except ImportError as error:
        return CaptureMode(False, "no capture", f"scapy is not importable: {error}")
    try:
        _open_capture_socket(0).close()
    except PermissionError as error:
        return CaptureMode(False, "no capture permission",
                           f"packet socket on {CAPTURE_IFACE}: {error.strerror or error}")
    except Exception as error:  # scapy raises its own exceptions too
        return CaptureMode(False, "no capture", f"packet socket on {CAPTURE_IFACE}: {error}")
    return CaptureMode(True)


def _scapy():
    # Imported on first use: the layers register the link types (lo's frames
    # are Ethernet), and a run without multicast cases never pays for scapy.
    from scapy.config import conf
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    return conf, Ether, IP, UDP


def _filter_program(port, tcp_port=0):
    """Classic BPF for ``udp and (dst net 224.0.0.0/4 or dst port PORT) or
    tcp and dst port TCP_PORT`` on an Ethernet-framed device such as lo.
    Written out by hand: scapy compiles filter strings only with libpcap or
    tcpdump, which may be missing. (TCP_PORT: the suite's worker port in the
    worker role, to see when DONE went out; 0 matches nothing.)"""
    tcp, accept, drop = 10, 14, 15
    return [
        (0x28, 0, 0, 12),                       # 0  ldh [12]        ethertype
        (0x15, 0, drop - 2, 0x0800),            # 1  jeq IPv4
        (0x30, 0, 0, 23),                       # 2  ldb [23]        IP protocol
        (0x15, 0, tcp - 4, 17),                 # 3  jeq UDP, else to 10
        (0x20, 0, 0, 30),                       # 4  ld [30]         destination address
        (0x54, 0, 0, 0xF0000000),               # 5  and #0xf0000000
        (0x15, accept - 7, 0, 0xE0000000),      # 6  jeq 224.0.0.0/4
        (0xB1, 0, 0, 14),                       # 7  ldxb 4*([14]&0xf)  IP header length
        (0x48, 0, 0, 16),                       # 8  ldh [x+16]      destination port
        (0x15, accept - 10, drop - 10, port),   # 9  jeq PORT
        (0x15, 0, drop - 11, 6),                # 10 jeq TCP (A: the protocol still)
        (0xB1, 0, 0, 14),                       # 11 ldxb 4*([14]&0xf)
        (0x48, 0, 0, 16),                       # 12 ldh [x+16]      destination port
        (0x15, accept - 14, drop - 14, tcp_port),  # 13 jeq TCP_PORT
        (0x06, 0, 0, 0x40000),                  # 14 accept: ret #262144
        (0x06, 0, 0, 0),                        # 15 drop: ret #0
    ]


def _open_capture_socket(port, tcp_port=0):
    conf, _, _, _ = _scapy()
    capture = conf.L2listen(iface=CAPTURE_IFACE)
    try:
        program = _filter_program(port, tcp_port)
        code = ctypes.create_string_buffer(
            b"".join(struct.pack("HBBI", *instruction) for instruction in program))
        capture.ins.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                               struct.pack("HL", len(program), ctypes.addressof(code)))
        capture.ins.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CAPTURE_BUFFER)
        capture.ins.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        capture.ins.setblocking(False)
        # What arrived before the filter was attached.
        while True:
            capture.ins.recv(65536)
    except BlockingIOError:
        return capture
    except BaseException:
        capture.close()
        raise


def _timestamp(ancillary):
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            seconds, nanoseconds = struct.unpack("qq", data[:16])
            return seconds + nanoseconds / 1e9
    return None


class Sent:
    """One datagram a worker sent, as observed."""

    __slots__ = ("time", "source", "dest", "ttl", "payload", "owner")

    def __init__(self, time, source, dest, ttl, payload, owner):
        self.time = time          # kernel timestamp, seconds
        self.source = source      # (host, port)
        self.dest = dest          # (group, port), or None when not seen
        self.ttl = ttl            # IP TTL, or None when not seen
        self.payload = payload
        self.owner = owner        # worker name, or None

    def word(self):
        text = self.payload.decode("utf-8", "replace")
        return text[:-1] if text.endswith("\n") else text

    def origin(self):
        return self.owner or "%s:%d" % self.source


class CaptureObserver:
    """scapy's packet socket on lo; read by the runner's select loop."""

    kind = "capture"

    def __init__(self, port, transcript, owner_of, expected_dest, tcp_port=0):
        self.capture = _open_capture_socket(port, tcp_port)
        self.sock = self.capture.ins
        self.transcript = transcript
        self.owner_of = owner_of
        self.expected_dest = expected_dest
        self.sent = []
        self.segments = []  # (time, payload) of TCP data to the suite's worker port
        _, self.Ether, self.IP, self.UDP = _scapy()
        from scapy.layers.inet import TCP
        self.TCP = TCP

    def on_readable(self):
        while True:
            try:
                frame, ancillary, _, address = self.sock.recvmsg(65536, socket.CMSG_SPACE(16))
            except (BlockingIOError, InterruptedError):
                return
            if address[2] != PACKET_OUTGOING:
                continue  # the copy coming back in on lo
            packet = self.Ether(frame)
            if self.IP in packet and self.TCP in packet:
                payload = bytes(packet[self.TCP].payload)
                if payload:
                    self.segments.append((_timestamp(ancillary), payload))
                continue
            if self.IP not in packet or self.UDP not in packet:
                continue
            ip, udp = packet[self.IP], packet[self.UDP]
            sent = Sent(_timestamp(ancillary), (ip.src, udp.sport), (ip.dst, udp.dport),
                        ip.ttl, bytes(udp.payload), self.owner_of(udp.sport))
            self.sent.append(sent)
            if sent.dest != self.expected_dest and sent.owner is not None:
                # The receiver socket never gets these: show them here.
                self.transcript.add(f"capture< {show(sent.word())}  to {ip.dst}:{udp.dport}, "
                                    f"TTL {ip.ttl} (from {sent.origin()})")

    def close(self):
        self.capture.close()


class _TimestampingSocket:
    """The runner's multicast receiver socket, read with recvmsg so that each
    datagram's kernel receive time is kept; otherwise the same socket."""

    def __init__(self, sock, on_datagram):
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._sock = sock
        self._on_datagram = on_datagram

    def recvfrom(self, size):
        payload, ancillary, _, source = self._sock.recvmsg(size, socket.CMSG_SPACE(16))
        self._on_datagram(payload, source, _timestamp(ancillary))
        return payload, source

    def fileno(self):
        return self._sock.fileno()

    def __getattr__(self, name):
        return getattr(self._sock, name)


class ReceiverObserver:
    """The fallback: what the joined receiver socket gets, with timestamps."""

    kind = "socket"
    sock = None  # nothing of its own to read

    def __init__(self, receiver, owner_of):
        self.owner_of = owner_of
        self.sent = []
        receiver.sock = _TimestampingSocket(receiver.sock, self._record)

    def _record(self, payload, source, time):
        self.sent.append(Sent(time, source[:2], None, None, payload, self.owner_of(source[1])))

    def on_readable(self):
        pass

    def close(self):
        pass


def collapse_repeats(words):
    """``words`` (a list of str) with each run of one word shown once, as
    ``WORD (xN)``: what a failure prints of a long job's datagrams."""
    shown, previous, count = [], None, 0
    for word in words + [None]:
        if word == previous:
            count += 1
            continue
        if previous is not None:
            shown.append(previous if count == 1 else f"{previous} (x{count})")
        previous, count = word, 1
    return shown


def word_defects(wanted, received, job=None, strict=False):
    """What is wrong with ``received`` (payloads of one source) where the
    words ``wanted`` were expected: missing words, words out of order,
    words in between, datagrams without LF. Empty if nothing is found."""
    label = f" (job {job})" if job is not None else ""
    defects, texts = [], []
    for payload in received:
        text = payload.decode("utf-8", "replace")
        if text.endswith("\n"):
            texts.append(text[:-1])
        else:
            texts.append(text)
            if text in wanted:
                defects.append(f"datagram {text!r} has no LF (the payload is the word and LF)"
                               f"{label}")
    positions, used = [], set()
    for word in wanted:
        position = next((i for i, text in enumerate(texts) if text == word and i not in used),
                        None)
        positions.append(position)
        if position is not None:
            used.add(position)
    missing = {}                          # word -> how many of it are missing, in order
    for word, position in zip(wanted, positions):
        if position is None:
            missing[word] = missing.get(word, 0) + 1
    defects += [f"missing word {word!r}{label}" + (f", {count} times" if count > 1 else "")
                for word, count in missing.items()]
    present = [(word, position) for word, position in zip(wanted, positions)
               if position is not None]
    order = [f"word {b!r} arrived before {a!r}{label}"
             for (a, pa), (b, pb) in zip(present, present[1:]) if pb < pa]
    defects += order[:3]
    if not order:
        for (a, pa), (b, pb) in zip(present, present[1:]):
            defects += [f"unexpected word {text!r} between {a!r} and {b!r}{label}"
                        for text in texts[pa + 1:pb]][:3]
        if strict and present and present[0][1] > 0:
            defects.append(f"unexpected word {texts[0]!r} before {present[0][0]!r}{label}")
    return defects


class MulticastChecks:
    """Runner steps' multicast checks (mixed into runner.ExchangeRun)."""

    observer = None
    last_match = None  # (source, index) of expect_words' last run found

    def _open_observer(self):
        mode = self.settings.capture or CaptureMode(False, "no capture",
                                                   "no capture mode configured")
        group_port = (self.settings.multicast_group, self.multicast.port)
        observer = None
        if mode.capture:
            try:
                observer = CaptureObserver(self.multicast.port, self.transcript,
                                           self._owner_of, group_port,
                                           self.worker_port if self.listener else 0)
            except Exception as error:  # permitted at start-up, not now: say so
                mode = CaptureMode(False, "no capture", f"opening the capture failed: {error}")
        if observer is None:
            observer = ReceiverObserver(self.multicast, self._owner_of)
        self.observer = observer
        self.observer_cursor = {}
        self.transcript.add(f"-- multicast checks: {mode.describe()}")
        if observer.sock is not None:
            self.extra_readers.append(observer)

    def _stray_datagrams(self, check_ttl=False):
        """Capture only: datagrams of our workers to the wrong place, or
        (``check_ttl``: the step has ``ttl: true``) with the wrong TTL."""
        if self.observer is None or self.observer.kind != "capture":
            return []
        self.observer.on_readable()
        group, port = self.settings.multicast_group, self.multicast.port
        ttl = self.settings.multicast_ttl
        defects = []
        for sent in self.observer.sent:
            if sent.owner is None and sent.dest[1] != port:
                continue  # not from a worker of this exchange
            word = show(sent.word())
            if sent.dest != (group, port):
                if sent.dest[0] != group:
                    defects.append(f"datagram {word!r} to {sent.dest[0]}:{sent.dest[1]}, "
                                   f"expected {group} (from {sent.origin()})")
                else:
                    defects.append(f"datagram {word!r} to {group}:{sent.dest[1]}, expected "
                                   f"the output port {port} (from {sent.origin()})")
            if check_ttl and sent.ttl != ttl:
                defects.append(f"TTL {sent.ttl}, expected {ttl} (datagram {word!r} "
                               f"from {sent.origin()})")
        return defects[:5]

    def _word_defects(self, words, step, sender):
        """Why expect_words failed, in words a person can act on."""
        job = step.get("job")
        if job is not None:
            job = self._substitute(job)
        defects = self._stray_datagrams(step.get("ttl", False))
        candidates = []
        for source, payloads in self._datagrams_by_source().items():
            if sender is not None and self._owner_of(source[1]) != sender:
                continue
            received = payloads[self.multicast_cursor.get(source, 0):]
            wanted = [word + "\n" for word in words]
            score = sum(1 for p in received if p.decode("utf-8", "replace") in wanted)
            candidates.append((score, len(received), received))
        if candidates:
            received = max(candidates, key=lambda c: c[:2])[2]
            defects += word_defects(words, received, job, strict=job is not None)
        if self.observer is not None and self.observer.kind != "capture" and not candidates:
            defects.append("no datagram reached the joined receiver socket (without capture "
                           "a datagram to another group or port cannot be seen)")
        return defects

    def _check_datagrams(self, words, step, sender):
        """After expect_words found its run: destination, TTL, spacing, DONE after."""
        defects = self._stray_datagrams(step.get("ttl", False))
        if defects:
            self._fail(f"expect words: {defects[0]}", *defects)
        job = step.get("job")
        job = None if job is None else self._substitute(job)
        source, _ = self.last_match
        run = self._observed_run(source, words)
        mode = "capture on lo" if self.observer.kind == "capture" else "receiver socket"
        facts = [f"{len(words)} datagram{'s' if len(words) != 1 else ''} from "
                 f"{self._owner_of(source[1]) or '%s:%d' % source}"]
        if run is None:
            self.transcript.add(f"-- multicast check ({mode}): {', '.join(facts)}; "
                                "spacing not measured (datagrams not found in the observation)")
            return
        if self.observer.kind == "capture":
            facts.append(f"to {run[0].dest[0]}:{run[0].dest[1]}, TTL "
                         + ", ".join(sorted({str(sent.ttl) for sent in run})))
        gaps = [(a, b, b.time - a.time) for a, b in zip(run, run[1:])
                if a.time is not None and b.time is not None]
        delay = self.settings.word_delay
        least = delay * SPACING_FRACTION
        if job is not None and not gaps:
            facts.append(f"job {job}: {len(run)} word{'s' if len(run) != 1 else ''}")
        if job is not None and gaps:
            spacings = [gap for _, _, gap in gaps]
            facts.append(f"job {job}: words {min(spacings):.3f}-{max(spacings):.3f} s apart "
                         f"(at least {least:.3f} s wanted: word delay {delay:g} s x "
                         f"{SPACING_FRACTION:g})")
        self.transcript.add(f"-- multicast check ({mode}): " + ", ".join(facts))
        if job is None:
            return
        self._check_done_after(job, run[-1])
        close = [(a, b, gap) for a, b, gap in gaps if gap < least]
        if close:
            a, b, gap = close[0]
            self._fail(f"expect words: words {show(a.word())!r} and {show(b.word())!r} "
                       f"of job {job} only {gap:.3f} s apart, expected at least "
                       f"{least:.3f} s (word delay {delay:g} s x {SPACING_FRACTION:g})",
                       "measured spacing: " + " ".join(f"{gap:.3f}" for _, _, gap in gaps))

    def _check_done_after(self, job, last):
        """Worker role, capture: DONE of the job must not go out before its last word."""
        if self.observer.kind != "capture" or not self.listener or last.time is None:
            return
        done = f"DONE {job}".encode()
        for time, payload in self.observer.segments:
            lines = [line.rstrip(b"\r") for line in payload.split(b"\n")]
            if time is not None and time < last.time and done in lines:
                self._fail(f"expect words: DONE {job} went out {last.time - time:.3f} s before "
                           f"the last word {show(last.word())!r} of job {job}",
                           "expected: DONE after the last word (captured on lo)")

    def _observed_run(self, source, words):
        """The observer's records of the run expect_words just matched."""
        wanted = [word.encode("utf-8") + b"\n" for word in words]
        group_port = (self.settings.multicast_group, self.multicast.port)
        mine = [sent for sent in self.observer.sent if sent.source == source
                and sent.dest in (None, group_port)]
        start = self.observer_cursor.get(source, 0)
        for index in range(start, len(mine) - len(wanted) + 1):
            if [sent.payload for sent in mine[index:index + len(wanted)]] == wanted:
                self.observer_cursor[source] = index + len(wanted)
                return mine[index:index + len(wanted)]
        return None

    def _substitute(self, value):
        return substitute(value, self.values)
