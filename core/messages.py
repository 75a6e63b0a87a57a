"""Parsing and formatting of every message on the wire (see spec/protocol.yaml).

Requests are parsed from the bytes of one line (terminator already removed);
replies are formatted straight to bytes, LF included, so a shell can join a
whole read's replies and send them at once.
"""

import re

from .framing import DEFAULT_MAX_LINE
from .grammar import FORBIDDEN_BYTE, FORBIDDEN_CHAR, JOB_ID, MAX_ID_DIGITS

__all__ = [
    "Request", "chunk_is_plain", "ONE_PLAIN_LINE_MAP", "parse_request", "RequestError",
    "parse_job_id",
    "Reply", "parse_reply", "err", "LINE_LIMIT", "MAX_JOB_TEXT",
    "MAX_WORD", "has_overlong_word",
]

# What may not appear in a read whose lines all pass unchecked: controls other
# than TAB, LF and CR (a CR must be part of a CRLF, checked apart), DEL and
# every byte past ASCII.
_UNPLAIN_BYTES = bytes([*range(0x00, 0x09), 0x0b, 0x0c, *range(0x0e, 0x20),
                        *range(0x7f, 0x100)])
# bytes.translate tables that find them in one C pass over a read. A table
# without deletechars costs that pass alone (and returns the read itself when
# nothing changes); deletechars first builds a 256-entry table on every call,
# about 70 ns more per request (CPython Objects/bytesobject.c, bytes_translate_impl).
# UNPLAIN_TO_NUL maps every unplain byte to NUL, itself unplain: a read with no
# NUL after it has none. ONE_PLAIN_LINE_MAP maps them, CR and LF to LF: a read
# ending in LF is one plain line when the translation of the rest holds no LF,
# what the broker's fast path takes (BrokerCore.receive).
UNPLAIN_TO_NUL = bytes(0 if byte in _UNPLAIN_BYTES else byte for byte in range(256))
ONE_PLAIN_LINE_MAP = bytes(10 if byte in _UNPLAIN_BYTES + b"\r" else byte for byte in range(256))
# The longest line every reader must accept (spec: framing, line_limit_bytes),
# LF or CRLF excluded: brokers, workers and clients alike.
LINE_LIMIT = DEFAULT_MAX_LINE
# The longest job text a broker accepts (spec: client.job): the JOB line that
# hands it out, "JOB <id> <text>" with an id of up to MAX_ID_DIGITS digits,
# must fit LINE_LIMIT, or no worker could take the job.
MAX_JOB_TEXT = LINE_LIMIT - len(b"JOB ") - MAX_ID_DIGITS - len(b" ")
# The longest word (spec: client.job): the word plus LF must fit one UDP
# datagram over IPv4, 65,535 bytes less 20 of IP and 8 of UDP header
# (RFC 791, RFC 768).
MAX_WORD = 65535 - 20 - 8 - len(b"\n")
_OVERLONG_WORD = re.compile(rb"[^ \t]{%d}" % (MAX_WORD + 1))


def has_overlong_word(text):
    """True when ``text`` (bytes) has a word of more than MAX_WORD bytes; words
    are separated by runs of spaces and tabs (spec: output.multicast)."""
    return len(text) > MAX_WORD and _OVERLONG_WORD.search(text) is not None


class RequestError(Exception):
    """A line that cannot be a request; ``code`` and ``text`` form the ERR reply."""

    def __init__(self, code, text):
        super().__init__(text)
        self.code = code
        self.text = text

    @property
    def reply(self):
        return err(self.code, self.text)


class Request:
    """One parsed request: ``command`` upper-case bytes, ``arg`` bytes (may be empty)."""

    __slots__ = ("command", "arg")

    def __init__(self, command, arg):
        self.command = command
        self.arg = arg

    def __repr__(self):
        return f"Request({self.command!r}, {self.arg!r})"


def err(code, text):
    """The reply ``ERR <code> <text>`` as bytes, LF included."""
    return b"ERR %s %s\n" % (code.encode(), text.encode())


def chunk_is_plain(data):
    """True when every line in ``data`` is printable ASCII (TAB, CRLF allowed).

    One pass over a whole read lets the broker skip the per-line checks of
    parse_request for the common case.
    """
    return (b"\0" not in data.translate(UNPLAIN_TO_NUL)     # C speed, no regex
            and (b"\r" not in data or data.count(b"\r") == data.count(b"\r\n")))


def parse_request(line, checked=False):
    """Split a line into command word and argument; raise RequestError if unusable.

    The command word is case-insensitive; the argument is the rest of the
    line with surrounding spaces and tabs removed (inner ones are kept).
    ``checked``: the line is known to be plain (see chunk_is_plain).

    ``bytes.split()`` and ``rstrip()`` cut at ASCII whitespace: SP, HTAB, LF,
    VT, FF, CR. Once the forbidden characters are refused only SP and HTAB
    can remain, which is exactly the grammar's word_separator; non-ASCII
    spaces (U+00A0, U+3000, ...) are never cut at, bytes methods being ASCII.
    """
    if not checked:
        # The grammar's forbidden_char: a bare CR, a NUL, an escape sequence or
        # a CSI (U+009B) is refused rather than stored in a job and replayed to
        # a terminal. Decoded first: one pass of a single character class over the text is
        # faster than a bytes pattern that must also find C1's two-byte form.
        try:
            text = line.decode()
        except UnicodeDecodeError:
            if FORBIDDEN_BYTE.search(line):     # a control byte wins, as before
                raise RequestError("BAD_CHAR", "line contains a control character") from None
            raise RequestError("BAD_ENCODING", "line is not valid UTF-8") from None
        if FORBIDDEN_CHAR.search(text):
            raise RequestError("BAD_CHAR", "line contains a control character")
    parts = line.split(None, 1)
    if not parts:
        raise RequestError("EMPTY_LINE", "empty line")
    return Request(parts[0].upper(), parts[1].rstrip() if len(parts) == 2 else b"")


def parse_job_id(arg):
    """Job id argument of STATUS / DONE (bytes): the grammar's job_id, ASCII
    digits, 1 to MAX_ID_DIGITS of them. Returns an int; raises RequestError
    BAD_ID."""
    # bytes.isdigit() is ASCII-only, so this is exactly job_id ([0-9]{1,18}),
    # at a third of a regex match's cost (STATUS and DONE are hot paths).
    if not (arg.isdigit() and len(arg) <= MAX_ID_DIGITS):
        shown = arg.decode(errors="replace")[:40]
        raise RequestError("BAD_ID", f"job id must be a number, got {shown!r}"
                           if arg else "job id missing")
    return int(arg)


class Reply:
    """A reply as a worker or client sees it: ``kind`` plus fields."""

    __slots__ = ("kind", "job_id", "text", "code")

    def __init__(self, kind, job_id=None, text="", code=None):
        self.kind = kind
        self.job_id = job_id
        self.text = text
        self.code = code

    def __repr__(self):
        return f"Reply({self.kind!r}, job_id={self.job_id!r}, text={self.text!r}, code={self.code!r})"


_STATES = {"waiting", "running", "completed", "unknown", "buried"}


def parse_reply(line):
    """Parse one reply line (str, no terminator) from the broker.

    Kinds: ID, JOB, NOJOB, OK, STATE (text = the state), STATS (text = the
    key=value list), ERR (code, text). Anything else raises ValueError.
    """
    head, _, rest = line.partition(" ")
    # Ids by the grammar: str.isdigit() would take '\u00b2' (int() fails) and
    # '\u0663' (int() reads 3).
    if head == "ID" and JOB_ID.fullmatch(rest):
        return Reply("ID", job_id=int(rest))
    if head == "JOB":
        num, _, text = rest.partition(" ")
        if JOB_ID.fullmatch(num):
            return Reply("JOB", job_id=int(num), text=text)
    if line in ("NOJOB", "OK"):
        return Reply(line)
    if line in _STATES:
        return Reply("STATE", text=line)
    if head == "STATS":
        return Reply("STATS", text=rest)
    if head == "ERR":
        code, _, text = rest.partition(" ")
        return Reply("ERR", code=code, text=text)
    raise ValueError(f"not a broker reply: {line!r}")
