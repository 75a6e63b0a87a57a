"""The grammar (spec/protocol.yaml `grammar:`, core/grammar.py) and every parser
that must follow it rather than Python's own reading of numbers and spaces.

The properties: any string that Python's ``float()`` or ``int()`` reads but the
grammar refuses is refused by every parser of that kind, on the wire (ERR) and
on command lines (usage error); a string the grammar accepts means what its
digits say; words split at SP/HTAB runs only; a line's forbidden characters
are found in its UTF-8 bytes exactly as in its characters.
"""

import argparse
import importlib
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from conformance import grammar as suite_grammar                          # noqa: E402
from core import grammar                                                    # noqa: E402
from core.broker import BrokerCore, WORKER, CLIENT                          # noqa: E402
from core.messages import RequestError, parse_job_id, parse_reply, parse_request  # noqa: E402
from core.options import port_number, positive_float, positive_int         # noqa: E402
from core.worker_options import parse_worker_args                          # noqa: E402
from tools import client                                                    # noqa: E402
from tools.gen_protocol import load_spec                                    # noqa: E402

SPEC = load_spec(ROOT / "spec" / "protocol.yaml")
SPEC_RULES = {rule["name"]: re.compile(rule["regex"]) for rule in SPEC["grammar"]}
SUITE_RULES = suite_grammar.rules(SPEC)

# What Python's number readers also take: other scripts' digits, underscores,
# signs, exponents, spaces around, inf/nan.
NUMBERISH = st.lists(
    st.sampled_from(list("0123456789") + list("٠٣٥۹१２０¹²") +
                    ["_", ".", "e", "E", "+", "-", " ", "\t", "\n", "\x0b", "\u00a0",
                     "\u3000", "x", "inf", "nan", "Infinity"]),
    min_size=1, max_size=8).map("".join)


_SCRIPTS = [str.maketrans("0123456789", digits) for digits in
            ("٠١٢٣٤٥٦٧٨٩", "۰۱۲۳۴۵۶۷۸۹", "०१२३४५६७८९", "０１２３４５６７８９", "𝟎𝟏𝟐𝟑𝟒𝟓𝟔𝟕𝟖𝟗")]
_SPACES = [" ", "\t", "\n", "\x0b", "\x0c", "\r", "\u00a0", "\u2028", "\u3000", "\u0085"]


@st.composite
def lenient_numbers(draw, fractions):
    """A number in a form Python's int()/float() read and the grammar refuses:
    underscores, a sign, spaces around, another script's digits; with
    ``fractions`` also exponents, a point without digits on one side, inf, nan."""
    digits = str(draw(st.integers(min_value=0, max_value=10 ** 6)))
    forms = [
        lambda d: "_".join(d) if len(d) > 1 else d + "_0",
        lambda d: draw(st.sampled_from("+-")) + d,
        lambda d: draw(st.sampled_from(_SPACES)) + d + draw(st.sampled_from(["", *_SPACES])),
        lambda d: d.translate(draw(st.sampled_from(_SCRIPTS))),
    ]
    if fractions:
        forms += [
            lambda d: d + draw(st.sampled_from(["e1", "E-2", "e+0", "."])),
            lambda d: "." + d,
            lambda d: draw(st.sampled_from(["inf", "-inf", "+Infinity", "nan", "NaN", "iNf"])),
            lambda d: d + "." + d.translate(draw(st.sampled_from(_SCRIPTS))),
        ]
    return draw(st.sampled_from(forms))(digits)


def python_float(text):
    try:
        return float(text)
    except ValueError:
        return None


def python_int(text):
    try:
        return int(text)
    except ValueError:
        return None


def refused_by_python_too(parse, text):
    """True when ``parse(text)`` raises, i.e. refuses."""
    try:
        parse(text)
    except (grammar.NumberError, argparse.ArgumentTypeError, client.UsageError,
            suite_grammar.GrammarError, RequestError):
        return True
    return False


# -- numbers: what float()/int() take and the grammar does not is refused everywhere ---------

LENIENT_SECONDS = ["0_1", "3_600", "1e1", "1E-1", " 5", "5 ", "+1", "-0", ".5", "5.", "inf",
                   "nan", "Infinity", "٣", "１", "1\u00a0", "0x10"]
LENIENT_INTEGERS = ["5_0000", " 50000", "50000 ", "٥٠٠٠٠", "+1", "-0", "５", "1\n", "0_1"]


def fetch_reply(text):
    """The broker's reply to ``FETCH <text>`` on a fresh worker connection."""
    core = BrokerCore()
    conn = core.open(WORKER)
    return core.receive(conn, b"FETCH " + text.encode() + b"\n", now=0.0)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(st.one_of(lenient_numbers(fractions=True), NUMBERISH))
@example("0_1")
@example("1e1")
@example("nan")
@example("٣")
@example(" 5")
@example("5.")
def test_seconds_python_reads_but_the_grammar_refuses_are_refused_by_every_parser(text):
    assume(python_float(text) is not None and not grammar.SECONDS.fullmatch(text))
    assert not SPEC_RULES["wait_seconds"].fullmatch(text), "the spec's rule disagrees with core"
    # On the wire the argument is trimmed of SP and HTAB first (spec: framing), a
    # CR before the LF ends the line, and a line with a forbidden character is
    # refused as a whole.
    argument = text.removesuffix("\r").strip(" \t")
    if "\n" not in text and not grammar.SECONDS.fullmatch(argument):
        code = b"BAD_CHAR" if grammar.FORBIDDEN_CHAR.search(text.removesuffix("\r")) \
            else b"BAD_ARGUMENT"
        reply = fetch_reply(text)
        assert reply.startswith(b"ERR " + code + b" "), \
            f"expected ERR {code.decode()} for FETCH {text!r} (float() reads it as " \
            f"{python_float(text)}), got {reply!r}"
    for name, parse in [("core.grammar.parse_seconds", grammar.parse_seconds),
                        ("core.options.positive_float", positive_float),
                        ("tools.client --delay", lambda t: client._take_float("--delay", t)),
                        ("conformance --word-delay",
                         lambda t: suite_grammar.number(SUITE_RULES, "seconds", t, "--wd"))]:
        assert refused_by_python_too(parse, text), f"expected {name} to refuse {text!r}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(st.one_of(lenient_numbers(fractions=False), NUMBERISH))
@example("5_0000")
@example("٥٠٠٠٠")
@example(" 50000")
@example("+1")
@example("-0")
def test_integers_python_reads_but_the_grammar_refuses_are_refused_by_every_parser(text):
    assume(python_int(text) is not None and not grammar.WHOLE_NUMBER.fullmatch(text))
    for name, parse in [("core.grammar.parse_port", grammar.parse_port),
                        ("core.grammar.parse_whole", grammar.parse_whole),
                        ("core.options.port_number", port_number),
                        ("core.options.positive_int", positive_int),
                        ("tools.client.parse_port", client.parse_port),
                        ("conformance port",
                         lambda t: suite_grammar.number(SUITE_RULES, "port", t, "port"))]:
        assert refused_by_python_too(parse, text), f"expected {name} to refuse {text!r}"
    with pytest.raises(RequestError) as refused:
        parse_job_id(text.encode())
    assert refused.value.code == "BAD_ID", f"expected BAD_ID for job id {text!r}"


@pytest.mark.parametrize("text", ["\u00b2", "\u0663", "\uff11", "1\u0663", "\u2460"])
def test_job_ids_in_replies_are_ascii_digits_only(text):
    """str.isdigit() takes these; int() then fails ('\u00b2') or misreads ('\u0663' is 3)."""
    for line in (f"ID {text}", f"JOB {text} some words"):
        with pytest.raises(ValueError):
            parse_reply(line)
            pytest.fail(f"expected parse_reply to refuse {line!r}")


@given(st.from_regex(grammar.SECONDS, fullmatch=True))
def test_seconds_the_grammar_accepts_mean_their_decimal_digits(text):
    assert SPEC_RULES["seconds"].fullmatch(text)
    value = grammar.parse_seconds(text)
    whole, _, fraction = text.partition(".")
    assert value == pytest.approx(int(whole) + (int(fraction) / 10 ** len(fraction)
                                                if fraction else 0), rel=1e-12)


@given(st.from_regex(grammar.JOB_ID, fullmatch=True))
def test_job_ids_the_grammar_accepts_are_read_as_their_digits(text):
    assert parse_job_id(text.encode()) == int(text)
    assert parse_reply(f"ID {text}").job_id == int(text)
    assert parse_reply(f"JOB {text} w").job_id == int(text)


def test_a_job_id_has_at_most_18_digits():
    assert parse_job_id(b"9" * 18) == 10 ** 18 - 1
    with pytest.raises(RequestError):
        parse_job_id(b"1" + b"0" * 18)


@pytest.mark.parametrize("text, expected", [
    ("0", 0.0), ("10", 10.0), ("0.5", 0.5), ("3600", 3600.0), ("0003600.000", 3600.0),
])
def test_fetch_waits_by_the_grammar(text, expected):
    core = BrokerCore()
    conn = core.open(WORKER)
    reply = core.receive(conn, f"FETCH {text}\n".encode(), now=0.0)
    if expected == 0:
        assert reply == b"NOJOB\n", f"expected NOJOB for FETCH {text}, got {reply!r}"
    else:
        assert reply == b"" and conn.waiting_fetch == expected, \
            f"expected FETCH {text} to wait {expected} s, got reply {reply!r}, " \
            f"waiting until {conn.waiting_fetch}"


def test_a_wait_over_3600_is_refused():
    assert fetch_reply("3600.1").startswith(b"ERR BAD_ARGUMENT "), fetch_reply("3600.1")
    assert fetch_reply("9" * 400).startswith(b"ERR BAD_ARGUMENT "), "float() makes it inf"


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False))
@example(1e-05)
@example(1e-07)
@example(0.1 + 0.2)
@example(10.0)
def test_format_seconds_writes_what_the_grammar_reads_back_exactly(value):
    for text in (grammar.format_seconds(value), suite_grammar.decimal_text(value)):
        assert grammar.SECONDS.fullmatch(text), f"{value!r} written as {text!r}"
        assert float(text) == value, f"{value!r} written as {text!r} reads back as {float(text)}"


# -- words: SP and HTAB runs only -------------------------------------------------------------

TEXTS = st.text(alphabet=st.sampled_from(
    ["a", "b", " ", "\t", "\u00a0", "\u2028", "\u2029", "\u3000", "\u0085", "\ufeff", "\u1680",
     "\u2003", "\x0b", "\x0c", "\x1c", "\u200b", "é"]), max_size=12)


@given(TEXTS)
def test_words_are_split_at_runs_of_spaces_and_tabs_only(text):
    expected = [word for word in SPEC_RULES["word_separator"].split(text) if word]
    assert grammar.split_words(text) == expected
    assert " ".join(grammar.split_words(text)).replace(" ", "") == \
        text.replace(" ", "").replace("\t", ""), "a character other than SP/HTAB went missing"


@pytest.mark.parametrize("separator", ["\u00a0", "\u2028", "\u2029", "\u3000", "\u0085",
                                       "\u1680", "\u2003", "\x1c", "\x0b"])
def test_python_whitespace_that_is_not_sp_or_htab_does_not_split(separator):
    assert grammar.split_words(f"a{separator}b c") == [f"a{separator}b", "c"]


# -- characters: forbidden ones, found in UTF-8 as in text ----------------------------------

def _refused_as_bad_char(line):
    try:
        parse_request(line)
    except RequestError as error:
        return error.code == "BAD_CHAR"
    return False


def test_the_broker_refuses_exactly_the_forbidden_characters_for_every_code_point():
    rule = SPEC_RULES["forbidden_char"]
    wrong = [hex(code) for code in range(0x110000) if not 0xD800 <= code <= 0xDFFF
             and _refused_as_bad_char(b"JOB a" + chr(code).encode() + b"b")
             != bool(rule.fullmatch(chr(code)))]
    assert not wrong, f"parse_request and the spec's forbidden_char disagree on {wrong[:20]}"


@pytest.mark.parametrize("line", [b"JOB \xff\x1b[31m", b"JOB \xc3(\x00"])
def test_a_control_byte_in_invalid_utf8_is_bad_char(line):
    assert _refused_as_bad_char(line), f"expected BAD_CHAR for {line!r}"


def test_the_forbidden_characters_are_c0_but_tab_del_and_c1():
    forbidden = [code for code in range(0x110000) if not 0xD800 <= code <= 0xDFFF
                 and SPEC_RULES["forbidden_char"].fullmatch(chr(code))]
    assert forbidden == [*range(0x00, 0x09), *range(0x0A, 0x20), *range(0x7F, 0xA0)]


@pytest.mark.parametrize("char", ["\x80", "\x85", "\x9b", "\x9f", "\x7f", "\x1b", "\x00"])
def test_a_line_with_a_forbidden_character_gets_bad_char_on_both_paths(char):
    for checked_path in (True, False):
        core = BrokerCore()
        conn = core.open(CLIENT)
        line = f"JOB a{char}b\n".encode()
        # One whole line (the single-line fast path), and the same line in a batch.
        data = line if checked_path else b"STATS\n" + line
        reply = core.receive(conn, data, now=0.0)
        assert reply.endswith(b"\n") and reply.splitlines()[-1].startswith(b"ERR BAD_CHAR "), \
            f"expected ERR BAD_CHAR for {line!r}, got {reply!r}"
        assert not core.waiting, f"expected no job queued for {line!r}"


def _answers(data, piece):
    """The core's replies and queue after ``data`` arrives in reads of ``piece`` bytes."""
    core = BrokerCore()
    conn = core.open(CLIENT)
    replies = b"".join(core.receive(conn, data[i:i + piece], now=0.0)
                       for i in range(0, len(data), piece))
    return replies, list(core.waiting)


def test_a_whole_line_read_is_answered_as_its_bytes_one_by_one_for_every_byte():
    # Whole: the one-line fast path (its C-speed check must refuse every byte the
    # general path refuses, and a command in lower case goes the general way);
    # one byte per read: the general path.
    wrong = []
    for byte in bytes(range(256)):
        for data in (b"JOB a" + bytes([byte]) + b"b\n", b"STATUS 1" + bytes([byte]) + b"\n",
                     bytes([byte]) + b"\n", b"JOB a\n" + bytes([byte]),
                     b"job a" + bytes([byte]) + b"\n"):
            whole, by_byte = _answers(data, len(data)), _answers(data, 1)
            if whole != by_byte:
                wrong.append(f"{data!r}: whole read gave {whole}, byte by byte {by_byte}")
    assert not wrong, f"expected the same answer both ways: {wrong[:5]}"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"JOB", b"job", b"STATUS", b" ", b"\t", b"x", b"1", b"\r",
                                 b"\n", b"\r\n", b"\x00", b"\x1b", b"\x7f", b"\x85", b"\xc3\xa9"]),
                max_size=12))
def test_any_read_is_answered_as_its_bytes_one_by_one(tokens):
    data = b"".join(tokens)
    assume(data)
    whole, by_byte = _answers(data, len(data)), _answers(data, 1)
    assert whole == by_byte, f"{data!r}: whole read gave {whole}, byte by byte {by_byte}"


@pytest.mark.parametrize("char", ["\u00a0", "\u00a1", "\u2028", "\u2029", "\u3000", "\ufeff",
                                  "\u200b", "\U0001f600"])
def test_other_characters_are_ordinary_text_kept_exactly(char):
    core = BrokerCore()
    client_conn, worker_conn = core.open(CLIENT), core.open(WORKER)
    text = f"{char}a{char}b{char}".encode()
    assert core.receive(client_conn, b"JOB " + text + b" \t\n", now=0.0) == b"ID 1\n"
    assert core.receive(worker_conn, b"FETCH\n", now=0.0) == b"JOB 1 " + text + b"\n"


def test_the_command_word_ends_at_sp_or_htab_only():
    assert parse_request("STATUS\t1".encode()).arg == b"1"
    request = parse_request("STATUS\u00a01".encode())
    assert request.command == "STATUS\u00a01".encode() and request.arg == b""


# -- command lines, in-process (the same parsers both brokers and both workers use) -------

BAD_PORTS = ["5_0000", " 50000", "٥٠٠٠٠", "1e3", "+1", "-0", "５", "70000", "0x10"]
BAD_COUNTS = ["1_0", " 3", "٣", "1e3", "1.5", "+1", "-0", "nan", "0x10"]
BAD_SECONDS = ["0_1", " 1", "١", "1e3", "nan", "inf", "-0", "+1", ".5", "5.", "1,5"]


def one_line_usage_error(capsys, call):
    with pytest.raises(SystemExit) as exit_:
        call()
    err = capsys.readouterr().err
    assert exit_.value.code == 2, f"expected exit 2, got {exit_.value.code}: {err!r}"
    assert len(err.splitlines()) == 1 and "Traceback" not in err, \
        f"expected one line on stderr, got {err!r}"
    return err


@pytest.mark.parametrize("value", BAD_PORTS)
def test_broker_and_worker_refuse_bad_ports(value, capsys):
    from core.options import broker_parser
    one_line_usage_error(capsys, lambda: broker_parser("broker", "select").parse_args([value]))
    one_line_usage_error(capsys, lambda: parse_worker_args("worker", "select",
                                                           [f"127.0.0.1:{value}"]))
    one_line_usage_error(capsys, lambda: parse_worker_args("worker", "select",
                                                           ["127.0.0.1:1", value]))


@pytest.mark.parametrize("value", BAD_COUNTS)
@pytest.mark.parametrize("option", ["--max-line", "--max-waiting", "--max-output"])
def test_broker_refuses_bad_counts(option, value, capsys):
    from core.options import broker_parser
    one_line_usage_error(capsys, lambda: broker_parser("broker", "x").parse_args([option, value]))


@pytest.mark.parametrize("value", BAD_SECONDS + ["0"])
def test_broker_refuses_bad_idle_timeouts(value, capsys):
    from core.options import broker_parser
    one_line_usage_error(capsys, lambda: broker_parser("broker", "x").parse_args(
        ["--idle-timeout", value]))


@pytest.mark.parametrize("value", BAD_SECONDS)
@pytest.mark.parametrize("option", ["--word-delay", "--fetch-interval", "--long-poll"])
def test_worker_refuses_bad_seconds(option, value, capsys):
    one_line_usage_error(capsys, lambda: parse_worker_args("worker", "x", [option, value]))


@pytest.mark.parametrize("value", BAD_COUNTS)
@pytest.mark.parametrize("option", ["--concurrency", "--mcast-ttl"])
def test_worker_refuses_bad_counts(option, value, capsys):
    one_line_usage_error(capsys, lambda: parse_worker_args("worker", "x", [option, value]))


def test_worker_long_poll_stays_within_what_fetch_accepts(capsys):
    one_line_usage_error(capsys, lambda: parse_worker_args("worker", "x", ["--long-poll", "3601"]))
    assert parse_worker_args("worker", "x", ["--long-poll", "3600"]).long_poll == 3600.0


@pytest.mark.parametrize("argv", [
    *[["127.0.0.1", value, "STATUS", "1"] for value in BAD_PORTS],
    *[["127.0.0.1:1", "STATUS", value] for value in ["²", "٣", "1_0", "+1", " 1", "1" * 19]],
    *[["127.0.0.1:1", "autoCall", "--num-jobs", value] for value in BAD_COUNTS],
    *[["127.0.0.1:1", "autoCall", "--delay", value] for value in BAD_SECONDS],
    *[["--timeout", value, "127.0.0.1:1", "STATUS", "1"] for value in BAD_SECONDS],
])
def test_client_refuses_bad_numbers_before_connecting(argv, capsys):
    code = client.main(argv)
    err = capsys.readouterr().err
    assert code == client.EXIT_USAGE, f"expected exit 2 for {argv}, got {code}: {err!r}"
    assert len(err.splitlines()) == 1 and "Traceback" not in err, f"got {err!r}"


def test_client_stdin_job_keeps_unicode_separators_as_text():
    text = client._read_stdin_job(io.StringIO("a\u2028b\u00a0 c\r\nd\u0085e\n"))
    assert text == "a\u2028b\u00a0 c d\u0085e", f"got {text!r}"


@pytest.mark.parametrize("module, argv", [
    *[("tools.mcast_listen", [value]) for value in BAD_PORTS],
    *[("tools.syslog_listen", [value]) for value in BAD_PORTS],
    *[("tools.mcast_listen", ["--count", value]) for value in BAD_COUNTS + ["0"]],
    *[("tools.syslog_listen", ["--timeout", value]) for value in BAD_SECONDS + ["0"]],
    *[("tools.demo", ["--jobs", value]) for value in BAD_COUNTS + ["0"]],
    *[("tools.demo", ["--word-delay", value]) for value in BAD_SECONDS],
    *[("tools.bench.cli", ["--duration", value]) for value in BAD_SECONDS + ["0", "61"]],
])
def test_tools_refuse_bad_numbers(module, argv, capsys):
    tool = importlib.import_module(module)
    main = tool.parse_args if module == "tools.bench.cli" else tool.main
    one_line_usage_error(capsys, lambda: main(argv))


# -- command lines, end to end: exit status 2, one line, no traceback --------------------

@pytest.mark.parametrize("module, argv, bad", [
    ("impl_select.broker", ["5_0000"], "5_0000"),
    ("impl_threads.broker", ["5_0000"], "5_0000"),
    ("impl_select.broker", ["0", "0", "--idle-timeout", "nan"], "nan"),
    ("impl_threads.broker", ["0", "0", "--max-line", "６５５３６"], "６５５３６"),
    ("impl_select.worker", ["127.0.0.1:٥٠٠٠١"], "٥٠٠٠١"),
    ("impl_threads.worker", ["127.0.0.1:٥٠٠٠١"], "٥٠٠٠١"),
    ("impl_select.worker", ["--word-delay", "1e3"], "1e3"),
    ("impl_threads.worker", ["--long-poll", "0_5"], "0_5"),
    ("tools.client", ["127.0.0.1", " 50000", "STATUS", "1"], " 50000"),
    ("tools.client", ["127.0.0.1:50000", "STATUS", "\u00b2"], "\u00b2"),
    ("tools.mcast_listen", ["-0"], "-0"),
    ("tools.syslog_listen", ["1e3"], "1e3"),
    ("tools.demo", ["--jobs", "1_0"], "1_0"),
    ("tools.bench", ["--duration", "inf"], "inf"),
])
def test_programs_refuse_lenient_numbers_with_a_usage_error(module, argv, bad):
    result = subprocess.run([sys.executable, "-m", module, *argv], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 2, \
        f"expected exit 2 from {module} {argv}, got {result.returncode}: {result.stderr!r}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr and repr(bad) in lines[0], \
        f"expected one line naming {bad!r}, got {result.stderr!r}"
    assert result.stdout == "", f"expected nothing on stdout, got {result.stdout!r}"


def test_client_reads_the_token_file_as_the_broker_does(tmp_path, monkeypatch):
    """First line, ASCII whitespace stripped (bytes.strip(), as shell.broker_main
    reads it): a no-break space at its end is part of the token."""
    monkeypatch.setattr(client.Connection, "default_token", None)
    token = tmp_path / "token"
    token.write_bytes("secret\u00a0\r\n".encode())
    with pytest.raises(client.UsageError):          # stops at the bad id, before connecting
        client.run(["--token-file", str(token), "127.0.0.1:1", "STATUS", "x"])
    assert client.Connection.default_token == "secret\u00a0"
    token.write_bytes(b"\xff\xfe\n")
    assert client.main(["--token-file", str(token), "127.0.0.1:1", "STATUS", "1"]) == 2


@pytest.mark.parametrize("argv, bad", [
    (["--word-delay", "1e-3"], "1e-3"),
    (["--fetch-interval", "0_05"], "0_05"),
    (["--broker-addr", "127.0.0.1:5_0000:50001"], "127.0.0.1:5_0000:50001"),
    (["--target", "x=@127.0.0.1:50000:\u0665"], "127.0.0.1:50000:\u0665"),
    (["-n", "\u0662"], "\u0662"),
    (["--numprocesses=1_0"], "1_0"),
])
def test_the_suite_reads_its_own_numbers_by_the_spec_grammar(argv, bad):
    """Exit status 4 is the suite's (pytest's) for bad options, as its --help says."""
    result = subprocess.run([sys.executable, "-m", "conformance", "--list", *argv], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 4, f"expected exit 4 for {argv}, got {result.returncode}: {output}"
    assert "Traceback" not in output and repr(bad) in output and len(output.splitlines()) == 1, \
        f"expected one line naming {bad!r}, got {output!r}"
