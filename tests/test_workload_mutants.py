"""The workload finds what the exchanges miss.

The mutants written for it (tests/mutants/: waiting ids in a set, two
FETCHes of one round sharing the head job, two dying holders' jobs forgotten,
DONE before a long job's last words, a job table that wraps at 100) pass every
core exchange, and the
workload alone catches each, naming the anomaly. So it does with the older
mutants whose defect a load can show (the exchanges catch those too).

Each workload run is short and seeded, with only the faults its defect needs.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

# Minutes, not seconds: outside the README's quick command (pytest.ini), run by
# `python3 -m pytest -n auto -m slow` in CI and `tox -e slow`.
pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parent.parent
MUTANTS = Path(__file__).resolve().parent / "mutants"
QUIET_PLUGINS = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")
WORKER_OPTIONS = "{broker} {output_port} {syslog_port} --word-delay {word_delay} " \
                 "--fetch-interval {fetch_interval}"


def broker(script):
    return ["--broker-cmd", f"{{python}} {MUTANTS / script} {{client_port}} {{worker_port}}"]


def worker(script):
    return ["--worker-cmd", f"{{python}} {MUTANTS / script} {WORKER_OPTIONS}"]


NEW_MUTANTS = {
    # name: (target options, workload options, the anomaly it must show)
    "waiting_ids_in_a_set": (broker("broker_waiting_set.py"),
                             ["--nemesis", "none", "--time", "6", "--rate", "90"],
                             "fifo-violation"),
    "fetches_of_one_round_share_the_head": (broker("broker_fetch_race.py"),
                                            ["--nemesis", "pause-broker", "--time", "8",
                                             "--rate", "90"],
                                            "double-held"),
    "two_dying_holders_jobs_forgotten": (broker("broker_requeue_pair_forgotten.py"),
                                         ["--nemesis", "kill-workers", "--time", "8"], "lost"),
    "done_before_the_last_words": (worker("worker_done_early.py"),
                                   ["--nemesis", "none", "--time", "6"], "words-after-done"),
    # STATUS of an early job after 100 more answers the newcomer's state.
    "job_table_wraps_at_100": (broker("broker_table_wraps.py"),
                               ["--nemesis", "none", "--time", "6", "--rate", "90"],
                               ("status-stale", "status-backwards")),
}

OLD_MUTANTS = {
    "fifo_broken_lifo": (broker("broker_fifo_broken.py"), ["--nemesis", "none", "--time", "5"],
                         "fifo-violation"),
    "id_issued_twice": (broker("broker_id_twice.py"), ["--nemesis", "none", "--time", "4"],
                        "duplicate-id"),
    # It hands a completed job out again and crashes on its text (None): the load
    # shows one or the other first.
    "job_handed_to_two_workers": (broker("broker_fetch_keeps_job.py"),
                                  ["--nemesis", "none", "--time", "5"], ("double-held", "crashed")),
    "done_accepted_from_non_holder": (broker("broker_done_any_worker.py"),
                                      ["--nemesis", "none", "--time", "8"], "done-by-non-holder"),
    "no_requeue_after_worker_dies": (broker("broker_no_requeue.py"),
                                     ["--nemesis", "kill-worker", "--time", "6"], "lost"),
    # A requeued job must wait behind a backlog for the proof: offer more than
    # the three workers take.
    "requeue_at_tail": (broker("broker_requeue_at_tail.py"),
                        ["--nemesis", "none", "--time", "8", "--rate", "120"], "fifo-violation"),
    # A killed worker's connection closes: its completed jobs are handed out again.
    "completed_job_requeued_with_its_worker": (broker("broker_done_requeued_on_close.py"),
                                               ["--nemesis", "kill-worker", "--time", "8"],
                                               ("handed-after-done", "status-backwards")),
    "commands_case_sensitive": (broker("broker_case_sensitive.py"),
                                ["--nemesis", "none", "--time", "4"], "bad-reply"),
    "only_the_first_line_of_a_read": (broker("broker_first_line_only.py"),
                                      ["--nemesis", "none", "--time", "4"], "unanswered"),
    "worker_does_not_reconnect": (worker("worker_no_reconnect.py"),
                                  ["--nemesis", "restart-broker", "--time", "6"], "lost"),
}


# The workload is a randomized search, its timing the host's: a proof can need a
# poll to land between two events (the requeue-at-tail mutant's: STATUS of a requeued
# job, twice, around a fresh job's hand-out), and a loaded host gave none in one
# 8 s run (once in CI; 5-12 proofs per run otherwise). A mutant counts as caught when
# one of these seeded runs finds it; a run that finds an anomaly ends the search.
SEEDS = (11, 12)


def run_workload(target, options, folder, seed=SEEDS[0]):
    proc = subprocess.run([sys.executable, "-m", "conformance", "--workload", *target, *options,
                           "--seed", str(seed), "--results", str(folder)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=240)
    return proc


def assert_caught(name, target, options, anomalies, folder):
    """A run fails (exit 1) and names the anomaly (one of several, when a tuple)."""
    missed = []
    for seed in SEEDS:
        proc = run_workload(target, options, folder, seed)
        if proc.returncode != 0:
            break
        missed.append(f"seed {seed}:\n{proc.stdout}")
    assert proc.returncode == 1, (
        f"{name}: expected exit 1 (anomaly) from one of the seeds {SEEDS}, got "
        f"{proc.returncode}\n" + ("\n".join(missed) if proc.returncode == 0
                                   else f"{proc.stdout}\n{proc.stderr}"))
    verdict = json.loads((folder / "results.json").read_text())
    names = anomalies if isinstance(anomalies, tuple) else (anomalies,)
    found = [anomaly for anomaly in names if verdict["anomalies"].get(anomaly)]
    assert found, f"{name}: expected the anomaly {' or '.join(names)}, got {verdict['anomalies']}"
    # The summary shows a checker's first five anomalies: one of those found.
    assert any(f"anomaly {anomaly}: " in proc.stdout for anomaly in found), \
        f"{name}: the summary shows none of {found}"


def test_the_new_mutants_pass_every_core_exchange(tmp_path):
    targets = []
    for name, (target, _, _) in NEW_MUTANTS.items():
        option, template = target
        broker_part = template if option == "--broker-cmd" else ""
        worker_part = template if option == "--worker-cmd" else ""
        targets += ["--target", f"{name}={broker_part};{worker_part}"]
    report = tmp_path / "core.md"
    proc = subprocess.run([sys.executable, "-m", "conformance", *QUIET_PLUGINS, "-n", "2",
                           "--level", "core", *targets, "--report", str(report)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    failed = re.findall(r"^FAILED \S+", proc.stdout, re.MULTILINE)
    assert proc.returncode == 0 and not failed, f"expected every core case to pass: {failed}\n" \
                                                f"{proc.stdout[-3000:]}"
    text = report.read_text()
    for name in NEW_MUTANTS:
        assert re.search(rf"\*\*{name}\*\*: core (\d+)/\1[;,]", text), \
            f"{name}: expected core N/N in the report"


@pytest.mark.parametrize("name", NEW_MUTANTS)
def test_the_workload_catches_the_new_mutant(name, tmp_path):
    assert_caught(name, *NEW_MUTANTS[name], tmp_path / name)


@pytest.mark.parametrize("name", OLD_MUTANTS)
def test_the_workload_alone_catches_the_older_mutant(name, tmp_path):
    assert_caught(name, *OLD_MUTANTS[name], tmp_path / name)
