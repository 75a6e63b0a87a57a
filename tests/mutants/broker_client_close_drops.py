"""Mutant broker: jobs belong to the client connection that submitted them; when
that client disconnects (as the one-shot client of the assignment does after
`JOB text`), its waiting jobs are deleted: STATUS says unknown, FETCH never
hands them out."""

import _mutant  # noqa: F401
from core.broker import CLIENT, JOB_OVERHEAD, WAITING, BrokerCore

_original_job, _original_close = BrokerCore._job, BrokerCore.close
_submitted = {}                       # client connection -> ids it submitted


def _job(self, conn, text, now):
    reply = _original_job(self, conn, text, now)
    _submitted.setdefault(conn, []).append(int(reply.split()[1]))
    return reply


def close(self, conn, now=0.0):
    if conn.port == CLIENT:
        for job_id in _submitted.pop(conn, ()):    # defect: the client's jobs go with it
            if self.states[job_id] == WAITING:
                self.waiting.remove(job_id)
                self.job_bytes -= len(self.texts[job_id]) + JOB_OVERHEAD
                self.texts[job_id] = None
                self.states[job_id] = 0            # never issued, as far as STATUS goes
    _original_close(self, conn, now)


BrokerCore._job, BrokerCore.close = _job, close

if __name__ == "__main__":
    _mutant.run_broker()
