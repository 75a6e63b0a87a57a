"""Mutant worker: never logs "starting job N" to syslog (everything else is right)."""

import _mutant  # noqa: F401
from core.worker import Log, WorkerSlot

_original_start_job = WorkerSlot._start_job


def _start_job(self, *args, **kwargs):
    return [action for action in _original_start_job(self, *args, **kwargs)
            if not (isinstance(action, Log) and action.message.startswith("starting job"))]


WorkerSlot._start_job = _start_job

if __name__ == "__main__":
    _mutant.run_worker()
