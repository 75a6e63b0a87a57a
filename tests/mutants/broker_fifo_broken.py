"""Mutant broker: FETCH hands out the NEWEST waiting job (LIFO instead of FIFO)."""

import _mutant  # noqa: F401  (puts the checkout on sys.path)
from core.broker import BrokerCore

_original_take_next = BrokerCore._take_next


def _take_next(self, conn, *args, **kwargs):
    self.waiting.rotate(1)     # defect: the newest job moves to the front, is taken first
    return _original_take_next(self, conn, *args, **kwargs)


BrokerCore._take_next = _take_next

if __name__ == "__main__":
    _mutant.run_broker()
