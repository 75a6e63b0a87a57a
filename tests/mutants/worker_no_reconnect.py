"""Mutant worker: once the broker drops the connection it never reconnects
(it logs the loss, then idles until it is stopped)."""

import _mutant  # noqa: F401
from core.worker import WorkerSlot

_original_lost = WorkerSlot._lost


def _lost(self, *args, **kwargs):
    actions = _original_lost(self, *args, **kwargs)
    self._deadline = None                 # defect: no reconnect is ever due
    return actions


WorkerSlot._lost = _lost

if __name__ == "__main__":
    _mutant.run_worker()
