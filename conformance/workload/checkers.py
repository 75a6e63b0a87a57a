"""Checkers: pure functions from a history (a list of events, history.py) to a
result, in the style of Jepsen's checkers.

Every checker returns a dict::

    {"checker": NAME, "valid": True | False | "unknown",
     "anomalies": [{"name": ANOMALY, "text": "...", "events": [EVENT, ...]}],
     "count": {ANOMALY: n}, "stats": {...}, "note": "..."}

``events`` of an anomaly is the smallest part of the history that proves it
(the operations and datagrams it is made of, in history order). ``valid``
is ``"unknown"`` when the history lacks what the checker needs (no capture:
DONE on the wire unseen). ``check(events)`` runs them all.

The anomalies (issue 13; the names are what the summary and the tests say):

==================== ==========================================================
lost                 a job acknowledged (``ID n``) and never seen completed
unexpected           words of a job nobody submitted
duplicate-id         one id acknowledged for two different JOBs
double-held          one job held by two live workers at once
done-by-non-holder   ``OK`` to a DONE from a worker that does not hold the job
                     (extended targets only: a core broker need not check)
status-backwards     STATUS of a job going from completed back, or ``unknown``
                     for an id acknowledged before the STATUS began
status-stale         STATUS not ``completed`` although a DONE of the job was
                     acknowledged before the STATUS began
handed-after-done    a job handed out to a suite worker by a FETCH sent after its
                     completion was acknowledged (OK to its DONE, or STATUS
                     ``completed``): run again once done, which at-least-once
                     does not allow
fifo-violation       a younger job handed out while an older one waited (or a
                     job requeued by a lost holder waited behind a fresh one)
words-missing        a completed job of which no worker sent every word
words-out-of-order   a worker sent a job's words out of order
words-torn           a datagram that is not exactly one word and LF
words-after-done     a worker sent words of a job after its own DONE of it
bad-reply            a reply the protocol does not allow to a well-formed request
unanswered           a request not answered within 5 s, the broker neither paused
                     nor restarting
crashed              a broker or worker process exited without being killed
not-drained          jobs still unfinished ``drain_bound`` s after the faults
                     stopped (completed later, or never: then also ``lost``)
==================== ==========================================================

Duplicate executions (a job streamed in full more than once, at-least-once
delivery after a fault that kept its DONE from being acknowledged) are counted
in ``stats``, not failures; a hand-out after the acknowledgement is
``handed-after-done``.
"""

import re
from collections import defaultdict

from .history import completions

__all__ = ["check", "CHECKERS", "ANOMALIES", "Facts"]

WORD = re.compile(r"(k\d+)\.(\d+)\.(\d+)\Z")
KEY = re.compile(r"k\d+")
RANK = {"waiting": 0, "running": 1, "completed": 2}
LOSS_FAULTS = ("kill-worker", "kill-workers", "restart-broker")
BROKER_FAULTS = ("pause-broker", "restart-broker")
MAX_SHOWN = 20   # anomalies of one name listed in full; the rest only counted


class Facts:
    """What the checkers read from a history, indexed once."""

    def __init__(self, events):
        self.events = events
        self.target = next((e["value"] for e in events if e["f"] == "target"), {})
        self.extended = self.target.get("level") == "extended"
        self.capture = bool(self.target.get("capture"))
        self.drain_bound = float(self.target.get("drain_bound", 10.0))
        phases = {e["value"].get("name"): e for e in events if e["f"] == "phase"}
        self.heal = phases.get("heal")
        self.end = phases.get("end")
        self.ops = completions(events)
        self.key_of_id, self.ack = {}, {}        # id -> key; key -> (invoke, ok)
        self.job_invoke = {}                     # key -> invoke event
        for invoke, result in self.ops:
            if invoke["f"] != "job":
                continue
            key = invoke["value"]["key"]
            self.job_invoke[key] = invoke
            if result is not None and result["type"] == "ok":
                self.ack[key] = (invoke, result)
        self.id_of_key = {key: ok["value"]["id"] for key, (_, ok) in self.ack.items()}
        for key, job_id in self.id_of_key.items():
            self.key_of_id.setdefault(job_id, key)
        self.status = [(i, r) for i, r in self.ops if i["f"] == "status"
                       and r is not None and r["type"] == "ok"]
        self.fetches = [(i, r) for i, r in self.ops if i["f"] == "fetch"
                        and r is not None and r["type"] == "ok" and r["value"].get("id") is not None]
        self.dones = [(i, r) for i, r in self.ops if i["f"] == "done"]
        self.disconnects = [e for e in events if e["f"] == "disconnect"]
        faults = [e for e in events if e["f"] == "fault"]
        self.faults = faults
        # Faults after which a worker may have lost jobs nobody saw it hold:
        # killed workers, a restarted broker, a suite worker gone with a FETCH
        # whose answer it never read.
        self.loss_times = sorted(
            [e["time"] for e in faults if e["value"].get("fault") in LOSS_FAULTS
             and e["value"].get("phase") == "start"]
            + [e["time"] for e in self.disconnects if e["value"].get("unknown")])
        self.restarts = sorted(e["time"] for e in faults
                               if e["value"].get("fault") == "restart-broker"
                               and e["value"].get("phase") == "start")
        self.words = [e for e in events if e["f"] == "word"]
        self.done_wire = [e for e in events if e["f"] == "done-wire"]
        # First evidence that a job has been handed out: (time, event).
        self.handed = {}
        for invoke, result in self.status:
            if result["value"].get("state") in ("running", "completed"):
                self._handed(invoke["value"]["id"], result["time"], result)
        for invoke, result in self.fetches:
            self._handed(result["value"]["id"], result["time"], result)
        for word in self.words:
            parsed = parse_word(word)
            if parsed and parsed[0] in self.id_of_key:
                self._handed(self.id_of_key[parsed[0]], word["time"], word)

    def _handed(self, job_id, at, event):
        if job_id not in self.handed or at < self.handed[job_id][0]:
            self.handed[job_id] = (at, event)

    def loss_between(self, start, end):
        """A fault that may have made a target worker lose the jobs it held."""
        return any(start <= t <= end for t in self.loss_times)

    def completed_at(self):
        """id -> time of the first evidence that the job is completed."""
        first = {}
        for invoke, result in self.status:
            if result["value"].get("state") == "completed":
                job_id = invoke["value"]["id"]
                first[job_id] = min(first.get(job_id, result["time"]), result["time"])
        for invoke, result in self.dones:
            if result is not None and result["type"] == "ok":
                job_id = invoke["value"]["id"]
                first[job_id] = min(first.get(job_id, result["time"]), result["time"])
        return first


def parse_word(event):
    """(key, index, count) of a word datagram, or None when it is not one word."""
    payload = event["value"].get("payload", "")
    if not payload.endswith("\n"):
        return None
    match = WORD.match(payload[:-1])
    return (match.group(1), int(match.group(2)), int(match.group(3))) if match else None


def _result(name, anomalies, stats=None, valid=None, note=""):
    count = defaultdict(int)
    for anomaly in anomalies:
        count[anomaly["name"]] += 1
    shown, seen = [], defaultdict(int)
    for anomaly in anomalies:
        seen[anomaly["name"]] += 1
        if seen[anomaly["name"]] <= MAX_SHOWN:
            shown.append(anomaly)
    return {"checker": name, "valid": (not anomalies) if valid is None else valid,
            "anomalies": shown, "count": dict(count), "stats": stats or {}, "note": note}


def _anomaly(name, text, *events, at=None):
    """An anomaly proved by ``events``; ``at``: when it happened (seconds), for
    the timeline (default: its last event)."""
    unique = {e["index"]: e for e in events if e is not None}
    proof = [unique[i] for i in sorted(unique)]
    if at is None:
        at = max((e["time"] for e in proof), default=0.0)
    return {"name": name, "text": text, "at": at, "events": proof}


def _job(facts, job_id):
    key = facts.key_of_id.get(job_id)
    return f"job {job_id}" + (f" ({key})" if key else "")


# -- the checkers -----------------------------------------------------------------


def total_queue(facts):
    """Jepsen's total-queue: what goes in comes out. Lost jobs and unexpected
    words fail; jobs run more than once are counted."""
    anomalies = []
    completed = facts.completed_at()
    last_status = {}
    for invoke, result in facts.status:
        last_status[invoke["value"]["id"]] = (invoke, result)
    holdings = defaultdict(list)
    for holding in _holdings(facts):
        holdings[holding[0]].append(holding)
    for key, (invoke, ok) in sorted(facts.ack.items(), key=lambda kv: kv[1][1]["value"]["id"]):
        job_id = ok["value"]["id"]
        if job_id in completed:
            continue
        last = last_status.get(job_id, (None, None))
        state = last[1]["value"]["state"] if last[1] else "never polled"
        held, why = _last_holder(facts, job_id, holdings.get(job_id, []))
        anomalies.append(_anomaly(
            "lost", f"{_job(facts, job_id)} acknowledged at {ok['time']:.3f} s, never completed"
            f" (last STATUS: {state}{' at %.3f s' % last[1]['time'] if last[1] else ''})" + why,
            invoke, ok, *held, *last, facts.heal,
            at=max([e["time"] for e in held if e is not None], default=ok["time"])))
    for word in facts.words:
        match = KEY.search(word["value"].get("payload", ""))
        if match and match.group(0) not in facts.job_invoke:
            anomalies.append(_anomaly(
                "unexpected", f"datagram {word['value']['payload']!r} from {word['process']}: "
                f"no job {match.group(0)} was submitted", word))
    runs = _complete_runs(facts)
    suite_done = defaultdict(int)
    for invoke, result in facts.dones:
        if result is not None and result["type"] == "ok" and not invoke["value"].get("repeat"):
            suite_done[invoke["value"]["id"]] += 1
    executions = defaultdict(int)
    for key, count in runs.items():
        executions[key] += count
    for job_id, count in suite_done.items():
        executions[facts.key_of_id.get(job_id, job_id)] += count
    stats = {"acknowledged": len(facts.ack), "completed": len(completed),
             "attempted": len(facts.job_invoke),
             "duplicated": sum(1 for count in executions.values() if count > 1),
             "extra_executions": sum(count - 1 for count in executions.values() if count > 1)}
    return _result("total-queue", anomalies, stats)


def _last_holder(facts, job_id, holdings):
    """The events showing who held a job last and how that holder went away:
    (events, text for the anomaly)."""
    if not holdings:
        return [], ""
    _, holder, start, end, first, last = max(holdings, key=lambda h: h[2])
    gone = next((e for e in facts.events if e["time"] >= start and (
        (e["f"] == "worker" and e["value"].get("event") == "killed"
         and e["value"].get("name") == holder)
        or (e["f"] == "disconnect" and e["process"] == holder
            and job_id in e["value"].get("held", [])))), None)
    how = ""
    if gone is not None:
        how = (f", {holder} killed at {gone['time']:.3f} s" if gone["f"] == "worker"
               else f", {holder} disconnected at {gone['time']:.3f} s")
    return [first, last, gone], f"; last held by {holder}{how}"


def unique_ids(facts):
    """No id acknowledged for two different JOBs."""
    by_id = defaultdict(list)
    for key, (invoke, ok) in facts.ack.items():
        by_id[ok["value"]["id"]].append((invoke, ok))
    anomalies = []
    for job_id, pairs in sorted(by_id.items()):
        if len(pairs) > 1:
            keys = ", ".join(invoke["value"]["key"] for invoke, _ in pairs)
            anomalies.append(_anomaly("duplicate-id", f"id {job_id} issued {len(pairs)} times "
                                      f"(jobs {keys})", *[e for pair in pairs for e in pair]))
    return _result("unique-ids", anomalies, {"ids": len(by_id)})


def _holdings(facts):
    """(job id, holder, start, end, first event, last event) of every known holding:
    a suite worker from its FETCH to its DONE or disconnect, a target worker
    from its first to its last datagram of one run of the job's words."""
    holdings = []
    released = {}   # (process, id) -> [times]
    for invoke, result in facts.dones:
        if result is not None:
            released.setdefault((invoke["process"], invoke["value"]["id"]), []).append(result)
    for event in facts.disconnects:
        for job_id in event["value"].get("held", []):
            released.setdefault((event["process"], job_id), []).append(event)
    end = facts.end["time"] if facts.end else float("inf")
    for invoke, result in facts.fetches:
        job_id = result["value"]["id"]
        later = [e for e in released.get((invoke["process"], job_id), [])
                 if e["time"] >= result["time"]]
        last = min(later, key=lambda e: e["time"]) if later else None
        holdings.append((job_id, invoke["process"], result["time"],
                         last["time"] if last else end, result, last))
    for key, sender, run in _runs(facts):
        job_id = facts.id_of_key.get(key)
        if job_id is not None:
            holdings.append((job_id, sender, run[0]["time"], run[-1]["time"], run[0], run[-1]))
    return holdings


def exclusive_holding(facts):
    """No job held by two live workers at once (a lost holder excepted: a
    killed worker or one cut off by a broker restart is not live)."""
    by_job = defaultdict(list)
    for holding in _holdings(facts):
        by_job[holding[0]].append(holding)
    anomalies = []
    for job_id, holdings in sorted(by_job.items()):
        holdings.sort(key=lambda h: h[2])
        for i, a in enumerate(holdings):
            for b in holdings[i + 1:]:
                if a[1] == b[1] or b[2] >= a[3]:
                    continue
                if any(a[2] <= t <= b[3] for t in facts.restarts):
                    continue   # the broker restarted: the first holder's connection was cut
                anomalies.append(_anomaly(
                    "double-held", f"{_job(facts, job_id)} held by {a[1]} "
                    f"({a[2]:.3f}-{a[3]:.3f} s) and by {b[1]} ({b[2]:.3f}-{b[3]:.3f} s) at once",
                    a[4], a[5], b[4], b[5], at=b[2]))
                break
    return _result("exclusive-holding", anomalies)


def ownership(facts):
    """DONE is accepted only from the worker holding the job (extended level)."""
    anomalies = []
    holders = defaultdict(dict)     # id -> {suite worker: its FETCH ok}
    by_index = {event["index"]: event for event in facts.events}
    for event in sorted(facts.events, key=lambda e: e["time"]):
        if event["f"] == "fetch" and event["type"] == "ok" and event["value"].get("id") is not None:
            holders[event["value"]["id"]][event["process"]] = event
        elif event["f"] == "disconnect":
            for job_id in event["value"].get("held", []):
                holders[job_id].pop(event["process"], None)
        elif event["f"] == "done" and event["type"] == "ok":
            invoke = by_index[event["op"]]
            job_id = invoke["value"]["id"]
            if holders[job_id].pop(event["process"], None) is not None:
                continue
            anomalies.append(_anomaly(
                "done-by-non-holder", f"DONE {job_id} from {event['process']} answered "
                f"{event['value'].get('reply', 'OK')!r}, but it did not hold {_job(facts, job_id)}"
                + (" (it had completed it already)" if invoke["value"].get("repeat") else ""),
                invoke, event))
    if not facts.extended:
        return _result("ownership", [], valid=True,
                       note=f"core target: {len(anomalies)} DONE from non-holders accepted, "
                            "which the core level allows")
    return _result("ownership", anomalies)


def status_order(facts):
    """STATUS never goes backwards, never says unknown for an acknowledged id,
    and agrees with a DONE acknowledged before it began."""
    anomalies = []
    by_job = defaultdict(list)
    for invoke, result in facts.status:
        by_job[invoke["value"]["id"]].append((invoke, result))
    for job_id, polls in sorted(by_job.items()):
        key = facts.key_of_id.get(job_id)
        ack = facts.ack.get(key, (None, None))[1] if key else None
        best = None   # the completed poll with the earliest ok
        for invoke, result in sorted(polls, key=lambda p: p[0]["time"]):
            state = result["value"].get("state")
            if state not in RANK and state != "unknown":
                continue          # not a state at all: the replies checker says so
            if state == "unknown" and ack is not None and ack["time"] < invoke["time"]:
                anomalies.append(_anomaly(
                    "status-backwards", f"STATUS {job_id} answered unknown at {result['time']:.3f}"
                    f" s; ID {job_id} had been acknowledged at {ack['time']:.3f} s",
                    ack, invoke, result))
                break
            if best is not None and best[1]["time"] < invoke["time"] and state != "completed":
                anomalies.append(_anomaly(
                    "status-backwards", f"STATUS {job_id}: completed at {best[1]['time']:.3f} s, "
                    f"then {state} at {result['time']:.3f} s", *best, invoke, result))
                break
            if state == "completed" and best is None:
                best = (invoke, result)
    acked_done = {}
    for invoke, result in facts.dones:
        if result is not None and result["type"] == "ok":
            job_id = invoke["value"]["id"]
            if job_id not in acked_done or result["time"] < acked_done[job_id][1]["time"]:
                acked_done[job_id] = (invoke, result)
    for job_id, (done_invoke, done_ok) in sorted(acked_done.items()):
        for invoke, result in by_job.get(job_id, []):
            if result["value"].get("state") not in RANK:
                continue          # unknown or not a state: the checks above and replies
            if invoke["time"] > done_ok["time"] and result["value"].get("state") != "completed":
                if facts.extended and done_invoke["value"].get("repeat"):
                    continue
                anomalies.append(_anomaly(
                    "status-stale", f"DONE {job_id} acknowledged at {done_ok['time']:.3f} s, "
                    f"then STATUS {job_id} answered {result['value'].get('state')}",
                    done_invoke, done_ok, invoke, result))
                break
    return _result("status-order", anomalies, {"polls": len(facts.status)})


def once_completed(facts):
    """A job whose completion was acknowledged is never handed out again.

    At-least-once delivery runs a job again only while its completion is not
    acknowledged (its holder died before the OK to its DONE). Proof: the first
    evidence of completion (the OK to a suite worker's DONE, or a STATUS
    ``completed``), then a suite worker's FETCH, sent after it, answered with that
    job. A broker restart in between is excepted: without a store it forgets,
    and its ids start again at 1."""
    anomalies = []
    done = {}                                   # id -> [(invoke, result) proving it]
    for invoke, result in facts.dones:
        if result is not None and result["type"] == "ok":
            done.setdefault(invoke["value"]["id"], []).append((invoke, result))
    for invoke, result in facts.status:
        if result["value"].get("state") == "completed":
            done.setdefault(invoke["value"]["id"], []).append((invoke, result))
    first = {job_id: min(pairs, key=lambda p: p[1]["time"]) for job_id, pairs in done.items()}
    blamed = set()
    for invoke, result in sorted(facts.fetches, key=lambda p: p[0]["time"]):
        job_id = result["value"]["id"]
        proof = first.get(job_id)
        if proof is None or job_id in blamed or invoke["time"] <= proof[1]["time"]:
            continue
        if any(proof[1]["time"] <= t <= result["time"] for t in facts.restarts):
            continue
        how = ("STATUS completed" if proof[0]["f"] == "status"
               else f"OK to DONE {job_id} from {proof[0]['process']}")
        anomalies.append(_anomaly(
            "handed-after-done", f"{_job(facts, job_id)} handed out again to "
            f"{invoke['process']} at {result['time']:.3f} s (FETCH sent at "
            f"{invoke['time']:.3f} s), after its completion was acknowledged at "
            f"{proof[1]['time']:.3f} s ({how})", *proof, invoke, result))
        blamed.add(job_id)
    return _result("once-completed", anomalies)


def fifo(facts):
    """Jobs are handed out oldest first; a requeued job goes first in line.

    Proof of a violation: a job x seen waiting after a younger job b had been
    handed out, x having waited continuously since it was created (no fault
    that loses holders, no suite worker holding x, in between); or a job x
    requeued by a suite worker's disconnect, seen waiting before and after a
    FETCH that handed out a fresh job."""
    anomalies = []
    suite_handouts = defaultdict(list)     # id -> fetch ok events
    for invoke, result in facts.fetches:
        suite_handouts[result["value"]["id"]].append((invoke, result))
    blamed = set()
    handed = sorted(facts.handed.items(), key=lambda kv: kv[1][0])   # (id, (time, event))
    waiting_polls = defaultdict(list)     # id -> STATUS waiting (invoke, ok)
    for invoke, result in facts.status:
        if result["value"].get("state") == "waiting":
            waiting_polls[invoke["value"]["id"]].append((invoke, result))
    for invoke, result in facts.status:
        x = invoke["value"]["id"]
        if result["value"].get("state") != "waiting" or x in blamed:
            continue
        key = facts.key_of_id.get(x)
        if key is None:
            continue
        created = facts.ack[key][0]["time"]
        if facts.loss_between(created, result["time"]):
            continue
        if any(r["time"] <= result["time"] for _, r in suite_handouts.get(x, [])):
            continue
        if x in facts.handed and facts.handed[x][0] <= result["time"]:
            # x was seen held (its words, STATUS running) before this poll: it was
            # requeued, not waiting since it was created. A kill's "start" event
            # can precede x's creation while the kill lands after x was handed out.
            continue
        for b, (at, evidence) in handed:
            if at >= invoke["time"]:
                break
            if b > x:
                anomalies.append(_anomaly(
                    "fifo-violation", f"{_job(facts, b)} was handed out (seen at {at:.3f} s) "
                    f"while the older {_job(facts, x)} waited (STATUS {x} waiting at "
                    f"{result['time']:.3f} s)", facts.ack[key][1], evidence, invoke, result))
                blamed.add(x)
                break
    # Requeued by a suite worker that disconnected: first in line from then on.
    for event in facts.disconnects:
        for x in event["value"].get("held", []):
            if x in blamed:
                continue
            polls = sorted((p for p in facts.status if p[0]["value"]["id"] == x
                            and p[0]["time"] > event["time"]), key=lambda p: p[0]["time"])
            waiting = [p for p in polls if p[1]["value"].get("state") == "waiting"]
            for (i1, r1), (i2, r2) in zip(waiting, waiting[1:]):
                if facts.loss_between(r1["time"], r2["time"]) or any(
                        r1["time"] <= r["time"] <= r2["time"] for _, r in suite_handouts.get(x, [])):
                    continue
                proof = _fresh_handout(facts, r1["time"], i2["time"], waiting_polls)
                if proof:
                    b, evidence = proof
                    anomalies.append(_anomaly(
                        "fifo-violation", f"{_job(facts, x)}, requeued when {event['process']} "
                        f"disconnected at {event['time']:.3f} s, waited while the fresh "
                        f"{_job(facts, b)} was handed out before it",
                        event, i1, r1, *evidence, i2, r2))
                    blamed.add(x)
                    break
    return _result("fifo", anomalies, {"handed_out_seen": len(facts.handed)})


def _fresh_handout(facts, start, end, waiting_polls):
    """(id, events) of a job handed out for the first time within (start, end):
    a suite worker's FETCH that began after ``start``, or a job seen waiting
    (STATUS begun after ``start``) and then handed out (seen before ``end``)."""
    for invoke, result in facts.fetches:
        job_id = result["value"]["id"]
        if start < invoke["time"] and result["time"] < end \
                and not _maybe_requeued(facts, job_id, invoke["time"]):
            return job_id, (invoke, result)
    for job_id, (at, evidence) in facts.handed.items():
        if not start < at < end or _maybe_requeued(facts, job_id, at):
            continue
        for invoke, result in waiting_polls.get(job_id, ()):
            if invoke["time"] > start and result["time"] < at:
                return job_id, (invoke, result, evidence)
    return None


def _maybe_requeued(facts, job_id, before):
    """True unless job ``job_id`` surely waited from its creation until ``before``:
    a fault that loses holders in between, a suite worker that held it, or any
    sight of it held (words, STATUS running) before ``before`` (a kill logged at
    its start may land after the job was handed out)."""
    key = facts.key_of_id.get(job_id)
    if key is None:
        return True
    if facts.loss_between(facts.ack[key][0]["time"], before):
        return True
    if job_id in facts.handed and facts.handed[job_id][0] < before:
        return True
    return any(job_id in e["value"].get("held", []) and e["time"] < before
               for e in facts.disconnects)


def _runs(facts):
    """(key, sender, [word events]) for every run: a worker's datagrams of one
    job, from its first word on, split where the worker starts over (index 0)."""
    per = defaultdict(list)
    for word in facts.words:
        parsed = parse_word(word)
        if parsed:
            per[(parsed[0], word["process"])].append((parsed, word))
    runs = []
    for (key, sender), items in per.items():
        current = []
        for parsed, word in items:
            if parsed[1] == 0 and current:
                runs.append((key, sender, [w for _, w in current]))
                current = []
            current.append((parsed, word))
        if current:
            runs.append((key, sender, [w for _, w in current]))
    return runs


def _complete_runs(facts):
    counts = defaultdict(int)
    for key, sender, run in _runs(facts):
        indices = [parse_word(w)[1] for w in run]
        total = parse_word(run[0])[2]
        if indices == list(range(total)):
            counts[key] += 1
    return counts


def words(facts):
    """Every completed job's words arrived from one worker, whole, in order,
    none torn, none after that worker's DONE of the job."""
    anomalies = []
    for word in facts.words:
        if parse_word(word) is None:
            anomalies.append(_anomaly("words-torn", f"datagram {word['value'].get('payload')!r} "
                                      f"from {word['process']} is not one word and LF", word))
    runs = _runs(facts)
    for key, sender, run in runs:
        indices = [parse_word(w)[1] for w in run]
        for a, b, wa, wb in zip(indices, indices[1:], run, run[1:]):
            if b <= a:
                anomalies.append(_anomaly(
                    "words-out-of-order", f"{sender} sent word {b} of {key} after word {a}", wa, wb))
                break
    complete = _complete_runs(facts)
    by_suite = {invoke["value"]["id"] for invoke, result in facts.dones
                if result is not None and result["type"] != "fail"}
    completed = facts.completed_at()
    for key, (invoke, ok) in sorted(facts.ack.items()):
        job_id = ok["value"]["id"]
        if job_id in completed and job_id not in by_suite and not complete.get(key):
            partial = [r for k, _, r in runs if k == key]
            longest = max(partial, key=len) if partial else []
            total = int(invoke["value"].get("words", 0))
            got = sorted({parse_word(w)[1] for w in longest})
            missing = [i for i in range(total) if i not in got]
            anomalies.append(_anomaly(
                "words-missing", f"{_job(facts, job_id)} completed, but no worker sent all its "
                f"{total} words (best: {len(longest)} from "
                f"{longest[0]['process'] if longest else 'nobody'}; missing {missing[:8]})",
                invoke, ok, *longest[-3:]))
    note = ""
    if facts.capture:
        order = {e["index"]: n for n, e in enumerate(facts.events)}
        for done in facts.done_wire:
            key = facts.key_of_id.get(done["value"].get("id"))
            if key is None:
                continue
            for k, sender, run in runs:
                if k != key or sender != done["process"]:
                    continue
                before = [w for w in run if order[w["index"]] < order[done["index"]]]
                after = [w for w in run if order[w["index"]] > order[done["index"]]]
                if before and after:
                    anomalies.append(_anomaly(
                        "words-after-done", f"{sender} sent DONE {done['value']['id']} and then "
                        f"{len(after)} more word(s) of it", before[-1], done, *after[:2]))
    else:
        note = "no capture: DONE on the wire unseen, words-after-done unchecked"
    return _result("words", anomalies, {"runs": len(runs), "datagrams": len(facts.words)},
                   note=note)


def replies(facts):
    """Every well-formed request gets a reply the protocol allows: JOB an ``ID``
    (the workload's jobs are short and few), STATUS one of the four states,
    FETCH ``JOB`` or ``NOJOB``."""
    anomalies = []
    for invoke, result in facts.ops:
        if result is None or result["type"] == "info":
            continue
        value, wrong = result["value"], None
        if invoke["f"] == "job" and result["type"] == "fail":
            wrong = value.get("reply")
        elif invoke["f"] == "status" and value.get("state") not in (*RANK, "unknown"):
            wrong = value.get("state")
        elif invoke["f"] == "fetch" and value.get("id") is None and value.get("reply") != "NOJOB":
            wrong = value.get("reply")
        if wrong is not None:
            anomalies.append(_anomaly(
                "bad-reply", f"{invoke['f'].upper()} from {invoke['process']} answered "
                f"{wrong!r}", invoke, result))
    return _result("replies", anomalies)


def liveness(facts):
    """Every request is answered while the broker runs: an operation that timed
    out with no broker fault (pause, restart) overlapping it is an anomaly, and
    so is a target process that exits without being killed. (Clients and the
    suite's workers talk to the broker directly: worker faults and the
    network faults between the target workers and the broker do not stop
    them.)"""
    windows = []
    opened = {}
    for event in facts.faults:
        value = event["value"]
        if value.get("fault") not in BROKER_FAULTS:
            continue
        key = (value.get("fault"), tuple(value.get("targets", ())))
        if value.get("phase") == "start":
            opened[key] = event["time"]
        elif value.get("phase") == "end" and key in opened:
            windows.append((opened.pop(key), event["time"]))
    windows += [(start, float("inf")) for start in opened.values()]
    anomalies = []
    for invoke, result in facts.ops:
        if result is None or result["type"] != "info" or \
                "timed out" not in str(result["value"].get("error", "")):
            continue
        if any(start <= result["time"] and invoke["time"] <= end for start, end in windows):
            continue
        anomalies.append(_anomaly(
            "unanswered", f"{invoke['f'].upper()} from {invoke['process']} not answered within "
            f"{result['time'] - invoke['time']:.1f} s, the broker neither paused nor "
            "restarting", invoke, result))
    for event in facts.events:
        if event["f"] == "exit":
            value = event["value"]
            anomalies.append(_anomaly(
                "crashed", f"{value.get('name')} (pid {value.get('pid')}) exited with code "
                f"{value.get('code')} without being killed", event))
    return _result("liveness", anomalies)


def drain(facts):
    """Once the faults stop, every acknowledged job completes within the bound."""
    if facts.heal is None:
        return _result("drain", [], valid="unknown", note="the history has no heal phase")
    heal = facts.heal["time"]
    bound = facts.drain_bound
    completed = facts.completed_at()
    late, never = [], []
    for key, (invoke, ok) in facts.ack.items():
        job_id = ok["value"]["id"]
        at = completed.get(job_id)
        if at is None:
            never.append(job_id)
        elif at > heal + bound:
            late.append((at, job_id))
    last = max(completed.values(), default=heal)
    stats = {"heal": heal, "bound": bound, "last_completion": last,
             "drained_after": max(0.0, last - heal)}
    anomalies = []
    if late or never:
        job_id = (sorted(late)[-1][1] if late else sorted(never)[0])
        key = facts.key_of_id.get(job_id)
        anomalies.append(_anomaly(
            "not-drained", f"{len(late) + len(never)} job(s) unfinished {bound:g} s after the "
            f"faults stopped at {heal:.3f} s ({len(late)} completed later, {len(never)} never)",
            facts.heal, *(facts.ack[key] if key else ()), at=heal + bound))
    return _result("drain", anomalies, stats)


CHECKERS = {"total-queue": total_queue, "unique-ids": unique_ids,
            "exclusive-holding": exclusive_holding, "ownership": ownership,
            "status-order": status_order, "once-completed": once_completed, "fifo": fifo,
            "words": words, "replies": replies, "liveness": liveness, "drain": drain}

ANOMALIES = ("lost", "unexpected", "duplicate-id", "double-held", "done-by-non-holder",
             "status-backwards", "status-stale", "handed-after-done", "fifo-violation",
             "words-missing", "words-out-of-order", "words-torn", "words-after-done", "bad-reply",
             "unanswered", "crashed", "not-drained")


def check(events):
    """Run every checker on a history; returns {"valid": bool, "anomalies":
    {name: count}, "results": [checker results]}."""
    facts = Facts(events)
    results = [checker(facts) for checker in CHECKERS.values()]
    counts = defaultdict(int)
    for result in results:
        for name, n in result["count"].items():
            if result["valid"] is not True:
                counts[name] += n
    return {"valid": all(r["valid"] is not False for r in results),
            "anomalies": dict(counts), "results": results}
