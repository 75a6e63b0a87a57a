"""End-to-end tests of both workers (``impl_select.worker``, ``impl_threads.worker``)
against a fake broker: every test runs once per implementation.

Everything is on 127.0.0.1; the multicast words go out through the worker's
default --mcast-if 127.0.0.1. Each test binds its own ports (port 0), so the
tests can run in parallel. Waits are on events with timeouts, never sleeps.
"""

import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tools.mcast_listen import open_receiver

ROOT = Path(__file__).resolve().parent.parent
GROUP = "239.0.0.1"
TIMEOUT = 5.0
IMPLEMENTATIONS = {"impl_select.worker": "select", "impl_threads.worker": "threads"}
SYSLOG_LINE = re.compile(rb"<14>workq-worker\[(\d+)\]: (.*)", re.DOTALL)


# --- the fake broker -------------------------------------------------------------

TOUCH_LINE = re.compile(r"TOUCH [0-9]+")


class BrokerConnection:
    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""
        self.eof = False

    def read_line(self, timeout=TIMEOUT):
        """Next line without LF, or None at EOF; fails after ``timeout``. A lease
        renewal (``TOUCH n``) is answered as a core broker answers it, as the
        conformance suite does, and skipped: these tests play a core broker."""
        while True:
            line = self._next_line(timeout)
            if line is None or not TOUCH_LINE.fullmatch(line):
                return line
            self.send("ERR UNKNOWN_COMMAND unknown command 'TOUCH' (a core broker)")

    def _next_line(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            if self.eof:
                return None
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                raise AssertionError(f"expected a line from the worker within {timeout} s; "
                                     f"got only {self.buffer!r}")
            try:
                data = self.sock.recv(4096)
            except ConnectionResetError:
                data = b""
            self.eof = not data
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    def expect(self, expected, timeout=TIMEOUT):
        line = self.read_line(timeout)
        assert line == expected, f"expected {expected!r} from the worker, got {line!r}"

    def expect_eof(self, timeout=TIMEOUT):
        """The worker closes the connection; returns the lines it sent before."""
        lines = []
        while (line := self.read_line(timeout)) is not None:
            lines.append(line)
        return lines

    def send(self, line):
        self.sock.sendall(line.encode() + b"\n")

    def close(self):
        self.sock.close()


class FakeBroker:
    def __init__(self, listen=True):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = []
        if listen:
            self.listener.listen()

    def accept(self, timeout=TIMEOUT):
        ready = select.select([self.listener], [], [], timeout)[0]
        assert ready, f"expected the worker to connect within {timeout} s; no connection came"
        sock, _ = self.listener.accept()
        conn = BrokerConnection(sock)
        self.connections.append(conn)
        return conn

    def close(self):
        for conn in self.connections:
            conn.close()
        self.listener.close()


# --- listeners ---------------------------------------------------------------------

class SyslogListener:
    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.seen = []       # every message so far, for failure reports
        self.pid = None      # the worker's pid, once known

    def expect(self, pattern, timeout=TIMEOUT):
        """Skip messages until one matches ``pattern`` (a regex, whole message)."""
        deadline = time.monotonic() + timeout
        while True:
            message = self._receive(deadline)
            if message is None:
                raise AssertionError(f"expected syslog message matching {pattern!r} within "
                                     f"{timeout} s; got {self.seen}")
            if re.fullmatch(pattern, message):
                return message

    def count(self, pattern, seconds):
        """How many messages matching ``pattern`` arrive in the next ``seconds``."""
        deadline = time.monotonic() + seconds
        matched = 0
        while (message := self._receive(deadline)) is not None:
            matched += bool(re.fullmatch(pattern, message))
        return matched

    def _receive(self, deadline):
        """The next message, or None once the monotonic ``deadline`` has passed."""
        left = deadline - time.monotonic()
        if left > 0 and select.select([self.sock], [], [], left)[0]:
            datagram = self.sock.recv(65536)
            match = SYSLOG_LINE.fullmatch(datagram)
            assert match, f"expected '<14>workq-worker[PID]: message', got {datagram!r}"
            if self.pid is not None:
                assert int(match[1]) == self.pid, \
                    f"expected the worker's pid {self.pid} in {datagram!r}"
            try:
                message = match[2].decode()
            except UnicodeDecodeError:
                raise AssertionError(f"expected a UTF-8 syslog message (spec output.syslog), "
                                     f"got {datagram!r}") from None
            self.last_datagram = datagram
            self.seen.append(message)
            return message
        return None

    def expect_in_order(self, *patterns, timeout=TIMEOUT):
        return [self.expect(p, timeout) for p in patterns]

    def close(self):
        self.sock.close()


class MulticastListener:
    """Joined to GROUP on 127.0.0.1: only that group's datagrams (tools.mcast_listen)."""

    def __init__(self):
        self.sock = open_receiver(0, GROUP, "127.0.0.1")
        self.port = self.sock.getsockname()[1]

    def receive(self, timeout=TIMEOUT):
        if not select.select([self.sock], [], [], timeout)[0]:
            raise AssertionError(f"expected a multicast word datagram within {timeout} s; none came")
        return self.sock.recv(65536)

    def expect_words(self, words, timeout=TIMEOUT):
        got = []
        for _ in words:
            got.append(self.receive(timeout))
        expected = [w.encode() + b"\n" for w in words]
        assert got == expected, f"expected word datagrams {expected}, got {got}"

    def close(self):
        self.sock.close()


# --- the worker process ---------------------------------------------------------------

class WorkerProcess:
    def __init__(self, module, broker, output_port, syslog_port, *options):
        if "--long-poll" not in options:
            options = (*options, "--long-poll", "0")   # most tests here are about polling
        self.argv = [sys.executable, "-m", module, broker, str(output_port), str(syslog_port),
                     *options]
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.pid = self.proc.pid

    def stdout_line(self, timeout=TIMEOUT):
        data = b""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise AssertionError(f"expected a start-up line on stdout within {timeout} s; "
                                     f"got {data!r}")
            chunk = os.read(fd, 4096)
            if not chunk:
                raise AssertionError(f"expected a start-up line, stdout closed after {data!r}; "
                                     f"stderr: {self.stderr()!r}")
            data += chunk
        return data.decode().rstrip("\n")

    def signal_and_wait(self, signum, timeout=TIMEOUT):
        self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"expected the worker to exit within {timeout} s of "
                                 f"signal {signum}; it is still running") from None

    def stderr(self):
        if self.proc.poll() is None:
            return "(still running)"
        return self.proc.stderr.read().decode(errors="replace")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def module(request):
    """The worker implementation under test, as ``python3 -m`` takes it."""
    return request.param


@pytest.fixture
def env(module):
    """A fake broker, a syslog and a multicast listener, and a way to start workers."""
    class Env:
        pass

    e = Env()
    e.flavour = IMPLEMENTATIONS[module]
    e.broker = FakeBroker()
    e.syslog = SyslogListener()
    e.mcast = MulticastListener()
    e.workers = []

    def start(*options, broker=None):
        """Start a worker; ``broker`` (HOST:PORT) defaults to the fake broker."""
        worker = WorkerProcess(module, broker or f"127.0.0.1:{e.broker.port}",
                               e.mcast.port, e.syslog.port, *options)
        e.syslog.pid = worker.pid
        e.workers.append(worker)
        return worker

    e.start = start
    yield e
    for worker in e.workers:
        worker.kill()
    e.broker.close()
    e.syslog.close()
    e.mcast.close()


FAST = ("--word-delay", "0.02", "--fetch-interval", "0.05")


# --- tests -------------------------------------------------------------------------------

def test_startup_line_lists_the_values_in_use(env):
    worker = env.start(*FAST)
    line = worker.stdout_line()
    assert line == (f"workq worker ({env.flavour}): broker 127.0.0.1:{env.broker.port}, "
                    f"output 239.0.0.1:{env.mcast.port} via 127.0.0.1 ttl 1, "
                    f"syslog 127.0.0.1:{env.syslog.port}, word delay 0.02 s, "
                    f"fetch interval 0.05 s, long poll 0 s, renew interval 2 s, concurrency 1"), \
        f"unexpected start-up line {line!r}"


def test_job_words_go_out_in_order_then_done_and_syslog(env):
    env.start(*FAST)
    conn = env.broker.accept()
    conn.expect("FETCH")
    conn.send("JOB 1 alpha beta  gamma")
    env.mcast.expect_words(["alpha", "beta", "gamma"])
    conn.expect("DONE 1")
    conn.send("OK")
    conn.expect("FETCH")
    env.syslog.expect_in_order(
        rf"connected to broker 127\.0\.0\.1:{env.broker.port}",
        "fetching job", "starting job 1", "completed job 1", "fetching job")


def test_utf8_words_are_sent_as_utf8(env):
    env.start(*FAST)
    conn = env.broker.accept()
    conn.expect("FETCH")
    conn.send("JOB 2 größe 東京")
    env.mcast.expect_words(["größe", "東京"])
    conn.expect("DONE 2")


@pytest.mark.parametrize("space", ["\u00a0", "\u3000", "\u2028", "\u2029", "\u1680"])
def test_only_spaces_and_tabs_split_words(env, space):
    """The spec's word_separator is SP/HTAB; str.split() would also cut at these."""
    env.start(*FAST)
    conn = env.broker.accept()
    conn.expect("FETCH")
    conn.send(f"JOB 4 a{space}b \tc")
    env.mcast.expect_words([f"a{space}b", "c"])
    conn.expect("DONE 4")


def test_long_poll_wait_is_sent_as_a_plain_decimal(env):
    """%g would write FETCH 1e-05, which the grammar's wait_seconds refuses."""
    env.start(*FAST, "--long-poll", "0.00001")
    conn = env.broker.accept()
    conn.expect("FETCH 0.00001")


def test_job_with_a_non_ascii_id_is_a_protocol_error_not_a_job(env):
    """'\u0663'.isdigit() is True and int('\u0663') is 3: the worker must not stream it
    as job 3, nor send DONE 3."""
    env.start(*FAST)
    conn = env.broker.accept()
    conn.expect("FETCH")
    conn.send("JOB \u0663 not a job")
    lines = conn.expect_eof()
    assert lines == [], f"expected the worker to close without a line, got {lines}"
    env.syslog.expect(r"connection to broker \S+ lost: protocol error: unexpected line .*")


def test_nojob_then_fetch_again(env):
    env.start(*FAST)
    conn = env.broker.accept()
    conn.expect("FETCH")
    conn.send("NOJOB")
    conn.expect("FETCH")
    conn.send("ERR BUSY not now")      # treated like NOJOB
    conn.expect("FETCH")
    env.syslog.expect("FETCH failed: ERR BUSY not now")


def test_broker_bytes_that_are_not_utf8_reach_syslog_escaped(env):
    """The issue's input: ERR X \\xff\\xfe. The line arrives, in the spec's form,
    and nothing goes wrong inside the worker's logging."""
    worker = env.start(*FAST)
    conn = env.broker.accept()
    conn.expect("FETCH")
    conn.sock.sendall(b"ERR X \xff\xfe\n")
    conn.expect("FETCH")
    env.syslog.expect(re.escape(r"FETCH failed: ERR X \xff\xfe"))
    conn.sock.sendall(b"ERR X \x1b[2J\x07\xc2\x85 tab\there\n")
    conn.expect("FETCH")
    env.syslog.expect(re.escape(r"FETCH failed: ERR X \x1b[2J\x07\u0085 tab\x09here"))
    code = worker.signal_and_wait(signal.SIGTERM)
    stderr = worker.stderr()
    assert code == 0 and "Logging error" not in stderr and "Traceback" not in stderr, \
        f"expected a clean exit 0 and no logging error, got {code}; stderr: {stderr}"


def test_a_long_broker_text_is_cut_to_one_1024_byte_datagram(env):
    env.start(*FAST)
    conn = env.broker.accept()
    conn.expect("FETCH")
    conn.send("ERR X " + "long " * 1000)
    conn.expect("FETCH")
    message = env.syslog.expect(r"FETCH failed: ERR X [long ]+\.\.\.\[truncated\]")
    size = len(env.syslog.last_datagram)
    assert size <= 1024, f"expected a syslog datagram of at most 1024 bytes (RFC 3164), got {size}"
    assert size > 1000, f"expected the message to use the room it has, got {size} bytes: {message}"


def test_outputs_log_keeps_every_datagram_within_1024_bytes_with_the_longest_name():
    """In process: the longest --name (32 characters, 2 bytes each), any text."""
    from shell.output import syslog_logger
    from shell.worker_io import Outputs
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(TIMEOUT)
        logger = syslog_logger(rx.getsockname()[1], name="é" * 32)
        outputs = Outputs(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), None, logger)
        try:
            for text in ("short", "x" * 5000, "\udcff" * 3000, "日" * 2000 + "\x1b" * 100):
                outputs.log(text)
                datagram = rx.recv(65536)
                assert len(datagram) <= 1024, \
                    f"expected at most 1024 bytes, got {len(datagram)} for {text[:10]!r}..."
                datagram.decode("utf-8")   # well-formed: raises if not
        finally:
            outputs.close()


def test_err_to_done_is_logged_and_worker_fetches_again(env):
    env.start(*FAST)
    conn = env.broker.accept()
    conn.expect("FETCH")
    conn.send("JOB 3 w")
    conn.expect("DONE 3")
    conn.send("ERR NOT_HOLDER job 3 is not yours")
    conn.expect("FETCH")
    env.syslog.expect("DONE 3 failed: ERR NOT_HOLDER job 3 is not yours")


ORIGINAL_BROKER = ROOT / "tests" / "original" / "workQueue.py"


@pytest.fixture
def original_broker():
    """The original system's broker (it answers FETCH 10 with NOJOB at once);
    yields its worker port."""
    probes = [socket.socket() for _ in range(2)]
    for probe in probes:
        probe.bind(("127.0.0.1", 0))
    ports = [probe.getsockname()[1] for probe in probes]
    for probe in probes:
        probe.close()
    proc = subprocess.Popen([sys.executable, str(ORIGINAL_BROKER), *map(str, ports)], cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        ready = select.select([proc.stdout], [], [], 15)[0]
        assert ready and proc.stdout.readline().startswith(b"work queue:"), \
            "expected the original broker's start-up line"
        yield ports[1]
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_long_poll_worker_does_not_flood_a_broker_that_answers_at_once(env, original_broker):
    """The issue: with its default long-poll, our worker sent ~8,000 FETCH 10 a
    second to the original broker. Now it asks once per fetch interval."""
    interval, window = 0.05, 1.0
    env.start("--fetch-interval", str(interval), "--long-poll", "10",
              broker=f"127.0.0.1:{original_broker}")
    env.syslog.expect("fetching job", timeout=15)
    fetches = env.syslog.count("fetching job", window)
    most = int(window / interval * 1.5) + 2
    assert 2 <= fetches <= most, \
        f"expected at most {most} FETCHes in {window} s (one per {interval} s fetch interval), " \
        f"and some, got {fetches}"
    notes = [m for m in env.syslog.seen if re.fullmatch(
        r"broker answered FETCH 10 with NOJOB after [0-9.]+ s without waiting; "
        r"asking again every 0\.05 s", m)]
    assert len(notes) == 1, f"expected the early NOJOB logged once, got {len(notes)} times"


def test_reconnects_when_the_broker_closes(env):
    env.start(*FAST)
    first = env.broker.accept()
    first.expect("FETCH")
    first.send("NOJOB")          # a working broker connection, then lost
    first.expect("FETCH")
    first.close()
    second = env.broker.accept()
    second.expect("FETCH")
    env.syslog.expect_in_order(
        rf"connection to broker 127\.0\.0\.1:{env.broker.port} lost: closed by broker",
        rf"connected to broker 127\.0\.0\.1:{env.broker.port}")


def test_job_lost_mid_stream_is_abandoned_not_done(env):
    env.start("--word-delay", "5", "--fetch-interval", "0.05")
    first = env.broker.accept()
    first.expect("FETCH")
    first.send("JOB 4 one two three")
    env.mcast.expect_words(["one"])
    first.close()
    second = env.broker.accept()
    line = second.read_line()
    assert line == "FETCH", f"expected FETCH on the new connection (job 4 abandoned), got {line!r}"
    env.syslog.expect_in_order("starting job 4", "connection to broker .* lost: .*",
                               "abandoned job 4")


def test_refused_connection_is_retried(env):
    closed = FakeBroker(listen=False)   # bound, not listening: connections are refused
    try:
        env.start(*FAST, broker=f"127.0.0.1:{closed.port}")
        env.syslog.expect(
            rf"cannot connect to broker 127\.0\.0\.1:{closed.port}: Connection refused; "
            r"retrying in 1 s")
        closed.listener.listen()
        conn = closed.accept()
        conn.expect("FETCH")
    finally:
        closed.close()


def test_sigterm_mid_job_exits_0_without_done(env):
    worker = env.start("--word-delay", "5")
    conn = env.broker.accept()
    conn.expect("FETCH")
    conn.send("JOB 5 one two three")
    env.mcast.expect_words(["one"])
    code = worker.signal_and_wait(signal.SIGTERM)
    assert code == 0, f"expected exit status 0 after SIGTERM, got {code}; stderr: {worker.stderr()}"
    lines = conn.expect_eof()
    assert lines == [], f"expected the worker to close without sending DONE, it sent {lines}"
    env.syslog.expect_in_order("stopping", "abandoned job 5")
    assert "Traceback" not in worker.stderr()


def test_sigint_while_idle_exits_0_without_traceback(env):
    worker = env.start(*FAST)
    conn = env.broker.accept()
    conn.expect("FETCH")
    code = worker.signal_and_wait(signal.SIGINT)
    stderr = worker.stderr()
    assert code == 0, f"expected exit status 0 after SIGINT, got {code}; stderr: {stderr}"
    assert "Traceback" not in stderr, f"expected no traceback on SIGINT, got {stderr}"
    env.syslog.expect("stopping")


def test_concurrency_2_runs_two_jobs_at_once(env):
    env.start("--concurrency", "2", "--word-delay", "0.05")
    a, b = env.broker.accept(), env.broker.accept()
    a.expect("FETCH")
    b.expect("FETCH")
    a.send("JOB 10 a1 a2 a3")
    b.send("JOB 11 b1 b2 b3")
    got = [env.mcast.receive() for _ in range(6)]
    for prefix in (b"a", b"b"):
        mine = [w for w in got if w.startswith(prefix)]
        expected = [prefix + b"%d\n" % i for i in (1, 2, 3)]
        assert mine == expected, f"expected {expected} in order, got {got}"
    a.expect("DONE 10")
    b.expect("DONE 11")


def test_sigterm_stops_every_slot_mid_job(env):
    worker = env.start("--concurrency", "2", "--word-delay", "5")
    a, b = env.broker.accept(), env.broker.accept()
    a.expect("FETCH")
    b.expect("FETCH")
    a.send("JOB 20 a1 a2")
    b.send("JOB 21 b1 b2")
    got = sorted(env.mcast.receive() for _ in range(2))
    assert got == [b"a1\n", b"b1\n"], f"expected the first word of each job, got {got}"
    code = worker.signal_and_wait(signal.SIGTERM)
    assert code == 0, f"expected exit status 0 after SIGTERM, got {code}; stderr: {worker.stderr()}"
    for conn in (a, b):
        lines = conn.expect_eof()
        assert lines == [], f"expected the worker to close without sending DONE, it sent {lines}"
    env.syslog.expect("stopping")
    abandoned = sorted(env.syslog.expect("abandoned job 2[01]") for _ in range(2))
    assert abandoned == ["abandoned job 20", "abandoned job 21"], \
        f"expected both jobs abandoned after 'stopping', got {env.syslog.seen}"


def test_sigterm_while_the_connect_is_pending_exits_0(env):
    # backlog 0 and one connection waiting in it: the worker's SYNs are dropped,
    # so its connects stay pending (for the thread worker: blocked in connect)
    env.broker.listener.listen(0)
    filler = socket.create_connection(("127.0.0.1", env.broker.port), timeout=TIMEOUT)
    try:
        worker = env.start("--concurrency", "2")
        worker.stdout_line()
        code = worker.signal_and_wait(signal.SIGTERM)
        stderr = worker.stderr()
        assert code == 0, f"expected exit status 0 after SIGTERM, got {code}; stderr: {stderr}"
        assert "Traceback" not in stderr, f"expected no traceback, got {stderr}"
        env.syslog.expect("stopping")
    finally:
        filler.close()


def test_host_name_is_resolved_and_each_address_tried(env):
    # "localhost" may give ::1 first; the fake broker listens on 127.0.0.1 only
    worker = env.start(*FAST, broker=f"localhost:{env.broker.port}")
    line = worker.stdout_line()
    assert f"broker localhost:{env.broker.port}," in line, f"unexpected start-up line {line!r}"
    conn = env.broker.accept()
    conn.expect("FETCH")
    env.syslog.expect(rf"connected to broker localhost:{env.broker.port}")


def test_both_implementations_have_the_same_command_line():
    def run(module, *args):
        result = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT,
                                capture_output=True, text=True, timeout=30, check=False)
        text = (result.stdout + result.stderr).replace(module, "MODULE") \
            .replace(f"({IMPLEMENTATIONS[module]})", "(FLAVOUR)")
        # the usage lines wrap differently: the prog names differ in length
        return result.returncode, " ".join(text.split())

    for args in (["--help"], ["--concurrency", "0"], ["a", "b", "c", "d"], ["--bogus"]):
        select_out, threads_out = (run(module, *args) for module in sorted(IMPLEMENTATIONS))
        assert select_out == threads_out, \
            f"expected the same output for {args} from both workers, got {select_out} " \
            f"and {threads_out}"


@pytest.mark.parametrize("args, complaint", [
    (["abc"], "HOST:PORT"),
    (["127.0.0.1:abc"], "port"),
    (["127.0.0.1:50001", "abc"], "port"),
    (["127.0.0.1:50001", "30000", "99999"], "range"),
    (["--word-delay", "-1"], "seconds"),
    (["--mcast-if", "eth0"], "IPv4"),
    (["--mcast-group", "10.0.0.1"], "multicast"),
    (["--concurrency", "0"], "range"),
    (["--name", "n" * 33], "at most 32 characters"),   # RFC 3164 TAG; keeps syslog in 1,024 bytes
])
def test_bad_arguments_give_one_line_and_exit_2(module, args, complaint):
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2, f"expected exit 2 for {args}, got {result.returncode}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and complaint in lines[0], \
        f"expected one error line mentioning {complaint!r}, got {result.stderr!r}"
    assert result.stdout == "", f"expected nothing on stdout, got {result.stdout!r}"


def test_help_explains_the_options(module):
    result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, f"expected exit 0, got {result.returncode}: {result.stderr}"
    for option in ("--word-delay", "--fetch-interval", "--mcast-group", "--mcast-if",
                   "--mcast-ttl", "--concurrency", "--name", "network safety"):
        assert option in result.stdout, f"expected {option!r} in --help, got {result.stdout}"


def test_a_broker_refusing_the_token_is_said_once_per_outage(env, tmp_path):
    """A broker that turns the worker away after connecting (here: AUTH refused)
    is retried with backoff, and stderr says so once, not once per retry; the
    worker says "connected" again once a broker accepts it. It used to print
    two lines every second."""
    token = tmp_path / "token"
    token.write_text("wrong\n")
    worker = env.start(*FAST, "--token-file", token)
    for _ in range(2):
        conn = env.broker.accept(timeout=15)
        conn.expect("AUTH wrong")
        conn.send("ERR AUTH_FAILED wrong token")
        conn.expect_eof()
        conn.close()
    conn = env.broker.accept(timeout=15)
    conn.expect("AUTH wrong")
    conn.send("OK")
    conn.expect("FETCH")
    assert worker.signal_and_wait(signal.SIGTERM) == 0
    said = worker.stderr().splitlines()
    port = env.broker.port
    assert said == [f"workq worker: connected to broker 127.0.0.1:{port}",
                    f"workq worker: error: connection to broker 127.0.0.1:{port} lost: "
                    "protocol error: AUTH refused: ERR AUTH_FAILED wrong token",
                    f"workq worker: connected to broker 127.0.0.1:{port}",
                    "workq worker: stopped"], \
        f"expected the refusal once on stderr for two refused connections, got {said}"
