"""Targets, case selection and reports of the conformance suite.

The suite runs as a user runs it, ``python3 -m conformance ...``, in a
subprocess: against our implementations, and against a tiny fake broker of
this file (core JOB and STATUS only; ``--broken`` answers every STATUS with
``running``).
"""

import re
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from conformance.targetset import (TargetOptionError, parse_target, resolve_targets,
                                   split_templates)

REPO_ROOT = Path(__file__).resolve().parent.parent
EXCHANGES = yaml.safe_load((REPO_ROOT / "spec" / "protocol.yaml").read_text())["exchanges"]
CASE_LINE = re.compile(r"[A-Z]+-\d+ ")

FAKE_BROKER = r'''
import socketserver, sys, threading
client_port, worker_port = int(sys.argv[1]), int(sys.argv[2])
broken = "--broken" in sys.argv
if "--strict" in sys.argv and any(a.startswith("--max") for a in sys.argv):
    sys.exit("usage: fake_broker.py CLIENT_PORT WORKER_PORT [--broken] [--strict]")
jobs, lock = [], threading.Lock()

class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        for raw in self.rfile:
            word, _, arg = raw.decode().strip().partition(" ")
            with lock:
                if word.upper() == "JOB":
                    jobs.append("waiting")
                    reply = f"ID {len(jobs)}" if "--padded" not in sys.argv else f"ID  {len(jobs)} "
                elif word.upper() == "STATUS":
                    n = int(arg) if arg.isdigit() else 0
                    reply = jobs[n - 1] if 0 < n <= len(jobs) else "unknown"
                    reply = "running" if broken else reply
                else:
                    reply = "ERR UNKNOWN_COMMAND " + word
            self.wfile.write(reply.encode() + b"\n")

class Server(socketserver.ThreadingTCPServer):
    daemon_threads = allow_reuse_address = True

servers = [Server(("127.0.0.1", port), Handler) for port in (client_port, worker_port)]
threading.Thread(target=servers[1].serve_forever, daemon=True).start()
servers[0].serve_forever()
'''


@pytest.fixture
def fake(tmp_path):
    path = tmp_path / "fake_broker.py"
    path.write_text(FAKE_BROKER)
    return f"{{python}} {path} {{client_port}} {{worker_port}}"


def run_suite(*args, timeout=180):
    result = subprocess.run([sys.executable, "-m", "conformance", "-p", "no:cacheprovider",
                             *args], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=timeout)
    return result.returncode, result.stdout + result.stderr


def listed(output):
    return [line.split()[0] for line in output.splitlines() if CASE_LINE.match(line)]


def ids(predicate):
    return [exchange["id"] for exchange in EXCHANGES if predicate(exchange)]


# -- --list and selection -------------------------------------------------------------

def test_list_prints_every_case_and_runs_nothing(tmp_path):
    marker = tmp_path / "started"
    broker = f"{{python}} -c \"open(r'{marker}', 'w')\" {{client_port}} {{worker_port}}"
    code, output = run_suite("--list", "--broker-cmd", broker)
    assert code == 0, output
    assert listed(output) == ids(lambda exchange: True)
    lines = {line.split()[0]: line for line in output.splitlines() if CASE_LINE.match(line)}
    for exchange in EXCHANGES:
        assert re.split(r"\s{2,}", lines[exchange["id"]]) == [
            exchange["id"], exchange["level"], exchange["role"], exchange["section"],
            exchange["title"]]
    assert f"{len(EXCHANGES)} cases selected" in output.splitlines()
    assert "test session starts" not in output and "passed" not in output
    assert not marker.exists()  # no target was started


def framing(exchange):
    return exchange["section"] in ("framing", "framing.errors")


@pytest.mark.parametrize("args, expected", [
    (["--case", "JOB-001,sta-002"], ids(lambda e: e["id"] in ("JOB-001", "STA-002"))),
    (["--case", "FRM-001", "--case", "JOB-001"], ["FRM-001", "JOB-001"]),
    (["--section", "framing"], ids(framing)),
    (["--section", "framing.errors"], ids(lambda e: e["section"] == "framing.errors")),
    (["--section", "worker"], ids(lambda e: e["section"].startswith("worker."))),
    (["--level", "core"], ids(lambda e: e["level"] == "core")),
    (["--level", "extended", "--role", "system"],
     ids(lambda e: e["level"] == "extended" and e["role"] == "system")),
    (["--role", "broker,system", "--section", "framing", "--level", "core"],
     ids(lambda e: framing(e) and e["level"] == "core" and e["role"] != "worker")),
    (["-m", "core and system"], ids(lambda e: e["level"] == "core" and e["role"] == "system")),
])
def test_selection_options_select_the_right_cases(args, expected):
    assert expected
    code, output = run_suite("--list", *args)
    assert code == 0, output
    assert listed(output) == expected


def test_selection_deselects_so_that_pytest_counts_it():
    code, output = run_suite("--co", "-q", "--level", "core")
    core = len(ids(lambda e: e["level"] == "core"))
    assert code == 0, output
    assert f"{core}/{len(EXCHANGES)} tests collected ({len(EXCHANGES) - core} deselected)" \
        in output


@pytest.mark.parametrize("args, message", [
    (["--case", "JOB-001,NOPE-999"], "--case NOPE-999: no such case"),
    (["--section", "nowhere"], "--section nowhere: no case has this section"),
    (["--level", "basic"], "--level basic: choose from core, extended"),
    (["--impl", "select,fork"], "--impl 'select,fork': choose from select, threads"),
    (["--target", "no name"], "wants NAME=BROKER_TEMPLATE[;WORKER_TEMPLATE]"),
    (["--target", "a=x", "--target", "a=y"], "two targets are named 'a'"),
    (["--target", "a=broker {nope}"], "--target a: broker 'broker {nope}'"),
])
def test_bad_options_are_usage_errors(args, message):
    code, output = run_suite("--list", *args)
    assert code == 4, output
    assert message in output


# -- targets and reports ---------------------------------------------------------------

def test_two_targets_give_one_table_with_a_column_each(tmp_path):
    cases = ["FRM-001", "JOB-001", "STA-001"]
    code, output = run_suite("--impl", "select,threads", "--case", ",".join(cases), "-n", "2",
                             "--report", str(tmp_path / "r.md"),
                             "--report-html", str(tmp_path / "r.html"),
                             "--junitxml", str(tmp_path / "j.xml"))
    assert code == 0, output
    assert "6 passed" in output
    assert re.search(r"select\s+3/3\s+-\s+0\s+0", output), output  # terminal summary
    assert re.search(r"threads\s+3/3\s+-\s+0\s+0", output), output
    report = (tmp_path / "r.md").read_text()
    assert "| id | level | role | section | title | select | threads |" in report
    rows = [line for line in report.splitlines() if CASE_LINE.match(line.lstrip("| "))]
    assert [row.split(" | ")[0].lstrip("| ") for row in rows] == ids(lambda e: e["id"] in cases)
    assert all(row.endswith("| PASS | PASS |") for row in rows), rows
    assert "- **select**: core 3/3; 0 failed, 0 skipped" in report
    assert "- **threads**: core 3/3; 0 failed, 0 skipped" in report
    page = (tmp_path / "r.html").read_text()
    assert "<th class='id'>select</th><th class='id'>threads</th>" in page
    assert "<h2>Core cases (3)</h2>" in page and "Extended cases" not in page
    testcases = ET.parse(tmp_path / "j.xml").getroot().iter("testcase")
    names = {case.get("name"): {p.get("name"): p.get("value") for p in case.iter("property")}
             for case in testcases}
    assert set(names) == {f"{case}[{target}]" for case in cases
                          for target in ("select", "threads")}
    assert names["JOB-001[threads]"]["id"] == "JOB-001"
    assert names["JOB-001[threads]"]["target"] == "threads"
    assert names["JOB-001[threads]"]["title"] == next(
        e["title"] for e in EXCHANGES if e["id"] == "JOB-001")


def test_a_failing_target_fails_the_run_and_shows_its_transcript(fake, tmp_path):
    code, output = run_suite("--target", f"good={fake}", "--target", f"bad={fake} --broken",
                             "--case", "JOB-001,STA-001",
                             "--report", str(tmp_path / "r.md"),
                             "--junitxml", str(tmp_path / "j.xml"))
    assert code == 1, output
    assert "failed on bad: JOB-001, STA-001" in output
    report = (tmp_path / "r.md").read_text()
    assert ("| JOB-001 | core | broker | client.job | JOB is answered with ID and the new "
            "job is waiting | PASS | **FAIL: step 5: expect on c; expected: waiting; "
            "received: running** |") in report
    assert "- **good**: core 2/2; 0 failed, 0 skipped" in report
    assert "- **bad**: core 0/2; 2 failed, 0 skipped" in report
    failure = report.split("### JOB-001 on bad:")[1].split("###")[0]
    for text in ["target: bad", "c C> JOB hello world", "c S< ID 1", "c S< running",
                 "FAILED at step 5: expect on c", "received: running", "--broken"]:
        assert text in failure, f"{text!r} missing from:\n{failure}"
    assert "[gw" not in failure
    xml = ET.parse(tmp_path / "j.xml").getroot()
    failed = {case.get("name"): case.find("failure") for case in xml.iter("testcase")}
    assert failed["JOB-001[good]"] is None
    assert "c S< running" in failed["JOB-001[bad]"].text


def test_a_failure_shows_blanks_the_reader_cannot_see(fake, tmp_path):
    """Two blanks where the spec has one, or one at the end, look alike printed
    plain: the failure writes the received line out as Python does too."""
    code, output = run_suite("--target", f"padded={fake} --padded", "--case", "JOB-001",
                             "--report", str(tmp_path / "r.md"))
    assert code == 1, output
    failure = (tmp_path / "r.md").read_text().split("### JOB-001 on padded:")[1]
    needle = "    as written: 'ID  1 ' (blanks at its ends or more than one in a row)"
    assert needle in failure, f"expected {needle!r} in the failure, got:\n{failure}"


def test_a_running_broker_target_skips_cases_that_need_a_fresh_one(fake, tmp_path):
    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    command = fake.format(python=sys.executable, client_port=ports[0], worker_port=ports[1])
    broker = subprocess.Popen(command.split())
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", ports[0])).close()
                break
            except OSError:
                time.sleep(0.02)
        code, output = run_suite("--target", f"shared=@127.0.0.1:{ports[0]}:{ports[1]}",
                                 "--case", "JOB-001,JOB-002", "--report", str(tmp_path / "r.md"))
    finally:
        broker.kill()
        broker.wait()
    assert code == 0, output
    assert "1 passed, 1 skipped" in output
    report = (tmp_path / "r.md").read_text()
    assert "| PASS |" in report.split("| JOB-001 |")[1].splitlines()[0]
    assert "| SKIP: needs a fresh broker" in report.split("| JOB-002 |")[1].splitlines()[0]
    assert "- **shared**: core 1/2; 0 failed, 1 skipped" in report


def test_without_target_options_the_select_implementation_runs():
    code, output = run_suite("--case", "FRM-001")
    assert code == 0, output
    assert "workq target: select" in output and "-m impl_select.broker" in output
    assert "1 passed" in output


def test_help_shows_the_suite_options_first_and_pytest_help_stays_reachable():
    code, output = run_suite("--help")
    assert code == 0, output
    assert output.startswith("usage: python3 -m conformance")
    for option in ("--impl", "--target", "--broker-cmd", "--worker-cmd", "--broker-addr",
                   "--list", "--case", "--section", "--level", "--role", "--report",
                   "--junitxml", "{client_port}", "{syslog_port}", "--pytest-help"):
        assert option in output
    code, output = run_suite("--pytest-help")
    assert code == 0, output
    assert "workq conformance suite" in output and "--junitxml" in output


# -- the target options, without running anything -----------------------------------

IMPLEMENTATIONS = {"select": ("SB", "SW"), "threads": ("TB", "TW")}


def resolve(impl=None, broker_cmd=None, worker_cmd=None, broker_addr=None, targets=()):
    return resolve_targets(impl, broker_cmd, worker_cmd, broker_addr, targets,
                           IMPLEMENTATIONS)


def test_target_options_resolve_to_named_targets():
    assert [(t.name, t.broker_cmd, t.worker_cmd) for t in resolve()] == [("select", "SB", "SW")]
    assert [t.name for t in resolve("select,threads")] == ["select", "threads"]
    # A target given by command options is named after its program, not "custom".
    assert [(t.name, t.broker_cmd, t.worker_cmd) for t in resolve(broker_cmd="B")] == \
        [("B", "B", "SW")]
    assert [(t.name, t.broker_cmd, t.worker_cmd)
            for t in resolve("select,threads", worker_cmd="W")] == \
        [("W-select", "SB", "W"), ("W-threads", "TB", "W")]
    assert resolve(broker_cmd="{python} /home/alice/workQueue.py {client_port}")[0].name \
        == "workQueue"
    assert resolve(broker_cmd="java -jar /srv/bob/broker.jar {client_port}")[0].name \
        == "broker"
    assert resolve(broker_addr="h:1:2")[0].name == "running-broker"
    assert [t.name for t in resolve(targets=["a=A", "b=B;W"])] == ["a", "b"]
    assert [t.name for t in resolve("threads", targets=["a=A"])] == ["threads", "a"]
    assert resolve(broker_addr="h:1:2")[0].broker_addr == ("h", 1, 2)
    with pytest.raises(TargetOptionError):
        resolve(broker_addr="h:1")
    with pytest.raises(TargetOptionError):
        resolve(targets=["a=A", "a=B"])


def test_an_empty_target_option_is_an_error_not_our_implementation():
    """--broker-cmd "$UNSET" must not quietly test the select broker and pass."""
    for option in ("broker_cmd", "worker_cmd", "broker_addr"):
        for value in ("", "  "):
            with pytest.raises(TargetOptionError, match="is empty"):
                resolve(**{option: value})


def test_a_template_without_the_ports_is_refused_before_any_case_runs():
    """Without the port placeholders every case would wait for a program listening
    (or connecting) where the suite never looks, and fail on the timeout."""
    for options, message in (
            (("--broker-cmd", "{python} b.py"), "has no {client_port}"),
            (("--broker-cmd", "{python} b.py {client_port} 50001"), "has no {worker_port}"),
            (("--worker-cmd", "{python} w.py {output_port}"), "has no {broker} or {worker_port}"),
            (("--target", "x={python} b.py 1 2"), "--target x: broker")):
        code, output = run_suite("--list", *options)
        assert code == 4 and message in output, \
            f"expected a usage error saying {message!r} for {options}, got {code}:\n{output}"
    code, output = run_suite("--list", "--broker-addr", "127.0.0.1:1:2", "--worker-cmd",
                             "{python} tests/students/worker.py {broker}")
    assert code == 0, f"expected a worker template with {{broker}} to do, got:\n{output}"


def test_target_templates_split_at_the_first_unquoted_semicolon():
    assert split_templates("b {client_port}") == ("b {client_port}", None)
    assert split_templates("b ; w") == ("b", "w")
    assert split_templates("sh -c 'b; c' ; w 'x;y'") == ("sh -c 'b; c'", "w 'x;y'")
    target = parse_target("bob=;java -jar w.jar {broker}", "SB", "SW")
    assert (target.broker_cmd, target.worker_cmd) == ("SB", "java -jar w.jar {broker}")
    target = parse_target("amy=@127.0.0.1:5000:5001", "SB", "SW")
    assert target.broker_addr == ("127.0.0.1", 5000, 5001) and target.worker_cmd == "SW"
    for bad in ("=x", "a b=x", "a=", "a=;", "a=@h:x:1"):
        with pytest.raises(TargetOptionError):
            parse_target(bad, "SB", "SW")


def test_options_a_case_appends_to_the_broker_are_announced(fake, tmp_path):
    code, output = run_suite("--target", f"lax={fake}", "--target", f"strict={fake} --strict",
                             "--case", "LIM-001", "--report", str(tmp_path / "r.md"))
    assert code == 1, output
    report = (tmp_path / "r.md").read_text()
    lax = report.split("### LIM-001 on lax:", 1)[1].split("\n### ", 1)[0]
    # A broker that ignores the option: the failure says which option the case added.
    assert "received: ID 3" in lax
    assert ("note: this case appends '--max-waiting 2' to the broker's command (the spec's "
            "broker_options: max_waiting); a broker that ignores the option fails here") in lax
    assert "-- note: this case appends '--max-waiting 2'" in lax   # in the transcript too
    # A broker that rejects it: the failure says it does not accept the option.
    strict = report.split("### LIM-001 on strict:", 1)[1].split("\n### ", 1)[0]
    assert "exited with code 1 before listening" in strict
    assert ("this case starts the broker with the option '--max-waiting 2' appended to its "
            "command; a broker that does not accept it cannot run this case") in strict


def test_one_defect_is_one_cause_and_a_lone_cause_keeps_its_particulars():
    """A broker that closes each client after one reply fails many cases, each
    expecting another line: one cause. A cause of one case shows what that
    case received and expected as they were (ID 0 where ID 1 was expected)."""
    from conformance.causes import group_failures
    failures = [
        ("STA-001", "core", "step 4: expect on c; expected: waiting; "
                            "received: connection closed (EOF)"),
        ("JOB-002", "core", "step 6: expect on c; expected: ID {b:int}; "
                            "received: connection closed (EOF)"),
        ("SYS-007", "core", "step 9: expect on c; expected: completed; "
                            "received: connection closed (EOF)"),
        ("JOB-001", "core", "step 3: expect on c; expected: ID 1; received: ID 0"),
    ]
    causes = group_failures(failures, {})
    shown = [(cause.describe(), cause.cases) for cause in causes]
    assert shown == [("received: connection closed (EOF)", ["STA-001", "JOB-002", "SYS-007"]),
                     ("received: ID 0 (expected: ID 1)", ["JOB-001"])], \
        f"expected one cause for the closes and JOB-001's own lines, got {shown}"


def test_failures_are_grouped_by_cause():
    from conformance.causes import group_failures
    failures = [
        ("LPL-001", "extended", "step 5: expect on w; expected: JOB {id:int} x; received: NOJOB"),
        ("FET-005", "core", "step 9: expect on w; expected: JOB {b} second; received: JOB 1 first"),
        ("LPL-004", "extended", "step 8: expect on w1; expected: JOB {a} y; received: NOJOB"),
        ("SYS-006", "extended", "step 5: expect words: TTL 32, expected 1 (datagram 'home' from w)"),
        ("OWN-004", "extended", "step 9: expect on w1; expected: JOB {b} two; received: JOB 1 one"),
        ("SYS-002", "core", "step 3: expect syslog; expected: {_:any}starting job{_:any}; "
                            "received: no matching syslog message within 5.0 s (4 in all)"),
        ("WRK-005", "core", "step 8: expect syslog; expected: {_:any}starting job{_:any}; "
                            "received: no matching syslog message within 5.0 s (6 in all)"),
        ("WRK-011", "core", "step 5: accept_worker c2; expected: a connection; "
                            "received: no connection within 10.0 s"),
    ]
    causes = group_failures(failures, {"OWN-004": ["FET-005", "FRM-001"]})
    grouped = [(cause.key, cause.cases) for cause in causes]
    assert grouped[0] == ("received: NOJOB", ["LPL-001", "LPL-004"])
    assert ("received: JOB N first", ["FET-005", "OWN-004"]) in grouped   # needs: its premise
    assert ("received: no matching syslog message within N s (N in all) "
            "(expected: {_:any}starting job{_:any})", ["SYS-002", "WRK-005"]) in grouped
    assert ("expect words: TTL N, expected N (datagram '…' from w)", ["SYS-006"]) in grouped
    assert len(causes) == 5
    premise = next(cause for cause in causes if "OWN-004" in cause.cases)
    assert premise.premise_of == {"OWN-004": "FET-005"}
    assert premise.example.startswith("FET-005: step 9: expect on w; expected: JOB {b} second")
