"""Mutant broker: the wait of FETCH <seconds> is read with Python's float(), so
`FETCH 0_1` waits 0.1 s and `FETCH 1e1` ten (the spec's wait_seconds refuses both)."""

import _mutant  # noqa: F401
import core.broker
from core.messages import RequestError


def _fetch_wait(arg):
    try:
        seconds = float(arg)           # defect: takes 0_1, 1e1, " 5", "\u0663"
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= core.broker.MAX_FETCH_WAIT:
        raise RequestError("BAD_ARGUMENT", "FETCH takes nothing or seconds to wait")
    return seconds


core.broker._fetch_wait = _fetch_wait

if __name__ == "__main__":
    _mutant.run_broker()
