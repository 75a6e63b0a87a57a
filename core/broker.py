"""The broker's protocol logic, sans I/O: bytes of a connection in, reply bytes out.

A shell (select loop, threads) owns the sockets and the clock. For every
connection it calls ``open`` once, ``receive`` with each chunk read,
``end_of_input`` when the peer stops sending, and ``close`` when the socket is
gone. ``receive`` answers every complete line of the chunk at once and returns
the replies joined, so the shell writes them with one ``send``. After
``conn.closing`` is set the shell flushes what it has and closes the
connection.

Some replies go to another connection than the one that spoke: a JOB wakes a
worker whose ``FETCH <seconds>`` is waiting, a timer answers it ``NOJOB``.
Those are appended to ``deliveries`` as ``(conn, bytes)``; the shell sends and
clears them after each call. It calls ``tick(now)`` once ``next_deadline()``
has passed.

With a ``store`` (durable jobs), every new job and completion is handed to it;
the shell commits the store before it sends the replies of a batch, so an
``ID`` or ``OK`` is never seen before it is on disk.

Jobs live in compact structures indexed by id (ids are dense, from 1): a list
of texts and a bytearray of states, so STATUS, FETCH and DONE are O(1) and a
million waiting jobs cost little more than their texts.
"""

import hmac
import heapq
from collections import deque

from .framing import DEFAULT_MAX_LINE, LineFramer
from .grammar import WAIT_SECONDS_BYTES
from .messages import RequestError, chunk_is_plain, err, line_is_plain, parse_job_id, parse_request

__all__ = ["BrokerCore", "Connection", "CLIENT", "WORKER",
           "WAITING", "RUNNING", "COMPLETED", "TRANSITIONS"]

CLIENT = "client"
WORKER = "worker"

# Job states, one byte each in BrokerCore.states (0: id not issued).
WAITING, RUNNING, COMPLETED = 1, 2, 3
STATE_NAMES = {WAITING: b"waiting\n", RUNNING: b"running\n", COMPLETED: b"completed\n"}

# The job state table of spec/protocol.yaml (transitions:). Every change of a
# job's state goes through _move, so no other change can happen.
TRANSITIONS = {
    (WAITING, "fetch"): RUNNING,
    (RUNNING, "done"): COMPLETED,
    (RUNNING, "holder lost"): WAITING,
}

_CLIENT_COMMANDS = {b"JOB", b"STATUS", b"STATS", b"AUTH"}
_WORKER_COMMANDS = {b"FETCH", b"DONE", b"STATS", b"AUTH"}
_PORT_COMMANDS = {CLIENT: _CLIENT_COMMANDS, WORKER: _WORKER_COMMANDS}

_UNKNOWN = b"unknown\n"
_NOJOB = b"NOJOB\n"
_OK = b"OK\n"

DEFAULT_MAX_WAITING = 1_000_000
DEFAULT_IDLE_TIMEOUT = 60.0
MAX_FETCH_WAIT = 3600.0
# Lines a connection may send while its FETCH <seconds> waits; they are
# answered in order once it ends. Past this the peer is not a worker.
MAX_BACKLOG = 1024
SWEEP_INTERVAL = 1.0


class Connection:
    """Per-connection protocol state: its port, its line framer, the jobs it holds."""

    __slots__ = ("port", "framer", "held", "closing", "handlers", "authenticated",
                 "waiting_fetch", "backlog", "partial_since", "io")

    def __init__(self, port, max_line, handlers, authenticated):
        self.port = port
        self.framer = LineFramer(max_line)
        self.held = set()
        self.closing = False
        self.handlers = handlers
        self.authenticated = authenticated
        self.waiting_fetch = None    # deadline of a FETCH <seconds> not yet answered
        self.backlog = None          # lines received while it waits
        self.partial_since = None    # when an unfinished line started (idle timeout)
        self.io = None               # the shell's object for this connection

    def __repr__(self):
        return f"<Connection {self.port} holding {sorted(self.held)}>"


class BrokerCore:
    def __init__(self, max_line=DEFAULT_MAX_LINE, max_waiting=DEFAULT_MAX_WAITING,
                 idle_timeout=DEFAULT_IDLE_TIMEOUT, token=None, store=None):
        self.max_line = max_line
        self.max_waiting = max_waiting
        self.idle_timeout = idle_timeout
        self.token = token.encode() if isinstance(token, str) else token
        self.store = store
        self.deliveries = []           # (conn, bytes) for connections other than the caller
        self.fetchers = deque()        # connections whose FETCH <seconds> waits, oldest first
        self._timers = []              # heap of (deadline, seq, conn) for those FETCHes
        self._timer_seq = 0
        self._partial = set()          # connections holding an unfinished line
        self._next_sweep = 0.0
        self.texts = [None]            # texts[id]: job text (bytes) until completed
        self.states = bytearray(1)     # states[id]: WAITING / RUNNING / COMPLETED
        self.waiting = deque()         # ids in the order FETCH hands them out
        self.holders = {}              # running id -> Connection holding it
        self.completed = 0
        self.open_connections = {CLIENT: 0, WORKER: 0}
        self._handlers = {
            CLIENT: {b"JOB": self._job, b"STATUS": self._status, b"STATS": self._stats,
                     b"AUTH": self._auth},
            WORKER: {b"FETCH": self._fetch, b"DONE": self._done, b"STATS": self._stats,
                     b"AUTH": self._auth},
        }

    # -- connection lifecycle -------------------------------------------------

    def open(self, port):
        self.open_connections[port] += 1
        return Connection(port, self.max_line, self._handlers[port], self.token is None)

    def restore(self, next_id, waiting, completed):
        """Start from a store's contents: ``waiting`` (id, text) pairs in id order,
        ``completed`` ids; ids continue from ``next_id``."""
        self.texts = [None] * next_id
        self.states = bytearray(next_id)
        for job_id in completed:
            self.states[job_id] = COMPLETED
        for job_id, text in waiting:
            self.texts[job_id] = text
            self.states[job_id] = WAITING
            self.waiting.append(job_id)
        self.completed = len(completed)

    def receive(self, conn, data, now=0.0):
        """Answer every complete line in ``data``; return the replies joined."""
        framer = conn.framer
        if conn.waiting_fetch is None and conn.partial_since is None:
            # Fast path for the commonest read: one whole request, nothing pending.
            line = framer.single_line(data)
            if line is not None:
                reply = self._answer(conn, line, now, line_is_plain(line))
                return b"" if reply is None else reply       # None: a FETCH <seconds> waits
        # A line continued from an earlier read was not in this check.
        checked = not framer.has_partial() and chunk_is_plain(data)
        lines = framer.feed(data)
        if conn.waiting_fetch is not None:
            replies = self._hold(conn, lines)
        else:
            replies = []
            answer = self._answer
            for index, line in enumerate(lines):
                reply = answer(conn, line, now, checked)
                if reply is None:                        # a FETCH <seconds> waits
                    replies.extend(self._hold(conn, lines[index + 1:]))
                    break
                replies.append(reply)
                if conn.closing:                         # AUTH failed: ignore the rest
                    break
        if framer.too_long:
            replies.append(err("LINE_TOO_LONG", f"line longer than {self.max_line} bytes"))
            conn.closing = True
        elif framer.has_partial():
            if conn.partial_since is None:
                conn.partial_since = now
                self._partial.add(conn)
        elif conn.partial_since is not None:
            conn.partial_since = None
            self._partial.discard(conn)
        return b"".join(replies)

    def end_of_input(self, conn, now=0.0):
        """The peer will send nothing more: answer an unterminated last line."""
        if conn.closing:          # already answered its last (ERR IDLE_TIMEOUT, AUTH_FAILED...)
            return b""
        partial = conn.framer.take_partial()
        reply = self.receive(conn, partial + b"\n", now) if partial else b""
        conn.closing = True
        return reply

    def close(self, conn, now=0.0):
        """The connection is gone: the jobs it held go back to the head of the queue."""
        self.open_connections[conn.port] -= 1
        conn.closing = True
        conn.waiting_fetch = None           # its entries in fetchers/_timers are skipped
        self._partial.discard(conn)
        if conn.held:
            for job_id in sorted(conn.held, reverse=True):
                self._move(job_id, "holder lost")
                del self.holders[job_id]
                self.waiting.appendleft(job_id)
            conn.held.clear()
            self._hand_out(now)

    # -- timers -------------------------------------------------------------------

    def next_deadline(self):
        """When tick() has something to do: a FETCH wait ends, an idle line times out."""
        timers = self._timers
        while timers and timers[0][2].waiting_fetch != timers[0][0]:
            heapq.heappop(timers)             # answered or closed since
        deadline = timers[0][0] if timers else None
        if self._partial:
            # Unfinished lines are swept once a second, not tracked one by one.
            deadline = self._next_sweep if deadline is None else min(deadline, self._next_sweep)
        return deadline

    def tick(self, now):
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, _, conn = heapq.heappop(timers)
            if conn.waiting_fetch == deadline:
                self._end_wait(conn, _NOJOB, now)
        if not self._partial or now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_INTERVAL
        for conn in [c for c in self._partial if c.partial_since + self.idle_timeout <= now]:
            self._partial.discard(conn)
            conn.partial_since = None
            conn.closing = True
            conn.framer.take_partial()      # never answered: it timed out
            self.deliveries.append((conn, err(
                "IDLE_TIMEOUT", f"no end of line within {self.idle_timeout:g} s")))

    # -- requests ---------------------------------------------------------------

    def _answer(self, conn, line, now, checked=False):
        if conn.waiting_fetch is not None:
            return None          # marks where _hold takes over (see receive)
        try:
            if checked and conn.authenticated:
                # Fast path of parse_request for a line known to be plain.
                parts = line.split(None, 1)
                if parts:
                    command = parts[0].upper()
                    handler = conn.handlers.get(command)
                    if handler is not None:
                        return handler(conn, parts[1].rstrip() if len(parts) == 2 else b"", now)
            request = parse_request(line, checked)
            if not conn.authenticated:
                return self._authenticate(conn, request)
            handler = conn.handlers.get(request.command)
            if handler is None:
                raise self._not_here(conn.port, request.command)
            return handler(conn, request.arg, now)
        except RequestError as error:
            return error.reply

    def _authenticate(self, conn, request):
        conn.closing = True      # unless the token is right
        if request.command != b"AUTH":
            return err("AUTH_REQUIRED", "send AUTH <token> first")
        if not hmac.compare_digest(request.arg, self.token):
            return err("AUTH_FAILED", "wrong token")
        conn.closing = False
        conn.authenticated = True
        return _OK

    def _auth(self, conn, arg, now):
        if self.token is not None and not hmac.compare_digest(arg, self.token):
            conn.closing = True
            return err("AUTH_FAILED", "wrong token")
        return _OK

    def _hold(self, conn, lines):
        """Keep lines that arrive while a FETCH waits; they are answered after it."""
        if conn.backlog is None:
            conn.backlog = []
        conn.backlog.extend(lines)
        if len(conn.backlog) > MAX_BACKLOG:
            conn.closing = True
            conn.waiting_fetch = None
            return [err("BACKLOG_FULL", f"more than {MAX_BACKLOG} lines sent while a FETCH waits")]
        return []

    def _end_wait(self, conn, reply, now):
        """Answer a waiting FETCH, then the lines held behind it."""
        conn.waiting_fetch = None
        backlog, conn.backlog = conn.backlog, None
        replies = [reply]
        for index, line in enumerate(backlog or ()):
            reply = self._answer(conn, line, now)
            if reply is None:                     # another FETCH <seconds> waits
                conn.backlog = backlog[index + 1:]
                break
            replies.append(reply)
        self.deliveries.append((conn, b"".join(replies)))

    @staticmethod
    def _not_here(port, command):
        shown = command.decode(errors="replace")[:40]
        for other, commands in _PORT_COMMANDS.items():
            if other != port and command in commands:
                return RequestError("WRONG_PORT", f"{shown} is a {other} command; this is the {port} port")
        return RequestError("UNKNOWN_COMMAND", f"unknown command {shown!r}")

    def _job(self, conn, text, now):
        waiting, texts = self.waiting, self.texts
        if not text:
            raise RequestError("EMPTY_JOB", "job text is empty")
        if len(waiting) >= self.max_waiting:
            raise RequestError("QUEUE_FULL", f"queue full: {self.max_waiting} jobs waiting")
        job_id = len(texts)
        texts.append(text)
        self.states.append(WAITING)
        waiting.append(job_id)
        if self.store is not None:
            self.store.add(job_id, text)
        if self.fetchers:
            self._hand_out(now)
        return b"ID %d\n" % job_id

    def _hand_out(self, now):
        """Give waiting jobs to workers whose FETCH <seconds> is waiting, oldest first."""
        fetchers = self.fetchers
        while fetchers and self.waiting:
            conn = fetchers.popleft()
            if conn.waiting_fetch is not None:
                self._end_wait(conn, self._take_next(conn), now)

    def _status(self, conn, arg, now):
        job_id = parse_job_id(arg)
        if job_id >= len(self.states):
            return _UNKNOWN
        return STATE_NAMES.get(self.states[job_id], _UNKNOWN)

    def _fetch(self, conn, arg, now):
        if self.waiting:
            if arg:
                _fetch_wait(arg)          # still reject a bad argument
            return self._take_next(conn)
        if not arg:
            return _NOJOB
        seconds = _fetch_wait(arg)
        if seconds == 0:
            return _NOJOB
        deadline = now + seconds
        conn.waiting_fetch = deadline
        self.fetchers.append(conn)
        self._timer_seq += 1
        heapq.heappush(self._timers, (deadline, self._timer_seq, conn))
        return None

    def _take_next(self, conn):
        job_id = self.waiting.popleft()
        self._move(job_id, "fetch")
        self.holders[job_id] = conn
        conn.held.add(job_id)
        return b"JOB %d %s\n" % (job_id, self.texts[job_id])

    def _done(self, conn, arg, now):
        job_id = parse_job_id(arg)
        if job_id >= len(self.states) or not self.states[job_id]:
            raise RequestError("UNKNOWN_JOB", f"no job {job_id}")
        holder = self.holders.get(job_id)
        if holder is None:
            raise RequestError("NOT_RUNNING", f"job {job_id} is not running")
        if holder is not conn:
            raise RequestError("NOT_HOLDER", f"job {job_id} is held by another worker")
        self._move(job_id, "done")
        del self.holders[job_id]
        conn.held.discard(job_id)
        self.texts[job_id] = None
        self.completed += 1
        if self.store is not None:
            self.store.complete(job_id)
        return _OK

    def _stats(self, conn, arg, now):
        if arg:
            raise RequestError("BAD_ARGUMENT", "STATS takes no argument")
        return b"STATS waiting=%d running=%d completed=%d clients=%d workers=%d\n" % (
            len(self.waiting), len(self.holders), self.completed,
            self.open_connections[CLIENT], self.open_connections[WORKER])

    def _move(self, job_id, event):
        self.states[job_id] = TRANSITIONS[self.states[job_id], event]


def _fetch_wait(arg):
    """Seconds of FETCH <seconds> (bytes): the grammar's wait_seconds, a decimal
    number from 0 to MAX_FETCH_WAIT. Returns a float; raises RequestError
    BAD_ARGUMENT. float() alone would also take 0_1, 1e1, inf and nan."""
    # Whole seconds ("FETCH 10", what workers send) skip the regex: bytes.isdigit()
    # is ASCII-only, so those are wait_seconds too.
    if arg.isdigit() or WAIT_SECONDS_BYTES.fullmatch(arg) is not None:
        seconds = float(arg)
        if seconds <= MAX_FETCH_WAIT:
            return seconds
    raise RequestError("BAD_ARGUMENT", "FETCH takes nothing or seconds to wait, a decimal "
                                       f"number from 0 to {MAX_FETCH_WAIT:g}")
