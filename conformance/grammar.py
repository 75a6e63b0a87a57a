"""The spec's grammar for the suite's own command line.

The suite is black-box and never imports ``core``: it reads the rules from
``grammar:`` of the spec YAML it runs, so its options obey the same rules as
every workq program (``--word-delay 1e-3``, ``--broker-addr h:5_0000:1`` are
refused, not read as Python would read them).
"""

import re
from decimal import Decimal

__all__ = ["GrammarError", "rules", "number", "decimal_text"]


class GrammarError(ValueError):
    """A value the spec's grammar refuses; the message is one line for the user."""


def rules(spec):
    """``{name: compiled regex}`` of the spec's ``grammar:`` rules (ASCII
    matching: a rule spells out its characters). An older spec without a
    grammar gives no rules; ``number`` then refuses nothing it can read."""
    return {rule["name"]: re.compile(rule["regex"], re.ASCII)
            for rule in (spec or {}).get("grammar") or []}


def number(grammar, rule, text, what):
    """``text`` as an int (rules ``port``, ``whole_number``) or a float (rule
    ``seconds``) when the spec's rule matches it whole; else GrammarError
    naming ``what`` (the option)."""
    regex = grammar.get(rule)
    if regex is not None and not regex.fullmatch(text):
        raise GrammarError(f"{what}: {text!r} does not match the spec's grammar rule "
                           f"{rule} ({regex.pattern}: ASCII digits, no sign, exponent or "
                           "underscore)")
    try:
        return float(text) if rule == "seconds" else int(text, 10)
    except ValueError:
        raise GrammarError(f"{what}: {text!r} is not a number") from None


def decimal_text(value):
    """A float written as the spec's ``seconds`` rule reads it: digits and a
    point, never an exponent (``str(0.00001)`` is ``1e-05``)."""
    text = format(Decimal(repr(float(value))), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
