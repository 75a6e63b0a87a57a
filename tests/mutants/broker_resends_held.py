"""Mutant broker: one job per worker connection. A FETCH from a connection
that still holds a job is answered with that same job again, instead of the
next waiting one (seen in a student's broker; the seed says FETCH pops the
next waiting job)."""

import _mutant  # noqa: F401
from core.broker import BrokerCore

_original_take_next = BrokerCore._take_next


def _take_next(self, conn, *args):
    if conn.held:                            # defect: hand the held job out again
        job_id = min(conn.held)
        return b"JOB %d %s\n" % (job_id, self.texts[job_id])
    return _original_take_next(self, conn, *args)


BrokerCore._take_next = _take_next

if __name__ == "__main__":
    _mutant.run_broker()
