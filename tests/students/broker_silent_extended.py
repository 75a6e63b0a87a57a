"""A core broker as a student might write it: on the worker port it knows the
plain ``FETCH`` and ``DONE`` of the core level and nothing else, and answers
what it does not know with silence: ``FETCH <seconds>`` (long-poll), ``TOUCH n``,
``STATS`` and ``AUTH`` get no reply at all. PROTOCOL.md's core level defines no
reply to them, so it is a correct core broker; the suite's own worker, which
helps it in the system cases, must not send it those commands in a core case.

Our select broker with its worker port cut down to that (tests/mutants/_mutant.py
makes the checkout importable)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "mutants"))

import _mutant  # noqa: E402
from core.broker import WORKER, BrokerCore  # noqa: E402

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
