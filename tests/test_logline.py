"""Unit tests of core/logline.py: how any text becomes a syslog message (spec: output.syslog)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.logline import CUT_MARKER, MAX_DATAGRAM, escape, syslog_message

HEADER = len(b"<14>workq-worker[4194304]: ")   # the longest header with the default name


def wire(text):
    """``text`` as a worker shell gets it: broker bytes decoded with surrogateescape."""
    return text.decode("utf-8", "surrogateescape") if isinstance(text, bytes) else text


@pytest.mark.parametrize("raw, expected", [
    (b"ERR X \xff\xfe", r"ERR X \xff\xfe"),                  # the input
    (b"caf\xc3\xa9 \xe6\x97\xa5", "café 日"),                  # valid UTF-8 stays itself
    (b"half \xe6\x97", r"half \xe6\x97"),                     # a cut UTF-8 sequence: its bytes
    (b"\x00\x07\x08\t\n\r\x1b[2J\x1f\x7f", r"\x00\x07\x08\x09\x0a\x0d\x1b[2J\x1f\x7f"),
    (b"\xc2\x85\xc2\x9b \x85", r"\u0085\u009b \x85"),          # C1 control vs the byte 0x85
    (b"C:\\dir \\xff", r"C:\\dir \\xff"),                      # backslashes doubled: reversible
    ("lone \ud800", r"lone \ud800"),                          # not from the wire, still safe
    (b"plain ascii text", "plain ascii text"),
])
def test_escape(raw, expected):
    got = escape(wire(raw))
    assert got == expected, f"escape({raw!r}): expected {expected!r}, got {got!r}"
    got.encode("utf-8")   # always encodable


def test_escape_without_backslashes_for_display():
    assert escape(wire(b"\\xff \xff\x1b"), backslash=False) == r"\xff \xff\x1b"


def test_every_byte_sequence_gives_an_encodable_printable_message():
    for value in range(256):
        message = syslog_message(wire(bytes([value]) + b"\xc2" + bytes([value])), HEADER)
        message.encode("utf-8")   # raises if anything of the bytes survived unescaped
        assert not any(0x80 <= ord(c) <= 0x9F or ord(c) < 0x20 or ord(c) == 0x7F
                       for c in message), f"byte {value:#04x}: control character in {message!r}"


def test_short_message_is_unchanged():
    assert syslog_message("completed job 7", HEADER) == "completed job 7"


@pytest.mark.parametrize("fill", ["x", "é", "日", "\x1b", "\udcff", "\\"])
def test_long_message_is_cut_to_fit_the_datagram_with_the_marker(fill):
    """RFC 3164 4.1: the whole packet at most 1,024 bytes; a cut never splits a
    character or an escape, and ends with the marker."""
    text = "FETCH failed: ERR X " + fill * 5000
    message = syslog_message(text, HEADER)
    size = HEADER + len(message.encode("utf-8"))
    assert size <= MAX_DATAGRAM, f"expected a datagram of at most 1024 bytes, got {size}"
    assert message.endswith(CUT_MARKER), f"expected the cut marker at the end: {message[-40:]!r}"
    kept = message[:-len(CUT_MARKER)]
    whole = escape(text)
    assert whole.startswith(kept), "expected the kept part to be a prefix of the whole message"
    unit = escape(fill)
    assert kept.endswith(unit) and (len(kept) - len("FETCH failed: ERR X ")) % len(unit) == 0, \
        f"expected the cut between two {unit!r}, got ...{kept[-12:]!r}"
    assert size > MAX_DATAGRAM - len(unit.encode()) - 1, \
        f"expected the cut to use the room: {size} bytes"


def test_message_of_exactly_the_room_is_not_cut():
    room = MAX_DATAGRAM - HEADER
    assert syslog_message("y" * room, HEADER) == "y" * room
    cut = syslog_message("y" * (room + 1), HEADER)
    assert cut == "y" * (room - len(CUT_MARKER)) + CUT_MARKER


def test_no_room_at_all_never_overflows():
    assert len(syslog_message("anything at all", MAX_DATAGRAM - 5).encode()) <= 5
    assert syslog_message("anything", MAX_DATAGRAM + 10) == ""


def test_the_spec_states_the_numbers_core_uses():
    """spec/protocol.yaml is the contract: its output.syslog and worker.longpoll
    texts name the limit, the marker and the long-poll threshold core applies."""
    import yaml
    from core.worker import LONG_POLL_HELD
    spec = yaml.safe_load((Path(__file__).resolve().parent.parent / "spec" / "protocol.yaml")
                          .read_text(encoding="utf-8"))
    text = {s["id"]: s["text"] for s in spec["sections"]}
    for needle in (f"{MAX_DATAGRAM} bytes", f"`{CUT_MARKER}`", r"`ERR X \xff\xfe`", r"`\u0085`"):
        assert needle in text["output.syslog"], f"output.syslog does not say {needle!r}"
    held = f"{round(LONG_POLL_HELD * 100)} %"
    assert held in text["worker.longpoll"], f"worker.longpoll does not say {held!r}"
