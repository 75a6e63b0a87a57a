"""Mutant broker: command words are case-sensitive (`job` is an unknown command)."""

import _mutant  # noqa: F401
from core.broker import BrokerCore
from core.messages import err

_original_answer = BrokerCore._answer
_original_receive = BrokerCore.receive


def _refused(line):
    """The defect's reply when ``line``'s command word is not all upper case, else None."""
    word = line.split(None, 1)[:1]
    if word and word[0] != word[0].upper():
        # defect: only the upper-case spelling is a command
        return err("UNKNOWN_COMMAND", f"unknown command {word[0].decode(errors='replace')!r}")
    return None


def _answer(self, conn, line, *args, **kwargs):
    refused = _refused(line) if conn.waiting_fetch is None else None
    return refused or _original_answer(self, conn, line, *args, **kwargs)


def receive(self, conn, data, now=0.0):
    # A read of one whole line takes the core's fast path, which does not go
    # through _answer: the same defect there.
    if (data.endswith(b"\n") and data.count(b"\n") == 1 and conn.waiting_fetch is None
            and not conn.framer.has_partial()):
        refused = _refused(data)
        if refused:
            conn.last_read = now
            return refused
    return _original_receive(self, conn, data, now)


BrokerCore._answer = _answer
BrokerCore.receive = receive

if __name__ == "__main__":
    _mutant.run_broker()
