"""Mutant broker: DONE is accepted from any worker, not only the one holding the job."""

import _mutant  # noqa: F401
from core.broker import BrokerCore
from core.messages import RequestError, parse_job_id

_original_done = BrokerCore._done


def _done(self, conn, arg, *args, **kwargs):
    try:
        job_id = parse_job_id(arg)
    except RequestError:
        job_id = None
    holder = self.holders.get(job_id)
    if holder is not None and holder is not conn:   # defect: the job changes hands silently
        holder.held.discard(job_id)
        self.holders[job_id] = conn
        conn.held.add(job_id)
    return _original_done(self, conn, arg, *args, **kwargs)


BrokerCore._done = _done

if __name__ == "__main__":
    _mutant.run_broker()
