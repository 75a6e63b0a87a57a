"""Mutant broker: replies for other connections (the JOB that ends a waiting
FETCH) wait until the end of the loop iteration, so the reply to a line the
worker sent meanwhile, read in the same iteration, overtakes it."""

import _mutant  # noqa: F401
from impl_select.broker import SelectBroker

_deliver_now = SelectBroker._deliver
_init = SelectBroker.__init__


def _deliver(self):
    # defect: held back instead of passed on after the event that made them
    self.__dict__.setdefault("late", []).extend(self.core.deliveries)
    self.core.deliveries.clear()


def __init__(self, core, *args, **kwargs):
    _init(self, core, *args, **kwargs)
    next_deadline = core.next_deadline

    def next_deadline_after_late_deliveries():
        # serve() asks the core for its next deadline at the end of every iteration:
        # only now are the held-back deliveries sent
        late = self.__dict__.get("late")
        if late:
            core.deliveries.extend(late)
            late.clear()
            _deliver_now(self)
        return next_deadline()

    core.next_deadline = next_deadline_after_late_deliveries


SelectBroker._deliver = _deliver
SelectBroker.__init__ = __init__

if __name__ == "__main__":
    _mutant.run_broker()
