"""tools.demo: the word-matching logic, and one end-to-end run."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

from core.worker_options import worker_parser
from tools.demo import assign_words, parse_args, pids_by_source

RUN_TIMEOUT = 180      # hang guard for the whole demo, not a measurement


# ---------------------------------------------------------- assign_words

def test_assign_words_two_workers_interleaved_jobs():
    jobs = [(1, "a b"), (2, "c"), (3, "d e f"), (4, "a")]
    streams = {5000: ["a", "b", "d", "e", "f"], 6000: ["c", "a"]}
    assigned, stray = assign_words(jobs, streams)
    assert assigned == {1: 5000, 3: 5000, 2: 6000, 4: 6000}, f"got {assigned}"
    assert stray == {}, f"expected no stray words, got {stray}"


def test_assign_words_prefers_lowest_id_and_keeps_order():
    # "x" (1) is a prefix of "x y" (2); the stream holds job 1 then job 3.
    jobs = [(1, "x"), (2, "x y"), (3, "y")]
    assigned, stray = assign_words(jobs, {1: ["x", "y"], 2: ["x", "y"]})
    assert assigned == {1: 1, 3: 1, 2: 2}, f"got {assigned}"
    assert stray == {}, f"got {stray}"


def test_assign_words_reports_stray_and_missing():
    jobs = [(1, "a b"), (2, "c")]
    assigned, stray = assign_words(jobs, {9: ["a", "zzz", "c"]})
    assert assigned == {2: 9}, f"expected only job 2 matched, got {assigned}"
    assert stray == {9: ["a", "zzz"]}, f"got {stray}"


def test_pids_by_source_from_syslog():
    logs = [("daemon", "info", "workq-worker[11]: starting job 1"),
            ("daemon", "info", "workq-worker[22]: starting job 2"),
            ("daemon", "info", "workq-worker[11]: starting job 3")]
    got = pids_by_source({1: 5000, 2: 6000, 3: 5000}, logs)
    assert got == {5000: 11, 6000: 22}, f"got {got}"


# ------------------------------------------------------------ pace

def test_default_pace_is_the_workers_own_so_a_person_can_watch():
    """The demo used to stream at 0.05 s a word and be over in 0.6 s."""
    worker_default = worker_parser("w", "select").get_default("word_delay")
    args = parse_args([])
    assert args.word_delay == worker_default == 0.25, \
        f"expected the worker's default word delay 0.25 s, got demo {args.word_delay}, " \
        f"worker {worker_default}"
    assert args.job_delay > 0, f"expected jobs submitted apart, got {args.job_delay}"


def test_quick_flag_is_fast_unless_a_delay_is_given():
    quick = parse_args(["--quick"])
    assert quick.word_delay < 0.05 and quick.job_delay == 0, \
        f"expected a fast run, got word delay {quick.word_delay}, job delay {quick.job_delay}"
    given = parse_args(["--quick", "--word-delay", "0.1"])
    assert given.word_delay == 0.1, f"expected the given 0.1, got {given.word_delay}"


# ------------------------------------------------------------ end to end

MISSING = [p for p in ("impl_select/broker.py", "impl_select/worker.py")
           if not (ROOT / p).exists()]


@pytest.mark.skipif(bool(MISSING), reason=f"not written yet: {', '.join(MISSING)}")
def test_demo_end_to_end():
    proc = subprocess.run(
        [sys.executable, "-m", "tools.demo", "--jobs", "3", "--quick"],
        cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
        timeout=RUN_TIMEOUT)
    transcript = f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    assert proc.returncode == 0, f"expected exit 0, got {transcript}"
    assert "Traceback" not in proc.stdout + proc.stderr, f"expected no traceback, got {transcript}"
    assert "all 3 job(s) completed" in proc.stdout, f"expected all 3 completed, got {transcript}"
    # autoCall's jobs/s rate measured the pause between submissions: meaningless here.
    assert "jobs/s" not in proc.stdout and "submitted 3 of 3 job(s)" in proc.stdout, \
        f"expected 'submitted 3 of 3 job(s)' and no rate line, got {transcript}"

    submitted = re.findall(r"^\s*\[\d/3\] ID (\d+)  <- (.+)$", proc.stdout, re.MULTILINE)
    assert len(submitted) == 3, f"expected 3 submissions, got {submitted}\n{transcript}"
    table = proc.stdout.split("final statuses:", 1)[-1]
    for job_id, text in submitted:
        row = re.search(rf"^\s+{job_id}\s+(\S+)\s+(\S+)\s+(\d+)/(\d+)\s+(.+)$", table, re.MULTILINE)
        assert row, f"expected a row for job {job_id}, got {transcript}"
        state, _, got, want, row_text = row.groups()
        assert state == "completed", f"job {job_id}: expected completed, got {state}"
        assert got == want == str(len(text.split())) and row_text == text, \
            f"job {job_id}: expected all {len(text.split())} words of {text!r}, got {row.group(0)!r}"
    words = re.search(r"words: expected (\d+), received (\d+)", proc.stdout)
    assert words and words.group(1) == words.group(2), \
        f"expected as many words received as sent, got {words and words.group(0)}"
    assert re.search(r"^stopped: broker \(exit 0\), worker 1 \(exit 0\), worker 2 \(exit 0\)$",
                     proc.stdout, re.MULTILINE), f"expected a clean stop of all three, got {transcript}"

    # No orphans: every process the demo started is gone (reaped by it).
    pids = [int(p) for p in re.findall(r"^started .* \(pid (\d+)\)", proc.stdout, re.MULTILINE)]
    assert len(pids) == 3, f"expected 3 started processes, got {pids}"
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
            alive.append(pid)
        except ProcessLookupError:
            pass
    assert not alive, f"expected no process left, got alive {alive}"


def test_demo_missing_implementation_is_a_clear_error(tmp_path):
    """A package without broker/worker modules gives exit 2 and a message."""
    proc = subprocess.run(
        [sys.executable, "-c",
         ("import sys, tools.demo as d; d._module_exists = lambda name: False; "
          "sys.exit(d.main(['--impl', 'threads', '--no-netns']))")],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=RUN_TIMEOUT)
    assert proc.returncode == 2, f"expected exit 2, got {proc.returncode}: {proc.stderr}"
    assert "impl_threads.broker" in proc.stderr and "Traceback" not in proc.stderr, \
        f"expected a clear missing-module message, got {proc.stderr!r}"
