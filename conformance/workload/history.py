"""The history of a workload run: every operation, fault and datagram.

One event is a dict, written as one JSON object a line (JSON Lines):

``index``    position in the history (0, 1, 2, ...)
``time``     seconds since the run began (``time.monotonic()``)
``type``     ``invoke`` (an operation starts), ``ok`` (it succeeded),
             ``fail`` (it certainly did not happen), ``info`` (outcome
             unknown, or an event that is not an operation)
``process``  who: ``client-1``, ``poller-2``, ``suite-worker-1``,
             ``worker-3`` (a target worker process, the sender of a datagram),
             ``nemesis``, ``workload``
``conn``     the TCP connection (a number, unique in the run), or null
``f``        what: ``job``, ``status``, ``fetch``, ``done``, ``disconnect``,
             ``fault``, ``word``, ``done-wire``, ``worker``, ``target``, ``phase``
``op``       for ``ok``/``fail``/``info`` completing an operation: the index
             of its ``invoke``
``value``    the operation's data (dict)

This is Jepsen's history model (invoke/ok/fail/info), with the connection
and the kernel timestamp of captured datagrams added.
"""

import json
import threading
import time

__all__ = ["History", "load_history", "completions"]


class History:
    """Thread-safe recorder; events are kept in memory and written at the end."""

    def __init__(self, start=None):
        self.start = time.monotonic() if start is None else start
        self.events = []
        self._lock = threading.Lock()

    def now(self):
        """Seconds since the run began."""
        return time.monotonic() - self.start

    def add(self, type_, process, f, value=None, conn=None, op=None, at=None):
        """Record one event; returns its index. ``at``: a monotonic time to use
        instead of now (a datagram's capture time)."""
        with self._lock:
            event = {"index": len(self.events),
                     "time": round((time.monotonic() if at is None else at) - self.start, 6),
                     "type": type_, "process": process, "conn": conn, "f": f,
                     "value": value if value is not None else {}}
            if op is not None:
                event["op"] = op
            self.events.append(event)
            return event["index"]

    def invoke(self, process, f, value=None, conn=None):
        return self.add("invoke", process, f, value, conn)

    def complete(self, op, type_, value=None):
        """Complete the operation whose invoke has index ``op``."""
        invoke = self.events[op]
        return self.add(type_, invoke["process"], invoke["f"], value, invoke["conn"], op)

    def write(self, path):
        with open(path, "w") as out:
            for event in sorted(self.events, key=lambda e: e["index"]):
                out.write(json.dumps(event, separators=(",", ":")) + "\n")


def load_history(path):
    """Events of a JSON Lines history file, in index order.

    Raises ValueError naming the line when a line is not a JSON object."""
    events = []
    with open(path) as source:
        for number, line in enumerate(source, 1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not JSON: {error}") from None
            if not isinstance(event, dict) or "type" not in event:
                raise ValueError(f"{path}:{number}: not a history event")
            events.append(event)
    return sorted(events, key=lambda e: e["index"])


def completions(events):
    """Pairs (invoke, completion or None) of every operation, in invoke order."""
    done = {event["op"]: event for event in events if "op" in event}
    return [(event, done.get(event["index"])) for event in events if event["type"] == "invoke"]
