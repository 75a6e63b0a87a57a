"""Mutant worker: after DONE it waits for the broker's OK, and a closed connection
does not end that wait (a student's `while readline() != "OK"` that never sees
EOF): when the broker goes away between DONE and OK, the worker never connects
again and never fetches another job."""

import _mutant  # noqa: F401
from core.worker import State, WorkerSlot

_original_lost = WorkerSlot.connection_lost


def connection_lost(self, reason, now):
    if self.state is State.AWAITING_OK:
        return []                         # defect: still waiting for OK, forever
    return _original_lost(self, reason, now)


WorkerSlot.connection_lost = connection_lost

if __name__ == "__main__":
    _mutant.run_worker()
