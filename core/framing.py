"""Line framing: bytes from a stream in, complete lines out.

Sans-I/O: the caller feeds whatever one ``recv`` returned and gets back every
complete line of it at once (the hot path handles a whole read in one pass).
Lines end in LF; a CR right before the LF is dropped, so CRLF is accepted.
A line longer than ``max_line`` bytes (terminator excluded) sets
``too_long``; from then on the framer holds nothing more, so a peer cannot
make the buffer grow past the limit.
"""

__all__ = ["LineFramer", "DEFAULT_MAX_LINE"]

DEFAULT_MAX_LINE = 65536


class LineFramer:
    __slots__ = ("_partial", "max_line", "too_long")

    def __init__(self, max_line=DEFAULT_MAX_LINE):
        self._partial = bytearray()
        self.max_line = max_line
        self.too_long = False

    def feed(self, data):
        """Return the complete lines in ``data`` (without LF / CRLF).

        When a line is over the limit, returns the lines before it and sets
        ``too_long``; the caller answers and closes the connection.
        """
        if self.too_long:
            return []
        limit = self.max_line
        if b"\n" not in data:
            self._partial += data
            # +1: a CR that may still turn out to be the first half of CRLF.
            if len(self._partial) > limit + 1:
                self._overflow()
            return []
        lines = data.split(b"\n")
        joined = bool(self._partial)      # the first line began in an earlier read
        if joined:
            self._partial += lines[0]
            lines[0] = bytes(self._partial)
            self._partial.clear()
        rest = lines.pop()
        if rest:
            if len(rest) > limit + 1:
                self._overflow()
            else:
                self._partial += rest
        # No line of a read within the limit can pass it, unless it was joined.
        if (joined or len(data) > limit) and max(map(len, lines)) > limit:
            return self._cut_at_overlong(lines)
        if b"\r" not in data and not (joined and lines[0][-1:] == b"\r"):
            return lines
        return [line[:-1] if line[-1:] == b"\r" else line for line in lines]

    def has_partial(self):
        return bool(self._partial)

    def partial_length(self):
        """Bytes of the unfinished line held so far."""
        return len(self._partial)

    def take_partial(self):
        """Hand over (and forget) the unfinished line held so far."""
        partial = bytes(self._partial)
        self._partial.clear()
        return partial

    def _overflow(self):
        self.too_long = True
        self._partial = bytearray()

    def _cut_at_overlong(self, lines):
        kept = []
        for line in lines:
            if line[-1:] == b"\r":
                line = line[:-1]
            if len(line) > self.max_line:
                self._overflow()
                break
            kept.append(line)
        return kept
