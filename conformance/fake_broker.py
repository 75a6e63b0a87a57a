"""The suite as the broker: the steps of the worker role.

For an exchange with ``role: worker`` the suite listens on a free worker
port of its own (127.0.0.1, port chosen by the kernel) and starts the worker
from the worker command template (``start_worker``), with ``{broker}``
pointing at that port. ``accept_worker`` takes the worker's TCP connection;
on it, the ordinary ``expect`` and ``send`` steps read the worker's lines
(``FETCH``, ``DONE n``) and send the broker's replies (``NOJOB``,
``JOB n text``, ``OK``, ``ERR ...``). ``expect_idle_wait`` measures how long
the worker waited before its next line; ``close`` drops the connection.

The suite plays a core-level broker: a long-poll ``FETCH <seconds>`` is
answered ``ERR BAD_ARGUMENT`` at once, as a core broker answers it, and the
steps see only plain ``FETCH`` lines (a worker must then poll with plain
``FETCH`` every fetch interval). An exchange with ``long_poll_fetch: steps``
hands such lines to its steps instead, which answer them themselves (e.g.
``NOJOB`` at once, as the original system's broker does). Likewise a lease
renewal ``TOUCH <n>`` (extended) is answered ``ERR UNKNOWN_COMMAND`` at once,
as a broker without leases answers it, and the steps never see it: a worker
must then go on streaming and stop renewing.
spec/EXCHANGES.md, "Steps of the worker role", is the reference.

In transcripts the suite's lines on such a connection are marked ``B>``
(the suite speaking as the broker) and the worker's ``W<``.
"""

import re
import socket
import time

from .patterns import SpecError, match_line
from .wire import Connection, show

__all__ = ["WorkerListener", "WorkerConnection", "WorkerRoleSteps"]

HOST = "127.0.0.1"
DEFAULT_IDLE_MIN = 0.5   # expect_idle_wait: at least this x fetch_interval

# Long-poll (an extended FETCH): the suite answers it as a core broker does.
LONG_POLL = re.compile(r"(?i)FETCH[ \t]+\S.*")
# A lease renewal (extended): the suite answers it as a broker without leases does.
TOUCH = re.compile(r"(?i)TOUCH([ \t].*)?")

# Steps that talk to a broker: meaningless when the suite is the broker.
BROKER_STEPS = ("connect", "wait_state")


class WorkerListener:
    """The suite's worker port; connections queue up in ``pending``."""

    def __init__(self, transcript):
        self.transcript = transcript
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((HOST, 0))
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.pending = []

    @property
    def port(self):
        return self.sock.getsockname()[1]

    def on_readable(self):
        while True:
            try:
                sock, address = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            self.pending.append((sock, address))
            self.transcript.add(f"-- worker port: a connection from {address[0]}:{address[1]}")

    def close(self):
        for sock, _ in self.pending:
            sock.close()
        self.pending = []
        self.sock.close()


class WorkerConnection(Connection):
    """A worker's connection to the suite; it remembers when each line arrived."""

    send_mark = "B>"

    def __init__(self, name, sock, transcript, refuse_long_poll=True):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().__init__(name, sock, transcript)
        self.arrivals = []   # monotonic time of every line received, in order
        self.refuse_long_poll = refuse_long_poll   # False: FETCH <seconds> goes to the steps

    def on_readable(self):
        before = len(self.lines)
        super().on_readable()
        now = time.monotonic()
        new, self.lines[before:] = self.lines[before:], []
        for line in new:
            if self.refuse_long_poll and LONG_POLL.fullmatch(line):
                self._refuse(line, now)
            elif TOUCH.fullmatch(line):
                self._refuse(line, now, "ERR UNKNOWN_COMMAND unknown command 'TOUCH' "
                                        "(a core broker)", "no leases", timed=False)
            else:
                self.lines.append(line)
                self.arrivals.append(now)

    def _refuse(self, line, now,
                reply="ERR BAD_ARGUMENT FETCH takes no argument here (a core broker)",
                lacking="no long-poll", timed=True):
        """Answer a long-poll FETCH (or a TOUCH) as a core broker does: the steps
        never see it. ``timed``: expect_idle_wait measures from this reply (not
        for TOUCH, which a worker sends while it streams a job)."""
        self._log(f"B> {reply}  (automatic: the suite plays a core broker, {lacking})")
        try:
            self.sock.send(reply.encode() + b"\n")
        except OSError as error:
            self._log(f"-- sending failed: {error.strerror or error}")
        if timed:
            self.last_sent = (reply, now)

    def next_arrival(self):
        """When the line at the head of ``lines`` arrived."""
        return self.arrivals[len(self.arrivals) - len(self.lines)]

    def _log(self, text):
        if text.startswith("S< "):
            text = "W< " + text[3:]
        super()._log(text)


class WorkerRoleSteps:
    """Steps of the worker role (mixed into runner.ExchangeRun)."""

    listener = None

    def _listen_as_broker(self):
        for number, step in enumerate(self.exchange["steps"], 1):
            for key in BROKER_STEPS:
                if key in step:
                    raise SpecError(f"step {number}: {key} is a step of the broker and system "
                                    "roles; in the worker role the suite is the broker "
                                    "(see accept_worker)")
        self.listener = WorkerListener(self.transcript)
        self.extra_readers.append(self.listener)
        self.host, self.worker_port, self.client_port = HOST, self.listener.port, None
        long_poll = ("the steps answer FETCH <seconds>"
                     if self.exchange.get("long_poll_fetch", "refuse") == "steps"
                     else "FETCH <seconds> refused as a core broker does")
        self.transcript.add(
            f"-- the suite plays the broker: worker port {HOST}:{self.worker_port}; "
            f"word delay {self.settings.word_delay:g} s, fetch interval "
            f"{self.settings.fetch_interval:g} s; {long_poll}")

    def _accept_worker(self, name, step, deadline, timeout):
        if self.listener is None:
            raise SpecError("accept_worker is a step of the worker role")
        if name in self.connections:
            raise SpecError(f"accept_worker: a connection named {name!r} exists already")
        self._step_note(f"wait for a worker to connect to {HOST}:{self.worker_port}; "
                        f"call the connection {name}")
        if not self._pump(deadline, lambda: self.listener.pending):
            self._fail(f"accept_worker {name}",
                       f"expected: a worker connects to {HOST}:{self.worker_port}",
                       f"received: no connection within {timeout:.1f} s"
                       + "".join(f"; worker {n} exited with code {w.returncode}"
                                 for n, w in self.workers.items() if w.returncode is not None))
        sock, address = self.listener.pending.pop(0)
        refuse = self.exchange.get("long_poll_fetch", "refuse") == "refuse"
        connection = WorkerConnection(name, sock, self.transcript, refuse_long_poll=refuse)
        self.connections[name] = self.last_connection = connection
        self.transcript.add(f"   {name} = the connection from {address[0]}:{address[1]}")

    def _expect_idle_wait(self, spec, step, deadline, timeout):
        connection = self._connection(step)
        if not isinstance(connection, WorkerConnection):
            raise SpecError("expect_idle_wait is a step of the worker role")
        spec = spec if isinstance(spec, dict) else {}
        pattern = str(spec.get("pattern", "FETCH"))
        interval = self.settings.fetch_interval
        low = float(spec.get("min", DEFAULT_IDLE_MIN)) * interval
        high = float(spec["max"]) * interval if "max" in spec else None
        sent = getattr(connection, "last_sent", None)
        if sent is None:
            raise SpecError(f"expect_idle_wait: nothing sent on {connection.name} yet "
                            "to measure the wait from")
        after, sent_at = sent
        limits = f"at least {low:.3f} s" + (f", at most {high:.3f} s" if high else "")
        self._step_note(f"expect on {connection.name}: {pattern}, {limits} after "
                        f"{show(after)} (fetch interval {interval:g} s)")
        self._pump(deadline, lambda: connection.lines or not connection.readable)
        expected = f"expected: {pattern}, {limits} after {show(after)}"
        if not connection.lines:
            self._fail(f"expect on {connection.name}", expected,
                       f"received: {self._nothing(connection, timeout)}")
        arrival = connection.next_arrival()
        line = connection.lines.pop(0)
        captured = match_line(pattern, line, self.values)
        if captured is None:
            self._fail(f"expect on {connection.name}", expected, f"received: {show(line)}")
        self._capture(captured)
        wait = arrival - sent_at
        self.transcript.add(f"   waited {wait:.3f} s after {show(after)}")
        if wait < low:
            self._fail(f"{show(line)} {wait:.3f} s after {show(after)}, expected at least "
                       f"{low:.3f} s (fetch interval {interval:g} s x {low / interval:g})",
                       expected, f"measured wait: {wait:.3f} s")
        if high is not None and wait > high:
            self._fail(f"{show(line)} {wait:.3f} s after {show(after)}, expected at most "
                       f"{high:.3f} s (fetch interval {interval:g} s x {high / interval:g})",
                       expected, f"measured wait: {wait:.3f} s")
