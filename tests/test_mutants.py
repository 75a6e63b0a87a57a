"""Mutants: deliberately broken brokers and workers that the conformance suite must fail,
each on exactly the cases about its defect.

Precision is the point: a case must fail only when the property its title
names fails. So each mutant is run on EVERY case of the roles it takes part
in (a broker: the broker and system roles; a worker: the worker and system
roles), and the test asserts the exact set of cases that fail, not "some
case failed"; the failures must also name the defect (the expected and
received lines of the failing step, or the multicast or syslog check that
caught it).

The suite runs as a user runs it (``python3 -m conformance``, in a
subprocess), once for all broker mutants and once for all worker mutants,
one target each: a run costs more to start than most cases take, and most
of a mutant's run is waiting for the timeout of the step that catches it,
so each run has a few test processes of its own. Under pytest-xdist the first test process that needs a run
makes it, the others read its result; the two runs can go on in two test
processes at once.

The mutants are the scripts in tests/mutants/ (our select broker or worker
with one defect patched in, so that everything but the defect is right).
IMPLEMENTERS.md, "What the suite catches", has the table.

``python3 tests/test_mutants.py`` runs both and prints each mutant's
measured set, for updating the table after a spec change.
"""

import fcntl
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# Minutes, not seconds: outside the README's quick command (pytest.ini), run by
# `python3 -m pytest -n auto -m slow` in CI and `tox -e slow`.
pytestmark = pytest.mark.slow


REPO_ROOT = Path(__file__).resolve().parent.parent
MUTANTS = Path(__file__).resolve().parent / "mutants"
ROW = re.compile(r"^\| ([A-Z]+-\d+) \| ")
CAPTURE_HEADER = "workq multicast checks: scapy capture on lo"
NETNS_HEADER = "workq network: private network namespace"
# Plugins the suite's runs do without: hypothesis's alone costs a second or more per run.
QUIET_PLUGINS = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")


@dataclass
class Mutant:
    defect: str                    # the test id and the target's name
    broker: str = ""               # script in tests/mutants/ ("" = our select broker)
    worker: str = ""               # script in tests/mutants/ ("" = our select worker)
    fails: tuple = ()              # exactly these cases fail, of all cases of its roles
    messages: tuple = ()           # each must appear in the failures of those cases
    capture_messages: tuple = ()   # ... too, when the multicast capture runs
    plain_messages: tuple = ()     # ... instead, without a capture
    plain_fails: tuple = None      # the set without a capture, where it differs
    may_fail: tuple = ()           # fail or not, by the timing of the run (say why)
    netns_only: bool = False       # runs (and is checked) only in a private namespace

    @property
    def group(self):
        return "workers" if self.worker else "brokers"


# Test processes of each run: most of a mutant run is waiting for a step's timeout.
RUN_PROCESSES = 4
# Roles each group's run covers: every case of them runs against every mutant of the group.
GROUP_ROLES = {"brokers": "broker,system", "workers": "worker,system"}

MUTANTS_TABLE = [
    # -- brokers -------------------------------------------------------------------------
    # LIFO: every case that queues two jobs and fetches them sees the newest first.
    Mutant("fifo_broken_lifo", broker="broker_fifo_broken.py",
           fails=("FET-002", "FET-005", "OWN-003", "OWN-004", "STS-001", "LIM-001",
                  "SYS-003", "LSE-002"),
           messages=("expect on w1\n", "expected: JOB {a} first",
                     "i.e.: JOB 1 first", "received: JOB 3 third")),
    Mutant("id_issued_twice", broker="broker_id_twice.py", fails=("JOB-002",),
           messages=("expect on b\n", "expected: ID 2", "received: ID 1")),
    # SYS-001 fails only when its STATUS poll lands while the completed job is
    # handed out again (running): timing. SYS-007 fails only when no poll lands
    # between the DONE and that next FETCH: timing too (a loaded CI host once let
    # its poll see "completed" in between).
    Mutant("job_handed_to_two_workers", broker="broker_fetch_keeps_job.py",
           fails=("FET-002", "FET-003", "FET-005", "OWN-003", "OWN-004", "STS-001",
                  "LPL-004", "LIM-001", "SYS-003", "SYS-005",
                  # a fetched job stays queued, so leases and burying see it twice
                  "LSE-003", "LSE-006", "LSE-013", "PSN-002", "PSN-003",
                  # and a completed one is handed out again (the broker fails on it)
                  "DON-006"),
           may_fail=("SYS-001", "SYS-007"),
           messages=("expect on w2\n", "expected: NOJOB", "received: JOB 1 only once")),
    Mutant("done_accepted_from_non_holder", broker="broker_done_any_worker.py",
           fails=("OWN-001",),
           messages=("expect on thief\n", "expected: ERR NOT_HOLDER {_:any}",
                     "received: OK")),
    Mutant("no_requeue_after_worker_dies", broker="broker_no_requeue.py",
           fails=("OWN-002", "OWN-003", "OWN-004", "OWN-005", "LPL-005", "SYS-004", "LSE-011",
                  "PSN-001", "PSN-002", "PSN-003", "PSN-004"),
           messages=("poll STATUS 1 until waiting", "expected: waiting",
                     "S< running  (poll 1)")),
    Mutant("requeue_at_tail", broker="broker_requeue_at_tail.py", fails=("OWN-003", "OWN-004"),
           messages=("expected: JOB {a} dropped", "i.e.: JOB 1 dropped",
                     "received: JOB 2 queued")),
    # The one-shot client of the assignment: JOB, ID, exit. ERR-011's long line
    # closes the connection its job came on (needs: [JOB-004]).
    Mutant("jobs_dropped_with_their_client", broker="broker_client_close_drops.py",
           fails=("JOB-004", "ERR-011"),
           messages=("expect on d\n", "expected: waiting", "received: unknown")),
    # The original's blocking sendall(): a client that does not read stops everyone.
    Mutant("blocking_send", broker="broker_blocking_send.py", fails=("LIM-003",),
           messages=("expect on other\n", "expected: ID {id:int}", "received: nothing within")),
    Mutant("completed_job_requeued_with_its_worker", broker="broker_done_requeued_on_close.py",
           fails=("DON-006",),
           messages=("expect on v\n", "expected: JOB {b} next one", "i.e.: JOB 2 next one",
                     "received: JOB 1 run once")),
    # A worker that dies while writing its DONE leaves an unfinished line.
    Mutant("unfinished_line_at_close_forgets_held", broker="broker_eof_partial_forgets_held.py",
           fails=("OWN-005",),
           messages=("poll STATUS 1 until waiting", "expected: waiting", "S< running  (poll 1)")),
    Mutant("commands_case_sensitive", broker="broker_case_sensitive.py", fails=("FRM-004",),
           messages=("c C> job lower case", "expected: ID {id:int}",
                     "received: ERR UNKNOWN_COMMAND unknown command 'job'")),
    Mutant("wakened_fetch_answered_late", broker="broker_deliveries_late.py",
           fails=("LPL-008",),
           messages=("expect on w\n", "expected: JOB {id:int} order matters",
                     "received: STATS waiting=0 running=1")),
    # FRM-001's property; the others send several lines in one write on purpose
    # (needs: [FRM-001] in the spec). LPL-004's STATS behind a waiting FETCH is lost
    # only when it reaches the broker in one read with another line: timing.
    Mutant("pipelined_lines_lost", broker="broker_first_line_only.py",
           fails=("FRM-001", "FRM-012", "LIM-001", "LIM-013", "LPL-003", "LPL-007", "OWN-004"),
           may_fail=("LPL-004",),
           messages=("c S< ID 1", "expect on c\n",
                     "expected: ID {second:int}", "received: nothing within 5.0 s")),
    # One job per worker connection: a second FETCH gets the held job again.
    # OWN-004 needs a connection that holds several jobs (needs: [FET-005]).
    Mutant("held_job_sent_again", broker="broker_resends_held.py", fails=("FET-005", "OWN-004"),
           messages=("expect on w\n", "expected: JOB {b} second", "i.e.: JOB 2 second",
                     "received: JOB 1 first")),
    # FETCH's wait read with float(): 0_1, 1e1, inf are waited for instead of refused.
    Mutant("fetch_wait_read_by_float", broker="broker_float_wait.py",
           fails=("LPL-020", "LPL-021", "LPL-023", "LPL-024"),
           messages=("expect on w\n", "expected: ERR BAD_ARGUMENT {_:any}", "received: NOJOB")),
    # -- workers -------------------------------------------------------------------------
    # Every case about the words fails; the others use completion or DONE as evidence.
    Mutant("words_reversed", worker="worker_words_reversed.py",
           fails=("SYS-001", "SYS-003", "WRK-003", "WRK-008", "WRK-010",
                  "WRK-016"),
           messages=("expect words: word 'beta' arrived before 'alpha' (job 7)",
                     "expected: alpha beta gamma delta",
                     "received from w: delta gamma beta alpha")),
    Mutant("word_missing", worker="worker_drops_last_word.py",
           fails=("SYS-001", "SYS-003", "WRK-003", "WRK-008", "WRK-010",
                  "WRK-016"),
           messages=("expect words: missing word 'delta' (job 7)",
                     "received from w: alpha beta gamma")),
    Mutant("no_starting_job_syslog", worker="worker_no_starting_log.py",
           fails=("WRK-005", "WRK-014", "SYS-002"),
           messages=("expected: {_:any}starting job{_:any}",
                     "no matching syslog message within 5.0 s",
                     "syslog< fetching job  (from w)", "syslog< completed job 3  (from w)")),
    # Nothing reaches the group: also the cases that wait for a word before acting
    # (WRK-006, WRK-007) and the TTL case, which sees no datagram of the job.
    Mutant("wrong_multicast_group", worker="worker_wrong_group.py",
           fails=("SYS-001", "SYS-003", "SYS-006", "SYS-020", "WRK-003", "WRK-006", "WRK-007",
                  "WRK-008", "WRK-010", "WRK-016", "WRK-020", "WRK-021", "LSE-012"),
           capture_messages=("expect words: datagram 'alpha' to 239.0.0.2:",
                             "expected 239.0.0.1 (from w)", "capture< alpha  to 239.0.0.2:"),
           plain_messages=("expected: alpha beta gamma delta", "no datagram within 5.0 s")),
    # Words split with Python's str.split(): Unicode spaces split words.
    Mutant("words_split_at_unicode_spaces", worker="worker_python_split.py",
           fails=("WRK-020", "WRK-021", "SYS-020"),
           messages=("expect words: missing word 'a\\xa0b'", "received from w: a b end")),
    Mutant("no_reconnect_after_broker_drops", worker="worker_no_reconnect.py",
           fails=("WRK-006", "WRK-011", "WRK-015"),
           messages=("close c1\n", ": accept_worker c2\n",
                     "received: no connection within 10.0 s")),
    # A student's `line = sock.recv(4096)`: a long JOB line, or one in two writes, is cut.
    # WRK-040's 65,536-byte line is cut into lines of blanks, which the worker takes
    # for empty lines or, while it streams, for a protocol error: by the reads' timing.
    # SYS-004's 10,000-byte job is cut too; when its rest ends the delivery with a
    # protocol error, the job can be waiting at every poll for "running".
    Mutant("one_read_taken_for_a_line", worker="worker_line_per_read.py",
           fails=("WRK-016",), may_fail=("WRK-040", "SYS-004"),
           messages=("expect words: missing word 'abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvw'",
                     "missing word 'last'",
                     "expected: first abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvw (x90) last")),
    # A student's `while readline() != "OK"`: EOF between DONE and OK never ends it.
    Mutant("hangs_when_the_broker_closes_before_ok", worker="worker_hangs_awaiting_ok.py",
           fails=("WRK-015",),
           messages=("close c1\n", ": accept_worker c2\n",
                     "received: no connection within 10.0 s")),
    # Logs "fetching job N" when the JOB arrives instead of before every FETCH.
    Mutant("fetching_logged_after_job", worker="worker_logs_fetching_late.py",
           fails=("WRK-013",),
           messages=("expect syslog: fetching job\n", "c W< FETCH\n",
                     "expected: fetching job", "no matching syslog message within 5.0 s")),
    # Logs "running job N" where the assignment says "starting job".
    Mutant("running_instead_of_starting", worker="worker_running_log.py",
           fails=("WRK-005", "WRK-014", "SYS-002"),
           messages=("expected: {_:any}starting job{_:any}", "syslog< running job 3  (from w)",
                     "no matching syslog message within 5.0 s")),
    # The course's multicast helper: TTL 32, the default interface. Only the TTL case.
    Mutant("ttl_32_default_interface", worker="worker_ttl32_default_if.py",
           fails=("SYS-006",), plain_fails=(), netns_only=True,
           capture_messages=("expect words: TTL 32, expected 1 (datagram 'home' from w)",)),
]


def target_of(mutant):
    broker = (f"{{python}} {MUTANTS / mutant.broker} {{client_port}} {{worker_port}}"
              if mutant.broker else "")
    worker = ""
    if mutant.worker:
        worker = (f"{{python}} {MUTANTS / mutant.worker} {{broker}} {{output_port}} "
                  "{syslog_port} --word-delay {word_delay} --fetch-interval {fetch_interval}")
    return f"{mutant.defect}={broker};{worker}" if worker else f"{mutant.defect}={broker}"


def run_suite(directory, mutants, roles):
    """Run every case of ``roles`` against each of ``mutants``; return
    (exit status, terminal output, Markdown report)."""
    args = []
    for mutant in mutants:
        args += ["--target", target_of(mutant)]
    report = directory / "report.md"
    result = subprocess.run([sys.executable, "-m", "conformance", *QUIET_PLUGINS,
                             "-n", str(RUN_PROCESSES), "--role", roles, "--report", str(report), *args],
                            cwd=REPO_ROOT, capture_output=True, text=True, errors="replace",
                            timeout=900)
    text = report.read_text(errors="replace") if report.exists() else ""
    return result.returncode, result.stdout + result.stderr, text


def group_members(group):
    return [mutant for mutant in MUTANTS_TABLE if mutant.group == group]


def shared_run(request, tmp_path_factory, group):
    """The run of ``group``'s mutants, made once per session (also under xdist)."""
    if not hasattr(request.config, "workerinput"):
        key = f"_workq_mutant_run_{group}"
        if not hasattr(request.config, key):
            setattr(request.config, key, run_suite(tmp_path_factory.mktemp(group),
                                                   group_members(group), GROUP_ROLES[group]))
        return getattr(request.config, key)
    shared = tmp_path_factory.getbasetemp().parent / f"mutants-{group}"  # one per xdist session
    shared.mkdir(exist_ok=True)
    result = shared / "result.json"
    with open(shared / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not result.exists():
            result.write_text(json.dumps(run_suite(shared, group_members(group),
                                                   GROUP_ROLES[group])))
    return tuple(json.loads(result.read_text()))


def report_cells(report, target):
    """{case id: the report's cell of ``target``} from the Markdown report's table."""
    lines = report.splitlines()
    header = next(line for line in lines if line.startswith("| id | level |"))
    column = [cell.strip() for cell in header.strip("|").split("|")].index(target)
    return {ROW.match(line).group(1): line.strip("|").split(" | ")[column].strip()
            for line in lines if ROW.match(line)}


def failed_cases(report, target):
    return {case for case, cell in report_cells(report, target).items()
            if cell.startswith(("**FAIL", "**ERROR"))}


def failure_section(report, case, target):
    """The failure report of ``case`` on ``target``: its summary and wire transcript."""
    head = f"### {case} on {target}:"
    assert head in report, f"no failure section {head!r} in:\n{report}"
    return report.split(head, 1)[1].split("\n### ", 1)[0]


@pytest.mark.parametrize("mutant", MUTANTS_TABLE, ids=[m.defect for m in MUTANTS_TABLE])
def test_the_suite_fails_the_mutant_on_exactly_the_cases_about_its_defect(
        mutant, request, tmp_path_factory):
    code, output, report = shared_run(request, tmp_path_factory, mutant.group)
    if mutant.netns_only and NETNS_HEADER not in output:
        pytest.skip("this mutant sends on the default interface: it runs only in the "
                    "suite's private network namespace, not permitted here")
    assert "| id | level |" in report, f"no report written:\n{output}"
    capture = CAPTURE_HEADER in output
    expected = set(mutant.fails if capture or mutant.plain_fails is None
                   else mutant.plain_fails)
    cells = report_cells(report, mutant.defect)
    assert len(cells) > len(expected), f"the run did not cover the roles:\n{cells}"
    failed = failed_cases(report, mutant.defect) - set(mutant.may_fail)
    assert failed == expected, (
        f"{mutant.defect}: expected to fail exactly {sorted(expected)}, failed "
        f"{sorted(failed)}: {sorted(failed - expected)} fail for a reason other than "
        f"the defect, {sorted(expected - failed)} do not catch it\n"
        + "\n".join(f"{case}: {cells[case]}" for case in sorted(failed ^ expected)))
    if expected:
        assert f"failed on {mutant.defect}: " in output, output
    messages = list(mutant.messages)
    messages += mutant.capture_messages if capture else mutant.plain_messages
    failures = ""
    for case in sorted(expected):
        assert cells[case].startswith("**FAIL: step "), (case, cells[case])
        failures += failure_section(report, case, mutant.defect)
    for text in messages:
        assert text in failures, f"{text!r} missing from the failures:\n{failures}"


# Mutants whose defects only concurrency or faults show: they pass every core
# exchange, and tests/test_workload_mutants.py asserts that the workload catches them.
WORKLOAD_ONLY = {"broker_waiting_set.py", "broker_fetch_race.py",
                 "broker_requeue_pair_forgotten.py", "worker_done_early.py",
                 "broker_table_wraps.py"}


# Brokers correct at the core level, without workq's additions: tests/test_core_brokers.py
# asserts that they pass every core case.
CORE_CORRECT = {"broker_silent_extended.py"}


def test_every_mutant_script_is_in_the_table():
    named = {m.broker for m in MUTANTS_TABLE} | {m.worker for m in MUTANTS_TABLE} | WORKLOAD_ONLY \
        | CORE_CORRECT
    scripts = {path.name for path in MUTANTS.glob("*.py") if not path.name.startswith("_")}
    assert scripts <= named, f"mutants without a row: {sorted(scripts - named)}"


if __name__ == "__main__":   # measure: print each mutant's failing set
    import tempfile
    for group, roles in GROUP_ROLES.items():
        if len(sys.argv) > 1 and group not in sys.argv[1:]:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            code, output, report = run_suite(Path(tmp), group_members(group), roles)
            Path(f"/tmp/mutants-{group}.md").write_text(report)
            print(output[-3000:])
            for mutant in group_members(group):
                failed = failed_cases(report, mutant.defect)
                print(f"{mutant.defect}: {sorted(failed)}"
                      + ("" if failed == set(mutant.fails) else f"   (table: {sorted(mutant.fails)})"))
