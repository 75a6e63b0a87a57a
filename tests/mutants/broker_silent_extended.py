"""A core broker as a student might write it: on the worker port it knows the
plain ``FETCH`` and ``DONE`` of the core level and nothing else, and answers
what it does not know with silence: ``FETCH <seconds>`` (long-poll), ``TOUCH n``,
``STATS`` and ``AUTH`` get no reply at all. PROTOCOL.md's core level defines no
reply to them, so it is a correct core broker; the suite's own worker, which
helps it in the system cases, must not send it those commands in a core case.

Our select broker with its worker port cut down to that. Not a defect at the
core level: tests/test_core_brokers.py runs it on the core cases, not
tests/test_mutants.py."""

import _mutant  # noqa: F401
from core.broker import WORKER, BrokerCore

_original_init = BrokerCore.__init__


def _silent(conn, arg, now):
    return b""


def __init__(self, *args, **kwargs):
    _original_init(self, *args, **kwargs)
    handlers = self._handlers[WORKER]
    fetch = handlers[b"FETCH"]
    handlers[b"FETCH"] = lambda conn, arg, now: b"" if arg else fetch(conn, arg, now)
    for command in (b"TOUCH", b"STATS", b"AUTH"):
        handlers[command] = _silent


BrokerCore.__init__ = __init__

if __name__ == "__main__":
    _mutant.run_broker()
