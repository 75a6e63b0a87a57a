"""spec/protocol.yaml is well-formed, consistent, covered by its exchanges,
and PROTOCOL.md is generated from its current text.

Coverage is how we prove the exchanges test the whole protocol: every
message is sent in some exchange, and each of its replies and error codes is
expected, in some exchange, as the answer to that message.
"""

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import jsonschema
import pytest

from core.grammar import RULES as CORE_RULES
from tools.gen_protocol import load_spec, validation_errors

REPO_ROOT = Path(__file__).resolve().parent.parent
SPEC = load_spec(REPO_ROOT / "spec" / "protocol.yaml")
MESSAGES = SPEC["messages"]
EXCHANGES = SPEC["exchanges"]


# -- well-formed and consistent ---------------------------------------------------

def test_schema_is_a_valid_draft_2020_12_schema():
    schema = json.loads((REPO_ROOT / "spec" / "schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)


def test_spec_matches_the_schema():
    problems = validation_errors(SPEC)
    assert not problems, "spec/protocol.yaml:\n" + "\n".join(problems)


def test_exchange_ids_are_unique():
    repeated = [i for i, n in Counter(e["id"] for e in EXCHANGES).items() if n > 1]
    assert not repeated, f"exchange ids used more than once: {repeated}"


def test_every_exchange_names_an_existing_section():
    sections = {s["id"] for s in SPEC["sections"]}
    unknown = [(e["id"], e["section"]) for e in EXCHANGES if e["section"] not in sections]
    assert not unknown, f"exchanges with an unknown section: {unknown}"


def test_every_message_names_an_existing_section_and_catalogued_errors():
    sections = {s["id"] for s in SPEC["sections"]}
    codes = {e["code"] for e in SPEC["errors"]}
    problems = [f"{m['name']}: unknown section {m['section']}"
                for m in MESSAGES if m["section"] not in sections]
    problems += [f"{m['name']}: error {e['code']} is not in errors:"
                 for m in MESSAGES for e in m.get("errors", []) if e["code"] not in codes]
    assert not problems, "\n".join(problems)


# -- the grammar: spec and core/grammar.py say the same -------------------------------

def test_core_grammar_has_exactly_the_spec_rules_with_identical_regexes():
    spec_rules = {rule["name"]: rule["regex"] for rule in SPEC["grammar"]}
    differ = {name: (spec_rules.get(name), CORE_RULES.get(name))
              for name in spec_rules.keys() | CORE_RULES.keys()
              if spec_rules.get(name) != CORE_RULES.get(name)}
    assert not differ, ("grammar rules differ between spec/protocol.yaml and core/grammar.py "
                        f"(name: (spec, core)): {differ}")


def test_grammar_rule_names_are_unique_and_each_regex_compiles():
    names = [rule["name"] for rule in SPEC["grammar"]]
    repeated = [name for name, n in Counter(names).items() if n > 1]
    assert not repeated, f"grammar rules named more than once: {repeated}"
    for rule in SPEC["grammar"]:
        re.compile(rule["regex"])


def test_every_grammar_rule_is_named_in_a_section():
    text = " ".join(section["text"] for section in SPEC["sections"])
    unnamed = [rule["name"] for rule in SPEC["grammar"] if f"`{rule['name']}`" not in text]
    assert not unnamed, f"grammar rules no section names (as `name`): {unnamed}"


# -- coverage -------------------------------------------------------------------------

def command_word(line):
    # SP and HTAB only, as the spec's word_separator: "STATUS\u00a01" is one word.
    words = re.split(r"[\t ]+", line.strip(" \t\r"), maxsplit=1)
    return words[0].upper() if words else ""


def request_reply_pairs(exchange):
    """(request command word, expect pattern) for every expect of an exchange.

    The broker answers each line with one line, in order, so the n-th
    expect on a connection answers the n-th line sent on it.
    """
    unanswered, unfinished, current = {}, {}, None
    for step in exchange["steps"]:
        if "connect" in step:
            current = step["connect"]
            unanswered[current], unfinished[current] = [], ""
            continue
        name = step.get("on", current)
        if "send" in step:
            data = f"{step['send']}\n"
        elif "send_raw" in step:
            data = step["send_raw"]
        elif "send_repeat" in step:
            repeat = step["send_repeat"]
            data = (repeat.get("prefix", "") + repeat["fill"] * repeat["count"]
                    + repeat.get("suffix", "\n"))
        elif "shutdown_write" in step:
            name = step["shutdown_write"]
            if unfinished.get(name):  # a last line without LF is answered too
                unanswered[name].append(command_word(unfinished[name]))
                unfinished[name] = ""
            continue
        elif "expect" in step:
            queue = unanswered.get(name) or [None]
            yield queue.pop(0), step["expect"]
            continue
        else:
            continue
        *lines, unfinished[name] = (unfinished[name] + data).split("\n")
        unanswered[name] += [command_word(line) for line in lines]


# Replies of the broker: in the worker role the suite is the broker and sends them.
PAIRS = [pair for exchange in EXCHANGES if exchange.get("role") != "worker"
         for pair in request_reply_pairs(exchange)]
SAMPLE = {"int": "1", "word": "w", "any": "x"}


def sample_line(pattern):
    """A line the expect pattern accepts: each placeholder filled in."""
    return re.sub(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([a-z]+))?\}",
                  lambda m: SAMPLE.get(m.group(2), "1"), pattern)


def reply_regex(reply):
    """The syntax of a reply (`ID <n>`) as a regex: each `<...>` is a value."""
    return re.compile(".+".join(map(re.escape, re.split(r"<[^<>]+>", reply))))


def reply_is_expected(message, reply):
    regex = reply_regex(reply)
    return any(command == message and regex.fullmatch(sample_line(pattern))
               for command, pattern in PAIRS)


def error_is_expected(message, code):
    regex = re.compile(rf"ERR {code}( .*)?")
    return any((message is None or command == message) and regex.fullmatch(sample_line(pattern))
               for command, pattern in PAIRS)


@pytest.mark.parametrize("message", [m["name"] for m in MESSAGES])
def test_every_message_is_sent_in_an_exchange(message):
    assert any(command == message for command, _ in PAIRS), \
        f"no exchange sends {message} and expects its reply"


@pytest.mark.parametrize("message, reply", [
    pytest.param(m["name"], r["reply"], id=f"{m['name']}: {r['reply']}")
    for m in MESSAGES for r in m["replies"]])
def test_every_reply_is_expected_in_an_exchange(message, reply):
    assert reply_is_expected(message, reply), \
        f"no exchange expects {reply!r} as the reply to {message}"


@pytest.mark.parametrize("message, code", [
    pytest.param(m["name"], e["code"], id=f"{m['name']}: {e['code']}")
    for m in MESSAGES for e in m.get("errors", [])])
def test_every_error_of_a_message_is_expected_in_an_exchange(message, code):
    assert error_is_expected(message, code), \
        f"no exchange expects ERR {code} as the reply to {message}"


@pytest.mark.parametrize("code", [e["code"] for e in SPEC["errors"]])
def test_every_catalogued_error_is_expected_in_an_exchange(code):
    assert error_is_expected(None, code), f"no exchange expects ERR {code}"


def test_coverage_pairs_requests_with_replies_in_order():
    exchange = {"steps": [
        {"connect": "c"}, {"send_raw": "JOB a\nSTA"}, {"send_raw": "TUS 1\n"},
        {"connect": "w", "port": "worker"}, {"send": "fetch"},
        {"expect": "ID {id:int}", "on": "c"}, {"expect": "waiting", "on": "c"},
        {"expect": "NOJOB"}]}
    assert list(request_reply_pairs(exchange)) == [
        ("JOB", "ID {id:int}"), ("STATUS", "waiting"), ("FETCH", "NOJOB")]
    assert reply_regex("JOB <n> <text>").fullmatch(sample_line("JOB {id} hello world"))


# -- the generated document -----------------------------------------------------------

def test_protocol_md_is_up_to_date():
    result = subprocess.run([sys.executable, "-m", "tools.gen_protocol", "--check"],
                            cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
