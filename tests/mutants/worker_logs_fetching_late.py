"""Mutant worker: logs "fetching job N" when the JOB arrives, instead of
"fetching job" before every FETCH (seen in a student's worker). It still
connects, FETCHes and logs the three messages in the assignment's order."""

import _mutant  # noqa: F401
from core.worker import Log, WorkerSlot

_original_fetch = WorkerSlot._fetch
_original_start_job = WorkerSlot._start_job


def _fetch(self, now):
    return [action for action in _original_fetch(self, now)
            if not (isinstance(action, Log) and action.message == "fetching job")]


def _start_job(self, job_id, text, now):
    return [Log(f"fetching job {job_id}"), *_original_start_job(self, job_id, text, now)]


WorkerSlot._fetch = _fetch
WorkerSlot._start_job = _start_job

if __name__ == "__main__":
    _mutant.run_worker()
