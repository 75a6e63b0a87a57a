"""The scenarios: the same load against every broker, one measured row per run.

Each measurement starts a fresh broker (so no run inherits another's queue),
connects, reads the broker's CPU time from /proc, runs the load, reads it
again. Brokers take turns within a scenario, so the rows of one table are
measured close together in time on this shared, noisy machine.
"""

import statistics
import tempfile
import time
from dataclasses import dataclass, field

from . import loadgen, procstat
from .servers import (FLOOR, ORIGINAL, SHELL, Beanstalkd, BrokerError, OriginalBroker, OurBroker,
                      RevisionBroker, export_revision, resolve_revision, split_revision)

# Ours get room for the memory scenario's million jobs (the default is 1,000,000).
BIG_QUEUE = ("--max-waiting", "2000000")
# Where the reference brokers (original, floor) take part: the per-request
# scenarios of the CPU targets. The original has no long-poll and no store,
# select.select() cannot hold 10,000 connections, and against pipelined writes
# its reply-per-line sendall without TCP_NODELAY stalls on delayed ACKs (40 ms
# per batch here); the floor has no protocol beyond submit and the cycle (and no
# job table, so no memory row: it takes the window, not the pipelined run). In
# the durable scenario the floor commits each wake-up's reads to a bare journal
# (--journal): the least a durable CPython broker pays.
# The shell (select with the floor's answer) takes the scenarios of "where the
# remaining time goes".
REFERENCE_SCENARIOS = {ORIGINAL: {"closed", "cycle"},
                       FLOOR: {"closed", "cycle", "window", "durable"},
                       SHELL: {"closed", "cycle"}}
# Where a --baseline broker (select@REV) takes part: the scenarios of the
# "additions cost nothing measurable" target.
BASELINE_SCENARIOS = {"closed", "cycle"}
# Seconds between two host probes while waiting for a slow host (Bench.await_quick_host).
PROBE_POLL = 0.5


@dataclass
class Config:
    """How much of each scenario to run (``full()`` or ``quick()``)."""

    duration: float = 3.0                    # seconds of each time-bounded run
    closed_connections: tuple = (1, 16, 256)
    closed_procs: dict = field(default_factory=lambda: {256: 2})   # generator processes
    closed_max_ops: int = 2_000_000
    rounds: int = 5                          # closed loop and cycle: runs per broker, median kept
    # (5, not 3: the 16-client loop sits near its 1.15x bound and runs here spread
    # by +-10 %; the median of five moves less with one noisy minute)
    slow_host: float = 0.10                  # a round whose host probe was this much slower
    retakes: int = 5                         # ... than the run's best is taken again, at most
    #                                          this many times per row (procstat.host_probe),
    retake_wait: float = 30.0                # ... once the probe is quick again or this many
    #                                          seconds have passed
    pipelined_jobs: int = 1_000_000          # also the memory scenario's queue
    batch: int = 100                         # lines per write
    depth: int = 4                           # writes in flight
    window_connections: int = 4              # window: connections ...
    window_in_flight: int = 100              # ... each keeping this many requests in flight,
    window_read: int = 64                    # ... reading replies this many bytes at a time
    window_jobs: int = 1_000_000             # ... for at most this many jobs (or duration)
    cycle_workers: int = 16
    cycle_prefill: int = 200_000
    dispatch_samples: int = 200
    polling_samples: int = 8
    polling_interval: float = 0.5
    idle_levels: tuple = (0, 100, 1000, 10_000)
    scaling_repeats: int = 3                 # runs of duration / 3 each, median taken
    durable_connections: tuple = (1, 16)
    run_cap: float = 60.0                    # hard cap on any single run

    @classmethod
    def full(cls):
        return cls()

    @classmethod
    def quick(cls):
        return cls(duration=0.3, closed_connections=(1, 4, 8), closed_procs={8: 2},
                   closed_max_ops=50_000, pipelined_jobs=5_000, window_jobs=20_000,
                   cycle_prefill=3_000,
                   rounds=1, retakes=1, retake_wait=1.0, dispatch_samples=10, polling_samples=2, idle_levels=(0, 10, 100),
                   durable_connections=(1, 4), run_cap=20.0)


@dataclass
class Row:
    """One measured run of one broker."""

    scenario: str
    label: str                   # the run within the scenario: "16 clients", "1000 idle" ...
    broker: str
    ops: int = 0
    elapsed: float = 0.0
    cpu: float = 0.0             # broker CPU seconds during the run
    gen_cpu: float = 0.0         # the load generator's CPU seconds
    errors: int = 0
    faults: int = None           # broker's minor page faults during the run
    p50: float = None            # seconds
    p99: float = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def throughput(self):
        return self.ops / self.elapsed if self.elapsed > 0 and self.ops else None

    @property
    def cpu_per_op(self):
        return self.cpu / self.ops if self.ops else None

    @property
    def faults_per_op(self):
        return self.faults / self.ops if self.ops and self.faults is not None else None

    @property
    def broker_util(self):
        return self.cpu / self.elapsed if self.elapsed > 0 else None

    @property
    def gen_util(self):
        return self.gen_cpu / self.elapsed if self.elapsed > 0 else None

    @property
    def ok(self):
        return bool(self.ops) and not self.note.startswith("failed")

    def fill(self, load, cpu):
        self.ops, self.errors, self.elapsed = load.ops, load.errors, load.elapsed
        self.cpu, self.gen_cpu = cpu, load.cpu
        self.p50, self.p99 = percentiles(load.latencies)
        self.extra.update(load.extra)
        if load.errors:
            self.note = _join(self.note, f"{load.errors} errors, first: {load.first_error}")
        return self


def percentiles(samples):
    if not samples:
        return None, None
    ordered = sorted(samples)
    last = len(ordered) - 1
    return ordered[round(0.50 * last)], ordered[round(0.99 * last)]


def median_run(runs):
    """The run with the median CPU per operation, its note listing every run's."""
    measured = sorted((run for run in runs if run.ok), key=lambda run: run.cpu_per_op)
    if not measured:
        return runs[0]
    chosen = measured[len(measured) // 2]
    chosen.extra["runs"] = run_spread(measured)
    if len(runs) > 1:
        chosen.note = _join(chosen.note, "median of {} runs by CPU ({} µs)".format(
            len(runs), ", ".join(f"{run.cpu_per_op * 1e6:.2f}" if run.ok else "failed"
                                 for run in runs)))
    return chosen


def run_spread(runs):
    """Every measured run as ``(ops per second, broker CPU seconds per op)``:
    the plots draw their min-max spread around the chosen run."""
    return [(run.throughput, run.cpu_per_op) for run in runs if run.ok]


def fmt_k(rate):
    return "–" if rate is None else f"{rate / 1000:.1f}k/s"


def _join(*parts):
    return "; ".join(part for part in parts if part)


class Bench:
    """Runs scenarios against the brokers named in ``brokers``."""

    def __init__(self, config, brokers, beanstalkd_path=None, log=print, baselines=(),
                 probe_cpus=None, host_probe=procstat.host_probe):
        """``brokers``: names of ALL_BROKERS and ``select@REV`` (our broker at git
        revision REV); ``baselines``: those of them that run only in
        BASELINE_SCENARIOS (the others run wherever their flavour does);
        ``probe_cpus``: the CPUs the host probe times (default: where the bench
        runs); ``host_probe(cpus)``: seconds, slower when the host is (see
        in_turns)."""
        self.config = config
        self.brokers = [b for b in brokers if b != "beanstalkd" or beanstalkd_path]
        self.beanstalkd_path = beanstalkd_path
        self.log = log
        self.baselines = set(baselines)
        self.rows = []
        self.tmp = tempfile.TemporaryDirectory(prefix="workq-bench-")
        self.checkouts = {}                 # revision -> its tree, exported once
        self.probe_cpus = probe_cpus
        self.host_probe = host_probe
        self.fastest_probe = float("inf")

    def close(self):
        self.tmp.cleanup()

    # -- plumbing ------------------------------------------------------------------

    def make(self, name, ours=(), beanstalk=(), floor=()):
        if name == "beanstalkd":
            return Beanstalkd(self.beanstalkd_path, beanstalk)
        if name == ORIGINAL:
            return OriginalBroker()
        _, revision = split_revision(name)
        if revision:
            return RevisionBroker(name, self.checkout(revision), ours)
        return OurBroker(name, floor if name == FLOOR else ours)

    def checkout(self, revision):
        """The tree of git ``revision``, exported once per run into the temporary
        directory (a note on every row says which commit it is)."""
        if revision not in self.checkouts:
            commit = resolve_revision(revision)
            where = tempfile.mkdtemp(prefix=f"rev-{commit[:12]}-", dir=self.tmp.name)
            self.checkouts[revision] = export_revision(commit, where)
            self.log(f"bench: revision {revision} is commit {commit[:12]}, exported to {where}")
        return self.checkouts[revision]

    def brokers_in(self, scenario):
        return [name for name in self.brokers
                if scenario in REFERENCE_SCENARIOS.get(name, (scenario,))
                and (name not in self.baselines or scenario in BASELINE_SCENARIOS)]

    def measure(self, row, broker, address, connections, load, args, procs=1):
        """Connect, read the broker's CPU (and page faults), run ``load(socks, *args)``,
        read them again."""
        if procs > 1:
            marks = {}
            result = loadgen.run_split(
                address, connections, procs, load, args,
                lambda: marks.__setitem__("start", procstat.snapshot(broker.pid)),
                lambda: marks.__setitem__("end", procstat.snapshot(broker.pid)),
                self.config.run_cap)
            row.note = _join(row.note, f"{procs} generator processes")
            before, after = marks["start"], marks["end"]
        else:
            socks = loadgen.connect(address, connections)
            try:
                before = procstat.snapshot(broker.pid)
                result = load(socks, *args)
                after = procstat.snapshot(broker.pid)
            finally:
                loadgen.close_all(socks)
        row.faults = after[1] - before[1]
        row.extra["system_cpu"] = after[2] - before[2]    # of row.cpu: the kernel's share
        return row.fill(result, after[0] - before[0])

    def in_turns(self, scenario, label, extra, body):
        """``body(broker, row)`` on a fresh broker of each kind, ``config.rounds`` times,
        the brokers taking turns so that a noisy minute hits them alike. Each broker's
        row is its median run by CPU per operation (the measure of the targets).

        The host is probed (procstat.host_probe) before each run and after the
        round's last; a round whose median probe is more than ``config.slow_host``
        slower than the fastest probe of the bench so far is taken again, once the
        probe is quick again (await_quick_host), at most ``config.retakes`` times per row: on this virtual machine the host slows
        every guest by tens of percent for minutes, and not every broker alike (a
        ratio to the floor, 16 clients, moved from 1.09x to 1.24x in such an hour). Each row
        records ``extra["probe"]`` (its round's median probe, seconds),
        ``extra["probe_slower"]`` (the slowest of its runs' rounds: median probe over
        the best so far, minus 1) and ``extra["retaken"]`` (rounds taken again for
        this row)."""
        runs = {name: [] for name in self.brokers_in(scenario)}
        retaken = 0
        for _ in range(self.config.rounds):
            while True:
                taken, probes = {}, [self.probe()]
                for name in runs:
                    run = Row(scenario, label, name, extra=dict(extra))
                    self.run_one(run, self.make(name, BIG_QUEUE),
                                 lambda broker, run=run: body(broker, run), keep=False)
                    taken[name] = run
                    probes.append(self.probe())
                probe = statistics.median(probes)
                slower = probe / self.fastest_probe - 1
                if slower <= self.config.slow_host or retaken >= self.config.retakes:
                    break
                retaken += 1
                self.log(f"bench: the host probe took {probe * 1e3:.2f} ms in that round, "
                         f"{slower * 100:.0f} % above its best ({self.fastest_probe * 1e3:.2f} ms): "
                         f"the host was slow; taking the round again "
                         f"({retaken} of at most {self.config.retakes})")
                if not self.await_quick_host():
                    self.log(f"bench: the host stayed slow for {self.config.retake_wait:g} s; "
                             "taking the round again all the same")
            for name, run in taken.items():
                run.extra["probe"], run.extra["probe_slower"] = probe, slower
                runs[name].append(run)
        for name, done in runs.items():
            row = median_run(done)
            row.extra["retaken"] = retaken
            row.extra["probe_slower"] = max(run.extra["probe_slower"] for run in done)
            self.rows.append(row)

    def await_quick_host(self):
        """Probe every PROBE_POLL seconds until the probe is within ``config.slow_host``
        of the best again (True) or ``config.retake_wait`` seconds have passed
        (False): a retake in the same slow minute would only be slow again."""
        deadline = time.monotonic() + self.config.retake_wait
        while self.probe() / self.fastest_probe - 1 > self.config.slow_host:
            if time.monotonic() >= deadline:
                return False
            time.sleep(PROBE_POLL)
        return True

    def probe(self):
        """The host probe on every CPU of the bench (seconds, procstat.host_probe);
        ``fastest_probe`` keeps the least seen."""
        seconds = self.host_probe(self.probe_cpus)
        self.fastest_probe = min(self.fastest_probe, seconds)
        return seconds

    def run_one(self, row, broker, body, keep=True):
        """Start ``broker``, run ``body(broker)``, stop it; a failure becomes the row's
        note. ``keep``: the row goes into the report as it is."""
        started = time.monotonic()
        try:
            broker.start()
            body(broker)
            if not broker.alive():
                row.note = _join(row.note, f"broker exited during the run: {broker.output()[-300:]!r}")
        except (BrokerError, loadgen.LoadError, OSError, ValueError) as error:
            row.note = _join("failed", f"{type(error).__name__}: {error}")
        finally:
            broker.stop()
        if keep:
            self.rows.append(row)
        self.log(f"  {row.scenario:9} {row.label:>13} {row.broker:10} " + describe(row)
                 + f"  [{time.monotonic() - started:.1f} s]")
        return row

    def prefill(self, broker, count):
        """Queue ``count`` jobs, pipelined (not measured)."""
        if count <= 0:
            return
        proto = broker.protocol
        socks = loadgen.connect(broker.client, 1)
        try:
            load = loadgen.pipelined(socks, proto.submit(), proto.submit_ok, self.config.batch,
                                     self.config.depth, count, self.config.run_cap)
        finally:
            loadgen.close_all(socks)
        if load.errors or load.ops < count - self.config.batch:
            raise loadgen.LoadError(f"prefill queued {load.ops} of {count} jobs: {load.first_error}")

    # -- scenarios -------------------------------------------------------------------

    def closed(self):
        cfg = self.config
        for connections in cfg.closed_connections:
            procs = cfg.closed_procs.get(connections, 1)

            def body(broker, row, connections=connections, procs=procs):
                proto = broker.protocol
                max_ops = cfg.closed_max_ops // procs
                self.measure(row, broker, broker.client, connections, loadgen.closed_loop,
                             (proto.submit(), proto.submit_ok, max_ops, cfg.duration), procs)

            self.in_turns("closed", f"{connections}", {"connections": connections}, body)

    def pipelined(self):
        """Pipelined submission of ``pipelined_jobs`` jobs; then the broker's RSS with
        all of them waiting (the memory scenario, from the same run)."""
        cfg = self.config
        for name in self.brokers_in("pipelined"):
            row = Row("pipelined", f"{cfg.batch}", name)
            memory = Row("memory", f"{cfg.pipelined_jobs:,} jobs", name)

            def body(broker, row=row, memory=memory):
                proto = broker.protocol
                memory.extra["rss_before"] = procstat.rss_bytes(broker.pid)
                self.measure(row, broker, broker.client, 1, loadgen.pipelined,
                             (proto.submit(), proto.submit_ok, cfg.batch, cfg.depth,
                              cfg.pipelined_jobs, cfg.run_cap))
                row.note = _join(row.note, f"{cfg.depth} writes of {cfg.batch} in flight")
                time.sleep(0.2)
                memory.ops = row.ops
                memory.extra["rss_after"] = procstat.rss_bytes(broker.pid)
                memory.extra["waiting"] = row.ops

            self.run_one(row, self.make(name, BIG_QUEUE), body)
            if not row.ok:
                memory.note = row.note
            self.rows.append(memory)
            self.log(f"  {'memory':9} {memory.label:>13} {name:10} " + describe(memory))

    def window(self):
        """Small reads: ``window_connections`` connections each keep
        ``window_in_flight`` submissions in flight, topping up after every read
        of replies with one write of as many requests as replies came in."""
        cfg = self.config

        def body(broker, row):
            proto = broker.protocol
            self.measure(row, broker, broker.client, cfg.window_connections, loadgen.window,
                         (proto.submit(), proto.submit_ok, cfg.window_in_flight,
                          cfg.window_jobs, cfg.duration, cfg.window_read))
            writes = row.extra.get("writes")
            if writes:
                row.extra["per_write"] = row.extra["sent"] / writes
                row.note = _join(row.note, f"{row.extra['per_write']:.1f} requests per write")

        self.in_turns("window", f"{cfg.window_connections} × {cfg.window_in_flight}",
                      {"connections": cfg.window_connections}, body)

    def cycle(self):
        """Workers doing FETCH + DONE on a prefilled queue."""
        cfg = self.config

        def body(broker, row):
            self.prefill(broker, cfg.cycle_prefill)
            self.measure(row, broker, broker.worker, cfg.cycle_workers, loadgen.cycle,
                         (broker.protocol, cfg.cycle_prefill, cfg.duration))

        self.in_turns("cycle", f"{cfg.cycle_workers}", {"idle": 0}, body)

    def scaling(self):
        for idle in self.config.idle_levels:
            self.cycle_beside_idle(idle)

    def cycle_beside_idle(self, idle):
        """The job cycle with ``idle`` connections held open, measured
        ``scaling_repeats`` times on the same broker (the median by throughput is
        the row's result)."""
        cfg = self.config
        repeats = cfg.scaling_repeats
        duration = cfg.duration / repeats
        for name in self.brokers_in("scaling"):
            row = Row("scaling", f"{idle:,}", name, extra={"idle": idle})

            def body(broker, row=row):
                held = []
                try:
                    if idle:
                        held = self.hold_idle(broker, idle, row)
                    self.prefill(broker, cfg.cycle_prefill)
                    runs = []
                    for _ in range(repeats):
                        run = Row("scaling", row.label, name)
                        self.measure(run, broker, broker.worker, cfg.cycle_workers, loadgen.cycle,
                                     (broker.protocol, cfg.cycle_prefill, duration))
                        runs.append(run)
                    runs.sort(key=lambda r: r.throughput or 0)
                    chosen = runs[len(runs) // 2]
                    note = row.note
                    row.__dict__.update({k: v for k, v in chosen.__dict__.items()
                                         if k not in ("extra", "note")})
                    row.note = _join(note, chosen.note, "median of {} runs ({})".format(
                        repeats, ", ".join(fmt_k(r.throughput) for r in runs)))
                    row.extra["runs"] = run_spread(runs)
                    if name == "threads":
                        row.extra["threads"] = procstat.thread_count(broker.pid)
                    row.extra["rss"] = procstat.rss_bytes(broker.pid)
                finally:
                    loadgen.close_all(held)

            self.run_one(row, self.make(name, BIG_QUEUE), body)

    def hold_idle(self, broker, count, row):
        """Open ``count`` idle client connections and wait until the broker counts
        them all; returns the sockets. Falls short (noted in the row) rather than fail."""
        loadgen.raise_nofile(count + 2048)
        socks = []
        try:
            socks = loadgen.connect(broker.client, count, timeout=60)
        except OSError as error:
            row.note = _join(row.note, f"could not open {count} idle connections: {error}")
            # Open as many as the broker takes, in smaller steps.
            while len(socks) < count:
                try:
                    socks += loadgen.connect(broker.client, min(500, count - len(socks)), timeout=10)
                except OSError:
                    break
        counted = self.connection_count(broker, expect=len(socks) + 1)
        row.extra["idle_open"] = len(socks)
        row.extra["idle_counted"] = counted
        if counted is None or counted < len(socks) + 1:
            row.note = _join(row.note, f"broker counts {counted} connections of {len(socks) + 1}")
        return socks

    def connection_count(self, broker, expect, timeout=60.0):
        proto = broker.protocol
        deadline = time.monotonic() + timeout
        count = None
        with loadgen.connect(broker.client, 1)[0] as sock:
            while time.monotonic() < deadline:
                count = loadgen.request(sock, proto.stats, proto.parse_stats)
                if count >= expect:
                    break
                time.sleep(0.1)
        return count

    def dispatch(self):
        cfg = self.config
        for name in self.brokers_in("dispatch"):
            self.dispatch_row(name, "long-poll" if name != "beanstalkd" else "reserve",
                              loadgen.dispatch_waiting, cfg.dispatch_samples)
        for name in self.brokers_in("dispatch"):
            if name != "beanstalkd":
                self.dispatch_row(name, f"polling {cfg.polling_interval:g} s",
                                  loadgen.dispatch_polling, cfg.polling_samples,
                                  cfg.polling_interval)

    def dispatch_row(self, name, label, load, *args):
        """One client and one worker; ``load(client, worker, protocol, *args)``."""
        row = Row("dispatch", label, name)

        def body(broker):
            client, = loadgen.connect(broker.client, 1)
            worker, = loadgen.connect(broker.worker, 1)
            try:
                before = procstat.cpu_seconds(broker.pid)
                result = load(client, worker, broker.protocol, *args)
                row.fill(result, procstat.cpu_seconds(broker.pid) - before)
            finally:
                loadgen.close_all([client, worker])
            row.extra["mean"] = statistics.fmean(result.latencies) if result.latencies else None

        self.run_one(row, self.make(name), body)

    def durable(self):
        cfg = self.config
        for connections in cfg.durable_connections:
            for name in self.brokers_in("durable"):
                row = Row("durable", f"{connections}", name,
                          extra={"connections": connections})
                where = tempfile.mkdtemp(prefix=f"{name}-{connections}-", dir=self.tmp.name)
                broker = self.make(name, ("--store", f"sqlite:{where}/jobs.db", *BIG_QUEUE),
                                   ("-b", where, "-f", "0"), ("--journal", f"{where}/journal"))

                def body(broker, row=row, connections=connections):
                    proto = broker.protocol
                    self.measure(row, broker, broker.client, connections, loadgen.closed_loop,
                                 (proto.submit(), proto.submit_ok, cfg.closed_max_ops, cfg.duration))

                self.run_one(row, broker, body)
                row.note = _join(row.note, DURABLE_NOTES.get(name, "sqlite WAL, synchronous=FULL"))


DURABLE_NOTES = {"beanstalkd": "binlog, fsync every write (-f 0)",
                 FLOOR: "bare journal: one pwrite + fdatasync per wake-up"}

SCENARIOS = ("closed", "pipelined", "window", "cycle", "dispatch", "scaling", "durable")
ALIASES = {"memory": "pipelined", "submit": "closed"}


def describe(row):
    if not row.ok:
        return row.note or "no result"
    parts = []
    if row.throughput:
        parts.append(f"{row.throughput:,.0f}/s")
    if row.p50 is not None:
        parts.append(f"p50 {row.p50 * 1e3:.3f} ms p99 {row.p99 * 1e3:.3f} ms")
    if row.cpu_per_op is not None and row.scenario != "memory":
        parts.append(f"cpu {row.cpu_per_op * 1e6:.2f} us/op")
    if "rss_after" in row.extra:
        parts.append(f"rss {row.extra['rss_after'] / 2**20:.1f} MiB")
    if row.note:
        parts.append(row.note)
    return ", ".join(parts)
