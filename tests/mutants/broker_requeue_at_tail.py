"""Mutant broker: a dead worker's jobs are requeued at the END of the queue, not the head."""

import _mutant  # noqa: F401
from core.broker import BrokerCore

_original_close = BrokerCore.close


def close(self, conn, *args, **kwargs):
    held = sorted(conn.held)
    _original_close(self, conn, *args, **kwargs)
    for job_id in held:                   # defect: from the head of the queue to its end
        if job_id in self.waiting:
            self.waiting.remove(job_id)
            self.waiting.append(job_id)


BrokerCore.close = close

if __name__ == "__main__":
    _mutant.run_broker()
