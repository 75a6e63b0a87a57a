"""The value language of spec/EXCHANGES.md.

In an ``expect`` pattern, ``{name:int}`` (decimal digits), ``{name:word}``
(no spaces) and ``{name:any}`` (rest of the line, possibly empty) capture
part of the received line; ``{_:KIND}`` matches without keeping; ``{name}``
is replaced by a value captured earlier. Everything else is literal and the
whole line must match. ``substitute`` does the ``{name}`` replacement for the
other step fields (``send``, ``wait_state``, ...).
"""

import re

__all__ = ["SpecError", "compile_pattern", "match_line", "substitute",
           "expand_references"]

KIND_REGEX = {"int": r"[0-9]+", "word": r"[^ ]+", "any": r".*"}

# {name} or {name:kind}; braces that do not form one are literal text.
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z]+))?\}")


class SpecError(Exception):
    """The exchange itself is malformed (not a failure of the target)."""


def substitute(text, values):
    """Replace every ``{name}`` in ``text`` by its captured value."""

    def replace(match):
        name, kind = match.groups()
        if kind is not None:
            raise SpecError(f"capture {match.group(0)} is only allowed in expect patterns")
        if name not in values:
            raise SpecError(f"{{{name}}} used before anything captured it")
        return values[name]

    return PLACEHOLDER.sub(replace, str(text))


def expand_references(pattern, values):
    """The pattern with each known ``{name}`` replaced, captures left as they
    are: what a failure report shows next to the pattern as written."""

    def replace(match):
        name, kind = match.groups()
        return values[name] if kind is None and name in values else match.group(0)

    return PLACEHOLDER.sub(replace, pattern)


def compile_pattern(pattern, values):
    """Return (compiled regex, [(group, name)]) for an expect pattern."""
    parts, captures, last = [], [], 0
    for match in PLACEHOLDER.finditer(pattern):
        parts.append(re.escape(pattern[last:match.start()]))
        name, kind = match.groups()
        if kind is None:
            parts.append(re.escape(substitute(match.group(0), values)))
        elif kind not in KIND_REGEX:
            raise SpecError(f"unknown capture kind {kind!r} in {match.group(0)}")
        elif name == "_":
            parts.append(f"(?:{KIND_REGEX[kind]})")
        else:
            # Numbered group names: the same name may be captured twice.
            group = f"g{len(captures)}"
            captures.append((group, name))
            parts.append(f"(?P<{group}>{KIND_REGEX[kind]})")
        last = match.end()
    parts.append(re.escape(pattern[last:]))
    return re.compile("".join(parts), re.DOTALL), captures


def match_line(pattern, line, values):
    """Whole-line match; returns the new captures as a dict, or None."""
    regex, captures = compile_pattern(pattern, values)
    match = regex.fullmatch(line)
    if match is None:
        return None
    return {name: match.group(group) for group, name in captures}
