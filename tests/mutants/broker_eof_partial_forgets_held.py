"""Mutant broker: a worker that closes with an unfinished line in the broker's
buffer (it died while writing) has that line answered, and the cleanup that
requeues its jobs is skipped: they stay running forever."""

import _mutant  # noqa: F401
from core.broker import BrokerCore

_original_end_of_input = BrokerCore.end_of_input


def end_of_input(self, conn, now=0.0):
    unfinished = conn.framer.has_partial()
    reply = _original_end_of_input(self, conn, now)
    if unfinished:
        conn.held.clear()                 # defect: an early return skips the requeue
    return reply


BrokerCore.end_of_input = end_of_input

if __name__ == "__main__":
    _mutant.run_broker()
