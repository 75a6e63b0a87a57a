"""What the broker and the worker say on stderr (--log-level), shared by both flavours.

One line per event, standard library ``logging``, no timestamp (journald and
terminals add their own), no traceback:

    workq broker: stopped: 3 waiting and 1 running jobs lost (store memory)
    workq worker: error: cannot connect to broker 127.0.0.1:50001: Connection refused; retrying in 1 s
    workq broker: debug: job 7 handed to worker 127.0.0.1:40312

INFO lines carry no level word; ERROR (and WARNING) lines say ``error:``,
DEBUG lines ``debug:``. The start-up banner stays on stdout (tests and users
read it there); everything else the programs say goes here.

The broker's job events at debug come from ``TracingCore``, a BrokerCore that
reports each event as it happens; the shell uses it only at --log-level debug,
so at the other levels the broker runs the plain BrokerCore and logging costs
nothing per request.
"""

import logging
import os
import sys
from time import monotonic

from core.broker import BURIED, BrokerCore
from core.messages import parse_job_id

__all__ = ["LEVELS", "BROKER_LOG", "WORKER_LOG", "configure", "say", "silence_stdout",
           "TracingCore", "peer_label", "SetUpWarning"]

# Exit status of a program whose stdout was closed before it could say what it
# must (``prog | head -0``, ``prog | true``): 1, as the Python docs' "Note on
# SIGPIPE" (signal module) has it.
EXIT_STDOUT_CLOSED = 1


def say(line):
    """Print ``line`` and a newline on stdout, flushed (the start-up line).

    Returns True once written; False when stdout is a closed pipe (EPIPE,
    BrokenPipeError): stdout then points at /dev/null (silence_stdout), and
    the caller should stop quietly (EXIT_STDOUT_CLOSED), as command-line tools
    do on SIGPIPE (Python docs, signal module, "Note on SIGPIPE")."""
    try:
        print(line, flush=True)
        return True
    except BrokenPipeError:
        silence_stdout()
        return False


def silence_stdout():
    """After a broken pipe on stdout (``| head``): point it at /dev/null, so that
    the interpreter's own flush at exit raises no second BrokenPipeError
    (Python docs, signal module, "Note on SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass

# --log-level name (core.options.LOG_LEVELS) -> logging level.
LEVELS = {"error": logging.ERROR, "info": logging.INFO, "debug": logging.DEBUG}

BROKER_LOG = logging.getLogger("workq.broker")
WORKER_LOG = logging.getLogger("workq.worker")


class _OneLine(logging.Formatter):
    """``NAME: [error: |debug: ]message``; a message never spans lines."""

    _WORDS = {logging.DEBUG: "debug: ", logging.INFO: ""}

    def __init__(self, name):
        super().__init__()
        self.name = name

    def format(self, record):
        word = self._WORDS.get(record.levelno, "error: ")
        message = record.getMessage().replace("\r", "\\r").replace("\n", "\\n")
        return f"{self.name}: {word}{message}"


class _Handler(logging.StreamHandler):
    """A StreamHandler that never prints a traceback of its own (stderr closed,
    a pipe gone): losing a log line must not disturb the service."""

    def handleError(self, record):
        pass


def configure(logger, name, level):
    """Send ``logger``'s records at ``level`` (a --log-level name) and above to
    stderr as one line each, prefixed ``name`` ("workq broker"). Replaces the
    handlers an earlier call gave it (tests call main() several times).
    Returns the logger."""
    for old in logger.handlers[:]:
        logger.removeHandler(old)
    handler = _Handler(sys.stderr)
    handler.setFormatter(_OneLine(name))
    logger.addHandler(handler)
    logger.setLevel(LEVELS[level])
    logger.propagate = False
    return logger


def peer_label(port, address):
    """"worker 127.0.0.1:40312" for a connection on ``port`` (CLIENT/WORKER)
    from ``address`` (accept()'s: (host, port) or (host, port, flow, scope))."""
    host, number = address[0], address[1]
    return f"{port} [{host}]:{number}" if ":" in host else f"{port} {host}:{number}"


class TracingCore(BrokerCore):
    """A BrokerCore that logs every connection and job event at DEBUG on
    BROKER_LOG: connection accepted (``accepted``, called by the shell with the
    peer's address) and closed, job submitted, handed out, completed, requeued
    (holder lost, lease expired), buried, kicked.

    It wraps BrokerCore's own steps (the methods every such event passes
    through), so the rules stay in one place; tests/test_service_logging.py
    drives each event through both brokers, so a renamed step fails there.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._labels = {}          # Connection -> peer_label

    def _label(self, conn):
        return self._labels.get(conn) or f"{conn.port} connection"

    def accepted(self, conn, address):
        """The shell accepted ``conn`` from ``address``."""
        self._labels[conn] = label = peer_label(conn.port, address)
        BROKER_LOG.debug("accepted %s", label)

    def close(self, conn, now=0.0):
        held = sorted(conn.held)
        super().close(conn, now)
        label = self._labels.pop(conn, None) or self._label(conn)
        BROKER_LOG.debug("closed %s%s", label,
                         f" (it held job{'s' if len(held) > 1 else ''} "
                         f"{', '.join(map(str, held))})" if held else "")

    def _job(self, conn, text, now):
        reply = super()._job(conn, text, now)
        BROKER_LOG.debug("job %s submitted by %s (%d bytes)",
                         reply[3:].strip().decode(), self._label(conn), len(text))
        return reply

    def _take_next(self, conn, now):
        job_id = self.waiting[0]
        reply = super()._take_next(conn, now)
        BROKER_LOG.debug("job %d handed to %s", job_id, self._label(conn))
        return reply

    def _done(self, conn, arg, now):
        reply = super()._done(conn, arg, now)
        BROKER_LOG.debug("job %d completed by %s", parse_job_id(arg), self._label(conn))
        return reply

    def _delivery_failed(self, job_id, event):
        holder = self.holders.get(job_id)
        super()._delivery_failed(job_id, event)
        count = self.failures.get(job_id, 0)
        who = self._label(holder) if holder is not None else "its holder"
        if self.states[job_id] == BURIED:
            BROKER_LOG.debug("job %d buried: %s (%s), %d deliveries without DONE", job_id,
                             event, who, count)
        else:
            BROKER_LOG.debug("job %d requeued: %s (%s), delivery %d of %d without DONE",
                             job_id, event, who, count, self.max_deliveries)

    def _kick(self, conn, arg, now):
        reply = super()._kick(conn, arg, now)
        BROKER_LOG.debug("job %d kicked back to waiting by %s", parse_job_id(arg),
                         self._label(conn))
        return reply

class SetUpWarning:
    """Both brokers' "cannot set up the connection" line: an accepted connection
    was closed because the kernel refused one of its options
    (shell.netutil.set_up_accepted). Call it with the OSError and the peer's
    (host, port); it logs to BROKER_LOG at most once per ``interval`` seconds,
    not once per connection."""

    def __init__(self, interval=10.0):
        self.interval = interval
        self.quiet_until = 0.0

    def __call__(self, error, address):
        now = monotonic()
        if now >= self.quiet_until:
            self.quiet_until = now + self.interval
            BROKER_LOG.error("cannot set up the connection from %s:%s: %s; closed it",
                             address[0], address[1], error.strerror or error)
