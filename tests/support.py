"""Helpers shared by tests/test_cross_matrix.py and tests/test_stress.py.

Processes are started from this checkout with the running interpreter; the
broker gets port 0 for both ports (the kernel picks free ones) and reports
them in its start-up line, so every test has ports of its own. Waits are on
events (a line arrives, a process exits) with deadlines, never fixed sleeps.
"""

import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMPLS = ("impl_select", "impl_threads")
STARTUP_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0

BROKER_LINE = re.compile(r"workq broker \((\w+)\): clients on [^\s,]+:(\d+), "
                         r"workers on [^\s,]+:(\d+)")


class Process:
    """A ``python3 -m MODULE ARGS...`` child: stdout is a pipe (for the start-up
    line), stderr goes to a temporary file so a chatty child never blocks.
    ``argv`` (with ``cwd`` and ``env``) starts another program instead, e.g.
    an installed console script: ``Process(None, argv=[...], cwd=...)``.
    ``stderr_pipe``: stderr is a pipe instead, read line by line with
    ``stderr_line`` (for a child whose stderr is bounded)."""

    def __init__(self, module, *args, argv=None, cwd=ROOT, env=None, stderr_pipe=False):
        self.argv = argv or [sys.executable, "-m", module, *map(str, args)]
        self._stderr = subprocess.PIPE if stderr_pipe else tempfile.TemporaryFile()
        self._stderr_read = bytearray()     # with stderr_pipe: what stderr_line has read
        self.stderr_lines = []              # with stderr_pipe: complete lines read so far
        self._stderr_next = 0               # the first of them stderr_line has not looked at
        self.proc = subprocess.Popen(self.argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=self._stderr)
        self.pid = self.proc.pid

    def startup_line(self, timeout=STARTUP_TIMEOUT):
        """The first line the process prints on stdout; fails with its stderr
        if it exits or stays silent for ``timeout`` seconds."""
        fd = self.proc.stdout.fileno()
        data = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise AssertionError(f"{self.describe()}: no start-up line within {timeout} s; "
                                     f"stdout so far {data!r}; stderr: {self.stderr()!r}")
            chunk = os.read(fd, 4096)
            if not chunk:
                self.proc.wait(STOP_TIMEOUT)
                raise AssertionError(f"{self.describe()}: exited ({self.proc.returncode}) before "
                                     f"its start-up line; stdout {data!r}; "
                                     f"stderr: {self.stderr()!r}")
            data += chunk
        return data.split(b"\n", 1)[0].decode(errors="replace")

    def describe(self):
        return " ".join(self.argv[1:])

    def stderr(self):
        """What the process wrote to stderr so far (with ``stderr_pipe``: what
        ``stderr_line`` has read)."""
        if self._stderr is subprocess.PIPE:
            return self._stderr_read.decode(errors="replace")
        # pread: the child shares the file offset, so leave it alone.
        fd = self._stderr.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

    def stderr_line(self, pattern, timeout=STARTUP_TIMEOUT):
        """With ``stderr_pipe``: read stderr until a line matches ``pattern`` (a
        regex, whole line) among the lines after the one it returned last, and
        return it; every line read is kept in ``stderr_lines``. Fails after
        ``timeout`` seconds, or when stderr ends, saying what came instead."""
        fd = self.proc.stderr.fileno()
        deadline = time.monotonic() + timeout
        while True:
            while self._stderr_next < len(self.stderr_lines):
                line = self.stderr_lines[self._stderr_next]
                self._stderr_next += 1
                if re.fullmatch(pattern, line):
                    return line
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise AssertionError(f"{self.describe()}: expected a stderr line matching "
                                     f"{pattern!r} within {timeout} s, got {self.stderr_lines}")
            chunk = os.read(fd, 4096)
            if not chunk:
                raise AssertionError(f"{self.describe()}: stderr ended (exit status "
                                     f"{self.proc.poll()}) without a line matching {pattern!r}; "
                                     f"got {self.stderr_lines}")
            self._stderr_read += chunk
            self.stderr_lines = self._stderr_read.decode(errors="replace").split("\n")[:-1]

    def stderr_to_exit(self, timeout=STOP_TIMEOUT):
        """With ``stderr_pipe``: read stderr to its end and wait for the exit;
        returns the exit status (every line is then in ``stderr_lines``).
        Fails if stderr stays open for ``timeout`` seconds."""
        fd = self.proc.stderr.fileno()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise AssertionError(f"{self.describe()}: still running {timeout} s later; "
                                     f"stderr {self.stderr_lines}")
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            self._stderr_read += chunk
        self.stderr_lines = self._stderr_read.decode(errors="replace").split("\n")[:-1]
        return self.proc.wait(max(0.1, deadline - time.monotonic()))

    def running(self):
        return self.proc.poll() is None

    def stop(self):
        """SIGTERM, wait, then SIGKILL; returns the exit status. Safe to repeat."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout and not self.proc.stdout.closed:
            self.proc.stdout.close()
        return self.proc.returncode

    def close(self):
        self.stop()
        if self._stderr is subprocess.PIPE:
            self.proc.stderr.close()
        else:
            self._stderr.close()


class Broker(Process):
    """A broker on kernel-chosen ports: ``client_port`` and ``worker_port``
    (or on given ones: ``ports=(client_port, worker_port)``, e.g. to restart
    a broker where its workers expect it). ``stderr_pipe`` as for Process;
    ``wrapper``: a command line the broker's runs under (prlimit, taskset)."""

    def __init__(self, impl, *options, ports=(0, 0), stderr_pipe=False, wrapper=()):
        argv = None
        if wrapper:         # e.g. ("prlimit", "--fsize=65536"): runs the broker under it
            argv = [*wrapper, sys.executable, "-m", f"{impl}.broker", *map(str, ports),
                    *map(str, options)]
        super().__init__(f"{impl}.broker", *ports, *options, argv=argv, stderr_pipe=stderr_pipe)
        try:
            line = self.startup_line()
            match = BROKER_LINE.search(line)
            assert match, f"{self.describe()}: unexpected start-up line {line!r}"
            self.flavour = match[1]
            self.client_port, self.worker_port = int(match[2]), int(match[3])
        except BaseException:
            self.close()
            raise


def start_worker(impl, worker_port, output_port, syslog_port, *options):
    """A worker of ``impl`` against 127.0.0.1:worker_port, started and printing
    its start-up line (stopped again if it does not)."""
    worker = Process(f"{impl}.worker", f"127.0.0.1:{worker_port}", output_port, syslog_port,
                     *options)
    try:
        worker.startup_line()
    except BaseException:
        worker.close()
        raise
    return worker


def udp_sink():
    """A bound UDP socket on 127.0.0.1 (a syslog port for workers); port 0."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


class LineConnection:
    """A TCP connection to a broker port that sends and reads LF-ended lines,
    each read bounded by a deadline (an absolute ``time.monotonic()`` value)
    or a timeout."""

    def __init__(self, port, host="127.0.0.1", timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()
        self.name = f"127.0.0.1:{port}"

    def send_lines(self, lines):
        self.sock.sendall("".join(line + "\n" for line in lines).encode())

    def send(self, line):
        self.send_lines([line])

    def read_line(self, deadline=None, timeout=10.0, stop=None, eof_ok=False):
        """The next line without its LF. ``stop`` (a threading.Event) is checked
        at least every half second, so a thread blocked here can be ended.
        ``eof_ok``: return None when the broker closes or resets the connection
        instead of failing."""
        if deadline is None:
            deadline = time.monotonic() + timeout
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[:end + 1]
                return line.decode(errors="replace")
            if stop is not None and stop.is_set():
                raise Stopped()
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no complete line from the broker ({self.name}) in time; "
                                     f"buffered {bytes(self.buffer[:200])!r}")
            self.sock.settimeout(min(left, 0.5))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionError:
                if eof_ok:
                    return None
                raise
            if not data:
                if eof_ok:
                    return None
                raise AssertionError(f"the broker ({self.name}) closed the connection; "
                                     f"buffered {bytes(self.buffer[:200])!r}")
            self.buffer += data

    def request(self, line, timeout=10.0):
        self.send(line)
        return self.read_line(timeout=timeout)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Stopped(Exception):
    """Raised in a helper thread when the test told it to stop."""


def parse_stats(line):
    """``STATS waiting=1 running=0 ...`` as a dict of ints (other keys kept)."""
    words = line.split()
    assert words and words[0] == "STATS", f"expected a STATS line, got {line!r}"
    stats = {}
    for pair in words[1:]:
        key, _, value = pair.partition("=")
        stats[key] = int(value) if value.isdigit() else value
    return stats


# -- helpers of the fault tests (tests/test_faults.py, tests/test_fault_*.py) --------

SYSLOG_LINE = re.compile(r"<\d+>([^\[\s]+)\[(\d+)\]: (.*)", re.DOTALL)


class SyslogListener:
    """The workers' syslog port: ``next(deadline)`` is the next message as
    ``(pid, text)``; datagrams that are not syslog lines are skipped. A large
    receive buffer, so bursts from several workers are not dropped."""

    def __init__(self):
        self.sock = udp_sink()
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        except OSError:
            pass
        self.port = self.sock.getsockname()[1]

    def next(self, deadline):
        """The next message, or None once ``deadline`` (time.monotonic()) has passed."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return None
            match = SYSLOG_LINE.match(data.decode(errors="replace").rstrip("\n\0"))
            if match:
                return int(match[2]), match[3]

    def close(self):
        self.sock.close()


def proc_status_kb(pid, key="VmRSS"):
    """A ``kB`` value of /proc/PID/status (VmRSS: resident memory)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def proc_cpu_seconds(pid):
    """User + system CPU time of a process so far, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_descriptors(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class Wire(LineConnection):
    """A LineConnection for peers that may vanish: ``line_or_eof`` returns
    None when the broker closes or resets the connection (a crash, a drop),
    instead of failing."""

    def line_or_eof(self, deadline, stop=None):
        return self.read_line(deadline, stop=stop, eof_ok=True)

    def ask(self, line, deadline, stop=None):
        """Send a line and return the reply, or None if the broker is gone."""
        try:
            self.send(line)
        except OSError:
            return None
        return self.line_or_eof(deadline, stop)


def read_until_closed(sock, deadline):
    """Everything (bytes) the peer sends until it closes (EOF or reset); fails at
    ``deadline`` (a ``time.monotonic()`` value)."""
    data = bytearray()
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"the broker did not close the connection in time; got {bytes(data[:200])!r}"
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionError:
            return bytes(data)
        if not chunk:
            return bytes(data)
        data += chunk


def await_completions(syslog, ids, deadline, pids=None, on_event=None):
    """Read worker syslog until every job in ``ids`` is logged ``completed job N``.

    Fails at ``deadline``, and at once when a worker logs a protocol error
    or a refused DONE (the broker sent it something it did not expect).
    ``pids``: only these workers' messages count; ``on_event(pid, text)``
    sees every message."""
    completed = set()
    ids = set(ids)
    while ids - completed:
        event = syslog.next(deadline)
        assert event is not None, f"no 'completed job' for {sorted(ids - completed)[:20]} in time"
        pid, text = event
        if on_event is not None:
            on_event(pid, text)
        if pids is not None and pid not in pids:
            continue
        assert "protocol error" not in text and not text.startswith("DONE "), \
            f"expected workers to run jobs cleanly, worker {pid} logged {text!r}"
        if text.startswith("completed job "):
            completed.add(int(text.split()[2]))
