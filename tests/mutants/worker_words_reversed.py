"""Mutant worker: streams a job's words in reverse order (everything else is right)."""

import _mutant  # noqa: F401
from core.grammar import split_words
from core.worker import WorkerSlot

_original_start_job = WorkerSlot._start_job


def _start_job(self, job_id, text, now):
    return _original_start_job(self, job_id, " ".join(reversed(split_words(text))), now)


WorkerSlot._start_job = _start_job

if __name__ == "__main__":
    _mutant.run_worker()
