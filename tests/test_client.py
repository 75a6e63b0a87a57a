"""tools.client against a tiny fake broker (plain sockets, own port per test)."""

import random
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

from tools import client
from tools.words import WORDS, random_job_text

RUN_TIMEOUT = 60      # hang guard for one client run, not a measurement


class FakeBroker:
    """Answers the client protocol on 127.0.0.1:<free port>.

    JOB -> ``ID n`` (n counts from ``first_id``); STATUS n -> ``state``.
    ``err_on`` / ``drop_on``: numbers (1-based, counted over all
    connections) of JOB requests answered with an ERR, or by closing the
    connection without a reply. ``silent``: read but never answer.
    """

    def __init__(self, state="running", err_on=(), drop_on=(), silent=False,
                 err_reply="ERR EMPTY_JOB job text is empty", first_id=1):
        self.state = state
        self.err_on = set(err_on)
        self.drop_on = set(drop_on)
        self.silent = silent
        self.err_reply = err_reply
        self.next_id = first_id
        self.lines = []            # every request line received, in order
        self.connections = 0
        self.jobs_seen = 0
        self.lock = threading.Lock()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.threads = []
        self.conns = []
        self.stopping = False
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, conn):
        buf = b""
        conn.settimeout(RUN_TIMEOUT)
        try:
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                buf += data
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    line = raw.decode()
                    with self.lock:
                        self.lines.append(line)
                    if self.silent:
                        continue
                    reply = self._reply(line)
                    if reply is None:
                        return          # drop the connection, no reply
                    conn.sendall(reply.encode() + b"\n")
        except OSError:
            return
        finally:
            conn.close()

    def _reply(self, line):
        word = line.partition(" ")[0]
        if word.upper() == "JOB":
            with self.lock:
                self.jobs_seen += 1
                n = self.jobs_seen
                if n in self.drop_on:
                    return None
                if n in self.err_on:
                    return self.err_reply
                job_id = self.next_id
                self.next_id += 1
            return f"ID {job_id}"
        if word.upper() == "STATUS":
            return self.state
        return "ERR UNKNOWN_COMMAND unknown command"

    def close(self):
        try:
            self.listener.shutdown(socket.SHUT_RDWR)   # wakes accept() on Linux
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            conns = list(self.conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.acceptor.join(5)
        for t in self.threads:
            t.join(5)


@pytest.fixture
def broker():
    brokers = []

    def make(**kwargs):
        b = FakeBroker(**kwargs)
        brokers.append(b)
        return b

    yield make
    for b in brokers:
        b.close()


def run_client(*args, stdin=""):
    return subprocess.run([sys.executable, "-m", "tools.client", *map(str, args)],
                          cwd=ROOT, input=stdin, capture_output=True, text=True, check=False,
                          timeout=RUN_TIMEOUT)


def explain(proc):
    return f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"


def closed_port():
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_clean_error(proc, *needles):
    assert proc.returncode != 0, f"expected a non-zero exit, got {explain(proc)}"
    assert "Traceback" not in proc.stderr, f"expected no traceback, got {explain(proc)}"
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected a one-line error on stderr, got {explain(proc)}"
    for needle in needles:
        assert needle in proc.stderr, f"expected {needle!r} in stderr, got {explain(proc)}"


# ------------------------------------------------------------------ JOB

@pytest.mark.parametrize("form", ["host port", "host:port"])
def test_job_from_arguments_prints_id(broker, form):
    b = broker(first_id=17)
    address = ["127.0.0.1", b.port] if form == "host port" else [f"127.0.0.1:{b.port}"]
    proc = run_client(*address, "JOB", "compile", "the", "kernel")
    assert proc.returncode == 0, f"expected exit 0, got {explain(proc)}"
    assert proc.stdout == "ID 17\n", f"expected 'ID 17', got {explain(proc)}"
    assert b.lines == ["JOB compile the kernel"], f"expected one JOB line, got {b.lines}"


def test_job_from_stdin_is_one_job_with_spaces_for_line_breaks(broker):
    b = broker()
    proc = run_client(f"127.0.0.1:{b.port}", "JOB", stdin="index rebuild\nvacuum\n\n")
    assert proc.returncode == 0, f"expected exit 0, got {explain(proc)}"
    assert proc.stdout == "ID 1\n", f"expected 'ID 1', got {explain(proc)}"
    assert b.lines == ["JOB index rebuild vacuum"], \
        f"expected ['JOB index rebuild vacuum'], got {b.lines}"


def test_command_word_is_case_insensitive(broker):
    b = broker()
    proc = run_client("127.0.0.1", b.port, "job", "hello")
    assert proc.stdout == "ID 1\n", f"expected 'ID 1', got {explain(proc)}"
    proc = run_client("127.0.0.1", b.port, "Status", "1")
    assert proc.stdout == "running\n", f"expected 'running', got {explain(proc)}"


def test_line_break_inside_an_argument_does_not_split_the_request(broker):
    b = broker()
    proc = run_client("127.0.0.1", b.port, "JOB", "two\nlines")
    assert proc.returncode == 0, f"expected exit 0, got {explain(proc)}"
    assert b.lines == ["JOB two lines"], f"expected ['JOB two lines'], got {b.lines}"


def test_empty_job_text_is_refused_without_connecting(broker):
    b = broker()
    proc = run_client("127.0.0.1", b.port, "JOB", stdin="\n \n")
    assert_clean_error(proc, "job text is empty")
    assert proc.returncode == client.EXIT_USAGE, f"expected exit 2, got {explain(proc)}"
    assert b.lines == [], f"expected nothing sent, got {b.lines}"


def test_err_reply_is_printed_and_exit_1(broker):
    b = broker(err_on={1}, err_reply="ERR LINE_TOO_LONG line longer than 65536 bytes")
    proc = run_client("127.0.0.1", b.port, "JOB", "x")
    assert_clean_error(proc, "ERR LINE_TOO_LONG line longer than 65536 bytes")
    assert proc.returncode == 1, f"expected exit 1, got {explain(proc)}"


def test_err_text_cannot_drive_the_terminal(broker):
    """A broker's ERR text with control characters is printed escaped, as the
    workers' syslog writes them (spec output.syslog)."""
    b = broker(err_on={1}, err_reply="ERR X \x1b[2Jbell\x07 \x9b")
    proc = run_client("127.0.0.1", b.port, "JOB", "x")
    assert_clean_error(proc, r"ERR X \x1b[2Jbell\x07 \u009b")
    assert "\x1b" not in proc.stderr and "\x07" not in proc.stderr, \
        f"expected no raw control character on stderr, got {proc.stderr!r}"


# --------------------------------------------------------------- STATUS

@pytest.mark.parametrize("form", ["host port", "host:port"])
@pytest.mark.parametrize("state", ["waiting", "running", "completed", "unknown"])
def test_status_prints_the_state(broker, form, state):
    b = broker(state=state)
    address = ["127.0.0.1", b.port] if form == "host port" else [f"127.0.0.1:{b.port}"]
    proc = run_client(*address, "STATUS", "42")
    assert proc.returncode == 0, f"expected exit 0, got {explain(proc)}"
    assert proc.stdout == f"{state}\n", f"expected {state!r}, got {explain(proc)}"
    assert b.lines == ["STATUS 42"], f"expected ['STATUS 42'], got {b.lines}"


def test_status_with_a_non_number_is_a_usage_error(broker):
    b = broker()
    proc = run_client("127.0.0.1", b.port, "STATUS", "abc")
    assert_clean_error(proc, "job id number", "'abc'")
    assert proc.returncode == client.EXIT_USAGE, f"expected exit 2, got {explain(proc)}"
    assert b.lines == [], f"expected nothing sent, got {b.lines}"


# -------------------------------------------------------------- autoCall

PROGRESS = re.compile(r"^\[\s*(\d+)/(\d+)\] ID (\d+)  <- (\S.*)$")


def test_autocall_submits_and_summarises(broker):
    b = broker()
    proc = run_client("127.0.0.1", b.port, "autoCall", "--num-jobs", "5", "--delay", "0")
    assert proc.returncode == 0, f"expected exit 0, got {explain(proc)}"
    progress = [m for m in map(PROGRESS.match, proc.stdout.splitlines()) if m]
    assert len(progress) == 5, f"expected 5 progress lines, got {explain(proc)}"
    assert [int(m.group(1)) for m in progress] == [1, 2, 3, 4, 5], explain(proc)
    assert [int(m.group(3)) for m in progress] == [1, 2, 3, 4, 5], explain(proc)
    for m in progress:
        words = m.group(4).split()
        assert 1 <= len(words) <= 5 and set(words) <= set(WORDS), \
            f"expected 1-5 vocabulary words, got {m.group(4)!r}"
    assert "submitted 5" in proc.stdout and "failed 0" in proc.stdout, \
        f"expected 'submitted 5' and 'failed 0' in the summary, got {explain(proc)}"
    assert "jobs/s" in proc.stdout, f"expected a rate in the summary, got {explain(proc)}"
    assert b.connections == 1, f"expected one connection, got {b.connections}"
    assert [line.split()[0] for line in b.lines] == ["JOB"] * 5, f"got {b.lines}"


def test_autocall_paced_by_a_delay_gives_no_rate(broker):
    """With --delay the jobs/s rate would only measure the pause: not printed."""
    b = broker()
    proc = run_client("127.0.0.1", b.port, "autoCall", "--num-jobs", "2", "--delay", "0.01")
    assert proc.returncode == 0, f"expected exit 0, got {explain(proc)}"
    assert "submitted 2" in proc.stdout and "jobs/s" not in proc.stdout, \
        f"expected a summary without a rate, got {explain(proc)}"


def test_autocall_keeps_going_after_an_err(broker):
    b = broker(err_on={3})
    proc = run_client("127.0.0.1", b.port, "AUTOCALL", "--num-jobs", "5", "--delay", "0")
    assert "submitted 4" in proc.stdout and "failed 1" in proc.stdout, \
        f"expected 'submitted 4' and 'failed 1', got {explain(proc)}"
    failed = [line for line in proc.stdout.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and "ERR EMPTY_JOB" in failed[0] and failed[0].startswith("[3/5]"), \
        f"expected one FAILED line for job 3 with the ERR, got {explain(proc)}"
    assert len(b.lines) == 5, f"expected 5 JOB requests, got {b.lines}"
    assert proc.returncode == 1, f"expected exit 1 (a job failed), got {explain(proc)}"
    assert "Traceback" not in proc.stderr, explain(proc)


def test_autocall_reconnects_once_when_the_connection_drops(broker):
    b = broker(drop_on={2})
    proc = run_client("127.0.0.1", b.port, "autoCall", "--num-jobs", "4", "--delay=0")
    assert "submitted 3" in proc.stdout and "failed 1" in proc.stdout, \
        f"expected 'submitted 3' and 'failed 1', got {explain(proc)}"
    assert "reconnected" in proc.stdout, f"expected a reconnect line, got {explain(proc)}"
    assert b.connections == 2, f"expected 2 connections, got {b.connections}"


def test_autocall_gives_up_when_the_connection_drops_twice(broker):
    b = broker(drop_on={1, 2})
    proc = run_client("127.0.0.1", b.port, "autoCall", "--num-jobs", "4", "--delay", "0")
    assert "submitted 0" in proc.stdout and "failed 2" in proc.stdout \
        and "not attempted 2" in proc.stdout, f"expected 0/2/2, got {explain(proc)}"
    assert proc.returncode == 1, f"expected exit 1, got {explain(proc)}"


def test_autocall_seed_makes_texts_reproducible(broker):
    b = broker()
    runs = [run_client("127.0.0.1", b.port, "autoCall", "--num-jobs", "6", "--delay", "0",
                       "--seed", "7") for _ in range(2)]
    texts = [[m.group(4) for m in map(PROGRESS.match, p.stdout.splitlines()) if m]
             for p in runs]
    assert len(texts[0]) == 6 and texts[0] == texts[1], \
        f"expected the same 6 texts twice, got {texts}"


def test_autocall_function_reports_jobs_and_calls_back(broker):
    b = broker()
    seen = []
    result = client.auto_call("127.0.0.1", b.port, delay=0, texts=["a b", "c"],
                              on_job=lambda *a: seen.append(a))
    assert result.jobs == [("a b", 1), ("c", 2)], f"expected ids 1, 2, got {result.jobs}"
    assert (result.submitted, result.failed) == (2, 0), result.summary()
    assert seen == [(0, "a b", 1, None), (1, "c", 2, None)], f"got {seen}"


# --------------------------------------------------------------- errors

def test_broker_down_gives_a_clear_message():
    port = closed_port()
    proc = run_client("127.0.0.1", port, "JOB", "hello")
    assert_clean_error(proc, f"cannot connect to 127.0.0.1:{port}", "connection refused",
                       "is the broker running?")
    proc = run_client(f"127.0.0.1:{port}", "autoCall", "--num-jobs", "2")
    assert_clean_error(proc, "connection refused")


@pytest.mark.parametrize("port", ["abc", "70000", "0", "-5"])
def test_bad_port_gives_a_clear_message(port):
    for args in (["127.0.0.1", port, "STATUS", "1"], [f"127.0.0.1:{port}", "STATUS", "1"]):
        proc = run_client(*args)
        assert_clean_error(proc)
        assert proc.returncode == client.EXIT_USAGE, f"expected exit 2, got {explain(proc)}"
        assert "port" in proc.stderr, f"expected the word 'port', got {explain(proc)}"


def test_unknown_command(broker):
    b = broker()
    proc = run_client("127.0.0.1", b.port, "DELETE", "1")
    assert_clean_error(proc, "unknown command 'DELETE'")
    assert b.lines == [], f"expected nothing sent, got {b.lines}"


def test_missing_command():
    assert_clean_error(run_client(), "missing COMMAND")
    assert_clean_error(run_client("127.0.0.1", "50000"), "missing COMMAND",
                       "after the address 127.0.0.1:50000")


def test_port_alone_means_this_machine(broker):
    """README: every argument is optional; "PORT COMMAND" asks 127.0.0.1:PORT
    (it used to say "bad port 'STATUS'")."""
    b = broker(state="waiting")
    proc = run_client(b.port, "STATUS", "7")
    assert proc.returncode == 0, f"expected exit 0, got {explain(proc)}"
    assert proc.stdout == "waiting\n" and b.lines == ["STATUS 7"], \
        f"expected 'waiting' for STATUS 7, got {explain(proc)}; broker saw {b.lines}"


def test_a_word_that_is_neither_port_nor_command_is_named():
    proc = run_client("localhost", "DELETE", "1")
    assert_clean_error(proc, "expected a port number or a command", "'DELETE'")
    assert proc.returncode == client.EXIT_USAGE, f"expected exit 2, got {explain(proc)}"


def test_reply_timeout_is_reported(broker):
    b = broker(silent=True)
    proc = run_client("--timeout", "0.3", "127.0.0.1", b.port, "STATUS", "1")
    assert_clean_error(proc, "timed out")
    assert proc.returncode == client.EXIT_CONNECTION, f"expected exit 3, got {explain(proc)}"


def test_help_explains_commands_with_examples():
    proc = run_client("--help")
    assert proc.returncode == 0, explain(proc)
    for needle in ("JOB", "STATUS", "autoCall", "--num-jobs", "--delay", "--seed",
                   "--timeout", "examples:", "HOST:PORT"):
        assert needle in proc.stdout, f"expected {needle!r} in --help, got {proc.stdout}"


# ------------------------------------------------------------ functions

def test_parse_address_forms():
    assert client.parse_address(["h", "1", "JOB"]) == ("h", 1, ["JOB"])
    assert client.parse_address(["h:2", "STATUS", "3"]) == ("h", 2, ["STATUS", "3"])
    assert client.parse_address(["[::1]:4", "x"]) == ("::1", 4, ["x"])
    for bad in (["h:x", "JOB"], ["h", "65536"], [":5", "JOB"], ["h", "DELETE"], ["0", "JOB"]):
        with pytest.raises(client.UsageError):
            client.parse_address(bad)


@pytest.mark.parametrize("args, expected", [
    ([], ("127.0.0.1", 50000, [])),
    (["STATUS", "1"], ("127.0.0.1", 50000, ["STATUS", "1"])),       # was "missing COMMAND"
    (["autocall", "--delay", "0"], ("127.0.0.1", 50000, ["autocall", "--delay", "0"])),
    (["50000", "STATUS", "1"], ("127.0.0.1", 50000, ["STATUS", "1"])),  # was "bad port 'STATUS'"
    (["4000", "JOB", "a"], ("127.0.0.1", 4000, ["JOB", "a"])),
    (["localhost", "Job", "a"], ("localhost", 50000, ["Job", "a"])),
    (["localhost"], ("localhost", 50000, [])),
    (["job:7", "JOB", "a"], ("job", 7, ["JOB", "a"])),                # a host named like a command
])
def test_host_and_port_default_as_the_readme_says(args, expected):
    got = client.parse_address(args)
    assert got == expected, f"{args}: expected {expected}, got {got}"


def test_vocabulary():
    assert len(WORDS) >= 90, f"expected 90+ words, got {len(WORDS)}"
    assert len(set(WORDS)) == len(WORDS), "expected no duplicate words"
    assert all(w and not any(c.isspace() for c in w) for w in WORDS), \
        "expected single tokens without whitespace"
    rng = random.Random(1)
    for _ in range(200):
        words = random_job_text(rng).split(" ")
        assert 1 <= len(words) <= 5 and set(words) <= set(WORDS), f"got {words}"


@pytest.mark.parametrize("address", [("", "{port}"), (" ", "{port}"), (" :{port}",),
                                     ("[]:{port}",)], ids=["empty", "blank", "blank:port", "[]:port"])
def test_empty_host_is_a_usage_error_not_any(broker, address):
    """An empty host reads as "any" to the sockets API; an unset shell variable
    (``client "$HOST" 50000 ...``) must be a usage error, not a guess."""
    b = broker()
    args = [part.format(port=b.port) for part in address]
    proc = run_client(*args, "JOB", "x")
    assert_clean_error(proc, "empty host")
    assert proc.returncode == client.EXIT_USAGE, f"expected exit 2, got {explain(proc)}"
    assert b.lines == [], f"expected nothing sent, got {b.lines}"


@pytest.mark.parametrize("args", [("--timeout", "99999999999999999999", "STATUS", "1"),
                                  ("autoCall", "--delay", "99999999999999999999")],
                         ids=["timeout", "delay"])
def test_seconds_beyond_the_maximum_are_a_usage_error(broker, args):
    b = broker()
    if args[0] == "--timeout":
        proc = run_client(args[0], args[1], "127.0.0.1", b.port, *args[2:])
    else:
        proc = run_client("127.0.0.1", b.port, *args)
    assert_clean_error(proc, "at most 604800")
    assert proc.returncode == client.EXIT_USAGE, f"expected exit 2, got {explain(proc)}"
    assert b.lines == [], f"expected nothing sent, got {b.lines}"
