"""Generate PROTOCOL.md from spec/protocol.yaml.

    python3 -m tools.gen_protocol           write PROTOCOL.md
    python3 -m tools.gen_protocol --check   exit 1 if PROTOCOL.md is stale

The spec is validated against spec/schema.json first. The document is what a
stranger implements a broker and a worker from, in the manner of
beanstalkd's doc/protocol.txt: every reply and error next to the command
that causes it. The output depends on the YAML only (no dates, no paths).
"""

import argparse
import difflib
import json
import sys
from pathlib import Path

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
SPEC_PATH = REPO_ROOT / "spec" / "protocol.yaml"
SCHEMA_PATH = REPO_ROOT / "spec" / "schema.json"
OUTPUT_PATH = REPO_ROOT / "PROTOCOL.md"

def load_spec(path=SPEC_PATH):
    with open(path, encoding="utf-8") as spec:
        return yaml.safe_load(spec)


def validation_errors(spec, schema_path=SCHEMA_PATH):
    """Schema violations as readable lines, in document order."""
    schema = json.loads(Path(schema_path).read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(spec), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors]


# -- markdown helpers ----------------------------------------------------------

def code(text):
    """Inline code; the syntax `<n>` and `{id}` reads best verbatim."""
    text = str(text)
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def prose(text):
    """Plain text from the YAML for markdown: a `<` outside code spans would
    start an HTML tag (`<CODE>` would vanish), so it is escaped."""
    parts = str(text).strip().split("`")
    parts[::2] = [part.replace("<", "\\<") for part in parts[::2]]
    return "`".join(parts)


def cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def yes_no(flag):
    return "yes" if flag else "no"


# -- exchanges as wire transcripts ----------------------------------------------

ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", '"': '\\"', "\\": "\\\\"}


def raw(text, bytes_only=True):
    """Quoted, with C-style escapes; in raw data (bytes) also above 0x7f."""
    def escape(ch):
        if ch in ESCAPES:
            return ESCAPES[ch]
        if not ch.isprintable() or (bytes_only and ord(ch) > 0x7F):
            # raw data: \xNN is a byte; text (sent as UTF-8): \uNNNN is a character
            if ord(ch) < 0x80 or (bytes_only and ord(ch) < 0x100):
                return f"\\x{ord(ch):02x}"
            return f"\\u{ord(ch):04x}"
        return ch
    return '"' + "".join(map(escape, str(text))) + '"'


def quoted(text):
    """A line for the transcript, quoted only when spaces at its ends or
    control characters would otherwise be invisible."""
    text = str(text)
    if text and text == text.strip() and all(ch.isprintable() for ch in text):
        return text
    return raw(text, bytes_only=False)


def transcript(exchange):
    """The steps of an exchange as a readable wire transcript."""
    worker_role = exchange.get("role") == "worker"
    # In the worker role the suite is the broker: B> it sends, W< the worker sends.
    sent, received = ("B>", "W<") if worker_role else ("C>", "S<")
    names = {s.get("connect", s.get("accept_worker")) for s in exchange["steps"]
             if "connect" in s or "accept_worker" in s}
    show_names = len(names) > 1
    width = max((len(n) for n in names), default=0)
    current = None
    lines = []

    def on(step):
        name = step.get("conn", current)
        return f"{name:<{width}}  " if show_names else ""

    for step in exchange["steps"]:
        within = f"  (within {step['timeout']:g} s)" if "timeout" in step else ""
        if "connect" in step:
            current = step["connect"]
            lines.append(f"-- connect {current} to the {step.get('port', 'client')} port")
        elif "accept_worker" in step:
            current = step["accept_worker"]
            lines.append(f"-- the worker connects to the suite's worker port: "
                         f"connection {current}{within}")
        elif "send" in step:
            lines.append(f"{on(step)}{sent} {quoted(step['send'])}")
        elif "send_raw" in step:
            lines.append(f"{on(step)}{sent} {raw(step['send_raw'])}  (raw bytes, no LF added)")
        elif "send_repeat" in step:
            r = step["send_repeat"]
            parts = [raw(r.get("prefix", "")), f"{raw(r['fill'])} x {r['count']}",
                     raw(r.get("suffix", "\n"))]
            lines.append(f"{on(step)}{sent} " + " + ".join(p for p in parts if p != '""'))
        elif "expect" in step:
            lines.append(f"{on(step)}{received} {quoted(step['expect'])}{within}")
        elif "expect_idle_wait" in step:
            w = step["expect_idle_wait"] or {}
            limits = f"no sooner than {w.get('min', 0.5):g} x the fetch interval"
            if "max" in w:
                limits += f", no later than {w['max']:g} x"
            lines.append(f"{on(step)}{received} {quoted(w.get('pattern', 'FETCH'))}  "
                         f"({limits} after the line before){within}")
        elif "expect_closed" in step:
            who = "worker" if worker_role else "broker"
            lines.append(f"{on(step)}{received} (the {who} closes the connection){within}")
        elif "close" in step:
            if worker_role:
                lines.append(f"-- the suite closes connection {step['close']}")
            else:
                lines.append(f"-- {step['close']} closes its connection")
        elif "shutdown_write" in step:
            lines.append(f"-- {step['shutdown_write']} half-closes (sends EOF, keeps reading)")
        elif "wait_state" in step:
            w = step["wait_state"]
            lines.append(f"-- poll STATUS {w['id']} on a new client connection "
                         f"until the answer is {w['state']}{within}")
        elif "start_worker" in step:
            where = ", its broker being the suite's worker port" if worker_role else ""
            lines.append(f"-- start worker {step['start_worker']}{where}")
        elif "stop_worker" in step:
            status = (f" with status {step['exit_status']}" if "exit_status" in step else "")
            lines.append(f"-- SIGTERM worker {step['stop_worker']}; it exits within 2 s{status}")
        elif "expect_words" in step:
            notes = []
            if "job" in step:
                notes.append(f"all the words of job {step['job']}, at least 0.5 x the word "
                             "delay apart")
            if "from" in step:
                notes.append(f"from worker {step['from']}")
            words = [f"{quoted(w['repeat'])}, {w['count']} times" if isinstance(w, dict)
                     else quoted(w) for w in step["expect_words"]]
            lines += [f"M< {word}" for word in words[:-1]]
            lines.append(f"M< {words[-1]}"
                         + (f"  ({'; '.join(notes)})" if notes else "") + within)
        elif "expect_syslog" in step:
            size = (f"  (the datagram at most {step['max_bytes']} bytes)"
                    if "max_bytes" in step else "")
            lines.append(f"L< {quoted(step['expect_syslog'])}{size}{within}")
        elif "pause_broker" in step:
            lines.append("-- the broker is paused (SIGSTOP): it reads nothing until it resumes")
        elif "resume_broker" in step:
            lines.append("-- the broker resumes (SIGCONT) and reads everything sent meanwhile at once")
        else:
            lines.append(f"-- {step}")
    return "\n".join(lines)


# -- the document ---------------------------------------------------------------

class Numbering:
    def __init__(self):
        self.count = 0

    def next(self, title):
        self.count += 1
        return f"## {self.count}. {title}"


def line_error_codes(spec):
    """Errors no command lists: they answer any line (framing errors)."""
    listed = {e["code"] for m in spec["messages"] for e in m.get("errors", [])}
    return [e["code"] for e in spec["errors"] if e["code"] not in listed]


def grammar_table(spec):
    """The grammar rules as a table: name, where, regex (matched against the
    whole token), meaning, source."""
    return table(["rule", "applies to", "regex (whole token)", "meaning", "source"],
                 [(code(rule["name"]), rule["applies_to"], code(rule["regex"]),
                   prose(rule["text"]), prose(rule.get("source", "")))
                  for rule in spec["grammar"]])


def port_messages(spec, port):
    return [m for m in spec["messages"] if m["port"] in (port, "both")]


def render(spec):
    numbers = Numbering()
    errors = {e["code"]: e for e in spec["errors"]}
    ports = {p["name"]: p for p in spec["ports"]}
    out = []
    add = out.append

    add(f"# The {spec['name']} protocol, version {spec['version']}")
    add("<!-- Generated from spec/protocol.yaml by `python3 -m tools.gen_protocol`. "
        "Do not edit: change the YAML and regenerate. -->")
    add(prose(spec["summary"]))

    # Overview
    add(numbers.next("Overview"))
    add("There are three roles. A **client** submits jobs to the **broker** and asks "
        "for their state. A **worker** fetches jobs from the broker, does them (it "
        "sends each job's words as multicast datagrams and logs to syslog) and "
        "reports them done. Clients and workers talk to the broker over TCP, each on "
        "a port of its own; any tool that writes lines, even `nc`, can be a client.")
    add("Requirements come in two levels; every command, transition and exchange "
        "below is marked with its level:")
    add("\n".join(f"- **{level}**: {prose(text)}" for level, text in spec["levels"].items()))
    add("Notation: requests and replies are shown as they travel on the wire, without "
        "the line end. `<n>` stands for a job id (`job_id`: ASCII digits), `<text>` for text; "
        "everything else is literal. `C>` marks a line a client or worker sends, "
        "`S<` the broker's reply.")

    # Ports, defaults, limits
    add(numbers.next("Ports and defaults"))
    add(table(["port", "default", "used by", "commands"],
              [(p["name"], p["default"], prose(p["used_by"]),
                ", ".join(code(c) for c in p.get("commands", [])) or "(UDP, no commands)")
               for p in spec["ports"]]))
    add(table(["broker option", "default", "command line", "meaning"],
              [(name, "none" if option["default"] is None else option["default"],
                code(option["option"] + (" PATH" if option["kind"] == "file" else " N")),
                prose(option["text"])) for name, option in spec["broker_options"].items()]))

    # Every section's text, in order; the command list follows them.
    commands_number = numbers.count + len(spec["sections"]) + 1
    section_number = {}
    for section in spec["sections"]:
        heading = numbers.next(section["title"])
        section_number[section["id"]] = numbers.count
        add(heading)
        add(section["text"].strip())
        if section["id"] == "grammar":
            add(grammar_table(spec))
        commands = [m["name"] for m in spec["messages"] if m["section"] == section["id"]]
        if commands:
            add("Syntax, replies and errors: " + ", ".join(code(c) for c in commands) +
                f" in section {commands_number}.")

    # Commands by port
    add(numbers.next("Commands by port"))
    generic = line_error_codes(spec)
    add("Each request is one line and gets exactly one reply line. Besides the "
        "errors listed with each command, any line may instead get one of these: " +
        ", ".join(code(f"ERR {c}") for c in generic) + " (see the error table).")
    for port_name in [p["name"] for p in spec["ports"] if p.get("commands")]:
        add(f"### {port_name.capitalize()} port (default {ports[port_name]['default']})")
        for message in port_messages(spec, port_name):
            add(f"#### {message['name']}")
            add(f"    {message['request']}")
            where = f"section {section_number.get(message['section'], '?')} ({message['section']})"
            other = "; also on the other port" if message["port"] == "both" else ""
            add(f"Level {message['level']}{other}. Described in {where}.")
            add("Replies:\n\n" + "\n".join(
                f"- {code(r['reply'])}: {prose(r['when'])}" for r in message["replies"]))
            if message.get("errors"):
                add("Errors:\n\n" + "\n".join(
                    f"- {code('ERR ' + e['code'] + ' <text>')}: {prose(e['when'])}"
                    + ("; the broker then closes the connection"
                       if errors.get(e["code"], {}).get("closes") else "")
                    for e in message["errors"]))

    # Error catalogue
    add(numbers.next("Errors"))
    add(f"Every error reply has the form {prose(spec['error_format'])}.")
    returned_by = {}
    for message in spec["messages"]:
        for error in message.get("errors", []):
            returned_by.setdefault(error["code"], []).append(message["name"])
    add(table(["code", "closes connection?", "meaning", "returned by"],
              [(code(e["code"]), yes_no(e["closes"]), prose(e["text"]),
                ", ".join(code(n) for n in returned_by.get(e["code"], [])) or "any line")
               for e in spec["errors"]]))

    # States and transitions
    add(numbers.next("Job states and transitions"))
    add(table(["state", "meaning"], [(code(s["name"]), prose(s["text"])) for s in spec["states"]]))
    add(table(["from", "event", "to", "level"],
              [(t["from"], prose(t["event"]), t["to"], t["level"]) for t in spec["transitions"]]))
    add("A `STATUS` for an id the broker never issued answers `unknown`; "
        "no transition leaves `completed`.")

    # Output formats
    add(numbers.next("Output formats"))
    multicast = spec["multicast"]
    add("### The multicast datagram")
    output_port = ports.get(multicast["port"], {}).get("default")
    rows = [("group", multicast["group"]),
            ("UDP port", f"the {multicast['port']} port" +
             (f" (default {output_port})" if output_port else "")),
            ("payload", code(multicast["payload"].replace("\n", "\\n")))]
    rows += [(key.replace("_", " "), value) for key, value in multicast.items()
             if key not in ("group", "port", "payload")]
    add(table(["field", "value"], rows))
    add("One datagram per word, in the order of the words in the job; the job "
        "`JOB 7 hello big world` gives three datagrams: `hello\\n`, `big\\n`, `world\\n`.")
    add("### The syslog message")
    add("Format and transport: see section "
        f"{section_number.get('output.syslog', '?')}. The messages:")
    add(table(["message", "sent when"],
              [(code(m["message"]), prose(m["when"])) for m in spec["syslog_messages"]]))

    # Appendix: exchanges
    add("## Appendix A. Exchanges")
    add("Each exchange is a case of the conformance suite (`python3 -m conformance`), "
        "run by its id. Roles: **broker**: the suite plays clients and workers "
        "against a broker; **system**: a broker and workers run together and the "
        "suite watches their output; **worker**: the suite plays the broker.")
    add("In the transcripts `C>` is a line the suite sends (as a client or a worker), "
        "`S<` a line the broker must send back; in the worker role `B>` is a line the "
        "suite sends as the broker and `W<` a line the worker must send. `M<` is a "
        "multicast datagram (the word, then LF), `L<` a syslog message (after "
        "`<PRI>ident[pid]: `), `--` an action. In the worker role the suite is a core "
        "broker: it answers a long-poll `FETCH <seconds>` with `ERR BAD_ARGUMENT`, so the "
        "transcripts show plain `FETCH` only, except where an exchange says the steps "
        "answer `FETCH <seconds>` themselves. A quoted line shows an invisible "
        "character as an escape: `\\xNN` a byte of raw data, `\\uNNNN` a character "
        "of a line sent as UTF-8 (`\\u00a0` is the two bytes C2 A0). "
        "Patterns: `{name:int}` captures digits, `{name:word}` a word without spaces, "
        "`{name:any}` the rest of the line; `{name}` is a value captured before; "
        "`{_:any}` matches anything. When several connections are open, each line "
        "starts with the connection's name.")
    for exchange in spec["exchanges"]:
        add(f"### {exchange['id']}: {prose(exchange['title'])}")
        facts = [f"level {exchange['level']}", f"role {exchange['role']}",
                 f"section {section_number.get(exchange['section'], '?')} "
                 f"({exchange['section']})"]
        if exchange.get("fresh_broker"):
            facts.append("needs a fresh broker")
        if exchange.get("long_poll_fetch") == "steps":
            facts.append("the steps answer `FETCH <seconds>` (the suite does not refuse it)")
        for name, value in exchange.get("broker_options", {}).items():
            facts.append(f"broker started with {name} {value}")
        add(", ".join(facts) + ".")
        add("```text\n" + transcript(exchange) + "\n```")

    return "\n\n".join(out) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python3 -m tools.gen_protocol",
        description="Write PROTOCOL.md from spec/protocol.yaml (validated first).")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if PROTOCOL.md is not what would be generated")
    args = parser.parse_args(argv)

    spec = load_spec()
    problems = validation_errors(spec)
    if problems:
        print(f"{SPEC_PATH.relative_to(REPO_ROOT)} does not match "
              f"{SCHEMA_PATH.relative_to(REPO_ROOT)}:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    document = render(spec)

    if args.check:
        current = OUTPUT_PATH.read_text(encoding="utf-8") if OUTPUT_PATH.exists() else ""
        if current == document:
            print("PROTOCOL.md is up to date.")
            return 0
        diff = list(difflib.unified_diff(current.splitlines(), document.splitlines(),
                                         "PROTOCOL.md", "PROTOCOL.md (generated)",
                                         lineterm="", n=1))
        print("PROTOCOL.md is stale: it differs from what spec/protocol.yaml generates.\n"
              "Regenerate it with: python3 -m tools.gen_protocol", file=sys.stderr)
        print("\n".join(diff[:40] + (["..."] if len(diff) > 40 else [])), file=sys.stderr)
        return 1
    OUTPUT_PATH.write_text(document, encoding="utf-8")
    print(f"wrote PROTOCOL.md ({len(spec['exchanges'])} exchanges)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
