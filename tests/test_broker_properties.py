"""Property tests: random request sequences against a running broker, checked
against a small model of the spec written here (it does not import core/).

Each broker (select, threads) runs once per module; every hypothesis example
opens fresh connections: a client ``c``, two workers ``w1`` ``w2``, and a
control client that only asks STATS to wait for the broker to count
connections opened or closed. An example starts from a known state: every
job left by earlier examples is fetched and completed, so every id below the
first one of this example is ``completed``.

Actions: lines sent on one connection (one to three per write), where a
line is a command of either port in random case with a random argument (job
texts with inner spaces, tabs and non-ASCII; known, unknown and malformed
ids), an empty or blank line, random bytes, a line with a bare CR, a control
character or invalid UTF-8 spliced in, or a line over the limit (ended by
LF or endless); and reconnecting a connection (its jobs go back). Every reply
is compared with the model's: FIFO waiting queue, running jobs held by one
connection, completed; requeue at the head in id order; long-poll FETCH
<seconds> waiting until a JOB arrives; STATS counts. After each example a new
connection must still get ``ID n`` with the id the model expects.

Where the spec leaves a choice open the model accepts each reading: a line
both invalid UTF-8 and holding a control character (BAD_CHAR or
BAD_ENCODING). The spec's grammar decides the rest: a forbidden_char (C0 but
TAB, DEL, C1 such as U+0085 and U+009B) gets BAD_CHAR, an id is 1 to 18 ASCII
digits (more, or other scripts' digits, get BAD_ID), a FETCH wait is a plain
decimal number (0_1, 1e1, inf, 5. get BAD_ARGUMENT), and only SP and HTAB
separate (texts carry U+00A0, U+2028, U+3000 as ordinary characters). FETCH
with random bytes as its argument is not generated (its waits are generated
apart). The broker runs without a token, so AUTH <anything> is OK.
"""

import contextlib
import re
import socket
import time
from collections import deque
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st

from tests.support import IMPLS, Broker

MAX_LINE = 200
READ_TIMEOUT = 10.0
SYNC_TIMEOUT = 10.0

CLIENT_COMMANDS = {b"JOB", b"STATUS", b"STATS", b"AUTH", b"KICK"}
WORKER_COMMANDS = {b"FETCH", b"DONE", b"STATS", b"AUTH", b"TOUCH"}
PORT_COMMANDS = {"client": CLIENT_COMMANDS, "worker": WORKER_COMMANDS}
CONN_PORTS = {"c": "client", "w1": "worker", "w2": "worker"}
# The spec's forbidden_char in UTF-8: C0 but TAB, DEL, and C1 (C2 80 .. C2 9F).
CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]|\xc2[\x80-\x9f]")
ID_ARG = re.compile(rb"[0-9]{1,18}")       # the spec's job_id
FETCH_ARGS = [b"", b"", b"", b"0", b"0.0", b"60", b"600", b"3600", b"3601", b"soon please",
              b"-1", b"abc", b"1 2", b".5x", b"0_1", b"3_600", b"1e1", b"inf", b"nan", b"5.",
              b".5", b"+1", "\u0663".encode(), "\uff16\uff10".encode(), b"600.25", b"0.000"]
# Waits the spec allows (wait_seconds, 0 to 3600); none ends before the test
# wakes it with a JOB.
FETCH_WAITS = {b"60": 60.0, b"600": 600.0, b"3600": 3600.0, b"0": 0.0, b"0.0": 0.0,
               b"600.25": 600.25, b"0.000": 0.0}


# -- the model -------------------------------------------------------------------------

class Err:
    """An expected ``ERR <code> ...`` line; any of ``codes`` will do."""

    def __init__(self, *codes):
        self.codes = codes

    def matches(self, line):
        return any(line == b"ERR " + c.encode() or line.startswith(b"ERR " + c.encode() + b" ")
                   for c in self.codes)

    def __repr__(self):
        return "ERR " + "|".join(self.codes)


CLOSED = "<closed by the broker>"


def _matches(expected, line):
    if isinstance(expected, bytes):
        return line == expected
    return expected.matches(line)


def event(text):
    """hypothesis.event() (see --hypothesis-show-statistics); nothing outside a test."""
    with contextlib.suppress(Exception):   # test_model_sanity runs the model directly
        hypothesis_event(text)


class ConnModel:
    def __init__(self, port):
        self.port = port
        self.waiting_fetch = False
        self.backlog = []
        self.held = set()


class Model:
    """The broker as the spec describes it, for the ids of one example."""

    def __init__(self, first_id, completed):
        self.first_id = first_id          # ids below it: completed before this example
        self.next_id = first_id
        self.texts = {}
        self.state = {}                   # id -> "waiting" / "running" / "completed"
        self.waiting = deque()
        self.holder = {}                  # running id -> connection name
        self.completed = completed
        self.conns = {}                   # name -> ConnModel (open connections)
        self.fetchers = deque()           # names whose FETCH <seconds> waits, oldest first
        self.out = {}                     # name -> expected lines, filled by each step

    def open(self, name, port):
        self.conns[name] = ConnModel(port)

    def counts(self):
        ports = [c.port for c in self.conns.values()]
        return ports.count("client"), ports.count("worker")

    def stats(self):
        clients, workers = self.counts()
        return (b"STATS waiting=%d running=%d completed=%d clients=%d workers=%d"
                % (len(self.waiting), len(self.holder), self.completed, clients, workers))

    def _emit(self, name, line):
        self.out.setdefault(name, []).append(line)

    # what a write does
    def feed(self, name, data):
        """``data`` ends in LF, or in an endless line over the limit."""
        conn = self.conns[name]
        pieces = data.split(b"\n")
        rest = pieces.pop()
        for piece in pieces:
            line = piece[:-1] if piece.endswith(b"\r") else piece
            if len(line) > MAX_LINE:
                return self._too_long(name)
            if conn.waiting_fetch:
                conn.backlog.append(line)
            else:
                self._answer(name, line)
        if len(rest) > MAX_LINE + 1:
            return self._too_long(name)
        assert not rest, "the generator leaves no unfinished line"

    def _too_long(self, name):
        event("a line over the limit closed a connection")
        self._emit(name, Err("LINE_TOO_LONG"))
        self._emit(name, CLOSED)
        self.close(name)

    def close(self, name):
        conn = self.conns.pop(name)
        if name in self.fetchers:
            self.fetchers.remove(name)
        if conn.held:
            event("a closed worker's jobs went back to the queue")
        for job in sorted(conn.held, reverse=True):
            del self.holder[job]
            self.state[job] = "waiting"
            self.waiting.appendleft(job)
        self._hand_out()

    def _hand_out(self):
        while self.fetchers and self.waiting:
            self._end_wait(self.fetchers.popleft())

    def _end_wait(self, name):
        event("a waiting FETCH <seconds> got a job" + (" (lines held behind it)"
                                                     if self.conns[name].backlog else ""))
        conn = self.conns[name]
        conn.waiting_fetch = False
        self._emit(name, self._take(name))
        backlog, conn.backlog = conn.backlog, []
        for index, line in enumerate(backlog):
            self._answer(name, line)
            if conn.waiting_fetch:
                conn.backlog = backlog[index + 1:]
                break

    def _take(self, name):
        job = self.waiting.popleft()
        self.state[job] = "running"
        self.holder[job] = name
        self.conns[name].held.add(job)
        return b"JOB %d %s" % (job, self.texts[job])

    def _answer(self, name, line):
        reply = self._reply(name, line)
        if reply is not None:
            self._emit(name, reply)

    def _reply(self, name, line):
        bad_char = CONTROL.search(line) is not None
        try:
            line.decode("utf-8")
            bad_encoding = False
        except UnicodeDecodeError:
            bad_encoding = True
        if bad_char and bad_encoding:
            return Err("BAD_CHAR", "BAD_ENCODING")
        if bad_char:
            return Err("BAD_CHAR")
        if bad_encoding:
            return Err("BAD_ENCODING")
        body = line.strip(b" \t")
        if not body:
            return Err("EMPTY_LINE")
        word, arg = split_word(body)
        command = word.upper()              # bytes: ASCII letters only
        port = self.conns[name].port
        if command not in PORT_COMMANDS[port]:
            other = "worker" if port == "client" else "client"
            return Err("WRONG_PORT" if command in PORT_COMMANDS[other] else "UNKNOWN_COMMAND")
        return getattr(self, "_" + command.decode().lower())(name, arg)

    def _job(self, name, text):
        if not text:
            return Err("EMPTY_JOB")
        job = self.next_id
        self.next_id += 1
        self.texts[job] = text
        self.state[job] = "waiting"
        self.waiting.append(job)
        reply = b"ID %d" % job
        self._emit(name, reply)          # before any JOB it hands a waiting worker
        self._hand_out()
        return None

    def _state_of(self, job):
        if 1 <= job < self.first_id:
            return "completed"
        return self.state.get(job, "unknown")

    def _status(self, name, arg):
        if not ID_ARG.fullmatch(arg):
            return Err("BAD_ID")
        return self._state_of(int(arg)).encode()

    def _stats(self, name, arg):
        return Err("BAD_ARGUMENT") if arg else StatsOf(self.stats())

    def _auth(self, name, arg):
        return b"OK"             # the broker runs without a token: AUTH <anything> is OK

    def _fetch(self, name, arg):
        if arg and arg not in FETCH_WAITS:
            return Err("BAD_ARGUMENT")
        if self.waiting:
            return self._take(name)
        if not arg or FETCH_WAITS[arg] == 0:
            return b"NOJOB"
        conn = self.conns[name]
        conn.waiting_fetch = True
        self.fetchers.append(name)
        return None

    def _touch(self, name, arg):
        """TOUCH: the broker runs with a lease longer than the test, so only the
        holder checks of DONE apply (spec leases)."""
        if not ID_ARG.fullmatch(arg):
            return Err("BAD_ID")
        job = int(arg)
        state = self._state_of(job)
        if state == "unknown":
            return Err("UNKNOWN_JOB")
        if state != "running":
            return Err("NOT_RUNNING")
        return b"OK" if self.holder[job] == name else Err("NOT_HOLDER")

    def _kick(self, name, arg):
        """KICK: no job is ever buried here (the delivery limit is out of reach)."""
        if not ID_ARG.fullmatch(arg):
            return Err("BAD_ID")
        return Err("UNKNOWN_JOB" if self._state_of(int(arg)) == "unknown" else "NOT_BURIED")

    def _done(self, name, arg):
        if not ID_ARG.fullmatch(arg):
            return Err("BAD_ID")
        job = int(arg)
        state = self._state_of(job)
        if state == "unknown":
            reply = Err("UNKNOWN_JOB")
        elif state != "running":
            reply = Err("NOT_RUNNING")
        elif self.holder[job] != name:
            reply = Err("NOT_HOLDER")
        else:
            event("DONE completed a job")
            del self.holder[job]
            self.conns[name].held.discard(job)
            self.state[job] = "completed"
            self.texts.pop(job)
            self.completed += 1
            return b"OK"
        return reply


class StatsOf:
    """The STATS line: these five counts first; more key=value pairs may follow."""

    def __init__(self, line):
        self.line = line

    def matches(self, line):
        return line == self.line or line.startswith(self.line + b" ")

    def __repr__(self):
        return repr(self.line)


def split_word(body):
    """First word and the rest (spaces and tabs around it removed)."""
    match = re.match(rb"([^ \t]+)[ \t]*(.*)", body, re.DOTALL)
    return match[1], match[2].rstrip(b" \t")


# -- the wire ------------------------------------------------------------------------------

class Peer:
    def __init__(self, name, port):
        self.name = name
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()
        self.transcript = []

    def send(self, data):
        self.transcript.append(("C>", data))
        try:
            self.sock.sendall(data)
        except OSError as error:        # it may close on an early overlong line
            self.transcript.append(("!", str(error).encode()))

    def line(self, deadline):
        """The next line (bytes, no LF), or CLOSED."""
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[:end + 1]
                self.transcript.append(("S<", line))
                return line
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: no reply within {READ_TIMEOUT} s; buffered "
                                     f"{bytes(self.buffer)!r}; transcript {self.transcript[-10:]}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionError:
                data = b""
            if not data:
                self.transcript.append(("S<", CLOSED))
                return CLOSED
            self.buffer += data

    def close(self):
        self.sock.close()


class Session:
    """One example's connections, its model, and the checks of each step."""

    def __init__(self, broker):
        self.broker = broker
        self.ports = {"client": broker.client_port, "worker": broker.worker_port}
        self.peers = {}
        self.control = Peer("control", broker.client_port)
        self.peers["control"] = self.control
        self.log = []

    def open(self, name):
        self.peers[name] = Peer(name, self.ports[CONN_PORTS[name]])

    def control_stats(self):
        self.control.send(b"STATS\n")
        line = self.control.line(time.monotonic() + READ_TIMEOUT)
        assert line.startswith(b"STATS "), f"control STATS: got {line!r}"
        return dict(pair.split(b"=", 1) for pair in line.split()[1:])

    def wait_counts(self, clients, workers):
        """Ask STATS on the control connection until the broker counts these
        connections (the control one included): opens and closes are asynchronous."""
        deadline = time.monotonic() + SYNC_TIMEOUT
        while True:
            stats = self.control_stats()
            if (int(stats[b"clients"]), int(stats[b"workers"])) == (clients, workers):
                return stats
            assert time.monotonic() < deadline, (
                f"broker never counted {clients} clients and {workers} workers: {stats}; "
                f"steps {self.log[-10:]}")

    def start(self):
        for name in CONN_PORTS:
            self.open(name)
        self.wait_counts(2, 2)
        c, w = self.peers["c"], self.peers["w1"]
        deadline = time.monotonic() + READ_TIMEOUT
        while True:                       # complete whatever earlier examples left
            w.send(b"FETCH\n")
            reply = w.line(deadline)
            if reply == b"NOJOB":
                break
            assert reply.startswith(b"JOB "), f"draining: expected JOB or NOJOB, got {reply!r}"
            w.send(b"DONE %s\n" % reply.split(b" ")[1])
            assert w.line(deadline) == b"OK"
        c.send(b"JOB probe\n")
        reply = c.line(deadline)
        assert re.fullmatch(rb"ID \d+", reply), f"probe JOB: got {reply!r}"
        w.send(b"FETCH\n")
        assert w.line(deadline) == reply.replace(b"ID", b"JOB") + b" probe"
        w.send(b"DONE %s\n" % reply[3:])
        assert w.line(deadline) == b"OK"
        stats = self.wait_counts(2, 2)
        assert (stats[b"waiting"], stats[b"running"]) == (b"0", b"0"), f"after draining: {stats}"
        self.model = Model(int(reply[3:]) + 1, int(stats[b"completed"]))
        self.model.open("control", "client")
        for name, port in CONN_PORTS.items():
            self.model.open(name, port)
        self.check_stats()

    def check_stats(self):
        clients, workers = self.model.counts()
        stats = self.wait_counts(clients, workers)
        line = b"STATS " + b" ".join(b"%s=%s" % kv for kv in stats.items())
        expected = self.model.stats()
        assert StatsOf(expected).matches(line), (
            f"STATS after {self.log[-5:]}: expected {expected!r}, got {line!r}")

    def expect(self):
        """Read every line the model says the last step produced."""
        out, self.model.out = self.model.out, {}
        deadline = time.monotonic() + READ_TIMEOUT
        closed = []
        for name, lines in out.items():
            peer = self.peers[name]
            for expected in lines:
                got = peer.line(deadline)
                if expected is CLOSED:
                    assert got is CLOSED, (f"{name}: expected the broker to close the connection, "
                                           f"got {got!r}; transcript {peer.transcript[-8:]}")
                    closed.append(name)
                    continue
                assert got is not CLOSED and _matches(expected, got), (
                    f"{name}: expected {expected!r}, got {got!r}; transcript "
                    f"{peer.transcript[-8:]}; steps {self.log[-8:]}")
        for name in closed:
            self.peers.pop(name).close()
        if closed:
            self.check_stats()
            for name in closed:
                self.open(name)
                self.model.open(name, CONN_PORTS[name])
            self.check_stats()

    def send(self, name, data):
        self.log.append((name, data[:80]))
        self.peers[name].send(data)
        self.model.feed(name, data)
        self.expect()
        self.wake_fetchers()

    def wake_fetchers(self):
        """End a FETCH <seconds> wait at once with a JOB from the control
        connection. Nothing shows when the broker has taken up a FETCH that
        waits, so a request on another connection could overtake it; the JOB
        cannot: whichever comes first, the waiting worker gets that job and
        then the replies to the lines it sent after the FETCH."""
        while any(conn.waiting_fetch for conn in self.model.conns.values()):
            waiting = [n for n, conn in self.model.conns.items() if conn.waiting_fetch]
            assert len(waiting) == 1, f"more than one FETCH waits: {waiting}"
            self.send("control", b"JOB wake %s\n" % waiting[0].encode())

    def reconnect(self, name):
        self.log.append((name, "reconnect"))
        self.peers.pop(name).close()
        self.model.close(name)
        self.check_stats()               # the broker has counted it out (and requeued)
        self.expect()                    # jobs given back may go to a waiting FETCH
        self.open(name)
        self.model.open(name, CONN_PORTS[name])
        self.check_stats()

    def finish(self):
        """A fresh connection still gets the next id; nothing unexpected is pending."""
        fresh = Peer("fresh", self.ports["client"])
        self.peers["fresh"] = fresh
        self.model.open("fresh", "client")
        self.check_stats()
        self.send("fresh", b"JOB still serving\n")
        for name in list(self.peers):
            self.send(name, b"STATS\n")   # any stray line would come first

    def close(self):
        for peer in self.peers.values():
            peer.close()


# -- strategies ------------------------------------------------------------------------------

def _cased(word):
    return st.sampled_from([word, word.lower(), word.capitalize(), word[:1].lower() + word[1:]])


TEXT = st.text(alphabet=st.one_of(
    st.characters(blacklist_categories=("Cc", "Cs")), st.sampled_from(" \t")), max_size=30)
ID_REF = st.one_of(
    st.tuples(st.just("held"), st.integers(0, 3)),      # a job this connection holds, if any
    st.tuples(st.just("held"), st.integers(0, 3)),
    st.tuples(st.just("known"), st.integers(0, 20)),    # a job of this example
    st.tuples(st.just("new"), st.integers(0, 3)),       # next_id + k: not issued (yet)
    st.tuples(st.just("old"), st.just(0)),               # completed before this example
    st.tuples(st.just("raw"), st.sampled_from(
        [b"", b"0", b"abc", b"-1", b"+1", b"1 2", b"007", b"1.0", b"12345678901234567890123",
         "\u0663".encode(), "\u00b2".encode(), "\uff11".encode(), b"1_0", b"9" * 18,
         b"1" + b"0" * 18])),
)
SEP = st.sampled_from([b" ", b"  ", b"\t", b" \t "])
WORDS = {"client": ["JOB", "JOB", "JOB", "STATUS", "STATS", "KICK"],
         "worker": ["FETCH", "FETCH", "FETCH", "DONE", "DONE", "DONE", "STATS", "TOUCH"],
         "any": ["JOB", "STATUS", "STATS", "FETCH", "DONE", "AUTH", "HELLO", "AUTHX", "Jobs",
                 "TOUCH", "KICK"]}


@st.composite
def command(draw, port="any"):
    """A request line: a command word (mostly one of ``port``'s) in random case."""
    if port != "any" and draw(st.integers(0, 7)) == 0:
        port = "any"
    word = draw(st.sampled_from(WORDS[port]))
    cased = draw(_cased(word)).encode()
    if word == "JOB":
        arg = draw(TEXT).encode()
    elif word in ("STATUS", "DONE"):
        arg = draw(ID_REF)
    elif word == "FETCH":
        arg = draw(st.sampled_from(FETCH_ARGS))
    elif word == "STATS":
        arg = draw(st.sampled_from([b"", b"", b"", b"please"]))
    else:
        arg = draw(TEXT).encode()
    lead = draw(st.sampled_from([b"", b"", b" ", b"\t"]))
    trail = draw(st.sampled_from([b"", b"", b" ", b"\t "]))
    return ("cmd", lead + cased, draw(SEP), arg, trail)


def _plain_garbage(data):
    for line in data.split(b"\n"):
        body = line.rstrip(b"\r").strip(b" \t")
        if body and split_word(body)[0].upper() == b"FETCH":
            return False          # FETCH <random bytes>: waits are generated apart
    return True


SPLICE = st.sampled_from([b"\r", b"\x00", b"\x1b", b"\x7f", b"\x0b", b"\xff", b"\xc3(",
                          b"\xed\xa0\x80", "\x80".encode(), "\x85".encode(), "\x9b".encode(),
                          "\x9f".encode(), "\u00a0".encode(), "\u2028".encode(),
                          "\u3000".encode()])


@st.composite
def line_for(draw, port):
    """Mostly requests; now and then a blank line, random bytes, a spliced-in
    bad byte, or a line over the limit."""
    kind = draw(st.sampled_from(["cmd"] * 24 + ["blank", "garbage", "garbage", "splice",
                                                 "splice", "long"]))
    if kind == "cmd":
        return draw(command(port))
    if kind == "blank":
        return ("raw", draw(st.sampled_from([b"", b" ", b" \t  ", b"\r"])))
    if kind == "garbage":
        return ("raw", draw(st.binary(max_size=40).filter(_plain_garbage)))
    if kind == "splice":
        return ("splice", draw(command(port)), draw(SPLICE), draw(st.integers(0, 60)))
    return ("long", draw(st.integers(1, 3 * MAX_LINE)))


@st.composite
def send_action(draw):
    name = draw(st.sampled_from(list(CONN_PORTS)))
    lines = draw(st.lists(line_for(CONN_PORTS[name]), min_size=1, max_size=3))
    crlf = draw(st.integers(0, 4)) == 0
    endless = draw(st.integers(0, 39)) == 0      # the write ends in an endless line
    return ("send", name, lines, crlf, endless)


@st.composite
def action(draw):
    """Mostly a write; one time in eight a connection closed and opened again."""
    if draw(st.integers(0, 7)) == 0:
        return ("reconnect", draw(st.sampled_from(list(CONN_PORTS))))
    return draw(send_action())


ACTION = action()


def resolve_arg(arg, model, name):
    if isinstance(arg, bytes):
        return arg
    kind, value = arg
    if kind == "raw":
        return value
    conn = model.conns.get(name)
    if kind == "held" and conn is not None and conn.held:
        held = sorted(conn.held)
        return b"%d" % held[value % len(held)]
    if kind in ("known", "held"):
        issued = sorted(model.state)
        return b"%d" % (issued[value % len(issued)] if issued else model.first_id - 1)
    if kind == "new":
        return b"%d" % (model.next_id + value)
    return b"%d" % (model.first_id - 1)


def render(line, model, name):
    kind = line[0]
    if kind == "cmd":
        _, word, sep, arg, trail = line
        arg = resolve_arg(arg, model, name)
        return word + (sep + arg if arg else b"") + trail
    if kind == "raw":
        return line[1]
    if kind == "splice":
        _, cmd, splice, at = line
        text = render(cmd, model, name)
        at = min(at, len(text))
        return text[:at] + splice + text[at:]
    return b"JOB " + b"y" * (MAX_LINE + line[1] - 4)        # "long": over the limit


def run_actions(broker, actions):
    session = Session(broker)
    try:
        session.start()
        for action in actions:
            if action[0] == "reconnect":
                session.reconnect(action[1])
                continue
            _, name, lines, crlf, endless = action
            end = b"\r\n" if crlf else b"\n"
            data = b"".join(render(line, session.model, name) + end for line in lines)
            if endless:
                data += b"JOB " + b"z" * (MAX_LINE + 50)
            session.send(name, data)
        session.finish()
    finally:
        session.close()


# -- the tests -----------------------------------------------------------------------------

@pytest.fixture(scope="module", params=IMPLS, ids=[i.split("_", 1)[1] for i in IMPLS])
def broker(request):
    # Shared by every example: no lease may run out and no job be buried meanwhile.
    broker = Broker(request.param, "--max-line", str(MAX_LINE), "--lease", "86400",
                    "--max-deliveries", str(10**9))
    yield broker
    broker.close()


@settings(max_examples=100, deadline=timedelta(seconds=5), database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(actions=st.lists(ACTION, min_size=10, max_size=40))
def test_random_sequences_match_the_model(broker, actions):
    assert broker.running(), f"the broker exited: {broker.stderr()!r}"
    run_actions(broker, actions)
    assert broker.running(), f"the broker exited: {broker.stderr()!r}"


def test_model_sanity():
    """The model itself, on the spec's own examples (no broker)."""
    model = Model(1, 0)
    for name, port in CONN_PORTS.items():
        model.open(name, port)
    model.feed("c", b"JOB one\nJOB  two  \n")
    model.feed("w1", b"FETCH\nFETCH\n")
    model.close("w1")
    model.feed("w2", b"FETCH\nDONE 1\nDONE 1\n")
    model.feed("c", b"STATUS 1\nSTATUS 2\nSTATUS 3\nstats\n")
    got = {name: [repr(x) if not isinstance(x, bytes) else x for x in lines]
           for name, lines in model.out.items()}
    assert got == {
        "c": [b"ID 1", b"ID 2", b"completed", b"waiting", b"unknown",
              repr(b"STATS waiting=1 running=0 completed=1 clients=1 workers=1")],
        "w1": [b"JOB 1 one", b"JOB 2 two"],
        "w2": [b"JOB 1 one", b"OK", "ERR NOT_RUNNING"],
    }, got
