"""What a syslog message may contain, and how long it may be (spec: output.syslog).

Sans-I/O: text in, text out. A worker's log messages carry text that came
from the broker (ERR texts, unexpected lines, reasons), decoded with
``surrogateescape`` so that bytes which are not UTF-8 survive as lone
surrogates U+DC80-U+DCFF. Such a string cannot be encoded as UTF-8, and
control characters in it would reach whoever reads the log on a terminal.
``syslog_message`` turns any string into one that is safe to send, by these
rules (the spec's, written once here):

    a byte that is not part of valid UTF-8     \\xNN   (its value, 80-ff)
    a C0 control or DEL, U+0000-U+001F, U+007F \\xNN   (00-1f, 7f; TAB too)
    a C1 control, U+0080-U+009F                \\uNNNN (0080-009f)
    any other lone surrogate                   \\uNNNN (cannot come from the wire)
    a backslash                                \\\\
    anything else                              itself, in UTF-8

hex digits lower case. The mapping is reversible: every ``\\`` in a message
starts an escape, so a reader can tell the byte 0xff (``\\xff``) from the
four characters a broker may have sent (``\\\\xff``), and a C1 control
(``\\u0085``) from the undecodable byte 0x85 (``\\x85``).

Length: RFC 3164 section 4.1, "The total length of the packet MUST be 1024
bytes or less." The datagram is ``<PRI>`` + ``NAME[PID]: `` + message, so a
message gets what the header leaves; a longer one is cut at a character
boundary (never inside a UTF-8 sequence or an escape) and ends with
``CUT_MARKER``, the whole still within the limit.
"""

__all__ = ["MAX_DATAGRAM", "CUT_MARKER", "escape", "fit", "syslog_message"]

MAX_DATAGRAM = 1024            # bytes, RFC 3164 section 4.1
CUT_MARKER = "...[truncated]"  # ends a message that was cut (ASCII, 14 bytes)


def _escaped(ch, backslash):
    """The escape for one character, or None when it stays as it is."""
    code = ord(ch)
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    if 0x80 <= code <= 0x9F:
        return f"\\u{code:04x}"
    if 0xDC80 <= code <= 0xDCFF:          # surrogateescape: the byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    if 0xD800 <= code <= 0xDFFF:
        return f"\\u{code:04x}"
    if ch == "\\" and backslash:
        return "\\\\"
    return None


def _plain(text, backslash):
    """True when ``escape`` would return ``text`` unchanged (the common case, at C speed)."""
    return text.isascii() and text.isprintable() and not (backslash and "\\" in text)


def _pieces(text, backslash):
    """``text`` escaped, as a list of units that a cut must not split."""
    return [_escaped(ch, backslash) or ch for ch in text]


def escape(text, backslash=True):
    """``text`` with undecodable bytes, controls (and backslashes) escaped: see the module.

    ``backslash=False`` leaves backslashes alone: for a display of text
    that may already hold escapes (tools.syslog_listen), not for the
    reversible form a worker sends.
    """
    if _plain(text, backslash):
        return text
    return "".join(_pieces(text, backslash))


def fit(pieces, limit):
    """Join ``pieces`` (str units), cut so that the UTF-8 result is at most
    ``limit`` bytes: a cut keeps whole units and ends with CUT_MARKER."""
    sizes = [len(p.encode("utf-8")) for p in pieces]
    if sum(sizes) <= limit:
        return "".join(pieces)
    room = limit - len(CUT_MARKER)
    if room < 0:
        return CUT_MARKER[:max(limit, 0)]
    kept, used = [], 0
    for piece, size in zip(pieces, sizes):
        if used + size > room:
            break
        kept.append(piece)
        used += size
    return "".join(kept) + CUT_MARKER


def syslog_message(text, header_bytes, backslash=True):
    """The message to send after a header of ``header_bytes`` bytes
    (``<14>workq-worker[PID]: ``): escaped, and cut so that the datagram
    is at most MAX_DATAGRAM bytes. Never raises for any str."""
    limit = MAX_DATAGRAM - header_bytes
    if _plain(text, backslash) and len(text) <= limit:
        return text
    return fit(_pieces(text, backslash), limit)
