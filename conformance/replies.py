"""How a target words its client-port replies: ``--replies [TARGET:]STYLE``.

The spec's exchanges expect workq's replies on the client port: ``ID <n>``
for ``JOB``, and the states ``waiting``, ``running``, ``completed``,
``unknown`` for ``STATUS``. The original assignment fixes only the client
side, and its own text answers ``JOB`` with a bare number and names the
state ``complete``: a submission that does so is right, and must be graded
on what it does, not on workq's spelling. A target's reply style rewrites
the patterns of ``expect`` steps on client-port connections, and the states
``wait_state`` polls for, before they are matched; nothing else changes.

STYLE is a preset or a list of ``KEY=VALUE`` pairs, separated by commas:

- ``workq``: ``id=ID <n>`` (the default of every target);
- ``assignment``: ``id=<n>,completed=complete``;
- ``id=FORMAT``: the reply to ``JOB``, ``<n>`` standing for the id (once);
- ``waiting=W``, ``running=W``, ``completed=W``, ``unknown=W``: the word the
  target answers ``STATUS`` with for that state.

``--replies STYLE`` without ``TARGET:`` applies to every target not given
by ``--impl``; ``--replies alice:assignment`` to the target ``alice``.
"""

import re

__all__ = ["RepliesError", "Replies", "parse_replies", "split_target", "PRESETS"]

ID_MARK = "<n>"
STATES = ("waiting", "running", "completed", "unknown")
PRESETS = {"workq": "id=ID <n>", "assignment": "id=<n>,completed=complete"}
WORD = re.compile(r"[^\s,=]+\Z")


class RepliesError(ValueError):
    """A --replies value that cannot be understood."""


class Replies:
    """A reply style: the JOB reply's format and the STATUS words."""

    def __init__(self, id_format="ID <n>", states=None, text="workq"):
        self.id_format = id_format
        self.states = dict(states or {})   # spec's state -> the target's word
        self.text = text                   # as given, for the reports

    @property
    def is_default(self):
        return self.id_format == "ID <n>" and all(
            word == state for state, word in self.states.items())

    def describe(self):
        parts = [f"JOB -> {self.id_format!r}"]
        parts += [f"{state} -> {word!r}" for state, word in self.states.items()
                  if word != state]
        return f"{self.text} ({', '.join(parts)})"

    def pattern(self, pattern):
        """An ``expect`` pattern of a client-port step, in this style."""
        if pattern.startswith("ID "):
            return self.id_format.replace(ID_MARK, pattern[3:])
        return self.states.get(pattern, pattern)

    def state(self, state):
        """A state ``wait_state`` polls for, in this style."""
        return self.states.get(state, state)


def split_target(value):
    """``TARGET:STYLE`` -> (TARGET, STYLE); a bare STYLE -> (None, STYLE).
    A style's pairs always contain ``=`` and its presets no ``:``, so a
    ``:`` after a word without ``=`` ends a target name."""
    name, colon, style = value.partition(":")
    if colon and "=" not in name:
        return name.strip(), style
    return None, value


def parse_replies(text):
    """STYLE (see the module's text) -> Replies; RepliesError when malformed."""
    style = PRESETS.get(text.strip(), text.strip())
    id_format, states = "ID <n>", {}
    for item in filter(None, (part.strip() for part in style.split(","))):
        key, equals, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not equals or not value:
            raise RepliesError(f"--replies {text!r}: {item!r} is not KEY=VALUE")
        if key == "id":
            if value.count(ID_MARK) != 1:
                raise RepliesError(f"--replies {text!r}: the id format {value!r} needs "
                                   f"{ID_MARK} exactly once, where the id goes")
            id_format = value
        elif key in STATES:
            if not WORD.match(value):
                raise RepliesError(f"--replies {text!r}: {key}={value!r} is not one word")
            states[key] = value
        else:
            raise RepliesError(f"--replies {text!r}: unknown key {key!r}; keys: id, "
                               + ", ".join(STATES) + f"; presets: {', '.join(PRESETS)}")
    return Replies(id_format, states, text.strip())
