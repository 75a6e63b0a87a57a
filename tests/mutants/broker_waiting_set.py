"""Mutant broker: waiting ids kept in a set, not a queue.

FETCH takes whatever the set yields first. A set of small ints iterates in
id order while the ids fit its hash table (up to about 8 jobs), so every
core exchange, which queues a few jobs on a fresh broker, passes; once more
jobs wait, ids wrap around the table and younger jobs are handed out before
older ones (caught by the workload's fifo checker)."""

import _mutant  # noqa: F401
from core.broker import BrokerCore

_original_init = BrokerCore.__init__


class WaitingSet(set):
    """The deque operations BrokerCore uses, on a set (the defect)."""

    def append(self, job_id):
        self.add(job_id)

    appendleft = append

    def popleft(self):
        job_id = next(iter(self))
        self.remove(job_id)
        return job_id

    def __getitem__(self, index):
        return next(iter(self))


def __init__(self, *args, **kwargs):
    _original_init(self, *args, **kwargs)
    self.waiting = WaitingSet()


BrokerCore.__init__ = __init__

if __name__ == "__main__":
    _mutant.run_broker()
