"""Failures grouped by cause: one missing feature or one wrong word often fails
many cases, and a student should see the handful of causes, each with the
cases it explains, before the rows.

``group_failures`` is a pure function of the failures of one target. Two
failures share a cause when what the target did is the same once the
particulars are taken out (step numbers, connection names, ids, quoted
words, timings): ``received: NOJOB`` on six long-poll cases, ``TTL 32,
expected 1`` on every word case of a worker, ``received: ERROR unknown
command`` wherever an ``ERR`` code was expected. Where what was received
says little by itself (nothing arrived, the connection closed) the expected
line is part of the cause too. A case whose spec entry ``needs`` another
case that fails on the same target is filed under that case's cause: it
could not even set up without that case's property.
"""

import re

__all__ = ["Cause", "cause_key", "group_failures"]

STEP = re.compile(r"^step \d+: ")
CONNECTION = re.compile(r"\b(expect on|accept_worker) \S+|\bexpect \S+ closed")
QUOTED = re.compile(r"'[^']*'")
NUMBER = re.compile(r"(?<![A-Za-z_{])\d+(\.\d+)?")
# What was received says too little alone: the expected line joins the key.
# (A connection the target closed is one defect whatever was expected on it: a
# broker closing after each reply fails many cases, each expecting another line.)
VAGUE = ("nothing", "no matching syslog", "no datagram", "no connection",
         "unterminated data")


def _plain(text):
    text = STEP.sub("", text.strip())
    text = QUOTED.sub("'…'", text)
    text = NUMBER.sub("N", text)
    return text


def _unnamed(match):
    text = match.group(0)
    return "expect closed" if text.endswith(" closed") else text.split(" ", 1)[0]


def cause_key(summary):
    """The cause of a failure, from its one-line summary
    (``step 5: expect on c; expected: waiting; received: running``)."""
    parts = [part.strip() for part in summary.split("; ")]
    check = _plain(CONNECTION.sub(_unnamed, parts[0])) if parts else ""
    expected = next((p for p in parts if p.startswith("expected:")), "")
    received = next((p for p in parts if p.startswith("received:")), "")
    if not received:
        return check
    received = _plain(received)
    if any(received.removeprefix("received: ").startswith(word) for word in VAGUE):
        return f"{received} ({_plain(expected)})" if expected else f"{check}: {received}"
    return received


class Cause:
    """One cause on one target: its key, and the cases it explains."""

    def __init__(self, key):
        self.key = key
        self.cases = []       # case ids, in report order
        self.premise_of = {}  # case id -> the needed case that fails too
        self.example = ""     # the first case's own summary, particulars and all

    def describe(self):
        """The key; for a cause of one case, that case's own received and expected
        lines with their particulars (``received: ID 0 (expected: ID 1)`` says
        more than the key's ``received: ID N``)."""
        if len(self.cases) == 1 and self.example:
            return _particulars(self.example.split(": ", 1)[1])
        return self.key


def _particulars(summary):
    """``received: X (expected: Y)`` of a one-line failure summary, as the target
    sent it; the summary without its step number when it has no received part."""
    parts = [part.strip() for part in STEP.sub("", summary.strip()).split("; ")]
    expected = next((p for p in parts if p.startswith("expected:")), "")
    received = next((p for p in parts if p.startswith("received:")), "")
    if not received:
        return "; ".join(parts)
    return f"{received} ({expected})" if expected else received


def group_failures(failures, needs):
    """``failures``: [(case id, level, one-line summary)] of one target, in
    report order; ``needs``: case id -> ids it needs. Returns [Cause], the
    cause explaining the most cases first."""
    failed = {case for case, _, _ in failures}
    causes, by_case = {}, {}
    for case, level, summary in failures:
        if any(need in failed for need in needs.get(case, ())):
            continue
        key = cause_key(summary)
        cause = causes.setdefault(key, Cause(key))
        cause.example = cause.example or f"{case}: {summary}"
        cause.cases.append(case)
        by_case[case] = cause
    for case, level, summary in failures:
        premises = [need for need in needs.get(case, ()) if need in failed]
        if premises and premises[0] in by_case:
            cause = by_case[premises[0]]
            cause.cases.append(case)
            cause.premise_of[case] = premises[0]
        elif premises:   # its premise is itself filed under another premise
            key = cause_key(summary)
            cause = causes.setdefault(key, Cause(key))
            cause.example = cause.example or f"{case}: {summary}"
            cause.cases.append(case)
    return sorted(causes.values(), key=lambda cause: -len(cause.cases))
