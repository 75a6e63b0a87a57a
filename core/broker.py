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

Memory is bounded in bytes (spec ``limits.memory``), in two shares of
``max_memory``: ``job_bytes`` counts job texts (plus ``JOB_OVERHEAD`` each)
against ``job_memory``; ``buffer_bytes`` counts unfinished lines, lines held
behind a waiting FETCH, job texts copied into the replies of one read, and
replies the kernel has not taken (the shells report those with
``charge_output`` / ``output_taken``) against ``buffer_memory``.

Descriptors (spec ``limits.connections``): when accept fails for lack of them
the shell asks ``shed`` which connections to close, the ones that have given
least; a token broker closes connections that do not authenticate within
``auth_timeout`` seconds.

Leases and poison jobs (spec ``leases``): a job handed out by FETCH is held
by its connection until DONE or until the connection is lost. The first
``TOUCH <n>`` on a connection binds a lease of ``lease`` seconds to job n and
to every job the connection fetches afterwards (from the hand-out on, so a
worker that hangs before its next TOUCH still loses the job); every TOUCH
renews it; a lease that runs out puts the job back, first in line, and the
old holder's later TOUCH or DONE gets ERR LEASE_EXPIRED (at-least-once). Only
leased jobs have a deadline, in one heap swept from ``tick`` (a TOUCH moves the
deadline in a dict; the heap entry is pushed again lazily when it comes up),
so FETCH and DONE of a worker that never renews cost nothing more. Each
delivery that ends without DONE (holder lost, lease expired) counts against
``max_deliveries``; the one that reaches it buries the job: STATUS says
``buried``, FETCH never hands it out, ``KICK <n>`` puts it back at the end of
the line with its count reset. Counts live in a dict holding only jobs that
have failed at least once.

Jobs live in compact structures indexed by id (ids are dense, from 1): a list
of texts and a bytearray of states, so STATUS, FETCH and DONE are O(1) and a
million waiting jobs cost little more than their texts.
"""

import hmac
import heapq
import os
from collections import deque

from .framing import DEFAULT_MAX_LINE, LineFramer
from .grammar import MAX_ID_DIGITS, WAIT_SECONDS_BYTES
from .messages import (MAX_JOB_TEXT, MAX_WORD, ONE_PLAIN_LINE_MAP, RequestError,
                       chunk_is_plain, err, has_overlong_word, parse_job_id, parse_request)

__all__ = ["BrokerCore", "Connection", "CLIENT", "WORKER",
           "WAITING", "RUNNING", "COMPLETED", "BURIED", "TRANSITIONS"]

CLIENT = "client"
WORKER = "worker"

# Job states, one byte each in BrokerCore.states (0: id not issued).
WAITING, RUNNING, COMPLETED, BURIED = 1, 2, 3, 4
STATE_NAMES = {WAITING: b"waiting\n", RUNNING: b"running\n", COMPLETED: b"completed\n",
               BURIED: b"buried\n"}

# The job state table of spec/protocol.yaml (transitions:). Every change of a
# job's state goes through _move, so no other change can happen.
TRANSITIONS = {
    (WAITING, "fetch"): RUNNING,
    (RUNNING, "done"): COMPLETED,
    (RUNNING, "holder lost"): WAITING,
    (RUNNING, "lease expired"): WAITING,
    (RUNNING, "delivery limit"): BURIED,
    (BURIED, "kick"): WAITING,
}
# The same table by event, for the per-request paths: AFTER[event][state] is
# the next state (one dict lookup, no tuple built: FETCH and DONE take it).
AFTER = {}
for (_state, _event), _next in TRANSITIONS.items():
    AFTER.setdefault(_event, {})[_state] = _next
_AFTER_FETCH, _AFTER_DONE = AFTER["fetch"], AFTER["done"]

_CLIENT_COMMANDS = {b"JOB", b"STATUS", b"STATS", b"AUTH", b"KICK"}
_WORKER_COMMANDS = {b"FETCH", b"DONE", b"STATS", b"AUTH", b"TOUCH"}
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
DEFAULT_AUTH_TIMEOUT = 10.0
# Seconds a lease lasts after each TOUCH (spec leases): our workers renew every
# 2 s, so a hung one loses its job within 10 s (plus a FETCH to hand it out),
# and three lost renewals in a row are still forgiven.
DEFAULT_LEASE = 10.0
# Deliveries that may end without DONE before the job is buried (spec leases):
# RabbitMQ's delivery-limit default since 4.0. Faktory allows 25 retries, SQS
# leaves maxReceiveCount to the user. High enough that restarts and network
# faults never bury a healthy job; low enough that a job that kills its worker
# costs at most 20 crashes.
DEFAULT_MAX_DELIVERIES = 20
# A connection remembers at most this many of its jobs whose lease ran out
# (to answer their late TOUCH/DONE with LEASE_EXPIRED).
MAX_EXPIRED_REMEMBERED = 1024
# A connection younger than this is never shed: its first line may be in the
# kernel's buffer, not yet read by the shell (spec limits.connections).
SHED_GRACE = 1.0
# What one job costs beyond its text, in bytes, measured (VmRSS per job, 64-bit
# CPython 3.11): a waiting job ~50 B (its id's int object 32 B in the waiting
# deque, the deque and texts slots 8 B each, its state byte) plus its text
# object's 33 B header and pymalloc's rounding to 16 B; a running one adds its
# entries in holders and in its connection's held set. Rounded up.
JOB_OVERHEAD = 128
# The same for each unfinished line and each line held behind a FETCH.
LINE_OVERHEAD = 64
# Jobs may fill this share of max_memory, connection buffers the rest: neither
# can starve the other (workers still fetch and finish jobs when the queue is
# full; clients still submit while some peer does not read).
JOB_SHARE = 3 / 4
# Default budget: this fraction of physical memory (spec limits.memory).
DEFAULT_MEMORY_FRACTION = 0.25
FALLBACK_MEMORY = 1 << 30
# A container's memory limit: cgroup v2, then v1 (which says "no limit" with a huge number).
CGROUP_LIMIT_FILES = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def default_max_memory():
    """The default memory budget in bytes: DEFAULT_MEMORY_FRACTION of the memory
    this process may use: physical RAM (sysconf SC_PHYS_PAGES x SC_PAGE_SIZE) or,
    if lower, the memory limit of its cgroup (a container); FALLBACK_MEMORY
    (1 GiB) where the system tells neither."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        total = 0
    for path in CGROUP_LIMIT_FILES:
        try:
            with open(path) as limit_file:
                limit = int(limit_file.read().strip())
        except (OSError, ValueError):        # absent, or "max": no limit there
            continue
        if 0 < limit and (total <= 0 or limit < total):
            total = limit
    return int(total * DEFAULT_MEMORY_FRACTION) if total > 0 else FALLBACK_MEMORY


class Connection:
    """Per-connection protocol state: its port, its line framer, the jobs it holds."""

    __slots__ = ("port", "framer", "held", "closing", "handlers", "authenticated",
                 "waiting_fetch", "backlog", "partial_since", "io", "opened", "last_read",
                 "partial_charge", "backlog_charge", "output_charge", "expired", "leasing")

    def __init__(self, port, max_line, handlers, authenticated, opened=0.0):
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
        self.opened = opened         # when it was accepted (auth timeout, shedding)
        self.last_read = None        # when it last sent anything; None: never
        self.partial_charge = 0      # bytes of buffer_bytes for its unfinished line,
        self.backlog_charge = 0      # its lines held behind a FETCH,
        self.output_charge = 0       # its replies the kernel has not taken
        self.expired = None          # ids whose lease ran out while it held them
        self.leasing = False         # it has sent TOUCH: every job it fetches is leased

    def __repr__(self):
        return f"<Connection {self.port} holding {sorted(self.held)}>"


class BrokerCore:
    """The broker's state and rules; see the module docstring for how a shell drives it.

    ``max_memory``: the byte budget (None: ``default_max_memory()``);
    ``auth_timeout``: seconds a connection has to authenticate when ``token`` is set;
    ``lease``: seconds a TOUCH keeps a job; ``max_deliveries``: deliveries
    ending without DONE after which a job is buried.
    """

    # Slots: the core has more attributes (33) than the 30 a CPython 3.11 instance
    # keeps in a shared-key dict (SHARED_KEYS_MAX_SIZE, Include/internal/pycore_dict.h);
    # past that every attribute access takes the slower dict-lookup path, about 265
    # instructions per request in the select broker (cachegrind). A slot is read
    # at a fixed offset. "__dict__" leaves subclasses and tests free to add their own.
    __slots__ = ("max_line", "max_waiting", "idle_timeout", "auth_timeout", "lease",
                 "max_deliveries", "max_memory", "job_memory", "buffer_memory", "job_bytes",
                 "buffer_bytes", "connections", "_batch", "_unauthenticated", "token", "store",
                 "deliveries", "fetchers", "_timers", "_timer_seq", "_partial", "_next_sweep",
                 "texts", "states", "waiting", "holders", "completed", "leases", "_lease_heap",
                 "failures", "buried", "open_connections", "_handlers", "__dict__")

    def __init__(self, max_line=DEFAULT_MAX_LINE, max_waiting=DEFAULT_MAX_WAITING,
                 idle_timeout=DEFAULT_IDLE_TIMEOUT, token=None, store=None,
                 max_memory=None, auth_timeout=DEFAULT_AUTH_TIMEOUT,
                 lease=DEFAULT_LEASE, max_deliveries=DEFAULT_MAX_DELIVERIES):
        self.max_line = max_line
        self.max_waiting = max_waiting
        self.idle_timeout = idle_timeout
        self.auth_timeout = auth_timeout
        self.lease = lease
        self.max_deliveries = max_deliveries
        self.max_memory = default_max_memory() if max_memory is None else max_memory
        self.job_memory = int(self.max_memory * JOB_SHARE)   # JOB is refused past this
        self.buffer_memory = self.max_memory - self.job_memory
        self.job_bytes = 0             # bytes held, as counted (see module docstring)
        self.buffer_bytes = 0
        self.connections = set()       # every open Connection (for shed)
        # Bytes of job texts copied into the replies of the read being answered
        # (None outside receive's many-line path): a worker pipelining FETCHes.
        self._batch = None
        self._unauthenticated = set()  # connections that must AUTH before auth_timeout
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
        self.leases = {}               # leased running id -> deadline (bound by a TOUCH)
        self._lease_heap = []          # (deadline, id), lazily corrected; see tick
        self.failures = {}             # id -> deliveries ended without DONE (only if > 0)
        self.buried = 0                # jobs in state BURIED
        self.open_connections = {CLIENT: 0, WORKER: 0}
        self._handlers = {
            CLIENT: {b"JOB": self._job, b"STATUS": self._status, b"STATS": self._stats,
                     b"AUTH": self._auth, b"KICK": self._kick},
            WORKER: {b"FETCH": self._fetch, b"DONE": self._done, b"STATS": self._stats,
                     b"AUTH": self._auth, b"TOUCH": self._touch},
        }

    # -- connection lifecycle -------------------------------------------------

    def open(self, port, now=0.0):
        """A new connection on ``port`` (CLIENT or WORKER), accepted at ``now``."""
        self.open_connections[port] += 1
        conn = Connection(port, self.max_line, self._handlers[port], self.token is None, now)
        self.connections.add(conn)
        if self.token is not None:
            self._unauthenticated.add(conn)
        return conn

    def restore(self, next_id, waiting, completed, buried=(), failures=None):
        """Start from a store's contents: ``waiting`` (id, text) pairs in id order,
        ``completed`` ids, ``buried`` (id, text) pairs, ``failures`` {id: deliveries
        ended without DONE}; ids continue from ``next_id``."""
        self.texts = [None] * next_id
        self.states = bytearray(next_id)
        for job_id in completed:
            self.states[job_id] = COMPLETED
        for job_id, text in waiting:
            self.texts[job_id] = text
            self.states[job_id] = WAITING
            self.waiting.append(job_id)
            # Restored jobs are never refused, even past the budget: JOB is, until they are done.
            self.job_bytes += len(text) + JOB_OVERHEAD
        for job_id, text in buried:
            self.texts[job_id] = text
            self.states[job_id] = BURIED
            self.job_bytes += len(text) + JOB_OVERHEAD
        self.buried = len(buried)
        self.failures = {job_id: count for job_id, count in (failures or {}).items() if count}
        self.completed = len(completed)

    def receive(self, conn, data, now=0.0):
        """Answer every complete line in ``data``; return the replies joined."""
        conn.last_read = now
        end = len(data) - 1
        # Fast path for the commonest read: one whole printable-ASCII line ending in
        # a bare LF, its command in upper case as the spec writes it, from an
        # authenticated connection with nothing pending or held. It is the general
        # path's steps fused (framing, chunk_is_plain, _answer's split and dispatch):
        # the line without its LF, once CR, LF and every unplain byte are mapped to
        # LF, must hold no LF (one C pass and a C search), and the command is looked
        # up as sent. Anything else (a command in another case included) goes the
        # general way, _receive_lines, which answers it alike. The line is cut from
        # the read once: the check, the split and the argument all use it (bytes.find
        # would parse its arguments in Python 3.11, ~1,000 instructions; `in` does
        # not). The tests are early returns so that their jumps are short: CPython
        # 3.11 specializes a comparison only when a short jump follows it.
        # Instructions per request counted with cachegrind: BENCHMARKS.md.
        if not (end > 0 and data[end] == 10 and conn.waiting_fetch is None
                and conn.partial_since is None and conn.authenticated and not conn.closing
                and end <= self.max_line):
            return self._receive_lines(conn, data, now)
        line = data[:end]
        if 10 in line.translate(ONE_PLAIN_LINE_MAP):
            return self._receive_lines(conn, data, now)
        parts = line.split(None, 1)
        handler = conn.handlers.get(parts[0]) if parts else None
        if handler is None:
            return self._receive_lines(conn, data, now)
        try:
            reply = handler(conn, parts[1].rstrip() if len(parts) == 2 else b"", now)
        except RequestError as error:
            return error.reply
        return b"" if reply is None else reply     # None: a FETCH <seconds> waits

    def _receive_lines(self, conn, data, now):
        """receive()'s general way: every line of ``data``, one by one. A connection
        already closing (an ERR that ends it was sent, or the shell sheds it) gets
        nothing more: a line read before the shell noticed is not answered."""
        if conn.closing:
            return b""
        framer = conn.framer
        # A line continued from an earlier read was not in this check.
        checked = not framer.has_partial() and chunk_is_plain(data)
        lines = framer.feed(data)
        self._batch = 0
        if conn.partial_charge:               # that line is complete now, or charged again below
            self.buffer_bytes -= conn.partial_charge
            conn.partial_charge = 0
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
                if conn.closing:                         # AUTH failed, MEMORY_FULL: ignore the rest
                    break
        self._batch = None
        if framer.too_long:
            replies.append(err("LINE_TOO_LONG", f"line longer than {self.max_line} bytes"))
            conn.closing = True
        elif framer.has_partial():
            if conn.partial_since is None:
                conn.partial_since = now
                self._partial.add(conn)
            if not conn.closing:
                charge = framer.partial_length() + LINE_OVERHEAD
                if self.buffer_bytes + charge > self.buffer_memory:
                    replies.append(self._memory_full(conn, "an unfinished line"))
                else:
                    conn.partial_charge = charge
                    self.buffer_bytes += charge
        elif conn.partial_since is not None:
            conn.partial_since = None
            self._partial.discard(conn)
        return b"".join(replies)

    def end_of_input(self, conn, now=0.0):
        """The peer will send nothing more (it half-closed or closed): return every
        reply it is still owed, then ``closing`` is set (spec: framing).

        An unterminated last line is answered as if it ended in LF. A FETCH
        <seconds> that waits is answered NOJOB at once, not held: a peer that
        can no longer send DONE is not made to wait for a job it cannot
        complete. The lines held behind it are answered after it, in order.
        """
        if conn.closing:          # already answered its last (ERR IDLE_TIMEOUT, AUTH_FAILED...)
            return b""
        partial = conn.framer.take_partial()
        reply = self.receive(conn, partial + b"\n", now) if partial else b""
        if conn.waiting_fetch is not None:
            replies = [reply]
            while conn.waiting_fetch is not None:      # a held line may be FETCH <seconds> too
                replies.append(self._finish_wait(conn, _NOJOB, now))
            reply = b"".join(replies)
        conn.closing = True
        return reply

    def close(self, conn, now=0.0):
        """The connection is gone: the jobs it held go back to the head of the queue."""
        self.open_connections[conn.port] -= 1
        conn.closing = True
        conn.waiting_fetch = None           # its entries in fetchers/_timers are skipped
        self._partial.discard(conn)
        self._unauthenticated.discard(conn)
        self.connections.discard(conn)
        self.buffer_bytes -= conn.partial_charge + conn.backlog_charge + conn.output_charge
        conn.partial_charge = conn.backlog_charge = conn.output_charge = 0
        conn.backlog = None
        if conn.held:
            for job_id in sorted(conn.held, reverse=True):
                self._delivery_failed(job_id, "holder lost")
            conn.held.clear()
            self._hand_out(now)

    def _delivery_failed(self, job_id, event):
        """A delivery of running ``job_id`` ended without DONE (``event``: "holder
        lost" or "lease expired"): count it; back to the head of the line, or
        buried once the count reaches max_deliveries. The caller updates the
        holder's ``held`` and hands jobs out."""
        del self.holders[job_id]
        if self.leases:
            self.leases.pop(job_id, None)
        count = self.failures.get(job_id, 0) + 1
        self.failures[job_id] = count
        if count >= self.max_deliveries:
            self._move(job_id, "delivery limit")
            self.buried += 1
        else:
            self._move(job_id, event)
            self.waiting.appendleft(job_id)
        if self.store is not None:
            self.store.failed(job_id, count, count >= self.max_deliveries)

    # -- timers -------------------------------------------------------------------

    def next_deadline(self):
        """When tick() has something to do: a FETCH wait ends, a lease may run out,
        an idle line times out."""
        timers = self._timers
        if not (timers or self._lease_heap or self._partial or self._unauthenticated):
            return None                       # the usual case: nothing timed
        while timers and timers[0][2].waiting_fetch != timers[0][0]:
            heapq.heappop(timers)             # answered or closed since
        deadline = timers[0][0] if timers else None
        if self._lease_heap:
            # Maybe renewed or ended since: tick then just corrects the heap.
            top = self._lease_heap[0][0]
            deadline = top if deadline is None else min(deadline, top)
        if self._partial or self._unauthenticated:
            # Unfinished lines and unauthenticated connections are swept once a
            # second, not tracked one by one.
            deadline = self._next_sweep if deadline is None else min(deadline, self._next_sweep)
        return deadline

    def tick(self, now):
        """Do what is due at ``now``: FETCH waits that end, idle lines, auth timeouts.
        Replies go to ``deliveries``; a connection to close has ``closing`` set."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, _, conn = heapq.heappop(timers)
            if conn.waiting_fetch == deadline and not conn.closing:
                self._end_wait(conn, _NOJOB, now)
        if self._lease_heap and self._lease_heap[0][0] <= now:
            self._expire_leases(now)
        if not (self._partial or self._unauthenticated) or now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_INTERVAL
        for conn in [c for c in self._partial if c.partial_since + self.idle_timeout <= now]:
            self._drop_partial(conn)        # never answered: it timed out
            if not conn.closing:
                conn.closing = True
                self.deliveries.append((conn, err(
                    "IDLE_TIMEOUT", f"no end of line within {self.idle_timeout:g} s")))
        for conn in [c for c in self._unauthenticated if c.opened + self.auth_timeout <= now]:
            self._unauthenticated.discard(conn)
            if not conn.closing:
                conn.closing = True
                self._drop_partial(conn)
                self.deliveries.append((conn, err(
                    "AUTH_TIMEOUT", f"no AUTH within {self.auth_timeout:g} s")))

    def _expire_leases(self, now):
        """Requeue (or bury) every leased job whose lease ran out by ``now``."""
        heap, leases = self._lease_heap, self.leases
        expired = False
        while heap and heap[0][0] <= now:
            _, job_id = heapq.heappop(heap)
            deadline = leases.get(job_id)
            if deadline is None:
                continue                       # ended (DONE, holder lost) since
            if deadline > now:
                heapq.heappush(heap, (deadline, job_id))   # renewed since
                continue
            holder = self.holders[job_id]
            holder.held.discard(job_id)
            if holder.expired is None:
                holder.expired = set()
            elif len(holder.expired) >= MAX_EXPIRED_REMEMBERED:
                holder.expired.pop()
            holder.expired.add(job_id)
            self._delivery_failed(job_id, "lease expired")
            expired = True
        if expired:
            self._hand_out(now)

    def _drop_partial(self, conn):
        """Forget a connection's unfinished line and what it was charged."""
        self._partial.discard(conn)
        conn.partial_since = None
        conn.framer.take_partial()
        self.buffer_bytes -= conn.partial_charge
        conn.partial_charge = 0

    def _memory_full(self, conn, what):
        """The reply for a connection whose buffer does not fit the budget; it is closed."""
        conn.closing = True
        self._drop_partial(conn)
        return err("MEMORY_FULL", f"{what} does not fit the connection buffers' "
                                  f"{self.buffer_memory} bytes of the memory budget")

    # -- resources ----------------------------------------------------------------

    @property
    def memory_used(self):
        """Bytes held as counted, both shares together."""
        return self.job_bytes + self.buffer_bytes

    def charge_output(self, conn, nbytes):
        """The shell keeps ``nbytes`` more of replies for ``conn`` that the kernel has
        not taken. False (nothing charged) when they do not fit ``buffer_memory``:
        the shell then drops the connection without a reply (spec limits.memory).
        Also False after ``close``."""
        if self.buffer_bytes + nbytes > self.buffer_memory or conn not in self.connections:
            return False
        self.buffer_bytes += nbytes
        conn.output_charge += nbytes
        return True

    def output_taken(self, conn, nbytes):
        """The kernel took ``nbytes`` of the replies charged for ``conn`` (or the shell
        discarded them). Harmless after ``close``, which releases everything."""
        nbytes = min(nbytes, conn.output_charge)
        conn.output_charge -= nbytes
        self.buffer_bytes -= nbytes

    def shed(self, now, count=1):
        """Out of descriptors: up to ``count`` connections the shell may close so
        new peers can get in, in the order to close them: those that have given
        least first (spec limits.connections): never authenticated, then never
        sent anything, then silent longest. Never one holding a job, with a FETCH
        waiting, closing, or opened less than SHED_GRACE seconds before ``now``.
        Changes nothing: the shell sets ``closing`` on each it closes (without a
        reply: it neither speaks nor, maybe, reads) and calls ``close``. One pass
        over the connections, so a shell facing a burst asks for several at once."""
        young = now - SHED_GRACE
        candidates = [conn for conn in self.connections
                      if not conn.held and conn.waiting_fetch is None and not conn.closing
                      and conn.opened <= young]
        return heapq.nsmallest(count, candidates, key=_shed_rank)

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
        self._unauthenticated.discard(conn)
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
        if lines:
            charge = sum(map(len, lines)) + LINE_OVERHEAD * len(lines)
            if self.buffer_bytes + charge > self.buffer_memory:
                conn.waiting_fetch = None
                return [self._memory_full(conn, "a line sent while a FETCH waits")]
            conn.backlog_charge += charge
            self.buffer_bytes += charge
        return []

    def _end_wait(self, conn, reply, now):
        """Answer a waiting FETCH, then the lines held behind it, as a delivery."""
        self.deliveries.append((conn, self._finish_wait(conn, reply, now)))

    def _finish_wait(self, conn, reply, now):
        """``reply`` to a waiting FETCH, then the replies to the lines held behind
        it, up to one that waits again; returned joined."""
        conn.waiting_fetch = None
        backlog, conn.backlog = conn.backlog, None
        if conn.backlog_charge:
            self.buffer_bytes -= conn.backlog_charge
            conn.backlog_charge = 0
        replies = [reply]
        for index, line in enumerate(backlog or ()):
            reply = self._answer(conn, line, now)
            if reply is None:                     # another FETCH <seconds> waits
                conn.backlog = []
                self._hold(conn, backlog[index + 1:])
                break
            replies.append(reply)
            if conn.closing:                      # AUTH failed, MEMORY_FULL: ignore the rest
                break
        return b"".join(replies)

    @staticmethod
    def _not_here(port, command):
        shown = command.decode(errors="replace")[:40]
        for other, commands in _PORT_COMMANDS.items():
            if other != port and command in commands:
                return RequestError("WRONG_PORT", f"{shown} is a {other} command; this is the {port} port")
        return RequestError("UNKNOWN_COMMAND", f"unknown command {shown!r}")

    def _job(self, conn, text, now):
        waiting, texts = self.waiting, self.texts
        size = len(text)
        if not size:
            raise RequestError("EMPTY_JOB", "job text is empty")
        if size > MAX_WORD:            # rare: one length check on the usual path
            if size > MAX_JOB_TEXT:
                raise RequestError("JOB_TOO_LONG", f"job text longer than {MAX_JOB_TEXT} bytes "
                                   "(its JOB line would not fit a worker's line limit)")
            if has_overlong_word(text):
                raise RequestError("WORD_TOO_LONG", f"a word longer than {MAX_WORD} bytes "
                                   "(it would not fit one UDP datagram)")
        if len(waiting) >= self.max_waiting:
            raise RequestError("QUEUE_FULL", f"queue full: {self.max_waiting} jobs waiting")
        used = self.job_bytes + size + JOB_OVERHEAD
        if used > self.job_memory:
            raise RequestError("QUEUE_FULL", f"queue full: jobs fill their {self.job_memory} "
                                             f"bytes of the memory budget")
        self.job_bytes = used
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
        """Give waiting jobs to workers whose FETCH <seconds> is waiting, oldest first.
        Never to a connection being closed (its ERR sent, the shell yet to close it):
        the job would only come back, counted as a failed delivery."""
        fetchers = self.fetchers
        while fetchers and self.waiting:
            conn = fetchers.popleft()
            if conn.waiting_fetch is not None and not conn.closing:
                self._end_wait(conn, self._take_next(conn, now), now)

    def _status(self, conn, arg, now):
        job_id = parse_job_id(arg)
        if job_id >= len(self.states):
            return _UNKNOWN
        return STATE_NAMES.get(self.states[job_id], _UNKNOWN)

    def _fetch(self, conn, arg, now):
        if self.waiting:
            if arg:
                _fetch_wait(arg)          # still reject a bad argument
            if self._batch is not None:
                self._charge_batch(conn)
            return self._take_next(conn, now)
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

    def _charge_batch(self, conn):
        """Count the copy of the next job's text in this read's replies; past the
        budget the connection gets ERR MEMORY_FULL instead, and is closed (the
        jobs it took go back to the queue when it closes)."""
        self._batch += len(self.texts[self.waiting[0]]) + LINE_OVERHEAD
        if self.buffer_bytes + self._batch > self.buffer_memory:
            conn.closing = True
            raise RequestError("MEMORY_FULL", f"the replies to one read do not fit the connection "
                                              f"buffers' {self.buffer_memory} bytes of the memory "
                                              f"budget")

    def _take_next(self, conn, now):
        job_id = self.waiting.popleft()
        states = self.states
        states[job_id] = _AFTER_FETCH[states[job_id]]
        self.holders[job_id] = conn
        conn.held.add(job_id)
        if conn.leasing:          # it has renewed before: leased from the hand-out on
            self._bind_lease(job_id, now)
        return b"JOB %d %s\n" % (job_id, self.texts[job_id])

    def _held_by(self, conn, arg, command):
        """The id of DONE/TOUCH ``arg``, checked to be running and held by ``conn``;
        raises RequestError (BAD_ID, UNKNOWN_JOB, LEASE_EXPIRED, NOT_RUNNING, NOT_HOLDER)."""
        job_id = parse_job_id(arg)
        if job_id >= len(self.states) or not self.states[job_id]:
            raise RequestError("UNKNOWN_JOB", f"no job {job_id}")
        holder = self.holders.get(job_id)
        if holder is conn:
            return job_id
        if conn.expired is not None and job_id in conn.expired:
            raise RequestError("LEASE_EXPIRED", f"the lease of job {job_id} ran out before this "
                                                f"{command}; it was handed out again")
        if holder is None:
            raise RequestError("NOT_RUNNING", f"job {job_id} is not running")
        raise RequestError("NOT_HOLDER", f"job {job_id} is held by another worker")

    def _touch(self, conn, arg, now):
        job_id = self._held_by(conn, arg, "TOUCH")
        conn.leasing = True
        self._bind_lease(job_id, now)
        return _OK

    def _bind_lease(self, job_id, now):
        """Job ``job_id``'s lease ends ``lease`` seconds from ``now``."""
        deadline = now + self.lease
        if job_id not in self.leases:
            heapq.heappush(self._lease_heap, (deadline, job_id))
        self.leases[job_id] = deadline

    def _kick(self, conn, arg, now):
        job_id = parse_job_id(arg)
        if job_id >= len(self.states) or not self.states[job_id]:
            raise RequestError("UNKNOWN_JOB", f"no job {job_id}")
        if self.states[job_id] != BURIED:
            raise RequestError("NOT_BURIED", f"job {job_id} is not buried")
        self._move(job_id, "kick")
        self.buried -= 1
        self.failures.pop(job_id, None)
        self.waiting.append(job_id)
        if self.store is not None:
            self.store.failed(job_id, 0, False)
        if self.fetchers:
            self._hand_out(now)
        return _OK

    def _done(self, conn, arg, now):
        holders = self.holders
        # parse_job_id's test inline (DONE is a per-job path); anything else takes
        # _held_by, which parses again and raises the right error.
        job_id = int(arg) if arg.isdigit() and len(arg) <= MAX_ID_DIGITS else None
        if holders.get(job_id) is not conn:
            job_id = self._held_by(conn, arg, "DONE")
        states = self.states
        states[job_id] = _AFTER_DONE[states[job_id]]
        del holders[job_id]
        conn.held.discard(job_id)
        if self.leases:
            self.leases.pop(job_id, None)
        if self.failures:
            self.failures.pop(job_id, None)
        self.job_bytes -= len(self.texts[job_id]) + JOB_OVERHEAD
        self.texts[job_id] = None
        self.completed += 1
        if self.store is not None:
            self.store.complete(job_id)
        return _OK

    def _stats(self, conn, arg, now):
        if arg:
            raise RequestError("BAD_ARGUMENT", "STATS takes no argument")
        return b"STATS waiting=%d running=%d completed=%d clients=%d workers=%d buried=%d\n" % (
            len(self.waiting), len(self.holders), self.completed,
            self.open_connections[CLIENT], self.open_connections[WORKER], self.buried)

    def _move(self, job_id, event):
        self.states[job_id] = TRANSITIONS[self.states[job_id], event]


def _shed_rank(conn):
    """Sort key of shed: who has given least comes first."""
    return (conn.authenticated, conn.last_read is not None, conn.last_read or conn.opened)


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
