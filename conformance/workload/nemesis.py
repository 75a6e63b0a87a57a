"""The nemesis: faults injected on a seeded schedule, each recorded in the history.

Fault kinds (``--nemesis`` takes a comma list of these, or ``all``/``none``):

==================  ===========================================================
kill-worker         kill -9 one target worker (its process group); a new one
                    starts when the fault ends
kill-workers        kill -9 two target workers at once; new ones at the end
pause-worker        SIGSTOP one target worker, SIGCONT at the end
pause-broker        SIGSTOP the broker, SIGCONT at the end
restart-broker      kill -9 the broker and start it again on the same ports
                    (only a durable broker: ours with ``--store sqlite:``, or a
                    third-party one declared with ``--durable``)
partition           the suite's proxy between the target workers and the broker
                    stops forwarding in both directions (the TCP connections
                    stay open, as across a real partition)
delay               the proxy holds every chunk 100 ms before forwarding it
loss                the workers' packets to and from the proxy (both ways) go
                    through a 16 kbit/s link with a one-packet queue: a packet
                    that finds the queue full is dropped by the kernel, and TCP
                    retransmits (only inside the private namespace, whose lo
                    is the suite's own)
==================  ===========================================================

Random loss (``netem``) is not used: the kernel here has neither ``netem``
nor a tc action module (measured: ``tc qdisc add dev lo root netem`` and
``tc filter ... action gact drop`` both fail with "unknown"), and iptables
is absent. What it has, ``htb`` classes, a ``pfifo`` queue and the ``u32``
classifier, makes the slow, dropping link of ``loss``. Partition and delay
are built in user space, in the proxy.

Faults run one at a time, each in a slot of its own (see ``schedule``), from
``start`` until ``end``; after ``end`` (the heal) no fault is active, so the
checkers can ask whether the system recovered.
"""

import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import deque

__all__ = ["KINDS", "WORKER_KINDS", "parse_nemesis", "schedule", "Nemesis", "WorkerProxy",
           "NemesisError"]

KINDS = ("kill-worker", "kill-workers", "pause-worker", "pause-broker", "restart-broker",
         "partition", "delay", "loss")
WORKER_KINDS = ("kill-worker", "kill-workers", "pause-worker")
NETWORK_KINDS = ("partition", "delay", "loss")
LOSES_JOBS = ("kill-worker", "kill-workers", "restart-broker")  # need requeue / durability
DELAY_SECONDS = 0.1


class NemesisError(ValueError):
    """A --nemesis value that cannot be understood."""


def parse_nemesis(text):
    """``kill-worker,pause-broker`` -> a list of kinds; ``all``: every kind;
    ``none`` or empty: no faults. Raises NemesisError naming a bad kind."""
    names = [name.strip() for name in (text or "").split(",") if name.strip()]
    if names in ([], ["none"]):
        return []
    if names == ["all"]:
        return list(KINDS)
    bad = [name for name in names if name not in KINDS]
    if bad:
        raise NemesisError(f"--nemesis: unknown fault {bad[0]!r}; choose from "
                           f"{', '.join(KINDS)}, all or none")
    return list(dict.fromkeys(names))


def schedule(rng, kinds, start, end):
    """[(start, duration, kind)] of faults, one at a time, in rounds that hold
    every kind once (order shuffled by ``rng``). Each fault has a slot of
    ``(end - start) / len(kinds)`` s at most 2.2 s, a third to a half of it
    the fault, the rest calm; so every kind runs at least once."""
    if not kinds:
        return []
    slot = min(2.2, (end - start) / len(kinds))
    plan, now, order = [], start, []
    while now + slot <= end + 1e-9:
        if not order:
            order = list(kinds)
            rng.shuffle(order)
        duration = rng.uniform(0.35, 0.5) * slot
        plan.append((round(now, 3), round(duration, 3), order.pop()))
        now += slot
    return plan


class WorkerProxy:
    """TCP proxy between the target workers and the broker's worker port, for
    the network faults. One thread, one selector; modes ``normal``,
    ``partition`` (nothing read, nothing forwarded) and ``delay`` (each chunk
    forwarded ``DELAY_SECONDS`` after it was read)."""

    def __init__(self, broker_port, host="127.0.0.1"):
        self.broker = (host, broker_port)
        self.listener = socket.create_server((host, 0))
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.mode = "normal"
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        self.pending = {}   # socket -> deque of (due, bytes) to write to it
        self.peer = {}
        self.running = True
        self.thread = threading.Thread(target=self._loop, name="proxy", daemon=True)
        self.thread.start()

    def set_mode(self, mode):
        """``normal``, ``partition`` or ``delay``; takes effect at once."""
        self.mode = mode

    def close(self):
        """Stop the thread and close every connection and the listener."""
        self.running = False
        self.thread.join(2)
        for sock in list(self.peer):
            sock.close()
        self.listener.close()

    def _accept(self):
        try:
            worker, _ = self.listener.accept()
        except BlockingIOError:
            return
        try:
            broker = socket.create_connection(self.broker, timeout=1.0)
        except OSError:
            worker.close()
            return
        for sock in (worker, broker):
            sock.setblocking(False)
            self.pending[sock] = deque()
            self.selector.register(sock, selectors.EVENT_READ, None)
        self.peer[worker], self.peer[broker] = broker, worker

    def _drop(self, sock):
        for s in (sock, self.peer.get(sock)):
            if s is None or s not in self.peer:
                continue
            self.selector.unregister(s)
            del self.peer[s]
            del self.pending[s]
            s.close()

    def _loop(self):
        while self.running:
            now = time.monotonic()
            due = [q[0][0] for q in self.pending.values() if q]
            timeout = 0.05 if not due else max(0.0, min(min(due) - now, 0.05))
            for key, _ in self.selector.select(timeout):
                sock = key.fileobj
                if sock is self.listener:
                    self._accept()
                    continue
                if self.mode == "partition" or sock not in self.peer:
                    continue
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self._flush(sock, force=True)
                    self._drop(sock)
                    continue
                delay = DELAY_SECONDS if self.mode == "delay" else 0.0
                self.pending[self.peer[sock]].append((time.monotonic() + delay, data))
            if self.mode == "partition":
                time.sleep(0.01)   # the listener aside, nothing moves
                continue
            for sock in list(self.pending):
                if sock in self.pending:
                    self._flush(sock)

    def _flush(self, sock, force=False):
        queue = self.pending.get(self.peer.get(sock)) if force else self.pending.get(sock)
        target = self.peer.get(sock) if force else sock
        now = time.monotonic()
        while queue and (force or queue[0][0] <= now):
            _, data = queue.popleft()
            try:
                target.setblocking(True)
                target.settimeout(1.0)
                target.sendall(data)
                target.setblocking(False)
            except OSError:
                self._drop(target)
                return


class LossyLink:
    """tc on lo: an htb root whose default class is fast, and a slow class
    (16 kbit/s, one-packet pfifo) that TCP traffic of one port is steered
    into while the fault lasts. Only for a private network namespace.

    ``LossyLink.create(port)`` returns None (and the reason in ``why``) when
    tc is missing or refuses; ``start()``/``stop()`` add and remove the
    filters; ``close()`` removes the root qdisc."""

    why = ""

    def __init__(self, tc, port):
        self.tc = tc
        self.port = port

    @classmethod
    def create(cls, port):
        tc = shutil.which("tc") or ("/usr/sbin/tc" if os.access("/usr/sbin/tc", os.X_OK) else None)
        if tc is None:
            cls.why = "tc (iproute2) is not installed"
            return None
        link = cls(tc, port)
        for args in (["qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "1",
                      "r2q", "1000"],
                     ["class", "add", "dev", "lo", "parent", "1:", "classid", "1:1", "htb",
                      "rate", "10gbit"],
                     ["class", "add", "dev", "lo", "parent", "1:", "classid", "1:2", "htb",
                      "rate", "16kbit", "ceil", "16kbit"],
                     ["qdisc", "add", "dev", "lo", "parent", "1:2", "handle", "20:", "pfifo",
                      "limit", "1"]):
            error = link._tc(args)
            if error:
                link.close()
                cls.why = f"tc {' '.join(args[:4])}...: {error}"
                return None
        return link

    def _tc(self, args):
        proc = subprocess.run([self.tc, *args], stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, check=False)
        return "" if proc.returncode == 0 else (proc.stderr or proc.stdout).strip()

    def start(self):
        for direction in ("dport", "sport"):
            self._tc(["filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1",
                      "u32", "match", "ip", direction, str(self.port), "0xffff", "flowid", "1:2"])

    def stop(self):
        """Remove the filters; returns the packets the slow queue dropped so far."""
        self._tc(["filter", "del", "dev", "lo", "parent", "1:", "prio", "1"])
        proc = subprocess.run([self.tc, "-s", "qdisc", "show", "dev", "lo"], capture_output=True,
                              text=True, check=False)
        match = re.search(r"qdisc pfifo 20:.*?dropped (\d+)", proc.stdout, re.DOTALL)
        return int(match.group(1)) if match else None

    def close(self):
        self._tc(["qdisc", "del", "dev", "lo", "root"])


class Nemesis:
    """Runs a schedule against a run (workload.WorkloadRun): applies each
    fault, records ``fault`` events (phase ``start``/``end``) in the history,
    heals it. ``run()`` returns when the last fault has healed."""

    def __init__(self, run, plan):
        self.run = run
        self.plan = plan
        self.rng = run.rng_for("nemesis")

    def execute(self, stop):
        history = self.run.history
        for at, duration, kind in self.plan:
            if stop.wait(max(0.0, at - history.now())):
                return
            began = time.monotonic()   # recorded as the start: before anything was done
            targets = self._start(kind)
            if targets is None:
                history.add("info", "nemesis", "fault", {"fault": kind, "phase": "skipped",
                                                         "why": "no target for it now"})
                continue
            history.add("info", "nemesis", "fault",
                        {"fault": kind, "phase": "start", "targets": targets}, at=began)
            stop.wait(duration)
            value = {"fault": kind, "phase": "end", "targets": targets}
            value.update(self._end(kind, targets) or {})
            history.add("info", "nemesis", "fault", value)

    def _live_workers(self):
        return [name for name, worker in self.run.workers.items()
                if worker.returncode is None and name not in self.run.paused]

    def _start(self, kind):
        run = self.run
        if kind in ("kill-worker", "kill-workers", "pause-worker"):
            live = self._live_workers()
            count = 2 if kind == "kill-workers" else 1
            if len(live) < count:
                return None
            chosen = sorted(self.rng.sample(live, count))
            for name in chosen:
                if kind == "pause-worker":
                    run.paused.add(name)
                    run.workers[name].pause()
                else:
                    run.kill_worker(name)
            return chosen
        if kind == "pause-broker":
            run.broker.pause()
            return ["broker"]
        if kind == "restart-broker":
            run.kill_broker()
            return ["broker"]
        if kind == "loss":
            run.lossy.start()
            return ["workers' link"]
        if kind in NETWORK_KINDS:
            run.proxy.set_mode(kind)
            return ["proxy"]
        raise AssertionError(kind)

    def _end(self, kind, targets):
        run = self.run
        if kind == "pause-worker":
            for name in targets:
                run.workers[name].resume()
                run.paused.discard(name)
        elif kind in ("kill-worker", "kill-workers"):
            for _ in targets:
                run.start_worker()
        elif kind == "pause-broker":
            run.broker.resume()
        elif kind == "restart-broker":
            run.start_broker()
        elif kind == "loss":
            return {"dropped_so_far": run.lossy.stop()}
        else:
            run.proxy.set_mode("normal")


def kill_group(pid):
    """SIGKILL a process group (a target started in its own session)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
