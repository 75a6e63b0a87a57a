"""One command that shows the whole workq system at work.

    python3 -m tools.demo [--quick] [--jobs N] [--workers 2] [--word-delay S]
                          [--job-delay S] [--impl select|threads] [--deadline S] [--seed X]

Enters a private network namespace where it can (conformance/netns.py, shared with the test suite), starts a
broker and workers on free ports, submits autoCall-style jobs, prints the
words arriving on the multicast group at the workers' real pace (0.25 s
between words, as the original system; ``--quick`` for a fast run) and the workers' syslog lines as they
come, waits until every job is ``completed``, prints a per-job summary and
the final statuses, and stops everything it started.
"""

import argparse
import importlib.util
import os
import random
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from conformance import netns
from core.grammar import JOB_ID, split_words
from core.options import UsageParser, positive_int, seconds
from tools import client, mcast_listen, syslog_listen
from tools.words import random_job_text

__all__ = [
    "Recorder",
    "assign_words",
    "main",
    "parse_args",
    "pick_free_tcp_ports",
    "run_demo",
    "wait_for_port",
]

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"

EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# The pace a person can follow: the worker's own default word delay (the
# original assignment's 0.25 s), jobs submitted a little apart so that their
# states can be seen changing. --quick: as fast as it goes (for tests).
WORD_DELAY, JOB_DELAY = 0.25, 0.5
QUICK_WORD_DELAY, QUICK_JOB_DELAY = 0.01, 0.0


class DemoError(Exception):
    """A failure with a message for the user (exit 1)."""


class Terminated(BaseException):
    """SIGTERM arrived: unwind like Ctrl-C, stopping the children."""


# --------------------------------------------------------------- helpers

def pick_free_tcp_ports(count, host=HOST):
    """Return ``count`` distinct TCP ports that were free on ``host`` (bound
    to port 0 together, then released)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def wait_for_port(host, port, deadline, proc=None):
    """Connect to (host, port) until it accepts or ``deadline`` (a
    ``time.monotonic()`` value) passes. If ``proc`` (a Popen) exits first,
    raise DemoError. Returns True when the port accepted, False at the
    deadline."""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            pass
        if proc is not None:
            try:
                code = proc.wait(timeout=0.05)   # pause, but wake if it dies
            except subprocess.TimeoutExpired:
                continue
            raise DemoError(f"the process exited with status {code} before "
                            f"{host}:{port} accepted connections")
        else:
            time.sleep(0.05)
    return False


def assign_words(jobs, streams):
    """Match the words received per source to the submitted jobs.

    ``jobs``: list of ``(job_id, text)``; ``streams``: ``{source: [word,
    ...]}`` in arrival order. A worker sends a job's words in order and takes
    jobs in increasing id order, so each stream is its jobs' words one after
    the other. Greedy: at each position take the lowest unassigned id,
    greater than the stream's last, whose words come next.

    Returns ``(assigned, stray)``: ``assigned`` maps job id to its source,
    ``stray`` maps source to the words that matched no job.
    """
    words_of = {job_id: split_words(text) for job_id, text in jobs}
    unassigned = sorted(words_of)
    assigned, stray = {}, {}
    for source, stream in streams.items():
        pos, last = 0, -1
        while pos < len(stream):
            for job_id in unassigned:
                words = words_of[job_id]
                if job_id > last and words and stream[pos:pos + len(words)] == words:
                    assigned[job_id] = source
                    unassigned.remove(job_id)
                    pos += len(words)
                    last = job_id
                    break
            else:
                stray.setdefault(source, []).append(stream[pos])
                pos += 1
    return assigned, stray


class Recorder:
    """Receives multicast words and syslog messages on a thread, prints them
    live and keeps them: ``words[source_port]`` (list) and ``logs`` (list of
    ``(facility, severity, message)``)."""

    def __init__(self, mcast_sock, syslog_sock, emit):
        self.mcast_sock = mcast_sock
        self.syslog_sock = syslog_sock
        self.emit = emit
        self.words = {}
        self.logs = []
        self.cond = threading.Condition()
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name="demo-listener", daemon=True)

    def start(self):
        self._thread.start()

    def stop(self):
        """Stop the thread after it has read everything already queued."""
        if self._thread.is_alive():
            self._wake_w.send(b"x")
            self._thread.join()
        self._wake_r.close()
        self._wake_w.close()

    def wait_for(self, predicate, deadline):
        """Wait until ``predicate()`` (called under the lock) is true or the
        monotonic ``deadline`` passes; return its last value."""
        with self.cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.cond.wait(remaining)
            return True

    def _handle(self, sock):
        data, addr = sock.recvfrom(65535)
        when = time.time()
        if sock is self.mcast_sock:
            word = mcast_listen.decode_word(data)
            with self.cond:
                self.words.setdefault(addr[1], []).append(word)
                self.cond.notify_all()
            self.emit(f"{mcast_listen.timestamp(when)}  worker :{addr[1]:<5}  {word}")
        else:
            facility, severity, message = syslog_listen.parse_syslog(data)
            with self.cond:
                self.logs.append((facility, severity, message))
                self.cond.notify_all()
            label = f"{facility}.{severity}" if facility else "?.?"
            self.emit(f"{mcast_listen.timestamp(when)}  syslog {label:<12} {message}")

    def _drain(self):
        for sock in (self.syslog_sock, self.mcast_sock):
            sock.setblocking(False)
            while True:
                try:
                    self._handle(sock)
                except (BlockingIOError, InterruptedError):
                    break

    def _run(self):
        sel = selectors.DefaultSelector()
        sel.register(self.mcast_sock, selectors.EVENT_READ)
        sel.register(self.syslog_sock, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        try:
            while True:
                for key, _ in sel.select():
                    if key.fileobj is self._wake_r:
                        self._drain()
                        return
                    try:
                        self._handle(key.fileobj)
                    except (BlockingIOError, InterruptedError):
                        pass
        except OSError as exc:          # should not happen; keep the demo going
            self.emit(f"listener stopped: {exc}")
        finally:
            sel.close()


class Children:
    """The processes the demo starts; ``stop_all()`` ends every one."""

    def __init__(self, emit):
        self.emit = emit
        self.procs = []            # (name, Popen, log path)
        self.logdir = tempfile.mkdtemp(prefix="workq-demo-")

    def start(self, name, argv):
        log_path = os.path.join(self.logdir, name.replace(" ", "-") + ".log")
        env = dict(os.environ, PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join(
                       p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
                # Safe here: the hook only calls a preloaded C function.
                preexec_fn=_die_with_parent if _PRCTL is not None else None)  # noqa: PLW1509
        self.procs.append((name, proc, log_path))
        self.emit(f"started {name} (pid {proc.pid}): {_shell_words(argv)}")
        return proc

    def wait_started(self, proc, deadline):
        """Wait until ``proc`` has printed something (its start-up line) or
        the monotonic ``deadline`` passes; True if it did. Raises DemoError
        if it exits first."""
        path = next(p for _, pr, p in self.procs if pr is proc)
        while time.monotonic() < deadline:
            if os.path.getsize(path) > 0:
                return True
            try:
                code = proc.wait(timeout=0.02)   # pause, but wake if it dies
            except subprocess.TimeoutExpired:
                continue
            raise DemoError(f"it exited with status {code} at start-up")
        return False

    def names_by_pid(self):
        return {proc.pid: name for name, proc, _ in self.procs}

    def check_alive(self):
        """Names and exit codes of children that have exited."""
        return [(name, proc.returncode) for name, proc, _ in self.procs
                if proc.poll() is not None]

    def stop_all(self, grace=5.0):
        """SIGTERM the workers first, then the broker; SIGKILL what is still
        running after ``grace`` seconds. Returns [(name, exit code)]."""
        results = []
        for name, proc, _ in reversed(self.procs):
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.emit(f"{name} (pid {proc.pid}) ignored SIGTERM for {grace:g} s: killing it")
                proc.kill()
                proc.wait()
            results.append((name, proc.returncode))
        return results

    def log_tail(self, lines=15):
        out = []
        for name, _, path in self.procs:
            try:
                with open(path, "rb") as f:
                    text = f.read().decode("utf-8", "replace").splitlines()[-lines:]
            except OSError:
                continue
            out.append(f"--- last output of {name} ---")
            out.extend(text or ["(nothing)"])
        return out

    def cleanup_logs(self):
        for _, _, path in self.procs:
            try:
                os.unlink(path)
            except OSError:
                pass
        try:
            os.rmdir(self.logdir)
        except OSError:
            pass


def _load_prctl():
    # Loaded up front: a preexec_fn must not import (another thread may hold
    # the import lock at fork time).
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes
        import ctypes.util
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def _die_with_parent():
    """In the child: get SIGTERM if the demo dies without cleaning up."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)        # PR_SET_PDEATHSIG


def _shell_words(argv):
    shown = ["python3" if a == sys.executable else a for a in argv]
    return " ".join(shown)


def _module_exists(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# --------------------------------------------------------------- the demo

def run_demo(args, out=None):
    """Run the demo with parsed ``args``; return the exit code."""
    out = out if out is not None else sys.stdout
    lock = threading.Lock()

    def emit(line=""):
        with lock:
            out.write(line + "\n")
            out.flush()

    package = f"impl_{args.impl}"
    missing = [m for m in (f"{package}.broker", f"{package}.worker") if not _module_exists(m)]
    if missing:
        print(f"error: --impl {args.impl}: module {', '.join(missing)} not found "
              f"(expected {package}/broker.py and {package}/worker.py under {ROOT})",
              file=sys.stderr)
        return EXIT_USAGE

    if args.netns and netns.enter_private_netns():
        emit("network: inside a private network namespace (only a loopback exists)")
    else:
        reason = "disabled by --no-netns" if not args.netns else netns.last_error()
        emit(f"network: staying in this namespace ({reason}); everything stays on "
             "loopback: the workers send multicast via 127.0.0.1 with TTL 1")

    mcast_sock = mcast_listen.open_receiver(0, mcast_listen.DEFAULT_GROUP, HOST)
    syslog_sock = syslog_listen.open_syslog_socket(0)
    output_port = mcast_sock.getsockname()[1]
    syslog_port = syslog_sock.getsockname()[1]
    client_port, worker_port = pick_free_tcp_ports(2)
    emit(f"ports: clients {client_port}, workers {worker_port} (TCP); words to "
         f"{mcast_listen.DEFAULT_GROUP}:{output_port}, syslog to {HOST}:{syslog_port} (UDP)")

    children = Children(emit)
    recorder = Recorder(mcast_sock, syslog_sock, emit)
    failed = True
    try:
        broker = children.start("broker", [sys.executable, "-m", f"{package}.broker",
                                           str(client_port), str(worker_port)])
        try:
            ready = wait_for_port(HOST, client_port,
                                  time.monotonic() + args.startup_timeout, broker)
        except DemoError as exc:
            raise DemoError(f"broker: {exc}") from None
        if not ready:
            raise DemoError(f"the broker did not accept connections on "
                            f"{HOST}:{client_port} within {args.startup_timeout:g} s")
        emit(f"broker is accepting clients on {HOST}:{client_port}")
        workers = [children.start(f"worker {n}", [
            sys.executable, "-m", f"{package}.worker", f"{HOST}:{worker_port}",
            str(output_port), str(syslog_port), "--word-delay", f"{args.word_delay:g}"])
            for n in range(1, args.workers + 1)]
        # Their start-up line means they run (and handle SIGTERM) by now.
        for n, proc in enumerate(workers, 1):
            try:
                started = children.wait_started(
                    proc, time.monotonic() + args.startup_timeout)
            except DemoError as exc:
                raise DemoError(f"worker {n}: {exc}") from None
            if not started:
                emit(f"warning: worker {n} printed no start-up line within "
                     f"{args.startup_timeout:g} s; going on")
        recorder.start()

        rng = random.Random(args.seed)
        texts = [random_job_text(rng) for _ in range(args.jobs)]
        emit("\nlive: words as they arrive (worker = the sender's UDP source port), "
             "syslog lines, job status changes")
        emit(f"submitting {args.jobs} job(s), {args.job_delay:g} s apart; each worker "
             f"sends a word every {args.word_delay:g} s:")
        # Job states are watched from the first submission on, so that a person
        # sees each job go waiting -> running -> completed while the words arrive.
        jobs, submitted = [], threading.Event()
        watcher = StatusWatcher(jobs, submitted, client_port, args, emit, children)
        watcher.start()

        def on_job(i, text, job_id, error):
            emit(f"  [{i + 1}/{args.jobs}] " + (f"ID {job_id}  <- {text}" if error is None
                                                else f"FAILED {error}  <- {text}"))
            if job_id is not None:
                jobs.append((job_id, text))

        try:
            result = client.auto_call(HOST, client_port, delay=args.job_delay, texts=texts,
                                      timeout=args.timeout, on_job=on_job)
        finally:
            submitted.set()
        # Not result.summary(): its time and rate describe the pacing, not the system.
        emit(f"  submitted {result.submitted} of {args.jobs} job(s)"
             + (f", {result.failed} failed" if result.failed else ""))
        states = watcher.result()
        all_done = len(jobs) == args.jobs and all(
            states.get(job_id) == "completed" for job_id, _ in jobs)
        if all_done:
            # The workers log "completed job N" after the broker's OK: give
            # those lines a moment so the transcript is whole.
            done_ids = {job_id for job_id, _ in jobs}
            recorder.wait_for(lambda: done_ids <= _completed_in(recorder.logs),
                              time.monotonic() + 2.0)
        recorder.stop()

        print_summary(jobs, states, recorder, emit, children.names_by_pid())
        failed = not all_done
        if failed:
            missing = [str(job_id) for job_id, _ in jobs if states.get(job_id) != "completed"]
            emit(f"\nNOT ALL JOBS COMPLETED: {len(jobs) - len(missing)}/{args.jobs} "
                 f"completed; not completed: {', '.join(missing) or '-'}"
                 + (f"; {result.failed} submission(s) failed" if result.failed else ""))
        else:
            emit(f"\nall {len(jobs)} job(s) completed")
        return EXIT_INCOMPLETE if failed else EXIT_OK
    except client.ClientError as exc:
        emit(f"error: {exc}")
        return EXIT_INCOMPLETE
    except DemoError as exc:
        emit(f"error: {exc}")
        return EXIT_INCOMPLETE
    except (KeyboardInterrupt, Terminated):
        failed = False                   # no need for the children's logs
        emit("interrupted: stopping everything the demo started")
        raise
    finally:
        # A second Ctrl-C must not cut the clean-up short.
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            _cleanup(recorder, children, failed, emit)
        finally:
            mcast_sock.close()
            syslog_sock.close()
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)


def _cleanup(recorder, children, failed, emit):
    recorder.stop()
    results = children.stop_all()
    if results:
        emit("stopped: " + ", ".join(f"{name} (exit {code})"
                                     for name, code in reversed(results)))
    if failed:
        for line in children.log_tail():
            emit(line)
    children.cleanup_logs()


def _completed_in(logs):
    ids = set()
    for _, _, message in logs:
        _, sep, tail = message.rpartition("completed job ")
        if sep:
            num = tail.split(" ", 1)[0]
            if JOB_ID.fullmatch(num):
                ids.add(int(num))
    return ids


class StatusWatcher:
    """:func:`wait_completed` on a thread, while the jobs are being submitted.
    ``result()`` waits for it and returns its states, or raises what it raised."""

    def __init__(self, jobs, submitted, client_port, args, emit, children):
        self._call = (jobs, client_port, args, emit, children, submitted)
        self._outcome = None
        self._thread = threading.Thread(target=self._run, name="demo-status", daemon=True)

    def start(self):
        self._thread.start()

    def _run(self):
        try:
            self._outcome = (wait_completed(*self._call), None)
        except Exception as error:        # re-raised in the main thread by result()
            self._outcome = (None, error)

    def result(self):
        self._thread.join()
        states, error = self._outcome
        if error is not None:
            raise error
        return states


def wait_completed(jobs, client_port, args, emit, children, submitted=None):
    """Poll STATUS of every job until all are completed or the deadline;
    print each change of state. ``jobs``: list of ``(job_id, text)``, which
    may grow while this runs until the Event ``submitted`` is set (None: the
    list is complete). Returns {job_id: last state}."""
    deadline = time.monotonic() + args.deadline
    states = {}
    conn = None
    reported_dead = set()
    try:
        while True:
            finished = submitted is None or submitted.is_set()   # before reading the list
            pending = [job_id for job_id, _ in list(jobs) if states.get(job_id) != "completed"]
            if pending and (conn is None or conn.closed):
                conn = client.Connection(HOST, client_port, args.timeout)
            for job_id in pending:
                state = conn.status(job_id)
                if state != states.get(job_id):
                    states[job_id] = state
                    emit(f"{mcast_listen.timestamp()}  STATUS {job_id} -> {state}")
            for name, code in children.check_alive():
                if name not in reported_dead:
                    reported_dead.add(name)
                    emit(f"warning: {name} exited with status {code}")
            pending = [job_id for job_id in pending if states.get(job_id) != "completed"]
            if finished and not pending:
                break
            if time.monotonic() >= deadline:
                emit(f"deadline: {len(pending)} job(s) not completed within "
                     f"{args.deadline:g} s")
                break
            time.sleep(0.05)             # polling interval, not a synchronisation
    finally:
        if conn is not None:
            conn.close()
    return states


_STARTING = re.compile(r"\[([0-9]+)\]:? starting job ([0-9]+)")


def pids_by_source(assigned, logs):
    """Which worker pid sent from which source port: syslog lines like
    ``name[PID]: starting job N`` give job -> pid, ``assigned`` job ->
    source. Returns {source: pid} for the sources that agree."""
    pid_of_job = {}
    for _, _, message in logs:
        match = _STARTING.search(message)
        if match:
            pid_of_job[int(match.group(2))] = int(match.group(1))
    votes = {}
    for job_id, src in assigned.items():
        if job_id in pid_of_job:
            votes.setdefault(src, set()).add(pid_of_job[job_id])
    return {src: pids.pop() for src, pids in votes.items() if len(pids) == 1}


def print_summary(jobs, states, recorder, emit, names=None):
    names = names or {}
    with recorder.cond:
        streams = {src: list(words) for src, words in recorder.words.items()}
        logs = list(recorder.logs)
    assigned, stray = assign_words(jobs, streams)
    pids = pids_by_source(assigned, logs)
    sources = sorted(streams, key=lambda s: min(
        (job_id for job_id, src in assigned.items() if src == s), default=1 << 62))
    emit("\nper job (words matched to the submitted texts, by sender):")
    for src in sources:
        mine = sorted(job_id for job_id, s in assigned.items() if s == src)
        who = ""
        if src in pids:
            pid = pids[src]
            who = f" = {names.get(pid, 'pid')} (pid {pid})" if pid in names else f" = pid {pid}"
        emit(f"  worker :{src}{who}: {len(streams[src])} word(s), job(s) "
             f"{', '.join(map(str, mine)) or '-'}")
        if src in stray:
            emit(f"    unmatched words: {' '.join(stray[src])}")
    expected = sum(len(split_words(text)) for _, text in jobs)
    received = sum(len(w) for w in streams.values())
    emit(f"  words: expected {expected}, received {received}")

    emit("\nfinal statuses:")
    width = max([len(str(job_id)) for job_id, _ in jobs] + [3])
    emit(f"  {'job':>{width}}  {'status':<10} {'worker':<8} {'words':>5}  text")
    for job_id, text in jobs:
        src = assigned.get(job_id)
        n = len(split_words(text))
        emit(f"  {job_id:>{width}}  {states.get(job_id, '?'):<10} "
             f"{(':' + str(src)) if src else '-':<8} "
             f"{(f'{n}/{n}' if src else f'0/{n}'):>5}  {text}")


_positive_int = positive_int                 # grammar rule whole_number, 1 or more
_seconds = seconds          # grammar rule seconds, 0 to core.options.MAX_SECONDS


def _on_sigterm(signum, frame):
    raise Terminated()


def parse_args(argv=None):
    """The demo's command line (``argv`` without the program name; None:
    sys.argv). Returns the argparse namespace, ``word_delay`` and
    ``job_delay`` filled in from ``--quick``; a usage error exits 2."""
    parser = UsageParser(
        prog="python3 -m tools.demo",
        description="Show the whole workq system in one command: a broker and "
                    "workers on free ports (inside a private network namespace "
                    "when allowed), autoCall-style jobs, the words arriving on "
                    "the multicast group and the workers' syslog, live; then "
                    "per-job results and the final statuses. Everything started "
                    "is stopped at the end, also on Ctrl-C.",
        epilog="examples:\n"
               "  python3 -m tools.demo               (about 6 s: watch the words arrive)\n"
               "  python3 -m tools.demo --quick       (a second or two)\n"
               "  python3 -m tools.demo --jobs 20 --workers 4 --word-delay 0.1\n"
               "  python3 -m tools.demo --impl threads\n"
               "exit status: 0 every job completed; 1 some job did not complete "
               "by the deadline or something failed; 2 bad arguments or missing "
               "implementation; 130 interrupted.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=_positive_int, default=8, metavar="N",
                        help="jobs to submit (default 8)")
    parser.add_argument("--workers", type=_positive_int, default=2, metavar="N",
                        help="workers to start (default 2)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a fast run: --word-delay {QUICK_WORD_DELAY:g} and --job-delay "
                             f"{QUICK_JOB_DELAY:g} unless given")
    parser.add_argument("--word-delay", type=_seconds, default=None, metavar="S",
                        help=f"worker's pause between words (default {WORD_DELAY:g}, the "
                             "workers' own default, the original system's pace)")
    parser.add_argument("--job-delay", type=_seconds, default=None, metavar="S",
                        help=f"pause between two job submissions (default {JOB_DELAY:g})")
    parser.add_argument("--impl", choices=("select", "threads"), default="select",
                        help="implementation: impl_select (default) or impl_threads")
    parser.add_argument("--deadline", type=_seconds, default=60.0, metavar="S",
                        help="seconds to wait for every job to complete (default 60)")
    parser.add_argument("--startup-timeout", type=_seconds, default=10.0, metavar="S",
                        help="seconds to wait for the broker to accept (default 10)")
    parser.add_argument("--timeout", type=_seconds, default=client.DEFAULT_TIMEOUT,
                        metavar="S", help="client reply timeout (default 10)")
    parser.add_argument("--seed", help="seed for the job texts (reproducible runs)")
    parser.add_argument("--no-netns", dest="netns", action="store_false",
                        help="do not try to enter a private network namespace")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error("--timeout must be greater than 0")
    if args.word_delay is None:
        args.word_delay = QUICK_WORD_DELAY if args.quick else WORD_DELAY
    if args.job_delay is None:
        args.job_delay = QUICK_JOB_DELAY if args.quick else JOB_DELAY
    return args


def main(argv=None):
    """Run the demo from a command line; returns the exit status."""
    args = parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return run_demo(args)
    except (KeyboardInterrupt, Terminated):
        print("interrupted: everything the demo started has been stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INCOMPLETE
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
