"""Mutant broker: FETCH does not remove the job from the queue, so the next
FETCH (from any worker) is handed the same job again."""

import _mutant  # noqa: F401
from core.broker import RUNNING, BrokerCore


def _take_next(self, conn, now=0.0):
    job_id = self.waiting[0]             # defect: peek instead of popleft
    self.states[job_id] = RUNNING
    self.holders[job_id] = conn
    conn.held.add(job_id)
    return b"JOB %d %s\n" % (job_id, self.texts[job_id])


BrokerCore._take_next = _take_next

if __name__ == "__main__":
    _mutant.run_broker()
