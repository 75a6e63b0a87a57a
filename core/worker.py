"""Worker job logic, sans-I/O: one broker connection ("slot") as a state machine.

The shell owns the socket, the clock and the multicast/syslog outputs. It
feeds a ``WorkerSlot`` what happened (``start``, ``connected``,
``connect_failed``, ``data_received``, ``connection_lost``, ``tick``,
``stop``), always passing ``now`` from a monotonic clock, and carries out the
actions each call returns, in order:

    Connect()        open a connection to the broker, then report the outcome
                     with connected() or connect_failed()
    Close()          close the broker connection (report nothing back)
    Send(data)       write bytes to the broker
    Emit(payload)    send one multicast datagram (a word plus LF)
    Log(message, level)
                     one syslog line; the message may hold any text from the
                     broker (bytes that are not UTF-8 as surrogateescape): the
                     shell sends core.logline.syslog_message(message, ...).
                     ``level`` says whether it also goes to stderr (--log-level):
                     "error" (a connection lost or refused, an ERR from the
                     broker), "info" (connected, a job abandoned, a broker
                     feature missing) or "debug" (the rest: fetching, starting,
                     completed, each further failed connection attempt)

It also calls ``tick(now)`` once ``now >= next_deadline()``.

States and transitions (``TRANSITIONS`` below is the same table, checked on
every change of state):

    state         input                    actions                          next
    ------------  -----------------------  -------------------------------  ------------
    DISCONNECTED  start / tick (retry due)  Connect                          CONNECTING
    CONNECTING    connected                Log connected (*), FETCH         AWAITING_JOB
                  (with a token)           Log connected (*), AUTH          AWAITING_AUTH
    AWAITING_AUTH OK                       (Log connected (*)), FETCH       AWAITING_JOB
    AWAITING_AUTH ERR                      Close, retry after backoff       DISCONNECTED
    CONNECTING    connect_failed / tick    (Close on timeout) Log cannot    DISCONNECTED
                  (connect timeout)        connect; retry after backoff
    AWAITING_JOB  JOB n text               (renewing: Send TOUCH n), Log    STREAMING
                                           starting, Emit first word        (AWAITING_OK)
                                           (no words: Send DONE)
    AWAITING_JOB  NOJOB / ERR              (Log the ERR)                    IDLE_WAIT
                  NOJOB to FETCH <seconds> FETCH <seconds> again at once    AWAITING_JOB
                  (>= 90 % of the wait)
                  NOJOB to FETCH <seconds> (Log once per connection),     IDLE_WAIT
                  (sooner: did not wait)   then as NOJOB
                  ERR to FETCH <seconds>   Log, poll with plain FETCH       IDLE_WAIT
                  tick (no reply in time)  Close, poll from now on          DISCONNECTED
    IDLE_WAIT     tick (fetch interval)    Log fetching, Send FETCH         AWAITING_JOB
    STREAMING     tick (word delay)        Emit next word                   STREAMING
                                           after the last: Send DONE        AWAITING_OK
    STREAMING     tick (renewal due)       Send TOUCH n                     STREAMING
    STREAMING     ERR to TOUCH: the job    Log lost lease, Log abandoned,   AWAITING_JOB
                  is gone (LEASE_EXPIRED,  Log fetching, Send FETCH
                  NOT_HOLDER, NOT_RUNNING)
    connected     OK to TOUCH              nothing                          (same)
    connected     any other reply to TOUCH Log, stop renewing on this       (same)
                  (a broker without TOUCH) connection
    AWAITING_OK   OK / ERR                 Log completed (or the ERR),      AWAITING_JOB
                                           Log fetching, Send FETCH
    connected     connection_lost          Log lost (Log abandoned if       DISCONNECTED
                                           STREAMING); retry after backoff
    connected     bad or unexpected line   Close, then as connection_lost   DISCONNECTED
    any           stop                     (Log abandoned) (Close)          STOPPED

(*) After a connection that was turned away (see Backoff below), "connected"
is said at the broker's first answer instead of at the TCP connect.

"connected" means CONNECTING, AWAITING_AUTH, AWAITING_JOB, IDLE_WAIT,
STREAMING or AWAITING_OK: a socket exists.

Backoff: reconnects wait 1 s, doubling to 8 s (``Backoff``). A TCP connect
alone does not reset it: a connection proves to be a working broker
connection with the broker's first answer (OK to AUTH, or JOB, NOJOB or
ERR to FETCH), and only that resets it. A connection that ends before then
(AUTH refused, a port that is not a workq broker and answers garbage, a
close before any answer) waits the next backoff step, so such a port is
retried 1, 2, 4, 8, 8... s apart, not every second. One the broker turned
away with an answer (AUTH refused, garbage) is said like "cannot connect":
only the first of a row of them reaches stderr at the default level (its
"lost" line; the "connected" of each retry is said only once a retry proves
itself); syslog hears of each.

Long-poll: with ``long_poll`` seconds the slot sends ``FETCH <seconds>`` and
the broker answers as soon as a job arrives, so an idle worker starts a new
job at once instead of up to a fetch interval later. A broker that answers
``ERR`` (a core-only broker) or nothing at all is polled with plain ``FETCH``
every fetch interval from then on. A NOJOB that comes back sooner than 90 %
of the wait asked (a broker that ignores the argument answers at once) is
treated like a NOJOB to plain FETCH: the slot waits the fetch interval, then
asks with FETCH <seconds> again (a broker that holds it next time still
saves the wait; one that never does is asked once per fetch interval, as
when polling). An unsolicited ERR (in IDLE_WAIT or
STREAMING) is logged and changes nothing. A job whose DONE is sent but not
yet answered is not "abandoned": the broker may already have completed it.

Leases (spec ``leases``): with ``renew_interval`` seconds (> 0) the slot sends
``TOUCH n`` as soon as job n arrives, which binds the broker's lease, and
again every ``renew_interval`` while it streams. The replies to TOUCH come in
order with the others, so the first ``_touches_pending`` lines received are
theirs: ``OK`` changes nothing; an ERR saying the job is gone stops the
streaming (another worker has it now: at-least-once); any other answer
(``ERR UNKNOWN_COMMAND``, or the original system's ``ERROR unknown command``)
means the broker has no leases, and the slot stops renewing on that
connection instead of calling it a protocol error.
"""

import enum
from collections import deque
from dataclasses import dataclass

from .framing import DEFAULT_MAX_LINE, LineFramer
from .grammar import format_seconds, split_words
from .messages import parse_reply

__all__ = [
    "State", "TRANSITIONS", "WorkerSlot", "Backoff",
    "Connect", "Close", "Send", "Emit", "Log",
]


# A broker answers FETCH <seconds> by then at the latest; later, it ignored it.
LONG_POLL_GRACE = 5.0
# A NOJOB to FETCH <seconds> counts as "held" (ask again at once) only when it
# came at least this fraction of the wait after the FETCH went out; sooner, the
# broker did not wait (the original system's broker answers FETCH 10 at once)
# and the worker waits the fetch interval as after a plain NOJOB. The worker's
# clock starts before the broker's, so a broker that held the request
# measures less than the worker does, never more: 10 % is left for a broker
# whose timer fires a little early or ticks coarsely. Spec: worker.longpoll.
LONG_POLL_HELD = 0.9
# Seconds between TOUCHes while streaming (spec leases): a fifth of the
# broker's default 10 s lease, so a hung worker's job is free within 10 s
# while three renewals in a row may be lost before a healthy one's is.
DEFAULT_RENEW_INTERVAL = 2.0
# An ERR to TOUCH with one of these codes: the job is no longer ours.
_JOB_GONE = frozenset({"LEASE_EXPIRED", "NOT_HOLDER", "NOT_RUNNING", "UNKNOWN_JOB"})


# --- actions the shell carries out -----------------------------------------

@dataclass(frozen=True)
class Connect:
    """Open a connection to the broker; report back with connected() or connect_failed()."""


@dataclass(frozen=True)
class Close:
    """Close the broker connection; the slot expects nothing more from it."""


@dataclass(frozen=True)
class Send:
    """Bytes for the broker, line terminator included."""
    data: bytes


@dataclass(frozen=True)
class Emit:
    """One multicast datagram: a word of the job plus LF, UTF-8."""
    payload: bytes


@dataclass(frozen=True)
class Log:
    """One syslog message (the shell adds priority and ident). ``level`` is
    what --log-level must be for the shell to print it on stderr as well:
    "error", "info" or "debug" (core.options.LOG_LEVELS)."""
    message: str
    level: str = "debug"


# --- states ------------------------------------------------------------------

class State(enum.Enum):
    DISCONNECTED = "DISCONNECTED"   # no socket; a connect attempt is due at the deadline
    CONNECTING = "CONNECTING"       # Connect issued, outcome not yet reported
    AWAITING_AUTH = "AWAITING_AUTH" # AUTH sent
    AWAITING_JOB = "AWAITING_JOB"   # FETCH sent
    IDLE_WAIT = "IDLE_WAIT"         # NOJOB received; FETCH again at the deadline
    STREAMING = "STREAMING"         # sending words; the next one is due at the deadline
    AWAITING_OK = "AWAITING_OK"     # DONE sent
    STOPPED = "STOPPED"             # final


S = State
_CONNECTED = frozenset({S.CONNECTING, S.AWAITING_AUTH, S.AWAITING_JOB, S.IDLE_WAIT,
                        S.STREAMING, S.AWAITING_OK})

TRANSITIONS = {
    S.DISCONNECTED: {S.CONNECTING, S.STOPPED},
    S.CONNECTING: {S.AWAITING_AUTH, S.AWAITING_JOB, S.DISCONNECTED, S.STOPPED},
    S.AWAITING_AUTH: {S.AWAITING_JOB, S.DISCONNECTED, S.STOPPED},
    S.AWAITING_JOB: {S.AWAITING_JOB, S.STREAMING, S.AWAITING_OK, S.IDLE_WAIT, S.DISCONNECTED,
                     S.STOPPED},
    S.IDLE_WAIT: {S.AWAITING_JOB, S.DISCONNECTED, S.STOPPED},
    S.STREAMING: {S.STREAMING, S.AWAITING_OK, S.AWAITING_JOB, S.DISCONNECTED, S.STOPPED},
    S.AWAITING_OK: {S.AWAITING_JOB, S.DISCONNECTED, S.STOPPED},
    S.STOPPED: set(),
}


class Backoff:
    """Reconnect delays in seconds: ``first``, then doubling up to ``cap``;
    reset() once a connection has proved to be a working broker connection
    (WorkerSlot: the broker's first valid answer), not merely on a TCP connect."""

    def __init__(self, first=1.0, cap=8.0):
        self.first = first
        self.cap = cap
        self._delay = first

    def next_delay(self):
        delay = self._delay
        self._delay = min(delay * 2, self.cap)
        return delay

    def reset(self):
        self._delay = self.first


class WorkerSlot:
    """One broker connection's worker logic. See the module docstring for the table.

    ``broker`` is only a label for log messages ("HOST:PORT"); ``renew_interval``
    seconds between TOUCHes while streaming (0: never renew, as a core worker).
    """

    def __init__(self, broker, *, word_delay=0.25, fetch_interval=0.5, long_poll=0.0,
                 token=None, connect_timeout=5.0, backoff=None, max_line=DEFAULT_MAX_LINE,
                 renew_interval=0.0):
        self.broker = broker
        self.long_poll = long_poll      # seconds of FETCH <seconds>; 0: plain FETCH
        self.token = token              # bytes for AUTH <token>, or None
        self.max_line = max_line
        self.word_delay = word_delay
        self.fetch_interval = fetch_interval
        self.connect_timeout = connect_timeout
        self.backoff = backoff if backoff is not None else Backoff()
        self.state = S.DISCONNECTED
        self.job_id = None          # job being streamed or awaiting OK
        self._words = deque()       # words of that job not yet emitted
        self._deadline = None       # when tick() has something to do
        self._framer = LineFramer(max_line)
        self._fetch_sent = None     # when the last FETCH <seconds> went out
        self._early_nojob_noted = False   # logged that this connection's broker does not wait
        self.renew_interval = renew_interval
        self._renew = 0.0           # renewal interval on this connection; 0: not renewing
        self._touches_pending = 0   # TOUCHes sent and not yet answered
        self._word_due = None       # when the next word is due (STREAMING)
        self._touch_due = None      # when the next TOUCH is due (STREAMING, renewing)
        self._outage = False        # a connect attempt failed since the last connection
        self._proven = False        # this connection's broker has answered as a broker does
        self._turned_away = 0       # connections in a row that ended before they proved

    def __repr__(self):
        return f"<WorkerSlot {self.state.name} job={self.job_id} deadline={self._deadline}>"

    def next_deadline(self):
        """Monotonic time at which the shell should call tick(), or None."""
        return self._deadline

    # --- inputs ----------------------------------------------------------------

    def start(self, now):
        self._require("start", S.DISCONNECTED)
        return self._connect(now)

    def connected(self, now):
        """The TCP connection is up. The backoff is not reset yet: only once the
        broker answers as a broker does (``_prove``), so a port that accepts
        and then turns the worker away (AUTH refused, garbage, an early close)
        is retried 1, 2, 4, 8 s apart. After such a turning away, "connected"
        is said only once the new connection has proved itself."""
        self._require("connected", S.CONNECTING)
        self._framer = LineFramer(self.max_line)   # nothing from an earlier connection carries over
        self._early_nojob_noted = False
        self._renew = self.renew_interval
        self._touches_pending = 0
        self._proven = False
        actions = []
        if not self._turned_away:
            self._outage = False
            actions.append(Log(f"connected to broker {self.broker}", "info"))
        if self.token is not None:
            self._enter(S.AWAITING_AUTH)
            self._deadline = None
            return [*actions, Send(b"AUTH %s\n" % self.token)]
        return [*actions, *self._fetch(now)]

    def connect_failed(self, reason, now):
        self._require("connect_failed", S.CONNECTING)
        return self._cannot_connect(reason, now)

    def connection_lost(self, reason, now):
        """The shell saw EOF or an error and has already dropped the socket."""
        if self.state is S.STOPPED:
            return []
        self._require("connection_lost", *(_CONNECTED - {S.CONNECTING}))
        return self._lost(reason, now)

    def data_received(self, data, now):
        self._require("data_received", *(_CONNECTED - {S.CONNECTING}))
        actions = []
        for raw in self._framer.feed(data):
            if self.state not in _CONNECTED:
                break   # an earlier line was a protocol error and closed the connection
            # surrogateescape: bytes that are not UTF-8 still reach the output unchanged
            actions += self._on_line(raw.decode("utf-8", "surrogateescape"), now)
        if self._framer.too_long and self.state in _CONNECTED:
            actions += self._protocol_error("line from broker too long", now)
        return actions

    def tick(self, now):
        if self._deadline is None or now < self._deadline:
            return []
        if self.state is S.DISCONNECTED:
            return self._connect(now)
        if self.state is S.CONNECTING:
            return [Close(), *self._cannot_connect("timed out", now)]
        if self.state is S.IDLE_WAIT:
            return self._fetch(now)
        if self.state is S.AWAITING_JOB:
            # FETCH <seconds> got no answer at all: a broker that ignores it.
            self.long_poll = 0.0
            return self._protocol_error("no reply to FETCH with a wait; polling from now on", now)
        if self.state is S.STREAMING:
            actions = []
            if self._renew and now >= self._touch_due:
                actions.append(self._send_touch(now))
            if now >= self._word_due:
                actions += self._emit_next(now)
            else:
                self._stream_deadline()
            return actions
        raise AssertionError(f"deadline set in state {self.state.name}")

    def stop(self, now):
        """Stop for good: close the connection, never DONE an unfinished job."""
        actions = []
        if self.state is S.STREAMING:
            actions.append(Log(f"abandoned job {self.job_id}", "info"))
        if self.state in _CONNECTED:
            actions.append(Close())
        self._enter(S.STOPPED)
        self.job_id = None
        self._words.clear()
        self._deadline = None
        return actions

    # --- replies from the broker ---------------------------------------------------

    def _on_line(self, line, now):
        if self._touches_pending:
            return self._on_touch_reply(line, now)
        try:
            reply = parse_reply(line)
        except ValueError:
            return self._protocol_error(f"unexpected line '{line}'", now)
        if self.state is S.AWAITING_JOB and reply.kind in ("JOB", "NOJOB", "ERR"):
            proof = self._prove()     # an answer to FETCH: this is a broker
        else:
            proof = []
        if reply.kind == "ERR":
            return [*proof, *self._on_err(reply, now)]
        if self.state is S.AWAITING_JOB and reply.kind == "JOB":
            return [*proof, *self._start_job(reply.job_id, reply.text, now)]
        if self.state is S.AWAITING_JOB and reply.kind == "NOJOB":
            if self.long_poll:
                return [*proof, *self._on_long_poll_nojob(now)]
            self._idle(now)
            return proof
        if self.state is S.AWAITING_AUTH and reply.kind == "OK":
            return [*self._prove(), *self._fetch(now)]
        if self.state is S.AWAITING_OK and reply.kind == "OK":
            done = self.job_id
            self.job_id = None
            return [Log(f"completed job {done}"), *self._fetch(now)]
        return self._protocol_error(f"unexpected reply '{line}' in state {self.state.name}",
                                    now)

    def _on_touch_reply(self, line, now):
        """The reply to the oldest unanswered TOUCH (see the module docstring)."""
        self._touches_pending -= 1
        if line == "OK":
            return []
        head, _, rest = line.partition(" ")
        if head == "ERR" and rest.partition(" ")[0] in _JOB_GONE:
            if self.state is not S.STREAMING:
                return [Log(f"TOUCH failed: {line}", "error")]   # DONE is sent; its reply says more
            lost = self.job_id
            self.job_id = None
            self._words.clear()
            return [Log(f"lost the lease of job {lost}: {line}", "error"),
                    Log(f"abandoned job {lost}", "info"), *self._fetch(now)]
        self._renew = 0.0
        if self.state is S.STREAMING:
            self._stream_deadline()
        return [Log(f"broker does not renew leases ({line}); no TOUCH on this connection",
                    "info")]

    def _send_touch(self, now):
        self._touches_pending += 1
        self._touch_due = now + self._renew
        return Send(b"TOUCH %d\n" % self.job_id)

    def _stream_deadline(self):
        """STREAMING: tick at the next word or the next TOUCH, whichever is first."""
        if self._renew and self._touch_due < self._word_due:
            self._deadline = self._touch_due
        else:
            self._deadline = self._word_due

    def _on_long_poll_nojob(self, now):
        """NOJOB to FETCH <seconds>: ask again at once only if the broker held
        the request for about the time asked (LONG_POLL_HELD); else it is a
        broker that answers at once, and asking again now would flood it."""
        waited = now - self._fetch_sent
        if waited >= LONG_POLL_HELD * self.long_poll:
            return self._fetch(now)   # the broker has already waited
        self._idle(now)
        if self._early_nojob_noted:
            return []
        self._early_nojob_noted = True   # once per connection, not every fetch interval
        return [Log(f"broker answered FETCH {self.long_poll:g} with NOJOB after {waited:.3f} s "
                    f"without waiting; asking again every {self.fetch_interval:g} s", "info")]

    def _on_err(self, reply, now):
        err = f"ERR {reply.code} {reply.text}".rstrip()
        if self.state is S.AWAITING_AUTH:
            return self._protocol_error(f"AUTH refused: {err}", now)
        if self.state is S.AWAITING_JOB and self.long_poll:
            self.long_poll = 0.0
            self._idle(now)
            return [Log(f"broker refused FETCH with a wait ({err}); polling every "
                        f"{self.fetch_interval:g} s", "info")]
        if self.state is S.AWAITING_JOB:
            self._idle(now)   # an ERR to FETCH counts as NOJOB: wait, then ask again
            return [Log(f"FETCH failed: {err}", "error")]
        if self.state is S.AWAITING_OK:
            failed = self.job_id
            self.job_id = None
            return [Log(f"DONE {failed} failed: {err}", "error"), *self._fetch(now)]
        return [Log(f"broker error: {err}", "error")]

    # --- steps ---------------------------------------------------------------------

    def _connect(self, now):
        self._enter(S.CONNECTING)
        self._deadline = now + self.connect_timeout
        return [Connect()]

    def _fetch(self, now):
        self._enter(S.AWAITING_JOB)
        if not self.long_poll:
            self._deadline = None
            return [Log("fetching job"), Send(b"FETCH\n")]
        self._deadline = now + self.long_poll + LONG_POLL_GRACE
        self._fetch_sent = now
        # wait_seconds has no exponent: %g would write 1e-05.
        wait = format_seconds(self.long_poll).encode()
        return [Log("fetching job"), Send(b"FETCH %s\n" % wait)]

    def _idle(self, now):
        self._enter(S.IDLE_WAIT)
        self._deadline = now + self.fetch_interval

    def _start_job(self, job_id, text, now):
        self._enter(S.STREAMING)
        self.job_id = job_id
        # Runs of SP and HTAB only (the grammar's word_separator): str.split()
        # would also cut at U+00A0, U+0085, U+2028, U+3000 and more.
        self._words = deque(split_words(text))
        actions = [Log(f"starting job {job_id}")]
        if self._renew and self._words:
            # Before anything else: binds the lease (and, on a broker with
            # leases, every later job of this connection's from its hand-out).
            actions.insert(0, self._send_touch(now))
        return [*actions, *self._emit_next(now)]

    def _emit_next(self, now):
        if not self._words:
            return self._send_done()
        word = self._words.popleft()
        actions = [Emit((word + "\n").encode("utf-8", "surrogateescape"))]
        if self._words:
            # from now, not from the old deadline: a late tick never bunches words up
            self._word_due = now + self.word_delay
            self._stream_deadline()
        else:
            actions += self._send_done()
        return actions

    def _send_done(self):
        self._enter(S.AWAITING_OK)
        self._deadline = None
        return [Send(b"DONE %d\n" % self.job_id)]

    def _protocol_error(self, reason, now):
        return [Close(), *self._lost(f"protocol error: {reason}", now, refused=True)]

    def _prove(self):
        """The broker answered AUTH with OK or FETCH with a reply: the connection
        works. Resets the backoff; after connections that were turned away,
        says "connected" now (connected() did not)."""
        if self._proven:
            return []
        self._proven = True
        self.backoff.reset()
        self._outage = False
        if not self._turned_away:
            return []
        self._turned_away = 0
        return [Log(f"connected to broker {self.broker}", "info")]

    def _lost(self, reason, now, refused=False):
        """The connection ended (the shell closed it, or will: see _protocol_error).
        ``refused``: the broker answered, but not as a workq broker does (AUTH
        refused, garbage); before the connection proved itself, that is a
        turning away, and only the first of a row of those reaches stderr at
        the default level, like ``cannot connect``; syslog hears of each. A
        close before any answer (a broker restarting under a waiting FETCH)
        is said each time; it does not reset the backoff either."""
        abandoned = self.job_id if self.state is S.STREAMING else None
        level = "error"
        if refused and not self._proven:
            level = "debug" if self._turned_away else "error"
            self._turned_away += 1
        self._retry_later(now)
        actions = [Log(f"connection to broker {self.broker} lost: {reason}", level)]
        if abandoned is not None:
            actions.append(Log(f"abandoned job {abandoned}", "info"))
        return actions

    def _cannot_connect(self, reason, now):
        """A connect attempt failed: retry after the backoff. Only the first
        failure of an outage reaches stderr at the default level; every one
        goes to syslog (spec syslog_messages)."""
        delay = self._retry_later(now)
        level = "debug" if self._outage else "error"
        self._outage = True
        return [Log(f"cannot connect to broker {self.broker}: {reason}; "
                    f"retrying in {delay:g} s", level)]

    def _retry_later(self, now):
        """Disconnected: the next attempt is due after the backoff; returns its seconds."""
        self._enter(S.DISCONNECTED)
        self.job_id = None
        self._words.clear()
        delay = self.backoff.next_delay()
        self._deadline = now + delay
        return delay

    def _enter(self, state):
        if state not in TRANSITIONS[self.state]:
            raise AssertionError(f"no transition {self.state.name} -> {state.name}")
        self.state = state

    def _require(self, event, *states):
        if self.state not in states:
            raise RuntimeError(f"{event}() not allowed in state {self.state.name}")
