"""One workload run against one target: start it, load it, break it, record it.

The load (all seeded by ``--seed``; the timing of threads is not):

- ``client-N``: closed-loop clients, one ``JOB`` at a time, and one pipelined
  client sending 2-6 ``JOB`` lines at once; every job's text is words
  ``KEY.I.N`` (job key, word index, word count), so that each datagram says
  which job and which word it is. A few jobs are long (10-12 words).
- ``poller-N``: ``STATUS`` of acknowledged jobs from other connections, the
  oldest unfinished ones first.
- ``suite-worker-N``: workers the suite plays on the worker port, misbehaving
  within the protocol: ``DONE`` a job twice, ``FETCH`` on two connections at
  once and, when the target is extended (it requeues), disconnect mid-job and
  ``FETCH`` then vanish. They send no words.
- ``worker-N``: the target's own worker processes (their datagrams captured,
  each traced to its sender).

Extended features are used only when the target has them: a probe on the
empty broker sends ``STATS`` (an extended broker answers ``STATS ...``) and
records the answer in the history's ``target`` event.

Phases: ``load`` (faults from 2 s until 75 % of ``--time``), ``heal`` (no
fault from here on), ``drain`` (``--time`` reached: no new jobs; the pollers
sweep every unfinished job until all completed or ``drain_bound`` s after the
heal), ``end``.
"""

import os
import random
import select
import shlex
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time

from ..capture import PACKET_OUTGOING, _open_capture_socket, _timestamp
from ..netns import inside_private_netns
from ..targets import Target, TargetError, free_tcp_port, ports_of_process_tree
from .history import History
from .nemesis import (LOSES_JOBS, NETWORK_KINDS, LossyLink, Nemesis, WorkerProxy, kill_group,
                      schedule)

__all__ = ["WorkloadOptions", "WorkloadRun", "RunError"]

HOST = "127.0.0.1"
OP_TIMEOUT = 5.0
WORKERS = 3
DRAIN_EXTRA = 10.0     # drain bound: seconds after the end of the load
RATE = 40.0            # jobs a second the clients offer, in total (default)


class RunError(Exception):
    """The run could not be carried out (target would not start, ...)."""


class WorkloadOptions:
    """What a run does; see cli.py for the command-line options."""

    def __init__(self, seconds=20.0, seed=None, nemesis=(), word_delay=0.01,
                 fetch_interval=0.05, durable=False, python=sys.executable, cwd=None,
                 multicast_group="239.0.0.1", capture=True, workers=WORKERS, rate=RATE):
        self.seconds = seconds
        self.seed = seed if seed is not None else random.randrange(1, 10**6)
        self.nemesis = list(nemesis)
        self.word_delay = word_delay
        self.fetch_interval = fetch_interval
        self.durable = durable
        self.python = python
        self.cwd = cwd
        self.multicast_group = multicast_group
        self.capture = capture
        self.workers = workers
        self.rate = rate      # jobs per second the clients offer, in total
        self.nemesis_explicit = False   # kinds named on the command line, not "all"
        self.ours_broker = False        # the broker is ours: durable with --store sqlite:


def command(rng, word):
    """The command word, now and then in lower or mixed case (the protocol's
    command words are case-insensitive)."""
    roll = rng.random()
    if roll < 0.05:
        return word.lower()
    if roll < 0.1:
        return word.capitalize()
    return word


class LineConn:
    """A blocking TCP connection read line by line, with a per-call deadline."""

    counter = 0
    lock = threading.Lock()

    def __init__(self, port, timeout=OP_TIMEOUT):
        with LineConn.lock:
            LineConn.counter += 1
            self.id = LineConn.counter
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buffer = b""

    def send(self, text):
        """Send ``text`` and a LF (blocking; OSError when the connection is gone)."""
        self.sock.sendall(text.encode() + b"\n")

    def line(self):
        """The next line (str); raises OSError (timeout, reset) or EOFError."""
        while b"\n" not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("connection closed by the broker")
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class WorkloadRun:
    """Everything of one run: targets, threads, the history."""

    def __init__(self, target, options):
        self.target = target            # targetset.TargetSpec
        self.options = options
        self.history = History()
        self.rng = random.Random(options.seed)
        self.workers = {}               # name -> Target
        self.paused = set()
        self.worker_count = 0
        self.broker = None
        self.broker_command = None
        self.proxy = None
        self.lossy = None
        self.loss_note = ""
        self.store_dir = None
        self.acked = []                 # job ids acknowledged, in order
        self.completed = set()
        self.running = set()            # ids a poll last saw running: held by some worker
        self.state_lock = threading.Lock()
        self.stop_load = threading.Event()
        self.stop_all = threading.Event()
        self.stop_nemesis = threading.Event()
        self.sender = {}                # source port -> worker name
        self.key_counter = 0
        self.sweep = 0                  # the pollers' round robin while draining
        self.features = {}
        self.level = "core"
        self.capture_note = ""
        self.errors = []
        self.capture = self.receiver = None
        self.killed = set()             # processes the nemesis killed
        self.noted_exits = set()

    def rng_for(self, name):
        """A random generator of its own for one thread, derived from the seed."""
        return random.Random(f"{self.options.seed}:{name}")

    # -- targets ---------------------------------------------------------------

    def _fill(self, template, **values):
        values = dict(python=self.options.python, word_delay=self.options.word_delay,
                      fetch_interval=self.options.fetch_interval, **values)
        try:
            return template.format(**values)
        except (KeyError, IndexError, ValueError) as error:
            raise RunError(f"bad command template {template!r}: {error!r}") from None

    def start_broker(self):
        """Start (or restart) the broker on the run's ports and wait until it listens."""
        self.broker = Target("broker", self.broker_command, self.options.cwd)
        self.history.add("info", "workload", "broker",
                         {"event": "start", "pid": self.broker.pid, "command": self.broker_command})
        try:
            self.broker.wait_listening([self.client_port, self.worker_port])
        except TargetError as error:
            raise RunError(str(error)) from None

    def kill_broker(self):
        """kill -9 the broker's process group and wait for it (restart-broker)."""
        self.killed.add(self.broker)
        kill_group(self.broker.pid)
        self.broker.process.wait()
        self.history.add("info", "workload", "broker", {"event": "killed", "pid": self.broker.pid})

    def start_worker(self):
        """Start one more target worker (``worker-N``, N counting on); returns its name.
        It connects to the proxy when there is one, else to the broker."""
        self.worker_count += 1
        name = f"worker-{self.worker_count}"
        port = self.proxy.port if self.proxy else self.worker_port
        command = self._fill(self.target.worker_cmd, broker=f"{HOST}:{port}",
                             worker_port=port, client_port=self.client_port,
                             output_port=self.output_port, syslog_port=self.syslog_port)
        worker = Target(name, command, self.options.cwd)
        self.workers[name] = worker
        self.history.add("info", "workload", "worker",
                         {"event": "start", "name": name, "pid": worker.pid, "command": command})
        return name

    def kill_worker(self, name):
        """kill -9 a target worker's process group and wait for it."""
        worker = self.workers[name]
        self._trace_ports()       # its ports, for datagrams still in the capture buffer
        self.killed.add(worker)
        kill_group(worker.pid)
        worker.process.wait()
        self.history.add("info", "workload", "worker",
                         {"event": "killed", "name": name, "pid": worker.pid})

    def _trace_ports(self):
        for name, worker in list(self.workers.items()):
            if worker.returncode is None:
                for port in ports_of_process_tree(worker.pid, ("udp", "tcp")):
                    self.sender.setdefault(port, name)

    def _probe(self):
        """What the broker offers beyond core: asked once, on the empty broker."""
        conn = LineConn(self.worker_port)
        try:
            conn.send("STATS")
            reply = conn.line()
        except (OSError, EOFError) as error:
            reply = f"(no answer: {error})"
        finally:
            conn.close()
        self.features = {"stats": reply.startswith("STATS ")}
        self.level = "extended" if self.features["stats"] else "core"
        return reply

    # -- the run ---------------------------------------------------------------

    def execute(self):
        """Run the workload; returns the history's events. Raises RunError."""
        options = self.options
        self.client_port, self.worker_port = free_tcp_port(), free_tcp_port()
        while self.worker_port == self.client_port:
            self.worker_port = free_tcp_port()
        self.syslog = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.syslog.bind((HOST, 0))
        self.syslog_port = self.syslog.getsockname()[1]
        self.output_port = free_tcp_port()   # any free number; UDP here
        self.broker_command = self._fill(self.target.broker_cmd, client_port=self.client_port,
                                         worker_port=self.worker_port)
        if "restart-broker" in options.nemesis and options.ours_broker:
            self.store_dir = tempfile.mkdtemp(prefix="workq-workload-")
            self.broker_command += " --store " + shlex.quote(
                "sqlite:" + os.path.join(self.store_dir, "jobs.db"))
        threads = []
        try:
            self.start_broker()
            probe = self._probe()
            durable = options.durable or self.store_dir is not None
            kinds = [k for k in options.nemesis if k != "restart-broker" or durable]
            if self.level == "core":
                # A core broker need not requeue: faults that lose a holder would
                # lose jobs by design. Run them only when asked for by name.
                kinds = [k for k in kinds if k not in LOSES_JOBS or options.nemesis_explicit]
            if "loss" in kinds:
                # tc changes lo: only the private namespace's own.
                self.lossy = LossyLink.create(0) if inside_private_netns() else None
                if self.lossy is None:
                    self.loss_note = (LossyLink.why if inside_private_netns()
                                      else "not in a private network namespace")
                    kinds = [k for k in kinds if k != "loss"]
            if any(k in NETWORK_KINDS for k in kinds):
                self.proxy = WorkerProxy(self.worker_port)
                if self.lossy is not None:
                    self.lossy.port = self.proxy.port
            self._open_capture()
            load_end = options.seconds
            heal = max(2.0, options.seconds * 0.75)
            plan = schedule(self.rng_for("schedule"), kinds, 2.0, heal)
            drain_bound = load_end - heal + DRAIN_EXTRA
            self.history.add("info", "workload", "target", {
                "name": self.target.name, "broker": self.broker_command,
                "worker": self.target.worker_cmd, "probe": probe, "features": self.features,
                "level": self.level, "capture": self.capture_kind == "capture",
                "capture_note": self.capture_note, "seed": options.seed,
                "seconds": options.seconds, "nemesis": kinds, "schedule": plan,
                "drain_bound": drain_bound, "durable": durable,
                "skipped_nemesis": [k for k in options.nemesis if k not in kinds],
                "loss_note": self.loss_note})
            self.history.add("info", "workload", "phase", {"name": "load"})
            for _ in range(options.workers):
                self.start_worker()
            threads = self._start_threads(plan)
            self.stop_nemesis_at = heal
            self._wait_until(heal)
            self.nemesis_thread.join(timeout=max(0.0, load_end - self.history.now()) + 5)
            self.history.add("info", "workload", "phase", {"name": "heal"})
            self._wait_until(load_end)
            self.stop_load.set()
            self.history.add("info", "workload", "phase", {"name": "drain"})
            self._drain(heal + drain_bound)
            self.history.add("info", "workload", "phase", {"name": "end"})
        finally:
            self.stop_load.set()
            self.stop_nemesis.set()
            self.stop_all.set()
            for thread in threads:
                thread.join(OP_TIMEOUT + 1)
            for worker in self.workers.values():
                worker.resume()
                worker.terminate()
            if self.broker is not None:
                self.broker.resume()
                self.broker.terminate()
            if self.proxy:
                self.proxy.close()
            if self.lossy:
                self.lossy.close()
            self._close_capture()
            self.syslog.close()
            if self.store_dir:
                shutil.rmtree(self.store_dir, ignore_errors=True)
        return self.history.events

    def _wait_until(self, at):
        while self.history.now() < at and not self.stop_all.is_set():
            time.sleep(min(0.05, max(0.0, at - self.history.now())))

    def _start_threads(self, plan):
        rate = self.options.rate
        bodies = [("client-1", self._client, (rate * 0.35,)), ("client-2", self._client, (rate * 0.35,)),
                  ("client-3", self._pipelined_client, (rate * 0.3,)),
                  ("poller-1", self._poller, ()), ("poller-2", self._poller, ()),
                  ("suite-worker-1", self._suite_worker, ()),
                  ("suite-worker-2", self._suite_worker, ()),
                  ("capture", self._capture_loop, ())]
        threads = []
        for name, body, args in bodies:
            thread = threading.Thread(target=self._guard, args=(name, body, *args), name=name,
                                      daemon=True)
            thread.start()
            threads.append(thread)
        self.nemesis_thread = threading.Thread(
            target=self._guard, args=("nemesis", self._nemesis, plan), daemon=True)
        self.nemesis_thread.start()
        return threads + [self.nemesis_thread]

    def _guard(self, name, body, *args):
        try:
            body(name, *args)
        except Exception as error:  # a bug of ours: stop the run, say where
            self.errors.append(f"{name}: {type(error).__name__}: {error}")
            self.stop_all.set()

    def _nemesis(self, name, plan):
        Nemesis(self, plan).execute(self.stop_nemesis)

    # -- clients ---------------------------------------------------------------

    def _connect(self, port, stop):
        """A connection to the broker, retried while it restarts."""
        deadline = time.monotonic() + 15.0
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                return LineConn(port)
            except OSError:
                time.sleep(0.05)
        return None

    def _new_job(self, rng):
        with self.state_lock:
            self.key_counter += 1
            key = f"k{self.key_counter:05d}"
        count = rng.choice((10, 11, 12)) if rng.random() < 0.08 else rng.randint(1, 5)
        return key, count, " ".join(f"{key}.{i}.{count}" for i in range(count))

    def _record_job_reply(self, op, reply):
        history = self.history
        if reply.startswith("ID "):
            try:
                job_id = int(reply[3:])
            except ValueError:
                job_id = None
            if job_id is not None:
                history.complete(op, "ok", {"key": history.events[op]["value"]["key"], "id": job_id})
                with self.state_lock:
                    self.acked.append(job_id)
                return
        history.complete(op, "fail", {"reply": reply})

    def _client(self, name, rate):
        rng, history, conn = self.rng_for(name), self.history, None
        while not self.stop_load.is_set():
            if conn is None:
                conn = self._connect(self.client_port, self.stop_load)
                if conn is None:
                    return
            key, count, text = self._new_job(rng)
            op = history.invoke(name, "job", {"key": key, "words": count}, conn.id)
            try:
                conn.send(f"{command(rng, 'JOB')} {text}")
                self._record_job_reply(op, conn.line())
            except (OSError, EOFError) as error:
                history.complete(op, "info", {"error": str(error) or type(error).__name__})
                conn.close()
                conn = None
            self.stop_load.wait(rng.expovariate(rate))
        if conn:
            conn.close()

    def _pipelined_client(self, name, rate):
        rng, history, conn = self.rng_for(name), self.history, None
        while not self.stop_load.is_set():
            if conn is None:
                conn = self._connect(self.client_port, self.stop_load)
                if conn is None:
                    return
            batch = [self._new_job(rng) for _ in range(rng.randint(2, 6))]
            ops = [history.invoke(name, "job", {"key": key, "words": count, "pipelined": True},
                                  conn.id) for key, count, _ in batch]
            pending = list(ops)
            try:
                conn.send("\n".join(f"{command(rng, 'JOB')} {text}" for _, _, text in batch))
                while pending:
                    self._record_job_reply(pending[0], conn.line())
                    pending.pop(0)
            except (OSError, EOFError) as error:
                for op in pending:
                    history.complete(op, "info", {"error": str(error) or type(error).__name__})
                conn.close()
                conn = None
            self.stop_load.wait(rng.expovariate(rate / 4.0))
        if conn:
            conn.close()

    def _poller(self, name):
        rng, history, conn = self.rng_for(name), self.history, None
        while not self.stop_all.is_set():
            with self.state_lock:
                open_ids = [i for i in self.acked[:400] if i not in self.completed]
                if len(open_ids) < 50:
                    open_ids = [i for i in self.acked if i not in self.completed][:400]
                recent = self.acked[-20:]
                # Any job acknowledged so far, completed ones included: a broker
                # that reuses an old job's slot for a new one (a fixed table that
                # wraps) answers its STATUS with the newcomer's state.
                earlier = self.acked[rng.randrange(len(self.acked))] if self.acked else None
            if not open_ids and not recent:
                self.stop_all.wait(0.01)
                continue
            draining = self.stop_load.is_set()
            if draining and not open_ids:
                self.stop_all.wait(0.05)
                continue
            if draining and open_ids:
                # Round robin: a job stuck at the head must not hide the others.
                with self.state_lock:
                    self.sweep += 1
                    job_id = open_ids[self.sweep % len(open_ids)]
            elif open_ids and rng.random() < 0.7:
                job_id = open_ids[min(int(rng.expovariate(0.3)), len(open_ids) - 1)]
            elif rng.random() < 0.5:
                job_id = earlier
            else:
                job_id = rng.choice(recent)
            if conn is None:
                conn = self._connect(self.client_port, self.stop_all)
                if conn is None:
                    return
            op = history.invoke(name, "status", {"id": job_id}, conn.id)
            try:
                conn.send(f"{command(rng, 'STATUS')} {job_id}")
                state = conn.line().strip()
                history.complete(op, "ok", {"id": job_id, "state": state})
                with self.state_lock:
                    if state == "completed":
                        self.completed.add(job_id)
                    if state == "running":
                        self.running.add(job_id)
                    else:
                        self.running.discard(job_id)
            except (OSError, EOFError) as error:
                history.complete(op, "info", {"error": str(error) or type(error).__name__})
                conn.close()
                conn = None
            self.stop_all.wait(0.004 if draining else 0.01)
        if conn:
            conn.close()

    def _drain(self, deadline):
        """Wait until every acknowledged job was seen completed, or the deadline."""
        while self.history.now() < deadline and not self.stop_all.is_set():
            with self.state_lock:
                if all(i in self.completed for i in self.acked):
                    break
            time.sleep(0.05)
        time.sleep(0.3)   # the last datagrams and DONE segments into the capture

    # -- the suite's own workers -------------------------------------------------------

    def _suite_worker(self, name):
        rng, history = self.rng_for(name), self.history
        behaviours = ["fetch-done", "done-twice", "fetch-pair"]
        if self.level == "extended":
            behaviours += ["disconnect-mid-job", "pair-disconnect", "fetch-vanish", "steal"]
        while not self.stop_load.is_set():
            self.stop_load.wait(rng.uniform(0.05, 0.25))
            if self.stop_load.is_set():
                break
            behaviour = rng.choice(behaviours)
            conns = []
            try:
                for _ in range(2 if behaviour in ("fetch-pair", "pair-disconnect") else 1):
                    conn = self._connect(self.worker_port, self.stop_load)
                    if conn is None:
                        return
                    conns.append(conn)
                if behaviour == "steal":
                    self._steal(name, rng, conns[0])
                    continue
                if behaviour == "fetch-vanish":
                    conns[0].send("FETCH")
                    at = time.monotonic()      # before the broker can see the close
                    conns[0].close()
                    history.add("info", name, "disconnect", {"held": [], "unknown": True,
                                                             "why": behaviour}, conns[0].id, at=at)
                    continue
                ops = [history.invoke(name, "fetch", {"behaviour": behaviour}, c.id) for c in conns]
                for c in conns:
                    c.send(command(rng, "FETCH"))
                jobs = []
                for c, op in zip(conns, ops):
                    try:
                        reply = c.line()
                    except (OSError, EOFError) as error:
                        history.complete(op, "info", {"error": str(error) or type(error).__name__})
                        jobs.append(None)
                        continue
                    parts = reply.split(" ", 2)
                    if parts[0] == "JOB" and len(parts) >= 2 and parts[1].isdigit():
                        job_id = int(parts[1])
                        key = parts[2].split(".", 1)[0] if len(parts) > 2 else None
                        history.complete(op, "ok", {"id": job_id, "key": key})
                        jobs.append(job_id)
                    else:
                        history.complete(op, "ok", {"id": None, "reply": reply})
                        jobs.append(None)
                if not any(jobs):
                    self.stop_load.wait(self.options.fetch_interval)
                    continue
                self.stop_load.wait(rng.uniform(0.0, 0.05))
                if behaviour in ("disconnect-mid-job", "pair-disconnect"):
                    self.stop_load.wait(rng.uniform(0.05, 0.2))
                    for c, job_id in zip(conns, jobs):
                        at = time.monotonic()  # before the broker can see the close
                        c.close()
                        history.add("info", name, "disconnect", {
                            "held": [job_id] if job_id else [], "why": behaviour}, c.id, at=at)
                    continue
                for c, job_id in zip(conns, jobs):
                    if job_id is None:
                        continue
                    self._done(name, c, job_id, False, rng=rng)
                    if behaviour == "done-twice":
                        self._done(name, c, job_id, True, rng=rng)
            except (OSError, EOFError):
                pass
            finally:
                for c in conns:
                    c.close()

    def _steal(self, name, rng, conn):
        """DONE for a job this worker never fetched (an extended broker refuses it).

        It aims at a job a poll last saw running, held by another worker: a
        broker that lets a DONE take a held job from its holder shows it only
        then (a waiting job has no holder to take it from). With none seen
        running, any recent open job.
        """
        with self.state_lock:
            candidates = sorted(self.running - self.completed)[-30:] or \
                [i for i in self.acked[-30:] if i not in self.completed]
        if candidates:
            self._done(name, conn, rng.choice(candidates), False, steal=True, rng=rng)

    def _done(self, name, conn, job_id, repeat, steal=False, rng=None):
        value = {"id": job_id, "repeat": repeat}
        if steal:
            value["steal"] = True
        op = self.history.invoke(name, "done", value, conn.id)
        try:
            conn.send(f"{command(rng, 'DONE') if rng else 'DONE'} {job_id}")
            reply = conn.line().strip()
        except (OSError, EOFError) as error:
            self.history.complete(op, "info", {"id": job_id, "error": str(error)})
            raise
        accepted = reply == "OK"
        self.history.complete(op, "ok" if accepted else "fail", {"id": job_id, "reply": reply})
        if accepted and not repeat:
            with self.state_lock:
                self.completed.add(job_id)

    # -- capture: every datagram and every DONE on the wire --------------------------

    def _open_capture(self):
        self.capture = None
        self.receiver = None
        self.wall_offset = time.time() - time.monotonic()
        tcp_port = self.proxy.port if self.proxy else self.worker_port
        if self.options.capture:
            try:
                self.capture = _open_capture_socket(self.output_port, tcp_port)
                self.capture_kind = "capture"
                self.tcp_port = tcp_port
                return
            except Exception as error:  # no permission, no scapy: the receiver socket
                self.capture_note = f"capture not possible: {error}"
        else:
            self.capture_note = "capture off"
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("", self.output_port))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                        socket.inet_aton(self.options.multicast_group) + socket.inet_aton(HOST))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.settimeout(0.05)
        self.receiver = sock
        self.capture_kind = "socket"

    def _close_capture(self):
        if self.capture is not None:
            self.capture.close()
        if self.receiver is not None:
            self.receiver.close()

    def _note_exits(self):
        """Record a target process that exited without the nemesis killing it."""
        for name, process in [("broker", self.broker), *self.workers.items()]:
            if process is None or process.returncode is None or process in self.noted_exits:
                continue
            self.noted_exits.add(process)
            if process in self.killed:
                continue
            out, err = process.output(limit=600)
            self.history.add("info", "workload", "exit", {
                "name": name, "pid": process.pid, "code": process.returncode,
                "stderr": err[-600:]})

    def _sender_of(self, port):
        if port not in self.sender:
            self._trace_ports()
        return self.sender.get(port, f"port-{port}")

    def _capture_loop(self, name):
        last_trace = 0.0
        while not self.stop_all.is_set():
            now = time.monotonic()
            if now - last_trace > 0.1:
                self._trace_ports()
                self._note_exits()
                last_trace = now
            if self.receiver is not None:
                try:
                    payload, source = self.receiver.recvfrom(65536)
                except socket.timeout:
                    continue
                except OSError:
                    return
                self._word(payload, source[1], None)
                continue
            self._read_capture()
        if self.capture is not None:
            self._read_capture(final=True)

    def _read_capture(self, final=False):
        sock = self.capture.ins
        if not final and not select.select([sock], [], [], 0.05)[0]:
            return
        while True:
            try:
                frame, ancillary, _, address = sock.recvmsg(65536, socket.CMSG_SPACE(16))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if address[2] != PACKET_OUTGOING:
                continue      # the copy coming back in on lo
            stamp = _timestamp(ancillary)
            # The kernel's (wall-clock) time of the frame, on the history's clock.
            self._frame(frame, None if stamp is None else stamp - self.wall_offset)

    def _frame(self, frame, at):
        # Ethernet (14 bytes, lo's frames), IPv4, then UDP or TCP: parsed here by
        # hand, the capture filter (capture.py) having kept only these.
        if len(frame) < 34 or frame[12:14] != b"\x08\x00":
            return
        ip = frame[14:]
        header = (ip[0] & 0x0F) * 4
        total = struct.unpack("!H", ip[2:4])[0]
        protocol = ip[9]
        body = ip[header:total]
        if protocol == 17 and len(body) >= 8:
            sport, dport = struct.unpack("!HH", body[:4])
            self._word(body[8:], sport, dport, at)
        elif protocol == 6 and len(body) >= 20:
            sport = struct.unpack("!H", body[:2])[0]
            payload = body[(body[12] >> 4) * 4:]
            for line in payload.split(b"\n"):
                parts = line.strip().split()
                if len(parts) == 2 and parts[0].upper() == b"DONE" and parts[1].isdigit():
                    sender = self._sender_of(sport)
                    if sender.startswith("worker-"):
                        self.history.add("info", sender, "done-wire",
                                         {"id": int(parts[1]), "port": sport}, at=at)

    def _word(self, payload, sport, dport, at=None):
        if dport is not None and dport != self.output_port:
            return
        self.history.add("info", self._sender_of(sport), "word",
                         {"payload": payload.decode("utf-8", "replace"), "port": sport}, at=at)
