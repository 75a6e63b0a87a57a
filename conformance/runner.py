"""Runs one exchange of spec/protocol.yaml against a target, step by step,
as spec/EXCHANGES.md defines the steps, recording the wire as it goes."""

import os
import select
import shlex
import socket
import tempfile
import time

from .capture import MulticastChecks, collapse_repeats
from .grammar import decimal_text
from .fake_broker import WorkerRoleSteps
from .faultsteps import FaultSteps
from .patterns import SpecError, expand_references, match_line, substitute
from .replies import Replies
from .targets import (PAUSE_TIMEOUT, Target, TargetError, free_tcp_port,
                      udp_ports_of_process_tree)
from .wire import Connection, DatagramReceiver, Transcript, show

__all__ = ["Settings", "ExchangeFailure", "ExchangeRun", "SpecError"]

DEFAULT_TIMEOUT = 5.0
POLL_INTERVAL = 0.02  # wait_state: between two STATUS requests
HOST = "127.0.0.1"
# send_repeat with until_blocked: seconds without progress after which the
# suite stops sending (the broker need not take a flood nobody reads).
BLOCKED_AFTER = 1.0
# Appended to the suite's own worker when it helps a target's broker in a system
# case (Settings.helper_worker): it then polls with a plain FETCH every fetch
# interval and sends DONE, and never a long-poll FETCH <seconds> or TOUCH, which
# are extended (PROTOCOL.md): a core broker must not fail a core case because
# the suite's worker sent it a command it need not know.
HELPER_CORE_OPTIONS = " --long-poll 0 --renew-interval 0"


class Settings:
    """How to reach the targets: command templates or an existing broker."""

    def __init__(self, broker_cmd, worker_cmd, cwd, python, multicast_group,
                 broker_addr=None, network="loopback", word_delay=0.02, fetch_interval=0.05,
                 capture=None, multicast_ttl=1, broker_options=None, replies=None,
                 helper_worker=False):
        self.broker_cmd = broker_cmd
        self.worker_cmd = worker_cmd
        # The worker is the suite's own, helping the target's broker: system cases
        # run it with HELPER_CORE_OPTIONS unless they say helper_worker: full.
        self.helper_worker = helper_worker
        self.cwd = cwd
        self.python = python
        self.multicast_group = multicast_group
        self.broker_addr = broker_addr  # (host, client_port, worker_port) or None
        self.network = network
        self.word_delay = word_delay          # what the worker template sets: timing
        self.fetch_interval = fetch_interval  # checks compare against these
        self.capture = capture                # capture.CaptureMode, or None: no capture
        self.multicast_ttl = multicast_ttl
        self.broker_options = broker_options or {}   # the spec's broker_options: name -> entry
        self.replies = replies or Replies()   # how the target words client-port replies


def _blanks_hint(line):
    """A failure's note on blanks a reader cannot see: the received ``line``'s
    blanks at its ends and runs of them inside, as Python writes the line
    (a list of 0 or 1 strings)."""
    if line == line.strip(" \t") and "  " not in line and "\t" not in line:
        return []
    return [f"    as written: {line!r} (blanks at its ends or more than one in a row)"]


class ExchangeFailure(Exception):
    """The target did not do what the step says; ``details`` explain how."""

    def __init__(self, summary, details=()):
        super().__init__(summary)
        self.summary = summary
        self.details = list(details)


class ExchangeRun(WorkerRoleSteps, MulticastChecks, FaultSteps):
    def __init__(self, exchange, settings):
        self.exchange = exchange
        self.settings = settings
        self.transcript = Transcript()
        self.values = {}
        self.connections = {}
        self.last_connection = None
        self.broker = None
        self.workers = {}
        self.multicast = None
        self.syslog = None
        self.source_owner = {}  # UDP source port -> worker name
        self.multicast_cursor = {}  # source -> datagrams of it already matched
        self.syslog_cursor = 0
        self.step_number = 0
        self.status_polls = 0
        self.extra_readers = []  # more sockets _pump reads: listener, capture
        self.option_files = []   # files written for file-valued broker options
        self.option_note = ""    # the options this case appends to the broker's command
        self.broker_paused = False

    # -- the whole exchange ------------------------------------------------

    def run(self):
        try:
            self._start_targets()
            for self.step_number, step in enumerate(self.exchange["steps"], 1):
                self._run_step(step)
        finally:
            self._stop_targets()

    def _start_targets(self):
        steps = self.exchange["steps"]
        if self.exchange.get("role") == "worker":
            self._listen_as_broker()  # fake_broker.py
        elif self.settings.broker_addr:
            self.host, self.client_port, self.worker_port = self.settings.broker_addr
        else:
            self.host = HOST
            self.client_port, self.worker_port = free_tcp_port(), free_tcp_port()
            while self.worker_port == self.client_port:
                self.worker_port = free_tcp_port()
            command = self._fill("broker", self.settings.broker_cmd,
                                 client_port=self.client_port,
                                 worker_port=self.worker_port)
            options = self._broker_options()
            command += options
            if options:
                names = ", ".join(self.exchange["broker_options"])
                self.option_note = (f"this case appends '{options.strip()}' to the broker's "
                                    f"command (the spec's broker_options: {names}); a broker "
                                    "that ignores the option fails here")
            self.broker = Target("broker", command, self.settings.cwd)
            self.transcript.add(f"-- broker started (pid {self.broker.pid}): {command}")
            if options:
                self.transcript.add(f"-- note: {self.option_note}")
            if not self.settings.replies.is_default:
                self.transcript.add(f"-- client-port replies expected as "
                                    f"{self.settings.replies.describe()} (--replies)")
            try:
                self.broker.wait_listening([self.client_port, self.worker_port])
            except TargetError as error:
                if not options:
                    raise
                raise TargetError(f"{error}: this case starts the broker with the option "
                                  f"'{options.strip()}' appended to its command; a broker "
                                  "that does not accept it cannot run this case "
                                  "(IMPLEMENTERS.md, 'Cases that start the broker with "
                                  "options')") from None
            self.transcript.add(f"-- broker listening: client port {self.client_port}, "
                                f"worker port {self.worker_port}")
        # The receivers exist before any worker starts, so no datagram is lost.
        if any(key in step for step in steps
               for key in ("start_worker", "expect_words", "expect_syslog")):
            self.multicast = DatagramReceiver.multicast(
                self.settings.multicast_group, HOST, self.transcript, self._owner_of)
            self.syslog = DatagramReceiver.syslog(self.transcript, self._owner_of)
            self._open_observer()  # capture.py

    def _broker_options(self):
        """The exchange's ``broker_options`` as the command-line options the spec names."""
        words = []
        for name, value in self.exchange.get("broker_options", {}).items():
            option = self.settings.broker_options[name]
            if option["kind"] == "file":
                handle = tempfile.NamedTemporaryFile("w", prefix=f"workq-{name}-", delete=False)
                with handle:
                    handle.write(f"{value}\n")
                self.option_files.append(handle.name)
                value = handle.name
            words += [option["option"], shlex.quote(str(value))]
        return "".join(" " + word for word in words)

    def _stop_targets(self):
        if self.broker_paused:
            self.broker.resume()       # a failure while paused must not leave it stopped
        self._resume_paused_workers()  # faultsteps.py
        for connection in self.connections.values():
            if not connection.closed_by_us:
                connection.close()
        for name, worker in self.workers.items():
            worker.terminate()
        if self.broker:
            self.broker.terminate()
        for receiver in (self.multicast, self.syslog, *self.extra_readers):
            if receiver:
                receiver.close()
        for path in self.option_files:
            os.unlink(path)
        self._heal_partitions()        # faultsteps.py

    def release(self):
        """Free what the failure report needed (temporary files of output)."""
        for target in self.targets():
            target.close()

    def targets(self):
        return ([self.broker] if self.broker else []) + list(self.workers.values())

    def _fill(self, what, template, **ports):
        # Decimal text for the delays, as the grammar's seconds rule reads them
        # (str(0.00001) would be 1e-05, which a workq worker refuses).
        values = dict(python=self.settings.python,
                      word_delay=decimal_text(self.settings.word_delay),
                      fetch_interval=decimal_text(self.settings.fetch_interval), **ports)
        try:
            return template.format(**values)
        except (KeyError, IndexError, ValueError) as error:
            raise TargetError(f"bad {what} command template {template!r}: {error!r}; "
                              f"placeholders: {', '.join('{%s}' % k for k in values)}")

    # -- steps ---------------------------------------------------------------

    ACTIONS = ("connect", "send", "send_raw", "send_repeat", "expect", "expect_closed",
               "close", "shutdown_write", "wait_state", "start_worker", "stop_worker",
               "expect_words", "expect_syslog", "accept_worker", "expect_idle_wait",
               "pause_broker", "resume_broker", "pause_worker", "resume_worker", "partition")

    def _run_step(self, step):
        actions = [key for key in step if key in self.ACTIONS]
        if len(actions) != 1:
            raise SpecError(f"step {self.step_number} needs exactly one action "
                            f"of {', '.join(self.ACTIONS)}: {step!r}")
        action = actions[0]
        timeout = float(step.get("timeout", DEFAULT_TIMEOUT))
        getattr(self, "_" + action)(step[action], step, time.monotonic() + timeout, timeout)

    def _step_note(self, text):
        self.transcript.add(text, step=self.step_number)

    def _fail(self, summary, *details):
        self.transcript.add("!! failed here (details below)")
        if self.option_note:
            details += (f"note: {self.option_note}",)
        raise ExchangeFailure(f"step {self.step_number}: {summary}", details)

    def _connection(self, step):
        name = step.get("conn")
        if name is None:
            if self.last_connection is None:
                raise SpecError(f"step {self.step_number}: no connection opened yet")
            return self.last_connection
        if name not in self.connections:
            raise SpecError(f"step {self.step_number}: no connection named {name!r}")
        return self.connections[name]

    def _connect(self, name, step, deadline, timeout):
        port_name = step.get("port", "client")
        port = {"client": self.client_port, "worker": self.worker_port}.get(port_name)
        if port is None:
            raise SpecError(f"port must be client or worker, not {port_name!r}")
        reads = step.get("reads", True)
        self._step_note(f"connect {name} to the {port_name} port ({self.host}:{port})"
                        + ("" if reads else "; the suite will not read its replies"))
        self.last_connection = self.connections[name] = self._open(name, port, timeout,
                                                                   reads=reads)
        self.last_connection.port_name = port_name

    def _open(self, name, port, timeout, quiet=False, reads=True):
        sock = None
        try:
            if reads:
                sock = socket.create_connection((self.host, port), timeout=timeout)
            else:
                family, kind, proto, _, address = socket.getaddrinfo(
                    self.host, port, type=socket.SOCK_STREAM)[0]
                sock = socket.socket(family, kind, proto)
                # The least receive buffer the kernel grants (socket(7)): a client
                # that never reads fills it, and then the broker's send buffer, sooner.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
                sock.settimeout(timeout)
                sock.connect(address)
        except OSError as error:
            if sock is not None:
                sock.close()
            self._fail(f"cannot connect {name} to {self.host}:{port}: {error}")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = Connection(name, sock, self.transcript, quiet=quiet)
        connection.reads = reads
        return connection

    def _send(self, text, step, deadline, timeout):
        connection = self._connection(step)
        line = substitute(text, self.values)
        mark = getattr(connection, "send_mark", "C>")  # B> when the suite is the broker
        self.transcript.add(f"{connection.name} {mark} {show(line)}", step=self.step_number)
        self._write(connection, line.encode("utf-8") + b"\n", deadline)
        connection.last_sent = (line, time.monotonic())  # for expect_idle_wait

    def _send_raw(self, text, step, deadline, timeout):
        connection = self._connection(step)
        data = substitute(text, self.values)
        mark = getattr(connection, "send_mark", "C>")
        self.transcript.add(f"{connection.name} {mark} {ascii(data)[1:-1]}  (raw, no LF added)",
                            step=self.step_number)
        self._write(connection, _latin1(data), deadline)

    def _send_repeat(self, spec, step, deadline, timeout):
        connection = self._connection(step)
        prefix = substitute(spec.get("prefix", ""), self.values)
        fill = substitute(spec["fill"], self.values)
        suffix = substitute(spec.get("suffix", "\n"), self.values)
        count = int(spec["count"])
        size = len(prefix) + len(fill) * count + len(suffix)
        mark = getattr(connection, "send_mark", "C>")
        self.transcript.add(f"{connection.name} {mark} {ascii(prefix)} + {ascii(fill)} x {count}"
                            f" + {ascii(suffix)}  ({size} bytes)", step=self.step_number)
        self._write(connection, _latin1(prefix) + _latin1(fill) * count + _latin1(suffix),
                    deadline, BLOCKED_AFTER if spec.get("until_blocked") else None)

    def _write(self, connection, data, deadline, blocked_after=None):
        """Send everything while reading what arrives meanwhile.

        Reading while sending matters for long lines: the broker answers
        LINE_TOO_LONG and closes while we are still sending. With
        ``blocked_after`` (seconds), stop without failing once the broker has
        taken nothing for that long.
        """
        view, sent = memoryview(data), 0
        progress = time.monotonic()
        while sent < len(data):
            try:
                sent += connection.sock.send(view[sent:])
                progress = time.monotonic()
                continue
            except BlockingIOError:
                pass
            except OSError as error:
                self.transcript.add(f"{connection.name} -- sending stopped after {sent} of "
                                    f"{len(data)} bytes: {error.strerror or error}")
                return
            if blocked_after is not None and time.monotonic() - progress > blocked_after:
                self.transcript.add(f"{connection.name} -- sending stopped after {sent} of "
                                    f"{len(data)} bytes: the broker took nothing more for "
                                    f"{blocked_after:g} s")
                return
            if time.monotonic() > deadline:
                self._fail(f"the broker did not take {len(data)} bytes on "
                           f"{connection.name}: only {sent} sent")
            self._pump(min(deadline, time.monotonic() + 0.05), writing=connection)

    def _expect(self, pattern, step, deadline, timeout):
        connection = self._connection(step)
        styled = pattern
        if getattr(connection, "port_name", None) == "client":
            styled = self.settings.replies.pattern(pattern)   # --replies
        self._step_note(f"expect on {connection.name}: {styled}"
                        + (f"  (the spec's {pattern}, --replies)" if styled != pattern else ""))
        self._pump(deadline, lambda: connection.lines or not connection.readable)
        expected = [f"expected: {styled}"]
        if expand_references(styled, self.values) != styled:
            expected.append(f"    i.e.: {expand_references(styled, self.values)}")
        if not connection.lines:
            self._fail(f"expect on {connection.name}", *expected,
                       f"received: {self._nothing(connection, timeout)}")
        line = connection.lines.pop(0)
        captured = match_line(styled, line, self.values)
        if captured is None:
            self._fail(f"expect on {connection.name}", *expected, f"received: {show(line)}",
                       *_blanks_hint(line), *self._replies_hint(pattern, styled, line))
        self._capture(captured)

    def _replies_hint(self, pattern, styled, line):
        """A JOB reply or STATUS word in another style than the target's: say how to
        grade it as it is (--replies) rather than fail every case on the spelling."""
        if pattern.startswith("ID ") and line.strip().isdigit() and styled != line:
            return [f"hint: the broker answers JOB with a bare number; if that is its "
                    f"design (the assignment's text does so), run with --replies "
                    f"TARGET:assignment"]
        if pattern == "completed" and line.strip() == "complete":
            return ["hint: the broker names the state 'complete' (the assignment's word); "
                    "run with --replies TARGET:assignment"]
        return []

    def _nothing(self, connection, timeout):
        if connection.closed_by_peer:
            left = f" after unterminated data {bytes(connection.buffer)!r}" if connection.buffer else ""
            return f"connection closed ({connection.closed_by_peer}){left}"
        if connection.closed_by_us:
            return "nothing: we closed this connection earlier"
        return f"nothing within {timeout:.1f} s"

    def _capture(self, captured):
        for name, value in captured.items():
            self.values[name] = value
            self.transcript.add(f"   {name} = {show(value)}")

    def _expect_closed(self, value, step, deadline, timeout):
        connection = self._connection(step)
        self._step_note(f"expect {connection.name} closed by the "
                        f"{'worker' if self.listener else 'broker'}")
        self._pump(deadline, lambda: connection.lines or not connection.readable)
        if connection.lines:
            self._fail(f"expect {connection.name} closed", "expected: connection closed",
                       f"received: {show(connection.lines[0])}")
        if connection.closed_by_peer and connection.buffer:
            self._fail(f"expect {connection.name} closed", "expected: connection closed",
                       f"received: unterminated data {bytes(connection.buffer)!r}")
        if not connection.closed_by_peer:
            self._fail(f"expect {connection.name} closed", "expected: connection closed",
                       f"received: {self._nothing(connection, timeout)} "
                       f"(still open after {timeout:.1f} s)")

    def _close(self, name, step, deadline, timeout):
        connection = self._connection({"conn": name})
        self._step_note(f"close {name}")
        connection.close()

    def _shutdown_write(self, name, step, deadline, timeout):
        connection = self._connection({"conn": name})
        self._step_note(f"half-close {name} (send EOF, keep reading)")
        try:
            connection.sock.shutdown(socket.SHUT_WR)
        except OSError as error:
            self.transcript.add(f"{name} -- shutdown failed: {error}")

    def _wait_state(self, spec, step, deadline, timeout):
        job_id = substitute(spec["id"], self.values)
        state = self.settings.replies.state(str(spec["state"]))   # --replies
        self.status_polls += 1
        # Its own connection, named so that no exchange can use the name.
        name = f"#status{self.status_polls}"
        others = sum(1 for other in self.connections.values()
                     if not other.closed_by_us and not other.closed_by_peer)
        where = (f"a new client connection, {name}, opened while {others} other "
                 f"connection{'s stay' if others != 1 else ' stays'} open"
                 if others else f"a new client connection, {name}")
        self._step_note(f"poll STATUS {job_id} until {state}, on {where}")
        connection = self._open(name, self.client_port, timeout, quiet=True)
        self.connections[name] = connection
        polls, last_answer = 0, None
        try:
            while True:
                polls += 1
                self._write(connection, f"STATUS {job_id}\n".encode(), deadline)
                self._pump(deadline, lambda: connection.lines or not connection.readable)
                if not connection.lines:
                    so_far = (f"no answer to the first STATUS on {where}" if last_answer is None
                              else f"last answer: {show(last_answer)}, {polls} polls")
                    self._fail(f"poll STATUS {job_id} until {state}",
                               f"expected: {state}",
                               f"received: {self._nothing(connection, timeout)} ({so_far})")
                answer = connection.lines.pop(0)
                if answer != last_answer:
                    self.transcript.add(f"{name} C> STATUS {job_id}")
                    self.transcript.add(f"{name} S< {show(answer)}  (poll {polls})")
                    last_answer = answer
                if answer == state:
                    return
                if time.monotonic() + POLL_INTERVAL > deadline:
                    self._fail(f"poll STATUS {job_id} until {state}",
                               f"expected: {state}",
                               f"received: {show(answer)} for {timeout:.1f} s ({polls} polls)",
                               *self._replies_hint(str(spec["state"]), state, answer))
                self._pump(time.monotonic() + POLL_INTERVAL)
        finally:
            connection.close()
            del self.connections[name]

    def _pause_broker(self, value, step, deadline, timeout):
        if self.broker is None:
            raise SpecError(f"step {self.step_number}: pause_broker needs a broker the suite "
                            "started (not the worker role, not --broker-addr)")
        # Settled first: stopped in its wait for events, the broker reads what the
        # next steps send in the order it arrives (Target.pause says why not otherwise).
        settled = self.broker.pause(settle=True)
        self.broker_paused = True
        self._step_note("-- broker paused (SIGSTOP): what is sent now waits in its socket "
                        "buffers until it resumes"
                        + ("" if settled else
                           f"; it was still busy after {PAUSE_TIMEOUT:.0f} s, so it may read "
                           "what was ready before the pause first"))

    def _resume_broker(self, value, step, deadline, timeout):
        if not self.broker_paused:
            raise SpecError(f"step {self.step_number}: resume_broker without pause_broker")
        self.broker.resume()
        self.broker_paused = False
        self._step_note("-- broker resumed (SIGCONT): it reads everything sent meanwhile at once")

    def _start_worker(self, name, step, deadline, timeout):
        if name in self.workers:
            raise SpecError(f"worker {name!r} started twice")
        template = self.settings.worker_cmd
        if self.settings.helper_worker and self.exchange.get("helper_worker", "core") == "core":
            template += HELPER_CORE_OPTIONS
        command = self._fill(
            "worker", template,
            broker=f"{self.host}:{self.worker_port}", worker_port=self.worker_port,
            client_port=self.client_port, output_port=self.multicast.port,
            syslog_port=self.syslog.port)
        worker = self.workers[name] = Target(f"worker {name}", command, self.settings.cwd)
        self._step_note(f"start worker {name} (pid {worker.pid}): {command}")

    def _stop_worker(self, name, step, deadline, timeout):
        worker = self.workers.get(name)
        if worker is None:
            raise SpecError(f"stop_worker: no worker named {name!r}")
        self._step_note(f"stop worker {name} (SIGTERM)")
        stopped = worker.terminate()
        self.transcript.add(f"-- worker {name} {worker.stop_note}")
        if not stopped:
            self._fail(f"worker {name} did not exit within 2 s of SIGTERM")
        if "exit_status" in step and worker.returncode != step["exit_status"]:
            self._fail(f"worker {name} exited with status {worker.returncode} after SIGTERM, "
                       f"expected {step['exit_status']}")

    def _expect_words(self, items, step, deadline, timeout):
        words = []
        for item in items:
            if isinstance(item, dict):                     # {repeat: WORD, count: N}
                words += [substitute(item["repeat"], self.values)] * item["count"]
            else:
                words.append(substitute(item, self.values))
        shown = collapse_repeats(words)                    # as a person reads them
        sender = step.get("from")
        if sender is not None and sender not in self.workers:
            raise SpecError(f"expect_words from {sender!r}: no such worker")
        self._step_note("expect words " + " ".join(shown) +
                        (f" from worker {sender}" if sender else ""))
        wanted = [word.encode("utf-8") + b"\n" for word in words]
        strict = "job" in step  # all of a job's words: nothing before them either
        found = self._pump(deadline, lambda: self._find_words(wanted, sender, strict))
        if not found:
            received = self._received_words(sender)
            defects = self._word_defects(words, step, sender)  # capture.py
            self._fail("expect words" + (f": {defects[0]}" if defects else ""), *defects,
                       "expected: " + " ".join(shown) +
                       (f"  (from worker {sender})" if sender else "  (from one source)"),
                       *(received or [f"received: no datagram within {timeout:.1f} s"]))
        self._check_datagrams(words, step, sender)  # capture.py: destination, TTL, spacing

    def _find_words(self, wanted, sender, strict=False):
        """Find ``wanted`` as a run of one source's datagrams not yet matched
        (``strict``: right after the ones matched before)."""
        for source, payloads in self._datagrams_by_source().items():
            if sender is not None and self._owner_of(source[1]) != sender:
                continue
            start = self.multicast_cursor.get(source, 0)
            stop = start + 1 if strict else len(payloads) - len(wanted) + 1
            for index in range(start, stop):
                if payloads[index:index + len(wanted)] == wanted:
                    self.multicast_cursor[source] = index + len(wanted)
                    self.last_match = (source, index)
                    return True
        return False

    def _datagrams_by_source(self):
        sources = {}
        for datagram in self.multicast.datagrams:
            sources.setdefault(datagram.source, []).append(datagram.payload)
        return sources

    def _received_words(self, sender):
        lines = []
        for source, payloads in self._datagrams_by_source().items():
            owner = self._owner_of(source[1])
            if sender is None or owner == sender:
                words = [show(self.multicast.text(p)) for p in
                         payloads[self.multicast_cursor.get(source, 0):]]
                lines.append(f"received from {owner or '%s:%d' % source}: "
                             + " ".join(collapse_repeats(words)))
        return lines

    def _expect_syslog(self, pattern, step, deadline, timeout):
        self._step_note(f"expect syslog: {pattern}")

        found = []

        def matched():
            while self.syslog_cursor < len(self.syslog.datagrams):
                datagram = self.syslog.datagrams[self.syslog_cursor]
                self.syslog_cursor += 1
                captured = match_line(pattern, self.syslog.text(datagram.payload), self.values)
                if captured is not None:
                    self._capture(captured)
                    found.append(datagram)
                    return True
            return False

        if not self._pump(deadline, matched):
            self._fail("expect syslog", f"expected: {pattern}",
                       f"received: no matching syslog message within {timeout:.1f} s "
                       f"({len(self.syslog.datagrams)} syslog messages in all)")
        limit = step.get("max_bytes")
        if limit is not None:
            size = len(found[0].payload)
            self.transcript.add(f"   the datagram has {size} bytes (at most {limit})")
            if size > int(limit):
                self._fail(f"syslog datagram of {size} bytes, expected at most {limit}",
                           f"expected: {pattern}, in a datagram of at most {limit} bytes",
                           f"received: {size} bytes")

    # -- waiting -------------------------------------------------------------

    def _pump(self, deadline, ready=lambda: False, writing=None):
        """Read whatever arrives until ``ready()`` or the deadline; return ready().

        Every socket is read, not only the one a step waits on, so the
        transcript shows each line and datagram when it arrived.
        """
        while True:
            if ready():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            readers = [c for c in self.connections.values() if c.readable]
            readers += [r for r in (self.multicast, self.syslog, *self.extra_readers) if r]
            writers = [writing.sock] if writing and not writing.closed_by_us else []
            by_socket = {r.sock: r for r in readers}
            readable, writable, _ = select.select(list(by_socket), writers, [],
                                                  min(remaining, 0.1))
            for sock in readable:
                by_socket[sock].on_readable()
            if writable:
                return ready()
            self._note_exits()

    def _note_exits(self):
        for target in self.targets():
            if target.returncode is not None and not getattr(target, "exit_noted", False):
                target.exit_noted = True
                if not target.stop_note:
                    self.transcript.add(f"-- {target.label} exited with code {target.returncode}")

    def _owner_of(self, port):
        if port not in self.source_owner:
            for name, worker in self.workers.items():
                if worker.returncode is None and port in udp_ports_of_process_tree(worker.pid):
                    self.source_owner[port] = name
                    break
            else:
                return None  # not (yet) traced; try again with the next datagram
        return self.source_owner[port]


def _latin1(text):
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError as error:
        raise SpecError(f"raw text must be latin-1 (one byte per character): {error}")
