"""Mutant broker: two FETCHes answered in the same loop iteration both get the
head job.

It takes the head job out of the queue only at the end of the iteration, as
a broker that peeks in its read handler and pops after its select() round
would. One FETCH at a time (every core exchange) is answered right; two
workers' FETCHes read in one round (a loaded broker, or one that was paused)
are both handed the same job: two live holders (the workload's
exclusive-holding checker)."""

import _mutant  # noqa: F401
from core.broker import BrokerCore

_original_fetch = BrokerCore._fetch
_original_take_next = BrokerCore._take_next


def _fetch(self, conn, arg, now):
    # The select shell reads every ready connection with one `now` per round.
    self._round = now
    try:
        return _original_fetch(self, conn, arg, now)
    finally:
        self._round = None


def _take_next(self, conn, *args):
    last = getattr(self, "_last_take", None)
    round_ = getattr(self, "_round", None)
    if round_ is not None and last is not None and last[0] == round_ and last[1] in self.holders:
        job_id = last[1]                    # defect: the head is still "there" this round
        return b"JOB %d %s\n" % (job_id, self.texts[job_id])
    reply = _original_take_next(self, conn, *args)
    self._last_take = (round_, int(reply.split()[1]))
    return reply


BrokerCore._fetch = _fetch
BrokerCore._take_next = _take_next

if __name__ == "__main__":
    _mutant.run_broker()
