"""Mutant broker: of the lines that arrive in one read, only the first is answered
(the classic `buffer.split("\n")[0]` bug: pipelined requests are lost)."""

import _mutant  # noqa: F401
from core.framing import LineFramer

_original_feed = LineFramer.feed


def feed(self, *args, **kwargs):
    return _original_feed(self, *args, **kwargs)[:1]   # defect: the rest of the read is dropped


LineFramer.feed = feed

if __name__ == "__main__":
    _mutant.run_broker()
