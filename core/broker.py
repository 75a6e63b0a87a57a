"""The broker's protocol logic, sans I/O: bytes of a connection in, reply bytes out.

A shell (select loop, threads) owns the sockets. For every connection it calls
``open`` once, ``receive`` with each chunk read, ``end_of_input`` when the
peer stops sending, and ``close`` when the socket is gone. ``receive`` answers
every complete line of the chunk at once and returns the replies joined, so
the shell writes them with one ``send``. After ``conn.closing`` is set the
shell flushes what it has and closes the connection.

Jobs live in compact structures indexed by id (ids are dense, from 1): a list
of texts and a bytearray of states, so STATUS, FETCH and DONE are O(1) and a
million waiting jobs cost little more than their texts.
"""

from collections import deque

from .framing import DEFAULT_MAX_LINE, LineFramer
from .messages import RequestError, err, parse_job_id, parse_request

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

_CLIENT_COMMANDS = {b"JOB", b"STATUS", b"STATS"}
_WORKER_COMMANDS = {b"FETCH", b"DONE", b"STATS"}
_PORT_COMMANDS = {CLIENT: _CLIENT_COMMANDS, WORKER: _WORKER_COMMANDS}

_UNKNOWN = b"unknown\n"
_NOJOB = b"NOJOB\n"
_OK = b"OK\n"


class Connection:
    """Per-connection protocol state: its port, its line framer, the jobs it holds."""

    __slots__ = ("port", "framer", "held", "closing", "handlers")

    def __init__(self, port, max_line, handlers):
        self.port = port
        self.framer = LineFramer(max_line)
        self.held = set()
        self.closing = False
        self.handlers = handlers

    def __repr__(self):
        return f"<Connection {self.port} holding {sorted(self.held)}>"


class BrokerCore:
    def __init__(self, max_line=DEFAULT_MAX_LINE):
        self.max_line = max_line
        self.texts = [None]            # texts[id]: job text (bytes) until completed
        self.states = bytearray(1)     # states[id]: WAITING / RUNNING / COMPLETED
        self.waiting = deque()         # ids in the order FETCH hands them out
        self.holders = {}              # running id -> Connection holding it
        self.completed = 0
        self.open_connections = {CLIENT: 0, WORKER: 0}
        self._handlers = {
            CLIENT: {b"JOB": self._job, b"STATUS": self._status, b"STATS": self._stats},
            WORKER: {b"FETCH": self._fetch, b"DONE": self._done, b"STATS": self._stats},
        }

    # -- connection lifecycle -------------------------------------------------

    def open(self, port):
        self.open_connections[port] += 1
        return Connection(port, self.max_line, self._handlers[port])

    def receive(self, conn, data):
        """Answer every complete line in ``data``; return the replies joined."""
        framer = conn.framer
        replies = [self._answer(conn, line) for line in framer.feed(data)]
        if framer.too_long:
            replies.append(err("LINE_TOO_LONG", f"line longer than {self.max_line} bytes"))
            conn.closing = True
        return b"".join(replies)

    def end_of_input(self, conn):
        """The peer will send nothing more: answer an unterminated last line."""
        conn.closing = True
        partial = conn.framer.take_partial()
        return self.receive(conn, partial + b"\n") if partial else b""

    def close(self, conn):
        """The connection is gone: the jobs it held go back to the head of the queue."""
        self.open_connections[conn.port] -= 1
        if conn.held:
            for job_id in sorted(conn.held, reverse=True):
                self._move(job_id, "holder lost")
                del self.holders[job_id]
                self.waiting.appendleft(job_id)
            conn.held.clear()

    # -- requests ---------------------------------------------------------------

    def _answer(self, conn, line):
        try:
            request = parse_request(line)
            handler = conn.handlers.get(request.command)
            if handler is None:
                raise self._not_here(conn.port, request.command)
            return handler(conn, request.arg)
        except RequestError as error:
            return error.reply

    @staticmethod
    def _not_here(port, command):
        shown = command.decode(errors="replace")[:40]
        for other, commands in _PORT_COMMANDS.items():
            if other != port and command in commands:
                return RequestError("WRONG_PORT", f"{shown} is a {other} command; this is the {port} port")
        return RequestError("UNKNOWN_COMMAND", f"unknown command {shown!r}")

    def _job(self, conn, text):
        if not text:
            raise RequestError("EMPTY_JOB", "job text is empty")
        job_id = len(self.texts)
        self.texts.append(text)
        self.states.append(WAITING)
        self.waiting.append(job_id)
        return b"ID %d\n" % job_id

    def _status(self, conn, arg):
        job_id = parse_job_id(arg)
        if job_id >= len(self.states):
            return _UNKNOWN
        return STATE_NAMES.get(self.states[job_id], _UNKNOWN)

    def _fetch(self, conn, arg):
        if arg:
            raise RequestError("BAD_ARGUMENT", "FETCH takes no argument")
        if not self.waiting:
            return _NOJOB
        job_id = self.waiting.popleft()
        self._move(job_id, "fetch")
        self.holders[job_id] = conn
        conn.held.add(job_id)
        return b"JOB %d %s\n" % (job_id, self.texts[job_id])

    def _done(self, conn, arg):
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
        return _OK

    def _stats(self, conn, arg):
        if arg:
            raise RequestError("BAD_ARGUMENT", "STATS takes no argument")
        return b"STATS waiting=%d running=%d completed=%d clients=%d workers=%d\n" % (
            len(self.waiting), len(self.holders), self.completed,
            self.open_connections[CLIENT], self.open_connections[WORKER])

    def _move(self, job_id, event):
        self.states[job_id] = TRANSITIONS[self.states[job_id], event]
