"""tools.syslog_listen (parse_syslog and the command) and tools.mcast_listen.

Network safety: every multicast sender here pins IP_MULTICAST_IF to
127.0.0.1 and TTL 1, so nothing leaves the machine.
"""

import logging
import logging.handlers
import queue
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

from tools import mcast_listen, syslog_listen
from tools.syslog_listen import parse_syslog

GROUP = "239.0.0.1"
OTHER_GROUP = "239.0.0.2"
WAIT = 30          # hang guard for one expected event, not a measurement
STAMP = r"\d\d:\d\d:\d\d\.\d{3}"


# --------------------------------------------------------- parse_syslog

@pytest.mark.parametrize("data, expected", [
    (b"<14>hello", ("user", "info", "hello")),
    (b"<30>workq-worker[12]: starting job 3\x00", ("daemon", "info", "workq-worker[12]: starting job 3")),
    (b"<0>panic", ("kern", "emerg", "panic")),
    (b"<191>last", ("local7", "debug", "last")),
    (b"<131>disk full\n", ("local0", "err", "disk full")),
    (b"<12>warn\n\x00", ("user", "warning", "warn")),
    (b"<14>\xef\xbb\xbfwith bom", ("user", "info", "with bom")),
    (b"<14>caf\xc3\xa9", ("user", "info", "café")),
    (b"<14>", ("user", "info", "")),
])
def test_parse_syslog(data, expected):
    got = parse_syslog(data)
    assert got == expected, f"parse_syslog({data!r}): expected {expected}, got {got}"


@pytest.mark.parametrize("data", [b"no priority", b"<192>too big", b"<01>leading zero",
                                  b"<>empty", b"<1234>long", b"14>half"])
def test_parse_syslog_without_valid_priority(data):
    facility, severity, message = parse_syslog(data)
    assert (facility, severity) == (None, None), \
        f"parse_syslog({data!r}): expected no facility/severity, got {(facility, severity)}"
    assert message == data.decode(), f"expected the whole text back, got {message!r}"


@pytest.mark.parametrize("data, expected", [
    (b"<14>bad \xff byte", r"bad \xff byte"),
    (b"<14>w[1]: ERR X \xff\xfe", r"w[1]: ERR X \xff\xfe"),
    (b"<14>clear\x1b[2J screen\x07", r"clear\x1b[2J screen\x07"),
    (b"<14>two\nlines\r\x00here", r"two\x0alines\x0d\x00here"),
    (b"<14>c1 \xc2\x9b control", r"c1 \u009b control"),
    (b"<14>already \\xff escaped", r"already \xff escaped"),   # a worker's escape shows once
])
def test_parse_syslog_makes_any_datagram_safe_to_print(data, expected):
    """Undecodable bytes and controls escaped as spec output.syslog writes them: one line."""
    message = parse_syslog(data)[2]
    assert message == expected, f"parse_syslog({data!r}): expected {expected!r}, got {message!r}"


def test_parse_syslog_cuts_a_huge_datagram_at_the_rfc_3164_limit():
    message = parse_syslog(b"<14>" + "é".encode() * 40000)[2]
    assert message.endswith("...[truncated]"), f"expected the cut marker, got ...{message[-20:]!r}"
    size = len(b"<14>") + len(message.encode())
    assert 1010 < size <= 1024, f"expected the datagram shown in at most 1024 bytes, got {size}"


@pytest.mark.parametrize("append_nul", [True, False])
def test_parse_syslog_reads_what_sysloghandler_writes(append_nul):
    """Capture a real SysLogHandler datagram on a private port and parse it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(WAIT)
        handler = logging.handlers.SysLogHandler(
            address=("127.0.0.1", rx.getsockname()[1]),
            facility=logging.handlers.SysLogHandler.LOG_DAEMON)
        handler.append_nul = append_nul
        handler.ident = "workq-worker[99]: "
        record = logging.LogRecord("t", logging.WARNING, __file__, 1,
                                   "completed job %d", (5,), None)
        try:
            handler.emit(record)
        finally:
            handler.close()
        data, _ = rx.recvfrom(65535)
    got = parse_syslog(data)
    assert got == ("daemon", "warning", "workq-worker[99]: completed job 5"), \
        f"from {data!r}: expected daemon/warning/message, got {got}"


def test_format_helpers():
    line = syslog_listen.format_syslog(b"<30>hi\x00", when=0.25)
    assert re.fullmatch(rf"{STAMP}  daemon\.info  hi", line), f"got {line!r}"
    assert line[8:12] == ".250", f"expected milliseconds .250, got {line!r}"
    assert syslog_listen.format_syslog(b"raw").endswith("  ?.?  raw")
    line = mcast_listen.format_datagram(b"quorum\n", ("127.0.0.1", 4242), when=0.5)
    assert re.fullmatch(rf"{STAMP}  127\.0\.0\.1:4242  quorum", line), f"got {line!r}"


# ------------------------------------------------------- the commands

class Proc:
    """A listener subprocess whose stdout and stderr lines land in queues."""

    def __init__(self, *args):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *args], cwd=ROOT, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out, self.err = queue.Queue(), queue.Queue()
        self.seen = {"stdout": [], "stderr": []}
        for pipe, q, name in ((self.proc.stdout, self.out, "stdout"),
                              (self.proc.stderr, self.err, "stderr")):
            threading.Thread(target=self._pump, args=(pipe, q, name), daemon=True).start()

    def _pump(self, pipe, q, name):
        for line in pipe:
            self.seen[name].append(line)
            q.put(line.rstrip("\n"))
        q.put(None)

    def line(self, q, what):
        try:
            line = q.get(timeout=WAIT)
        except queue.Empty:
            line = "<nothing>"
        assert line is not None and line != "<nothing>", \
            f"expected {what}, got {line!r}; output so far: {self.seen}"
        return line

    def wait(self):
        try:
            return self.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"expected the listener to exit, it did not; output: {self.seen}")

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def spawn():
    procs = []

    def make(*args):
        p = Proc(*args)
        procs.append(p)
        return p

    yield make
    for p in procs:
        p.close()


def banner_port(p, pattern):
    line = p.line(p.err, "the start-up line")
    m = re.search(pattern, line)
    assert m, f"expected a start-up line matching {pattern!r}, got {line!r}"
    return int(m.group(1))


def test_mcast_listen_prints_a_multicast_datagram(spawn):
    p = spawn("tools.mcast_listen", "0", "--count", "2", "--timeout", str(WAIT))
    port = banner_port(p, rf"listening on {re.escape(GROUP)}:(\d+) \(interface 127\.0\.0\.1\)")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        tx.bind(("127.0.0.1", 0))
        src = tx.getsockname()[1]
        tx.sendto(b"consensus\n", (GROUP, port))
        first = p.line(p.out, "the first datagram")
        tx.sendto("réplica\n".encode(), (GROUP, port))
        second = p.line(p.out, "the second datagram")
    assert re.fullmatch(rf"{STAMP}  127\.0\.0\.1:{src}  consensus", first), \
        f"expected 'HH:MM:SS.mmm  127.0.0.1:{src}  consensus', got {first!r}"
    assert second.endswith(f"127.0.0.1:{src}  réplica"), f"got {second!r}"
    code = p.wait()
    assert code == 0, f"expected exit 0 after --count 2, got {code}; output: {p.seen}"


def multicast_sender():
    """A sender pinned to 127.0.0.1 with TTL 1: nothing leaves the machine."""
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
    tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    return tx


def joined(group, port=None):
    """A socket that joined ``group`` on 127.0.0.1 the usual way: bound to the
    wildcard address (on ``port``), or not bound at all."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if port is not None:
        sock.bind(("", port))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                    socket.inet_aton(group) + socket.inet_aton("127.0.0.1"))
    return sock


def test_receiver_gets_only_its_own_group():
    """Another group joined on the host, sending to the same port, must not show.

    The control socket, joined the usual way to 239.0.0.1 on the wildcard
    address, does get 239.0.0.2's datagram (Linux): the trap the listener avoids.
    """
    with mcast_listen.open_receiver(0, GROUP, "127.0.0.1") as rx, joined(OTHER_GROUP), \
            multicast_sender() as tx:
        port = rx.getsockname()[1]
        with joined(GROUP, port) as control:
            tx.sendto(b"other\n", (OTHER_GROUP, port))
            tx.sendto(b"mine\n", (GROUP, port))
            got = []
            mcast_listen.listen(rx, count=1, timeout=WAIT, on_datagram=lambda d, a, w: got.append(d))
            seen = []
            mcast_listen.listen(control, count=2, timeout=WAIT,
                                on_datagram=lambda d, a, w: seen.append(d))
    assert got == [b"mine\n"], \
        f"expected only the datagram to {GROUP}:{port}, got {got} (first {OTHER_GROUP}'s)"
    assert seen == [b"other\n", b"mine\n"], \
        f"control: expected a wildcard-bound socket to see both groups, got {seen}"


def test_mcast_listen_command_shows_only_its_group(spawn):
    p = spawn("tools.mcast_listen", "0", "--group", GROUP, "--count", "1", "--timeout", str(WAIT))
    port = banner_port(p, rf"listening on {re.escape(GROUP)}:(\d+) ")
    with joined(OTHER_GROUP), multicast_sender() as tx:
        tx.sendto(b"other\n", (OTHER_GROUP, port))
        tx.sendto(b"mine\n", (GROUP, port))
        line = p.line(p.out, "the datagram to its group")
    assert line.endswith("  mine"), f"expected the {GROUP} datagram 'mine' first, got {line!r}"
    assert p.wait() == 0, f"output: {p.seen}"


def test_mcast_listen_escapes_what_a_terminal_would_obey(spawn):
    p = spawn("tools.mcast_listen", "0", "--count", "1", "--timeout", str(WAIT))
    port = banner_port(p, r":(\d+) ")
    with multicast_sender() as tx:
        tx.sendto(b"\x1b[2Jbad\xff\nword\n", (GROUP, port))
        line = p.line(p.out, "the datagram")
    assert line.endswith(r"  \x1b[2Jbad\xff\x0aword"), f"expected escapes on one line, got {line!r}"


def test_syslog_listen_shows_any_datagram_on_one_safe_line(spawn):
    p = spawn("tools.syslog_listen", "0", "--count", "3", "--timeout", str(WAIT))
    port = banner_port(p, r"listening for syslog on 127\.0\.0\.1:(\d+)")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.sendto(b"<14>w[1]: ERR X \xff\xfe", ("127.0.0.1", port))
        tx.sendto(b"<14>w[1]: a\nb\x1b]0;title\x07", ("127.0.0.1", port))
        tx.sendto(b"<14>" + b"x" * 60000, ("127.0.0.1", port))
        lines = [p.line(p.out, f"line {n}") for n in (1, 2, 3)]
    assert lines[0].endswith(r"user.info  w[1]: ERR X \xff\xfe"), f"got {lines[0]!r}"
    assert lines[1].endswith(r"user.info  w[1]: a\x0ab\x1b]0;title\x07"), f"got {lines[1]!r}"
    assert lines[2].endswith("x...[truncated]") and len(lines[2]) < 1100, \
        f"expected the 60,000-byte message cut at 1024 bytes, got {len(lines[2])} characters"
    assert p.wait() == 0, f"output: {p.seen}"


def test_mcast_listen_silence_timeout_before_count_exits_1(spawn):
    p = spawn("tools.mcast_listen", "0", "--count", "1", "--timeout", "0.2")
    banner_port(p, r":(\d+) ")
    code = p.wait()
    assert code == 1, f"expected exit 1, got {code}; output: {p.seen}"
    assert "received 0 of 1" in "".join(p.seen["stderr"]), f"got {p.seen}"


def test_syslog_listen_prints_sysloghandler_messages(spawn):
    p = spawn("tools.syslog_listen", "0", "--count", "2", "--timeout", str(WAIT))
    port = banner_port(p, r"listening for syslog on 127\.0\.0\.1:(\d+)")
    handler = logging.handlers.SysLogHandler(
        address=("127.0.0.1", port), facility=logging.handlers.SysLogHandler.LOG_DAEMON)
    handler.ident = "workq-worker[7]: "
    try:
        for msg in ("starting job 3", "completed job 3"):
            handler.emit(logging.LogRecord("t", logging.INFO, __file__, 1, msg, None, None))
            line = p.line(p.out, f"the line for {msg!r}")
            assert re.fullmatch(rf"{STAMP}  daemon\.info  workq-worker\[7\]: {msg}", line), \
                f"expected 'HH:MM:SS.mmm  daemon.info  workq-worker[7]: {msg}', got {line!r}"
    finally:
        handler.close()
    code = p.wait()
    assert code == 0, f"expected exit 0, got {code}; output: {p.seen}"


@pytest.mark.parametrize("module", ["tools.mcast_listen", "tools.syslog_listen"])
def test_listener_bad_port_is_a_clean_error(module):
    proc = subprocess.run([sys.executable, "-m", module, "70000"], cwd=ROOT,
                          capture_output=True, text=True, check=False, timeout=WAIT)
    assert proc.returncode == 2, f"expected exit 2, got {proc.returncode}: {proc.stderr}"
    assert "Traceback" not in proc.stderr and "bad port" in proc.stderr, \
        f"expected a 'bad port' message and no traceback, got {proc.stderr!r}"


def test_syslog_listen_port_in_use_is_a_clean_error():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "tools.syslog_listen", str(port)],
                              cwd=ROOT, capture_output=True, text=True, check=False, timeout=WAIT)
    assert proc.returncode == 2, f"expected exit 2, got {proc.returncode}: {proc.stderr}"
    assert "Traceback" not in proc.stderr and "cannot listen" in proc.stderr, \
        f"expected 'cannot listen' and no traceback, got {proc.stderr!r}"


def test_listen_functions_in_process():
    """open_receiver/listen and open_syslog_socket/listen are reusable."""
    got = []
    with mcast_listen.open_receiver(0, GROUP, "127.0.0.1") as rx, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        tx.sendto(b"lease\n", (GROUP, rx.getsockname()[1]))
        n = mcast_listen.listen(rx, count=1, timeout=WAIT,
                                on_datagram=lambda d, a, w: got.append(d))
    assert (n, got) == (1, [b"lease\n"]), f"expected one datagram b'lease\\n', got {n}, {got}"
    msgs = []
    with syslog_listen.open_syslog_socket(0) as rx, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.sendto(b"<27>oops\x00", rx.getsockname())
        n = syslog_listen.listen(rx, count=1, timeout=WAIT,
                                 on_message=lambda f, s, m, a, w: msgs.append((f, s, m)))
    assert (n, msgs) == (1, [("daemon", "err", "oops")]), f"got {n}, {msgs}"
