"""The line framer: what a broker sees of a byte stream, however it is cut."""

from hypothesis import given, strategies as st

from core.framing import LineFramer


def feed_all(framer, chunks):
    lines = []
    for chunk in chunks:
        lines.extend(framer.feed(chunk))
    return lines


def test_several_lines_in_one_read_come_out_together():
    assert LineFramer().feed(b"JOB a\nSTATUS 1\nFETCH\n") == [b"JOB a", b"STATUS 1", b"FETCH"]


def test_partial_line_waits_for_its_end():
    framer = LineFramer()
    assert framer.feed(b"JOB hel") == []
    assert framer.feed(b"lo\nSTA") == [b"JOB hello"]
    assert framer.take_partial() == b"STA"


def test_crlf_is_accepted_even_when_cr_and_lf_arrive_apart():
    framer = LineFramer()
    assert framer.feed(b"JOB a\r") == []
    assert framer.feed(b"\nJOB b\r\n") == [b"JOB a", b"JOB b"]


def test_bare_cr_inside_a_line_is_kept_for_the_parser_to_reject():
    assert LineFramer().feed(b"a\rb\n") == [b"a\rb"]


def test_line_of_exactly_the_limit_passes_one_byte_more_does_not():
    framer = LineFramer(max_line=10)
    assert framer.feed(b"x" * 10 + b"\r\n") == [b"x" * 10]
    assert not framer.too_long
    assert framer.feed(b"y" * 11 + b"\n") == []
    assert framer.too_long


def test_lines_before_an_overlong_one_are_still_delivered():
    framer = LineFramer(max_line=5)
    assert framer.feed(b"ok\n" + b"z" * 50 + b"\nlater\n") == [b"ok"]
    assert framer.too_long
    assert framer.feed(b"more\n") == [], "nothing is framed after the overflow"


def test_endless_line_overflows_without_buffering_past_the_limit():
    framer = LineFramer(max_line=100)
    for _ in range(50):
        framer.feed(b"a" * 30)
        if framer.too_long:
            break
    assert framer.too_long
    assert framer.take_partial() == b"", "the framer must drop what it held"


@given(st.lists(st.binary(max_size=20).filter(lambda b: b"\n" not in b and b"\r" not in b), max_size=20),
       st.data())
def test_any_cutting_of_the_stream_gives_the_same_lines(lines, data):
    stream = b"".join(line + b"\n" for line in lines)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    chunks = [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)])]
    assert feed_all(LineFramer(max_line=64), chunks) == lines
