"""Mutant broker: jobs live in a fixed table of 100 slots that wraps, as a C
student's `struct job jobs[100]` indexed by `id % 100` does: job 101 takes job
1's slot, so `STATUS 1` answers job 101's state (a completed job reads as
waiting again). Every exchange submits far fewer than 100 jobs; only a load
that asks about an old job after 100 more sees it."""

import _mutant  # noqa: F401
from core.broker import BrokerCore
from core.messages import parse_job_id

SLOTS = 100
_original_status = BrokerCore._status


def _status(self, conn, arg, now):
    job_id = parse_job_id(arg)
    newest = len(self.states) - 1
    if 0 < job_id <= newest:
        job_id += (newest - job_id) // SLOTS * SLOTS    # defect: the slot's latest tenant
    return _original_status(self, conn, b"%d" % job_id, now)


BrokerCore._status = _status

if __name__ == "__main__":
    _mutant.run_broker()
