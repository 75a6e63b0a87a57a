"""Mutant broker: when two workers holding jobs die together (their
connections close within 0.1 s of each other), the second one's jobs are
forgotten: they stay running forever.

One worker dying (every exchange that tests requeue) is handled right; the
defect shows only when two holders die at once (the workload's kill-workers
fault, caught as lost jobs)."""

import time

import _mutant  # noqa: F401
from core.broker import BrokerCore

_original_close = BrokerCore.close
PAIR_WINDOW = 0.1


def close(self, conn, *args, **kwargs):
    now = time.monotonic()
    last = getattr(self, "_last_holder_lost", None)
    if conn.held:
        self._last_holder_lost = now
        if last is not None and now - last < PAIR_WINDOW:
            conn.held.clear()               # defect: the second death in a row loses its jobs
    _original_close(self, conn, *args, **kwargs)


BrokerCore.close = close

if __name__ == "__main__":
    _mutant.run_broker()
