"""Mutant worker: logs "running job N" where the assignment says "starting
job" (seen in a student's worker; a real deviation)."""

import _mutant  # noqa: F401
from core.worker import Log, WorkerSlot

_original_start_job = WorkerSlot._start_job


def _start_job(self, *args, **kwargs):
    return [Log("running job" + action.message.removeprefix("starting job"))
            if isinstance(action, Log) and action.message.startswith("starting job")
            else action for action in _original_start_job(self, *args, **kwargs)]


WorkerSlot._start_job = _start_job

if __name__ == "__main__":
    _mutant.run_worker()
