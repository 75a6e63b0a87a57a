"""Mutant broker: each client connection counts its own ids, so one id is issued twice.

The jobs are stored correctly; only the number in the ID reply is the
connection's own count (1, 2, ... per connection).
"""

import _mutant  # noqa: F401
from core.broker import BrokerCore

_original_job = BrokerCore._job
_issued = {}                              # connection -> ids it has been given


def _job(self, conn, *args, **kwargs):
    _original_job(self, conn, *args, **kwargs)
    _issued[conn] = _issued.get(conn, 0) + 1
    return b"ID %d\n" % _issued[conn]      # defect: a per-connection counter


BrokerCore._job = _job

if __name__ == "__main__":
    _mutant.run_broker()
