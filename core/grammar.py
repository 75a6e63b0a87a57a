"""The protocol's grammar, written once: every number, the word separator, the
characters a line may not contain.

Each rule is the ``grammar:`` entry of spec/protocol.yaml with the same name,
its regex copied here verbatim (tests/test_spec.py fails when the two differ),
compiled once and used by every parser: the broker (``core.messages``,
``core.broker``), the worker (``core.worker``), every command line
(``core.options``, ``core.worker_options``, ``tools.*``). Nothing here leans
on Python's own ideas of a number or of whitespace: ``int()`` and ``float()``
accept ``1_000``, ``\u0665``, `` 5 ``, ``1e3``, ``nan``; ``str.isdigit()``
accepts ``\u00b2``; ``str.split()`` splits at U+00A0, U+0085, U+2028, U+3000.
Only text a rule has matched is handed to ``int()`` or ``float()``, where
those readings coincide with the spec's.

Hand-written rather than generated from the YAML: the broker, worker and
client run on a bare ``python3`` and must not read YAML; a rule needs more
than its regex here (a bytes form for the wire, a range, an error message);
and the identity test catches any drift as surely as a staleness check would,
without a generation step.

All patterns are used with ``fullmatch`` (a rule describes a whole token). A
``str`` pattern is compiled with ``re.ASCII`` so that no class can widen to
Unicode; the rules name their characters explicitly anyway.
"""

import re
from decimal import Decimal

__all__ = [
    "RULES", "NumberError",
    "JOB_ID", "WAIT_SECONDS_BYTES", "PORT", "WHOLE_NUMBER", "SECONDS",
    "WORD_SEPARATOR", "FORBIDDEN_CHAR", "FORBIDDEN_BYTE",
    "parse_port", "parse_whole", "parse_seconds", "format_seconds", "split_words",
    "MAX_ID_DIGITS",
]

# name -> regex, exactly as in spec/protocol.yaml `grammar:` (test_spec.py checks it).
RULES = {
    # On the wire.
    "job_id": r"[0-9]{1,18}",
    "wait_seconds": r"[0-9]+(\.[0-9]+)?",
    # On command lines.
    "port": r"[0-9]{1,5}",
    "whole_number": r"[0-9]{1,18}",
    "seconds": r"[0-9]+(\.[0-9]+)?",
    # In text.
    "word_separator": r"[\t ]+",
    "forbidden_char": r"[\x00-\x08\x0a-\x1f\x7f-\x9f]",
}

MAX_ID_DIGITS = 18   # job_id: below 10**18, so an id fits a signed 64-bit integer

JOB_ID = re.compile(RULES["job_id"], re.ASCII)
WAIT_SECONDS_BYTES = re.compile(RULES["wait_seconds"].encode())
PORT = re.compile(RULES["port"], re.ASCII)
WHOLE_NUMBER = re.compile(RULES["whole_number"], re.ASCII)
SECONDS = re.compile(RULES["seconds"], re.ASCII)
WORD_SEPARATOR = re.compile(RULES["word_separator"], re.ASCII)
FORBIDDEN_CHAR = re.compile(RULES["forbidden_char"], re.ASCII)
# The forbidden characters that are one byte in UTF-8 (C0 but TAB, DEL): found
# also in a line that is not valid UTF-8. The C1 controls are two bytes (C2 80
# .. C2 9F); a parser finds them with FORBIDDEN_CHAR in the decoded text.
FORBIDDEN_BYTE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class NumberError(ValueError):
    """A command-line number that the grammar or its range refuses; the message
    is one line for the user and names the value as typed."""


def _shown(text):
    return repr(text[:40] + ("..." if len(text) > 40 else ""))


def parse_port(text, lowest=1):
    """A port on a command line (rule ``port``): ASCII digits, ``lowest``-65535.

    ``lowest`` is 0 for a listener (0: any free port), 1 for a destination.
    Returns an int; raises NumberError.
    """
    if not PORT.fullmatch(text):
        raise NumberError(f"bad port {_shown(text)}: must be a number from {lowest} to 65535 "
                          "(ASCII digits only)")
    if not lowest <= int(text) <= 65535:
        raise NumberError(f"bad port {_shown(text)}: out of range {lowest}-65535")
    return int(text)


def parse_whole(text, low=0, high=None, what="a whole number"):
    """A count, a byte limit, a TTL (rule ``whole_number``): ASCII digits, 1-18
    of them, from ``low`` to ``high`` (None: no upper bound). Returns an int;
    raises NumberError naming ``what``."""
    if not WHOLE_NUMBER.fullmatch(text):
        raise NumberError(f"not {what}: {_shown(text)} (ASCII digits only: no sign, "
                          "underscore, point or exponent)")
    value = int(text)
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"{low} or more"
        raise NumberError(f"out of range: {text} (must be {bounds})")
    return value


def parse_seconds(text, low=0.0, high=None, positive=False, what="a number of seconds"):
    """A delay, an interval, a timeout (rule ``seconds``): ASCII digits with an
    optional point and digits, from ``low`` to ``high`` (None: no upper bound);
    ``positive``: 0 is refused. Returns a float; raises NumberError.

    Only text the rule matched reaches ``float()``, so no sign, exponent,
    underscore, ``inf`` or ``nan`` gets through; a number too large for a
    float (hundreds of digits) is refused as out of range.
    """
    if not SECONDS.fullmatch(text):
        raise NumberError(f"not {what}: {_shown(text)} (a decimal number such as 5 or "
                          "0.25: ASCII digits, no sign, exponent or underscore)")
    value = float(text)
    if value < low or (positive and value == 0) or value == float("inf") \
            or (high is not None and value > high):
        bounds = ("greater than 0" if positive else f"{low:g} or more") + \
            (f" and at most {high:g}" if high is not None else "")
        raise NumberError(f"out of range: {text} (must be {bounds})")
    return value


def format_seconds(value):
    """Seconds as the rule ``wait_seconds`` writes them: digits, a point and
    digits only when needed, never an exponent (``%g`` writes 1e-05)."""
    text = format(Decimal(repr(float(value))), "f")   # the shortest exact digits
    return text.rstrip("0").rstrip(".") if "." in text else text


def split_words(text):
    """The words of a job's text (rule ``word_separator``): split at runs of
    SP and HTAB only, empty words dropped. Every other character, U+00A0,
    U+2028 and U+3000 included, is part of a word."""
    return [word for word in WORD_SEPARATOR.split(text) if word]
