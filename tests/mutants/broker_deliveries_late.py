"""Mutant broker: replies for other connections (the JOB that ends a waiting
FETCH) wait until the end of the loop iteration, so the reply to a line the
worker sent meanwhile, read in the same iteration, overtakes it."""

import _mutant  # noqa: F401
from impl_select.broker import SelectBroker

_deliver_now = SelectBroker._deliver
_timeout = SelectBroker._timeout


def _deliver(self):
    # defect: held back instead of passed on after the event that made them
    self.__dict__.setdefault("late", []).extend(self.core.deliveries)
    self.core.deliveries.clear()


def _timeout_after_late_deliveries(self, deadline):
    late = self.__dict__.get("late")
    if late:                                   # the end of the iteration: now send them
        self.core.deliveries.extend(late)
        late.clear()
        _deliver_now(self)
    return _timeout(self, deadline)


SelectBroker._deliver = _deliver
SelectBroker._timeout = _timeout_after_late_deliveries

if __name__ == "__main__":
    _mutant.run_broker()
