"""Mutant broker: command words are case-sensitive (`job` is an unknown command)."""

import _mutant  # noqa: F401
from core.broker import BrokerCore
from core.messages import err

_original_answer = BrokerCore._answer


def _answer(self, conn, line, *args, **kwargs):
    word = line.split(None, 1)[:1]
    if word and word[0] != word[0].upper() and conn.waiting_fetch is None:
        # defect: only the upper-case spelling is a command
        return err("UNKNOWN_COMMAND", f"unknown command {word[0].decode(errors='replace')!r}")
    return _original_answer(self, conn, line, *args, **kwargs)


BrokerCore._answer = _answer

if __name__ == "__main__":
    _mutant.run_broker()
