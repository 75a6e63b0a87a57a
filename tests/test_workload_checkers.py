"""The workload's checkers on small hand-written histories: each anomaly is
found, named, and proved by the events it lists; a correct history, with
duplicate executions after a fault, is valid."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.workload.checkers import ANOMALIES, check
from conformance.workload.history import History, load_history

REPO_ROOT = Path(__file__).resolve().parent.parent


class Builder:
    """A history written by hand, with explicit times."""

    def __init__(self, level="extended", capture=True, drain_bound=10.0):
        self.events = []
        self.info(0.0, "workload", "target", {"level": level, "capture": capture,
                                              "drain_bound": drain_bound, "seed": 1})

    def _add(self, time, type_, process, f, value, op=None, conn=None):
        event = {"index": len(self.events), "time": time, "type": type_, "process": process,
                 "conn": conn, "f": f, "value": value}
        if op is not None:
            event["op"] = op
        self.events.append(event)
        return event["index"]

    def info(self, time, process, f, value):
        return self._add(time, "info", process, f, value)

    def op(self, t0, t1, process, f, value, type_, result):
        invoke = self._add(t0, "invoke", process, f, value)
        if t1 is not None:
            self._add(t1, type_, process, f, result, op=invoke)
        return invoke

    def job(self, t0, t1, key, job_id, words=2, process="client-1"):
        return self.op(t0, t1, process, "job", {"key": key, "words": words}, "ok",
                       {"key": key, "id": job_id})

    def status(self, t0, t1, job_id, state, process="poller-1"):
        return self.op(t0, t1, process, "status", {"id": job_id}, "ok",
                       {"id": job_id, "state": state})

    def fetch(self, t0, t1, process, job_id):
        return self.op(t0, t1, process, "fetch", {}, "ok", {"id": job_id})

    def done(self, t0, t1, process, job_id, reply="OK", repeat=False):
        return self.op(t0, t1, process, "done", {"id": job_id, "repeat": repeat},
                       "ok" if reply == "OK" else "fail", {"id": job_id, "reply": reply})

    def words(self, t0, sender, key, count, indices=None, step=0.01):
        for n, i in enumerate(range(count) if indices is None else indices):
            self.info(t0 + n * step, sender, "word", {"payload": f"{key}.{i}.{count}\n"})

    def fault(self, t0, t1, kind, targets=("worker-1",)):
        self.info(t0, "nemesis", "fault", {"fault": kind, "phase": "start",
                                           "targets": list(targets)})
        self.info(t1, "nemesis", "fault", {"fault": kind, "phase": "end",
                                           "targets": list(targets)})

    def phases(self, heal, end):
        self.info(heal, "workload", "phase", {"name": "heal"})
        self.info(end, "workload", "phase", {"name": "end"})


def verdict(builder):
    return check(sorted(builder.events, key=lambda e: e["index"]))


def anomaly_names(result):
    return {name for name, count in result["anomalies"].items() if count}


def only(result, name):
    """The anomalies of one name, asserting that no other name was found."""
    assert anomaly_names(result) == {name}, (
        f"expected only {name}, got {result['anomalies']}")
    found = [a for r in result["results"] for a in r["anomalies"] if a["name"] == name]
    assert found, f"expected a listed {name} anomaly"
    return found


def healthy():
    """Two jobs, run by two workers, polled to completed."""
    b = Builder()
    b.job(0.0, 0.01, "k00001", 1, words=2)
    b.job(0.02, 0.03, "k00002", 2, words=3)
    b.words(0.1, "worker-1", "k00001", 2)
    b.info(0.12, "worker-1", "done-wire", {"id": 1})
    b.words(0.11, "worker-2", "k00002", 3)
    b.info(0.14, "worker-2", "done-wire", {"id": 2})
    b.status(0.3, 0.31, 1, "completed")
    b.status(0.32, 0.33, 2, "completed")
    b.phases(0.2, 0.5)
    return b


def test_a_healthy_history_is_valid():
    result = verdict(healthy())
    assert result["valid"], result["anomalies"]
    assert result["anomalies"] == {}


def test_a_job_run_twice_after_a_kill_is_counted_not_failed():
    b = Builder()
    b.job(0.0, 0.01, "k00001", 1, words=3)
    b.words(0.1, "worker-1", "k00001", 3)           # complete, but its DONE was lost:
    b.fault(0.15, 0.4, "kill-worker")               # killed before the broker saw it
    b.words(0.5, "worker-2", "k00001", 3)           # requeued, run again in full
    b.status(0.6, 0.61, 1, "completed")
    b.phases(0.45, 0.7)
    result = verdict(b)
    assert result["valid"], result["anomalies"]
    stats = next(r for r in result["results"] if r["checker"] == "total-queue")["stats"]
    assert stats["duplicated"] == 1 and stats["extra_executions"] == 1


def test_lost():
    b = healthy()
    b.job(0.04, 0.05, "k00003", 3)
    b.status(0.4, 0.41, 3, "running")
    result = verdict(b)
    assert anomaly_names(result) == {"lost", "not-drained"}
    lost = [a for r in result["results"] for a in r["anomalies"] if a["name"] == "lost"]
    assert "job 3 (k00003)" in lost[0]["text"] and "running" in lost[0]["text"]
    assert sorted(e["f"] for e in lost[0]["events"]) == ["job", "job", "phase", "status", "status"]


def test_duplicate_id():
    b = healthy()
    b.job(0.04, 0.05, "k00003", 2, process="client-2")
    b.words(0.1, "worker-3", "k00003", 2)
    (anomaly,) = only(verdict(b), "duplicate-id")
    assert anomaly["text"] == "id 2 issued 2 times (jobs k00002, k00003)"


def test_double_held_by_two_suite_workers():
    b = healthy()
    b.job(0.04, 0.05, "k00003", 3)
    b.fetch(0.06, 0.07, "suite-worker-1", 3)
    b.fetch(0.065, 0.075, "suite-worker-2", 3)
    b.done(0.08, 0.09, "suite-worker-1", 3)
    b.done(0.085, 0.095, "suite-worker-2", 3, reply="ERR NOT_HOLDER held by another")
    b.status(0.4, 0.41, 3, "completed")
    (anomaly,) = only(verdict(b), "double-held")
    assert "held by suite-worker-1" in anomaly["text"] and "by suite-worker-2" in anomaly["text"]


def test_double_held_by_two_streaming_workers_and_not_across_a_broker_restart():
    b = healthy()
    b.job(0.04, 0.05, "k00003", 3, words=4)
    b.words(0.1, "worker-1", "k00003", 4, step=0.02)
    b.words(0.11, "worker-2", "k00003", 4, step=0.02)
    b.status(0.4, 0.41, 3, "completed")
    only(verdict(b), "double-held")
    b.fault(0.105, 0.106, "restart-broker", ["broker"])
    assert verdict(b)["valid"]


def test_done_by_non_holder_only_on_an_extended_target():
    for level, valid in (("extended", False), ("core", True)):
        b = healthy()
        b.events[0]["value"]["level"] = level
        b.job(0.04, 0.05, "k00003", 3)
        b.fetch(0.06, 0.07, "suite-worker-1", 3)
        b.done(0.08, 0.09, "suite-worker-1", 3)
        b.done(0.1, 0.11, "suite-worker-1", 3, repeat=True)   # answered OK again
        b.status(0.4, 0.41, 3, "completed")
        result = verdict(b)
        assert result["valid"] is valid
        if not valid:
            (anomaly,) = only(result, "done-by-non-holder")
            assert "(it had completed it already)" in anomaly["text"]


def test_status_backwards_and_stale():
    b = healthy()
    b.status(0.35, 0.36, 1, "running")
    (anomaly,) = only(verdict(b), "status-backwards")
    assert anomaly["text"].startswith("STATUS 1: completed at 0.310 s, then running")
    b = healthy()
    b.job(0.04, 0.05, "k00003", 3)
    b.fetch(0.06, 0.07, "suite-worker-1", 3)
    b.done(0.08, 0.09, "suite-worker-1", 3)
    b.status(0.1, 0.11, 3, "running")
    b.status(0.4, 0.41, 3, "completed")
    (anomaly,) = only(verdict(b), "status-stale")
    assert "DONE 3 acknowledged at 0.090 s, then STATUS 3 answered running" == anomaly["text"]


def test_a_job_handed_out_after_its_done_was_acknowledged():
    """At-least-once allows a second run only while the completion is not
    acknowledged: a FETCH sent after the OK to DONE (or after STATUS completed)
    that gets the job again is handed-after-done, unless the broker restarted."""
    b = healthy()
    b.job(0.04, 0.05, "k00003", 3)
    b.fetch(0.06, 0.07, "suite-worker-1", 3)
    b.done(0.08, 0.09, "suite-worker-1", 3)
    b.fetch(0.15, 0.16, "suite-worker-2", 3)          # the completed job, again
    b.done(0.17, 0.18, "suite-worker-2", 3)
    (anomaly,) = only(verdict(b), "handed-after-done")
    assert anomaly["text"] == (
        "job 3 (k00003) handed out again to suite-worker-2 at 0.160 s (FETCH sent at 0.150 s), "
        "after its completion was acknowledged at 0.090 s (OK to DONE 3 from suite-worker-1)"), \
        f"expected the hand-out and the acknowledgement it came after, got {anomaly['text']!r}"
    b = healthy()
    b.fetch(0.4, 0.41, "suite-worker-1", 1)           # job 1: STATUS completed at 0.31 s
    (anomaly,) = only(verdict(b), "handed-after-done")
    assert anomaly["text"].endswith("acknowledged at 0.310 s (STATUS completed)"), anomaly["text"]
    b.fault(0.35, 0.36, "restart-broker", ["broker"])
    assert "handed-after-done" not in anomaly_names(verdict(b)), \
        "expected no handed-after-done across a broker restart (ids start again)"


def test_status_unknown_for_an_acknowledged_id():
    b = healthy()
    b.status(0.05, 0.06, 2, "unknown")
    only(verdict(b), "status-backwards")


def test_fifo_violation_and_the_requeue_exception():
    b = healthy()
    b.job(0.04, 0.05, "k00003", 3)
    b.job(0.05, 0.06, "k00004", 4)
    b.fetch(0.07, 0.08, "suite-worker-1", 4)          # the younger one first
    b.status(0.09, 0.1, 3, "waiting")                 # while the older one waits
    b.done(0.11, 0.12, "suite-worker-1", 4)
    b.words(0.13, "worker-1", "k00003", 2)
    b.status(0.4, 0.41, 3, "completed")
    b.status(0.42, 0.43, 4, "completed")
    (anomaly,) = only(verdict(b), "fifo-violation")
    assert anomaly["text"].startswith("job 4 (k00004) was handed out")
    assert "while the older job 3 (k00003) waited" in anomaly["text"]
    # A worker killed in between may have held job 3 and lost it: no proof.
    b.fault(0.085, 0.086, "kill-worker")
    assert verdict(b)["valid"]


def test_a_job_requeued_by_a_kill_that_started_before_it_is_no_fifo_violation():
    """The nemesis logs a kill when it starts; the kill may land after jobs created
    later were handed out. Job 3, seen streamed, then waiting again, was requeued:
    job 4 handed out meanwhile proves nothing (a CI run of seed 7 saw this)."""
    b = healthy()
    b.fault(0.035, 0.036, "kill-workers")              # logged before job 3 exists
    b.job(0.04, 0.05, "k00003", 3)
    b.words(0.055, "worker-2", "k00003", 2, indices=[0])   # held by worker-2 ...
    b.job(0.06, 0.065, "k00004", 4)
    b.words(0.07, "worker-3", "k00004", 1)             # ... while job 4 goes to worker-3
    b.status(0.08, 0.081, 3, "waiting")                # worker-2 died: job 3 requeued
    b.words(0.1, "worker-3", "k00003", 2)
    b.status(0.4, 0.41, 3, "completed")
    b.status(0.42, 0.43, 4, "completed")
    result = verdict(b)
    fifo = [a for a in result["anomalies"] if a["name"] == "fifo-violation"]
    assert not fifo, f"expected no fifo-violation for a requeued job, got {fifo}"


def test_a_requeued_job_waiting_behind_a_fresh_one():
    b = healthy()
    b.job(0.04, 0.05, "k00003", 3)
    b.fetch(0.06, 0.07, "suite-worker-1", 3)
    b.info(0.08, "suite-worker-1", "disconnect", {"held": [3]})
    b.job(0.081, 0.082, "k00004", 4)
    b.status(0.09, 0.1, 3, "waiting")
    b.fetch(0.11, 0.12, "suite-worker-2", 4)
    b.status(0.13, 0.14, 3, "waiting")
    b.done(0.15, 0.16, "suite-worker-2", 4)
    b.words(0.2, "worker-1", "k00003", 2)
    b.status(0.4, 0.41, 3, "completed")
    (anomaly,) = only(verdict(b), "fifo-violation")
    assert "requeued when suite-worker-1 disconnected" in anomaly["text"]


def test_a_job_handed_out_before_is_not_a_fresh_one():
    """The requeue rule needs a fresh job handed out ahead of the requeued one; a
    job already seen streamed by a worker, then fetched again, is not fresh."""
    b = healthy()
    b.job(0.04, 0.05, "k00003", 3)
    b.job(0.051, 0.052, "k00004", 4)
    b.words(0.055, "worker-2", "k00004", 2, indices=[0])    # job 4 held by worker-2 ...
    b.fetch(0.06, 0.07, "suite-worker-1", 3)
    b.info(0.08, "suite-worker-1", "disconnect", {"held": [3]})
    b.status(0.09, 0.1, 3, "waiting")
    b.fetch(0.11, 0.12, "suite-worker-2", 4)                 # ... lost with it, requeued
    b.status(0.13, 0.14, 3, "waiting")
    b.done(0.15, 0.16, "suite-worker-2", 4)
    b.words(0.2, "worker-1", "k00003", 2)
    b.status(0.4, 0.41, 3, "completed")
    fifo = [a for a in verdict(b)["anomalies"] if a["name"] == "fifo-violation"]
    assert not fifo, f"expected no fifo-violation for a job handed out before, got {fifo}"


@pytest.mark.parametrize("name, damage", [
    ("words-missing", lambda b: b.words(0.1, "worker-3", "k00003", 3, indices=[0, 1])),
    ("words-out-of-order", lambda b: b.words(0.1, "worker-3", "k00003", 3, indices=[0, 2, 1])),
    ("words-torn", lambda b: b.info(0.1, "worker-3", "word", {"payload": "k00003.0.3"})),
])
def test_word_anomalies(name, damage):
    b = healthy()
    b.job(0.04, 0.05, "k00003", 3, words=3)
    damage(b)
    if name != "words-missing":
        b.words(0.2, "worker-1", "k00003", 3)     # a whole run too: only the defect counts
    b.status(0.4, 0.41, 3, "completed")
    anomalies = only(verdict(b), name)
    assert "worker-3" in anomalies[0]["text"] or "k00003" in anomalies[0]["text"]


def test_words_after_the_workers_own_done():
    b = healthy()
    b.job(0.04, 0.05, "k00003", 3, words=3)
    b.info(0.1, "worker-1", "word", {"payload": "k00003.0.3\n"})
    b.info(0.11, "worker-1", "done-wire", {"id": 3})
    b.info(0.12, "worker-1", "word", {"payload": "k00003.1.3\n"})
    b.info(0.13, "worker-1", "word", {"payload": "k00003.2.3\n"})
    b.status(0.4, 0.41, 3, "completed")
    (anomaly,) = only(verdict(b), "words-after-done")
    assert anomaly["text"] == "worker-1 sent DONE 3 and then 2 more word(s) of it"


def test_words_after_done_is_unknown_without_a_capture():
    b = healthy()
    b.events[0]["value"]["capture"] = False
    result = verdict(b)
    words = next(r for r in result["results"] if r["checker"] == "words")
    assert result["valid"] and "unchecked" in words["note"]


def test_unexpected_words():
    b = healthy()
    b.info(0.2, "worker-1", "word", {"payload": "k09999.0.1\n"})
    only(verdict(b), "unexpected")


def test_not_drained_in_time():
    b = healthy()
    b.job(0.04, 0.05, "k00003", 3)
    b.words(15.0, "worker-1", "k00003", 2)
    b.status(15.1, 15.2, 3, "completed")
    (anomaly,) = only(verdict(b), "not-drained")
    assert "1 completed later, 0 never" in anomaly["text"]


def test_bad_reply_unanswered_and_crashed():
    b = healthy()
    b.op(0.05, 0.06, "client-2", "job", {"key": "k00003", "words": 1}, "fail",
         {"reply": "ERR UNKNOWN_COMMAND unknown command 'job'"})
    only(verdict(b), "bad-reply")
    b = healthy()
    b.op(0.05, 5.06, "client-3", "job", {"key": "k00003", "words": 1}, "info",
         {"error": "timed out"})
    only(verdict(b), "unanswered")
    b.fault(4.0, 4.5, "pause-broker", ["broker"])        # a paused broker excuses it
    assert verdict(b)["valid"]
    b = healthy()
    b.info(0.2, "workload", "exit", {"name": "broker", "pid": 7, "code": 1})
    only(verdict(b), "crashed")


def test_every_anomaly_name_is_documented():
    doc = sys.modules["conformance.workload.checkers"].__doc__
    assert [name for name in ANOMALIES if name not in doc] == []


def test_a_saved_history_is_checked_again(tmp_path):
    history = History(start=0.0)
    for event in healthy().events:
        history.events.append(event)
    path = tmp_path / "history.jsonl"
    history.write(path)
    assert load_history(path) == history.events
    proc = subprocess.run([sys.executable, "-m", "conformance", "--workload", "--check", str(path),
                           "--results", str(tmp_path / "again")],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "target rechecked: VALID" in proc.stdout   # the history names no target
    lost = healthy()
    lost.job(0.04, 0.05, "k00003", 3)
    path.write_text("".join(json.dumps(e) + "\n" for e in lost.events))
    proc = subprocess.run([sys.executable, "-m", "conformance", "--workload", "--check", str(path),
                           "--results", str(tmp_path / "again")],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "anomaly lost: job 3 (k00003) acknowledged at 0.050 s, never completed" in proc.stdout
