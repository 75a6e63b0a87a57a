"""Mutant broker: a worker connection keeps every job it was handed, DONE or not;
when the worker disconnects they all go back to the head of the queue, so a job
already completed is waiting again and handed out (run) a second time."""

import _mutant  # noqa: F401
from core.broker import COMPLETED, JOB_OVERHEAD, WAITING, BrokerCore

_original_take, _original_close = BrokerCore._take_next, BrokerCore.close
_handed = {}                          # worker connection -> {id: text} it was handed


def _take_next(self, conn, now):
    reply = _original_take(self, conn, now)
    job_id = int(reply.split(b" ", 2)[1])
    _handed.setdefault(conn, {})[job_id] = self.texts[job_id]
    return reply


def close(self, conn, now=0.0):
    handed = _handed.pop(conn, {})
    for job_id in sorted(handed, reverse=True):
        if self.states[job_id] == COMPLETED:       # defect: DONE did not take it off the list
            self.states[job_id] = WAITING
            self.texts[job_id] = handed[job_id]
            self.job_bytes += len(handed[job_id]) + JOB_OVERHEAD
            self.completed -= 1
            self.waiting.appendleft(job_id)
    _original_close(self, conn, now)
    if self.waiting and self.fetchers:
        self._hand_out(now)


BrokerCore._take_next, BrokerCore.close = _take_next, close

if __name__ == "__main__":
    _mutant.run_broker()
