"""The worker's syslog lines as a real syslog daemon reads them (issue 14).

rsyslogd (Debian's package ``rsyslog``) runs in the foreground with a
configuration of this test's own: an imudp input on a free port of
127.0.0.1, a template that writes the fields it parsed from each datagram
(%programname%, %procid%, %syslogfacility-text%, %syslogseverity-text%,
%msg%) as one JSON object per line to a FIFO in tmp_path, which the test
reads (so it waits on lines arriving, never on a clock). No journald, no
/dev/log: only this input is loaded. A broker and a worker of each
implementation run a job with the worker's syslog port set to rsyslogd's;
the lifecycle messages must come out with the right program name (the
worker's --name), PID (the worker process), facility (user: what
shell/output.py's SysLogHandler uses), severity (info) and text.

It runs only inside the test run's private network namespace (conftest.py
moves the run there where permitted), so the daemon can listen on nothing
outside; it is skipped, with the reason, where rsyslogd is not installed or
namespaces are not available. CI installs rsyslog (.ci/run).
"""

import json
import os
import select
import shutil
import socket
import subprocess
import time

import pytest

from conformance.netns import inside_private_netns
from tests.support import IMPLS, Broker, LineConnection, Process, STOP_TIMEOUT
from tests.test_startup_errors import closed_port

IDS = [impl.split("_", 1)[1] for impl in IMPLS]
TIMEOUT = 15.0
PROBE_EVERY = 0.2       # seconds between probes while rsyslogd starts (each one a wait on the FIFO)
RSYSLOGD = shutil.which("rsyslogd") or next(
    (path for path in ("/usr/sbin/rsyslogd", "/sbin/rsyslogd") if os.access(path, os.X_OK)), None)

CONFIG = """\
global(workDirectory="{work}")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{port}")
template(name="fields" type="list" option.jsonf="on") {{
  property(outname="program" name="programname" format="jsonf")
  property(outname="procid" name="procid" format="jsonf")
  property(outname="facility" name="syslogfacility-text" format="jsonf")
  property(outname="severity" name="syslogseverity-text" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
}}
*.* action(type="ompipe" pipe="{fifo}" template="fields")
"""

pytestmark = [
    pytest.mark.skipif(RSYSLOGD is None, reason="rsyslogd is not installed "
                       "(apt-get install rsyslog; CI does)"),
    pytest.mark.skipif(not inside_private_netns(), reason="needs the test run's private "
                       "network namespace (root or user namespaces), not available here"),
]


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Rsyslog:
    """rsyslogd with this module's CONFIG in ``directory``; ``record(deadline)``
    is the next parsed datagram as a dict (program, procid, facility, severity,
    msg)."""

    def __init__(self, directory):
        self.port = free_udp_port()
        fifo = directory / "fields.jsonl"
        os.mkfifo(fifo)
        # Open both ends here: the reader never sees EOF between rsyslogd's writes.
        self.reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        self._keep_open = os.open(fifo, os.O_WRONLY)
        self.buffer = b""
        (directory / "work").mkdir()
        config = directory / "rsyslog.conf"
        config.write_text(CONFIG.format(work=directory / "work", port=self.port, fifo=fifo))
        self.log = open(directory / "rsyslogd.out", "w+b")
        self.proc = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(config), "-i", str(directory / "rsyslogd.pid")],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self):
        """Send probes until rsyslogd writes one out: then its input listens."""
        deadline = time.monotonic() + TIMEOUT
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"rsyslogd exited ({self.proc.returncode}): "
                                         f"{self.output()}")
                sock.sendto(b"<14>probe[1]: ready", ("127.0.0.1", self.port))
                record = self.record(min(deadline, time.monotonic() + PROBE_EVERY))
                while record is not None and record["program"] != "probe":
                    record = self.record(min(deadline, time.monotonic() + PROBE_EVERY))
                if record is not None:
                    return
        raise AssertionError(f"rsyslogd did not pass on a probe within {TIMEOUT} s: "
                             f"{self.output()}")

    def record(self, deadline):
        """The next line rsyslogd wrote, parsed; None once ``deadline`` has passed."""
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.reader], [], [], left)[0]:
                return None
            self.buffer += os.read(self.reader, 65536)
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def output(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        os.close(self.reader)
        os.close(self._keep_open)
        self.log.close()


@pytest.fixture
def rsyslog(tmp_path):
    daemon = Rsyslog(tmp_path)
    yield daemon
    daemon.close()


@pytest.mark.parametrize("name", ["workq-worker", "renamed-7"], ids=["default-name", "--name"])
@pytest.mark.parametrize("impl", IMPLS, ids=IDS)
def test_rsyslog_parses_the_worker_lifecycle(impl, name, rsyslog):
    broker = Broker(impl)
    options = [] if name == "workq-worker" else ["--name", name]
    worker = Process(f"{impl}.worker", f"127.0.0.1:{broker.worker_port}", closed_port(),
                     rsyslog.port, "--word-delay", "0", *options)
    try:
        worker.startup_line()
        client = LineConnection(broker.client_port)
        assert client.request("JOB hello syslog") == "ID 1"
        client.close()
        wanted = ["fetching job", "starting job 1", "completed job 1"]
        deadline = time.monotonic() + TIMEOUT
        got = []
        while wanted[len(got):]:
            record = rsyslog.record(deadline)
            assert record is not None, \
                f"expected rsyslogd to parse {wanted[len(got):]} next, got {got}"
            # RFC 3164: the CONTENT after "TAG:" keeps its leading space in %msg%.
            if record["msg"].lstrip(" ") == wanted[len(got)]:
                got.append(record)
        expected = {"program": name, "procid": str(worker.pid), "facility": "user",
                    "severity": "info"}
        for record in got:
            fields = {key: record[key] for key in expected}
            assert fields == expected, \
                f"expected rsyslogd to parse {expected} from {record['msg']!r}, got {fields}"
    finally:
        worker.close()
        broker.close()
