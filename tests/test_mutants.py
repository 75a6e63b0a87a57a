"""Mutants: deliberately broken brokers and workers that the conformance suite must fail.

Each test runs the suite as a user runs it (``python3 -m conformance``, in a
subprocess, one process: ``-n 0``) against one mutant, limited to the cases
that should catch it, and checks that the run fails, that those cases fail,
and that the failure names the defect (the expected and received lines of
the failing step, or the multicast or syslog check that caught it).

The mutants whose defect shows at once (no step has to time out) share one
run, one target each, with ``-k`` picking each target's cases: a run costs
more to start than their cases take. Under pytest-xdist the first test
process that needs that run makes it, the others read its result.

The broker and worker mutants are the scripts in tests/mutants/ (our select
implementation with one defect patched in). Worker defects that the fake
worker of tests/test_conformance_plugin.py already has a flag for (words
reversed, the last word dropped, the wrong multicast group) use that fake,
run against the real spec's cases. IMPLEMENTERS.md, "What the suite
catches", has the table.
"""

import fcntl
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from test_conformance_plugin import FAKE_ROLE_WORKER

REPO_ROOT = Path(__file__).resolve().parent.parent
MUTANTS = Path(__file__).resolve().parent / "mutants"
ROW = re.compile(r"^\| ([A-Z]+-\d+) \| ")
CAPTURE_HEADER = "workq multicast checks: scapy capture on lo"
# Plugins the suite's runs do without: hypothesis's alone costs a second or more per run.
QUIET_PLUGINS = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")


@dataclass
class Mutant:
    defect: str                    # the test id
    broker: str = ""               # script in tests/mutants/ ("" = our select broker)
    worker: str = ""               # script in tests/mutants/, or "fake --FLAG"
    cases: tuple = ()              # every one of them must fail
    messages: tuple = ()           # each must appear in the failures of those cases
    capture_messages: tuple = ()   # ... too, when the multicast capture runs
    plain_messages: tuple = ()     # ... instead, without a capture
    fast: bool = False             # caught without waiting for a timeout: in the shared run


MUTANTS_TABLE = [
    # -- brokers -------------------------------------------------------------------------
    Mutant("fifo_broken_lifo", fast=True, broker="broker_fifo_broken.py", cases=("FET-002",),
           messages=("expect on w\n", "expected: JOB {a} first",
                     "i.e.: JOB 1 first", "received: JOB 3 third")),
    Mutant("id_issued_twice", fast=True, broker="broker_id_twice.py", cases=("JOB-002",),
           messages=("expect on b\n", "expected: ID 2", "received: ID 1")),
    Mutant("job_handed_to_two_workers", fast=True, broker="broker_fetch_keeps_job.py",
           cases=("FET-003",),
           messages=("expect on w2\n", "expected: NOJOB",
                     "received: JOB 1 only once")),
    Mutant("done_accepted_from_non_holder", fast=True, broker="broker_done_any_worker.py",
           cases=("OWN-001",),
           messages=("expect on thief\n", "expected: ERR NOT_HOLDER {_:any}",
                     "received: OK")),
    Mutant("no_requeue_after_worker_dies", broker="broker_no_requeue.py",
           cases=("OWN-002",),
           messages=("poll STATUS 1 until waiting", "expected: waiting",
                     "S< running  (poll 1)")),
    Mutant("requeue_at_tail", fast=True, broker="broker_requeue_at_tail.py", cases=("OWN-003",),
           messages=("expected: JOB {a} dropped", "i.e.: JOB 1 dropped",
                     "received: JOB 2 queued")),
    Mutant("commands_case_sensitive", fast=True, broker="broker_case_sensitive.py",
           cases=("FRM-004",),
           messages=("c C> job lower case", "expected: ID {id:int}",
                     "received: ERR UNKNOWN_COMMAND unknown command 'job'")),
    Mutant("wakened_fetch_answered_late", fast=True, broker="broker_deliveries_late.py",
           cases=("LPL-008",),
           messages=("expect on w\n", "expected: JOB {id:int} order matters",
                     "received: STATS waiting=0 running=1")),
    Mutant("pipelined_lines_lost", broker="broker_first_line_only.py", cases=("FRM-001",),
           messages=("c S< ID 1", "expect on c\n",
                     "expected: ID {second:int}", "received: nothing within 5.0 s")),
    Mutant("fetch_wait_read_by_float", fast=True, broker="broker_float_wait.py",
           cases=("LPL-020",),
           messages=("expect on w\n", "expected: ERR BAD_ARGUMENT {_:any}", "received: NOJOB")),
    # -- workers -------------------------------------------------------------------------
    Mutant("words_reversed", worker="fake --reverse", cases=("WRK-003",),
           messages=("expect words: word 'beta' arrived before 'alpha' (job 7)",
                     "expected: alpha beta gamma delta",
                     "received from w: delta gamma beta alpha")),
    Mutant("word_missing", worker="fake --drop-last", cases=("WRK-003",),
           messages=("expect words: missing word 'delta' (job 7)",
                     "received from w: alpha beta gamma")),
    Mutant("no_starting_job_syslog", worker="worker_no_starting_log.py",
           cases=("WRK-005",),
           messages=("expected: starting job 3{_:any}", "no matching syslog message within 5.0 s",
                     "syslog< fetching job  (from w)", "syslog< completed job 3  (from w)")),
    Mutant("wrong_multicast_group", worker="fake --wrong-group", cases=("WRK-003",),
           capture_messages=("expect words: datagram 'alpha' to 239.0.0.2:",
                             "expected 239.0.0.1 (from w)", "capture< alpha  to 239.0.0.2:"),
           plain_messages=("expected: alpha beta gamma delta", "no datagram within 5.0 s")),
    Mutant("words_split_at_unicode_spaces", worker="worker_python_split.py",
           cases=("WRK-020",),
           messages=("expect words: missing word 'a\\xa0b' (job 7)",)),
    Mutant("no_reconnect_after_broker_drops", worker="worker_no_reconnect.py",
           cases=("WRK-006",),
           messages=("close c1\n", ": accept_worker c2\n",
                     "received: no connection within 5.0 s")),
]


def target_of(mutant, directory):
    broker = (f"{{python}} {MUTANTS / mutant.broker} {{client_port}} {{worker_port}}"
              if mutant.broker else "")
    worker = ""
    if mutant.worker.startswith("fake "):
        fake = directory / "role_worker.py"
        fake.write_text(FAKE_ROLE_WORKER)
        flag = mutant.worker.split()[1]
        worker = f"{{python}} {fake} {{broker}} {{output_port}} {{syslog_port}} {flag}"
    elif mutant.worker:
        worker = (f"{{python}} {MUTANTS / mutant.worker} {{broker}} {{output_port}} "
                  "{syslog_port} --word-delay {word_delay} --fetch-interval {fetch_interval}")
    return f"{mutant.defect}={broker};{worker}" if worker else f"{mutant.defect}={broker}"


def run_suite(directory, mutants):
    """Run the suite against ``mutants``, each on its own cases; return
    (exit status, terminal output, Markdown report)."""
    args = []
    for mutant in mutants:
        args += ["--target", target_of(mutant, directory)]
    cases = sorted({case for mutant in mutants for case in mutant.cases})
    args += ["--case", ",".join(cases)]
    if len(mutants) > 1:
        args += ["-k", " or ".join(f"({' or '.join(m.cases)}) and {m.defect}" for m in mutants)]
    report = directory / "report.md"
    result = subprocess.run([sys.executable, "-m", "conformance", *QUIET_PLUGINS,
                             "-n", "0", "--report", str(report), *args],
                            cwd=REPO_ROOT, capture_output=True, text=True, errors="replace",
                            timeout=180)
    text = report.read_text(errors="replace") if report.exists() else ""
    return result.returncode, result.stdout + result.stderr, text


FAST = [mutant for mutant in MUTANTS_TABLE if mutant.fast]


@pytest.fixture(scope="session")
def fast_run(request, tmp_path_factory):
    """The shared run of the fast mutants, made once per session (also under xdist)."""
    if not hasattr(request.config, "workerinput"):
        return run_suite(tmp_path_factory.mktemp("fast"), FAST)
    shared = tmp_path_factory.getbasetemp().parent / "fast-mutants"   # one per xdist session
    shared.mkdir(exist_ok=True)
    result = shared / "result.json"
    with open(shared / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not result.exists():
            result.write_text(json.dumps(run_suite(shared, FAST)))
    return tuple(json.loads(result.read_text()))


def report_cells(report, target):
    """{case id: the report's cell of ``target``} from the Markdown report's table."""
    lines = report.splitlines()
    header = next(line for line in lines if line.startswith("| id | level |"))
    column = [cell.strip() for cell in header.strip("|").split("|")].index(target)
    return {ROW.match(line).group(1): line.strip("|").split(" | ")[column].strip()
            for line in lines if ROW.match(line)}


def failure_section(report, case, target):
    """The failure report of ``case`` on ``target``: its summary and wire transcript."""
    head = f"### {case} on {target}:"
    assert head in report, f"no failure section {head!r} in:\n{report}"
    return report.split(head, 1)[1].split("\n### ", 1)[0]


@pytest.mark.parametrize("mutant", MUTANTS_TABLE, ids=[m.defect for m in MUTANTS_TABLE])
def test_the_suite_fails_the_mutant_and_names_the_defect(mutant, request, tmp_path):
    if mutant.fast:
        code, output, report = request.getfixturevalue("fast_run")
    else:
        code, output, report = run_suite(tmp_path, [mutant])
    assert code == 1, f"the suite did not fail {mutant.defect} (exit {code}):\n{output}"
    assert f"failed on {mutant.defect}: {', '.join(mutant.cases)}" in output, output
    cells = {case: cell for case, cell in report_cells(report, mutant.defect).items()
             if cell != "not run"}
    assert set(cells) == set(mutant.cases), cells
    messages = list(mutant.messages)
    if mutant.capture_messages or mutant.plain_messages:
        capture = CAPTURE_HEADER in output
        messages += mutant.capture_messages if capture else mutant.plain_messages
    failures = ""
    for case in mutant.cases:
        assert cells[case].startswith("**FAIL: step "), (case, cells[case])
        failures += failure_section(report, case, mutant.defect)
    for text in messages:
        assert text in failures, f"{text!r} missing from the failures:\n{failures}"
