"""Mutant broker: when a worker's connection closes, the jobs it held stay running forever."""

import _mutant  # noqa: F401
from core.broker import BrokerCore

_original_close = BrokerCore.close


def close(self, conn, *args, **kwargs):
    conn.held.clear()                     # defect: forget them; nobody gets them back
    _original_close(self, conn, *args, **kwargs)


BrokerCore.close = close

if __name__ == "__main__":
    _mutant.run_broker()
