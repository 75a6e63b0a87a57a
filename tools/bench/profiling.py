"""``--profile``: the select broker under cProfile, for the closed loop (1 and
16 clients), durable submit with one client (``--store sqlite:``), pipelined
submit, the window and the job cycle, summarised as
tables for BENCHMARKS.md: each function's own time per call (µs) and calls per
job, so the report can say where each microsecond of a job goes.

The broker runs as ``python3 -m cProfile -o FILE -m impl_select.broker ...``
and is stopped with SIGINT: it leaves its serve loop, ``main`` returns, and
cProfile writes FILE on the way out. A broker that does not exit cleanly, or
leaves no file, is reported as such.
"""

import pstats
import tempfile
import time
from pathlib import Path

from . import loadgen, procstat
from .report import table
from .scenarios import BIG_QUEUE
from .servers import ROOT, BrokerError, OurBroker

TOP = 15
# Closed-loop profiles: at most this many jobs (the run's duration bounds them too).
CLOSED_JOBS = {1: 30_000, 16: 200_000}
# The durable profile, one client: each job its own commit (a few thousand a second).
DURABLE_JOBS = 10_000


def run(config, log=print):
    """Profile each scenario; returns [{title, summary, tottime, cumtime}]."""
    results = []
    with tempfile.TemporaryDirectory(prefix="workq-profile-") as tmp:
        for clients, cap in CLOSED_JOBS.items():
            jobs = min(cap, config.closed_max_ops)
            results.append(_profiled(
                Path(tmp) / f"closed{clients}.prof",
                f"Submit, closed loop, {clients} client{'s' * (clients != 1)} "
                f"(up to {jobs:,} jobs or {config.duration:g} s)",
                lambda broker, clients=clients, jobs=jobs: _closed(broker, config, clients, jobs),
                log))
        jobs = min(DURABLE_JOBS, config.closed_max_ops)
        results.append(_profiled(
            Path(tmp) / "durable1.prof",
            f"Durable submit, 1 client (`--store sqlite:`, up to {jobs:,} jobs or "
            f"{config.duration:g} s)",
            lambda broker: _closed(broker, config, 1, jobs), log,
            options=("--store", f"sqlite:{tmp}/jobs.db", *BIG_QUEUE)))
        jobs = min(config.pipelined_jobs, 500_000)
        results.append(_profiled(
            Path(tmp) / "pipelined.prof",
            f"Pipelined submit ({jobs:,} jobs, batches of {config.batch})",
            lambda broker: _pipelined(broker, config, jobs), log))
        jobs = min(config.window_jobs, 500_000)
        results.append(_profiled(
            Path(tmp) / "window.prof",
            f"Window submit ({config.window_connections} connections × "
            f"{config.window_in_flight} in flight, up to {jobs:,} jobs or {config.duration:g} s)",
            lambda broker: _window(broker, config, jobs), log))
        prefill = max(config.cycle_prefill // 3, 1000)
        results.append(_profiled(
            Path(tmp) / "cycle.prof",
            f"Job cycle ({config.cycle_workers} workers, FETCH + DONE, {prefill:,} jobs)",
            lambda broker: _cycle(broker, config, prefill), log))
    return results


def _closed(broker, config, clients, jobs):
    proto = broker.protocol
    socks = loadgen.connect(broker.client, clients)
    try:
        return loadgen.closed_loop(socks, proto.submit(), proto.submit_ok, jobs, config.duration)
    finally:
        loadgen.close_all(socks)


def _window(broker, config, jobs):
    proto = broker.protocol
    socks = loadgen.connect(broker.client, config.window_connections)
    try:
        return loadgen.window(socks, proto.submit(), proto.submit_ok, config.window_in_flight,
                              jobs, config.duration, config.window_read)
    finally:
        loadgen.close_all(socks)


def _pipelined(broker, config, jobs):
    proto = broker.protocol
    socks = loadgen.connect(broker.client, 1)
    try:
        return loadgen.pipelined(socks, proto.submit(), proto.submit_ok, config.batch,
                                 config.depth, jobs, config.run_cap)
    finally:
        loadgen.close_all(socks)


def _cycle(broker, config, prefill):
    proto = broker.protocol
    socks = loadgen.connect(broker.client, 1)
    try:
        loadgen.pipelined(socks, proto.submit(), proto.submit_ok, config.batch, config.depth,
                          prefill, config.run_cap)
    finally:
        loadgen.close_all(socks)
    socks = loadgen.connect(broker.worker, config.cycle_workers)
    try:
        return loadgen.cycle(socks, proto, prefill, config.run_cap)
    finally:
        loadgen.close_all(socks)


def _profiled(path, title, load, log, options=BIG_QUEUE):
    """Run ``load(broker)`` against the select broker (started with ``options``)
    under cProfile writing ``path``; returns {title, summary[, tottime, cumtime]}."""
    broker = OurBroker("select", options, profile_to=path)
    entry = {"title": title}
    try:
        broker.start()
        before = procstat.cpu_seconds(broker.pid)
        result = load(broker)
        cpu = procstat.cpu_seconds(broker.pid) - before
        status = broker.stop()
    except (BrokerError, loadgen.LoadError, OSError) as error:
        broker.stop()
        entry["summary"] = f"Profile run failed: {type(error).__name__}: {error}"
        log(f"  profile    {title}: {entry['summary']}")
        return entry
    for _ in range(50):                       # the file is written as the process exits
        if path.exists():
            break
        time.sleep(0.05)
    clean = "exited cleanly on SIGINT (status 0)" if status == 0 else f"exited with status {status}"
    if not path.exists():
        entry["summary"] = f"The profiled broker {clean} but wrote no profile file."
        log(f"  profile    {title}: {entry['summary']}")
        return entry
    stats = pstats.Stats(str(path))
    rate = result.ops / result.elapsed if result.elapsed else 0
    entry["summary"] = (
        f"{result.ops:,} operations in {result.elapsed:.2f} s under the profiler "
        f"({rate:,.0f}/s, broker CPU {cpu / max(result.ops, 1) * 1e6:.2f} µs/op, "
        f"{result.errors} errors); the broker {clean} and wrote its profile; "
        f"{stats.total_calls:,} function calls, {stats.total_tt:.2f} s profiled in all"
        + (" (the job-cycle profile includes submitting its prefill)" if "cycle" in path.name else "")
        + ".")
    entry["tottime"] = _top(stats, 2, result.ops)
    entry["cumtime"] = _top(stats, 3, result.ops)
    log(f"  profile    {title}: {rate:,.0f}/s under cProfile, {clean}")
    return entry


def _top(stats, column, ops):
    """The TOP functions by tottime (column 2) or cumtime (column 3), as a table,
    with own time per call (µs), calls per operation and own time per operation
    (µs; ``ops`` operations were measured; the cycle's include its prefill's
    submissions, so its calls per op count those too)."""
    total = stats.total_tt or 1.0
    ops = max(ops, 1)
    ordered = sorted((item for item in stats.stats.items() if not _wrapper(*item[0])),
                     key=lambda item: item[1][column], reverse=True)
    body = []
    for (filename, line, name), (cc, nc, tt, ct, _) in ordered[:TOP]:
        calls = f"{nc:,}" if cc == nc else f"{nc:,}/{cc:,}"
        body.append([f"`{_where(filename, line, name)}`", calls, f"{nc / ops:.3f}",
                     f"{tt / max(nc, 1) * 1e6:.2f}", f"{tt / ops * 1e6:.2f}", f"{tt:.3f}",
                     f"{tt / total * 100:.1f} %", f"{ct:.3f}", f"{ct / total * 100:.1f} %"])
    return table(["function", "calls", "calls/op", "tottime µs/call", "tottime µs/op",
                  "tottime s", "tottime %", "cumtime s", "cumtime %"], body)


def _wrapper(filename, line, name):
    """The frames around the broker's main (cProfile's exec, runpy, module bodies)."""
    return (name == "<module>" or filename.startswith("<frozen") or filename == "<string>"
            or (filename == "~" and name == "<built-in method builtins.exec>"))


def _where(filename, line, name):
    if filename == "~":
        return name
    path = Path(filename)
    try:
        shown = str(path.resolve().relative_to(ROOT))
    except ValueError:
        shown = path.name
    return f"{shown}:{line}({name})"
