"""Mutant worker: for a long job (8 words or more) it sends DONE before the last
two words, then sends them at once.

Short jobs, which every exchange uses, are streamed right; the workload's
long jobs show the words arriving after the worker's own DONE (the words
checker, with the capture on lo)."""

import _mutant  # noqa: F401
from core.grammar import split_words
from core.worker import Emit, WorkerSlot

LONG = 8
_original_start_job = WorkerSlot._start_job
_original_emit_next = WorkerSlot._emit_next


def _start_job(self, job_id, text, now):
    self._long = len(split_words(text)) >= LONG
    return _original_start_job(self, job_id, text, now)


def _emit_next(self, now):
    if getattr(self, "_long", False) and len(self._words) == 2:
        self._long = False
        last = [Emit((word + "\n").encode("utf-8", "surrogateescape")) for word in self._words]
        self._words.clear()
        return [*self._send_done(), *last]  # defect: DONE goes out first
    return _original_emit_next(self, now)


WorkerSlot._start_job = _start_job
WorkerSlot._emit_next = _emit_next

if __name__ == "__main__":
    _mutant.run_worker()
