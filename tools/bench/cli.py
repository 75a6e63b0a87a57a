"""Command line of ``python3 -m tools.bench``."""

import argparse
import os
import shlex
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from core.grammar import parse_seconds, parse_whole
from core.options import UsageParser, number_type

from . import corecost, instructions, loadgen, procstat, profiling, report
from .scenarios import ALIASES, SCENARIOS, Bench, Config
from .servers import (ALL_BROKERS, OUR_BROKERS, ROOT, Broker, BrokerError, beanstalkd_version,
                      find_beanstalkd, resolve_revision, split_cpus, split_revision)

MAX_ROUNDS = 25        # closed loop and cycle at 25 rounds: about an hour with every broker

EPILOG = """\
scenarios: closed (submit, closed loop: 1, 16, 256 clients), pipelined (batches
of 100 per write; the same run gives the memory table, 1,000,000 waiting jobs),
window (small reads: 4 connections each keep 100 submissions in flight; after
each read of replies, at most 64 bytes, one write of as many new ones), cycle
(FETCH + DONE), dispatch (long-poll and polling latency), scaling (cycle with
100 / 1,000 / 10,000 idle connections), durable (sqlite store vs beanstalkd -b
-f 0 and the floor with a bare journal, 1 and 16 clients). Every run is bounded
in count and time, on 127.0.0.1 only.

brokers: beanstalkd, select, threads, and for reference original (the original
system's broker), floor (a bare Python read-answer loop) and shell (the select
broker with the floor's answer in place of its core's); select@REV is the
select broker as it was at git revision REV (its tree exported with git archive
into a temporary directory, started like select).

examples:
  python3 -m tools.bench                      the full run (a few minutes)
  python3 -m tools.bench --profile --baseline 3e03e1e
                                              ... plus the select broker's profile,
                                              and select@3e03e1e in closed and cycle
                                              (the run BENCHMARKS.md comes from)
  python3 -m tools.bench --scenarios closed,cycle --brokers select,select@HEAD~5
  python3 -m tools.bench --quick --output /tmp/b.md --plots-dir /tmp/plots
  python3 -m tools.bench --scenarios cycle,dispatch --brokers select,beanstalkd
  python3 -m tools.bench --replot             the PNGs again from benchmarks/runs.json
                                              (every run of the last bench, saved by it)
"""


def parse_args(argv):
    parser = UsageParser(
        prog="python3 -m tools.bench",
        description="Benchmark the workq brokers (select, threads) against beanstalkd on this "
                    "machine with one load generator, with the original system's broker and a "
                    "bare Python loop (floor) for reference; writes BENCHMARKS.md and PNG plots.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="tiny counts and short runs (a smoke test; numbers mean nothing)")
    parser.add_argument("--profile", action="store_true",
                        help="also run the select broker under cProfile (closed loop with 1 "
                             "and 16 clients, pipelined, window, job cycle) and put its top "
                             "functions, with µs per call and calls per job, in the report; "
                             "then time the core's steps per request in process "
                             "(tools/bench/corecost.py) and count the instructions per request "
                             "of the floor, the shell and select under valgrind "
                             "(tools/bench/instructions.py; apt-get installs valgrind when root "
                             "and missing) for the report's \"where the remaining time goes\"")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated subset of {','.join(SCENARIOS)} (default: all; "
                             "memory is part of pipelined)")
    parser.add_argument("--brokers", default=",".join(ALL_BROKERS),
                        help=f"comma-separated subset of {','.join(ALL_BROKERS)}, and "
                             "select@REV: the select broker at git revision REV, e.g. "
                             "select@3e03e1e (default: all but select@REV)")
    parser.add_argument("--baseline", metavar="REV",
                        help="also run select@REV (the select broker at git revision REV) in "
                             "the closed loop and the job cycle, for the target 'additions "
                             "since REV cost nothing measurable' (default: none)")
    parser.add_argument("--duration", type=number_type(parse_seconds, positive=True, high=60),
                        help="seconds of each time-bounded run, at most 60 "
                             "(default 3, --quick 0.3)")
    parser.add_argument("--rounds", type=number_type(parse_whole, 1, MAX_ROUNDS,
                                                     what="a number of rounds"),
                        help="runs per broker in the closed loop and the job cycle, the "
                             "brokers taking turns, the median kept; more rounds narrow "
                             "the median where runs spread, at 3 s a run per broker each "
                             f"(1 to {MAX_ROUNDS}; default 5, --quick 1)")
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"),
                        help="the report to write (default: BENCHMARKS.md in the checkout)")
    parser.add_argument("--plots-dir", default=str(ROOT / "benchmarks"),
                        help="where the PNG plots go (default: benchmarks/ in the checkout)")
    parser.add_argument("--replot", nargs="?", const="", metavar="RUNS.json",
                        help="measure nothing: draw the PNG plots again from the runs a bench "
                             f"run saved (default: {report.RUNS_FILE} in --plots-dir)")
    parser.add_argument("--no-install", action="store_true",
                        help="do not apt-get install beanstalkd (or valgrind, for --profile) "
                             "when it is missing")
    parser.add_argument("--wait-quiet", type=number_type(parse_seconds), default=0.0,
                        metavar="SECONDS",
                        help="first wait up to this long for the 1-minute load average to drop "
                             "below --quiet-load (default: do not wait)")
    parser.add_argument("--quiet-load", type=number_type(parse_seconds, what="a load average"),
                        default=1.0,
                        help="load average counted as quiet (default 1.0)")
    args = parser.parse_args(argv)
    args.scenario_list = _choose(args.scenarios, SCENARIOS, ALIASES, parser, "scenario")
    revisions = [name for name in (part.strip() for part in args.brokers.split(","))
                 if split_revision(name)[1] is not None]
    args.baselines = []
    if args.baseline is not None:
        args.baselines = [f"select@{args.baseline}"]
    for name in revisions + args.baselines:
        flavour, revision = split_revision(name)
        if flavour not in OUR_BROKERS or not revision:
            parser.error(f"unknown broker {name!r}; a revision is given as "
                         f"{'|'.join(OUR_BROKERS)}@REV, e.g. select@3e03e1e")
        try:
            resolve_revision(revision)
        except ValueError as error:
            parser.error(f"{name}: {error}")
    args.baselines = [name for name in args.baselines if name not in revisions]
    args.broker_list = _order(_choose(args.brokers, ALL_BROKERS + tuple(revisions), {}, parser,
                                      "broker") + args.baselines)
    return args


def _order(names):
    """Each select@REV right after its flavour, the others in ALL_BROKERS order."""
    def key(name):
        flavour, revision = split_revision(name)
        return (ALL_BROKERS.index(flavour), revision is not None)
    return sorted(dict.fromkeys(names), key=key)


def _choose(text, known, aliases, parser, what):
    chosen = []
    for name in (part.strip() for part in text.split(",") if part.strip()):
        name = aliases.get(name, name)
        if name not in known:
            parser.error(f"unknown {what} {name!r}; choose from {', '.join(known)}")
        if name not in chosen:
            chosen.append(name)
    return [name for name in known if name in chosen]      # a fixed order


def replot(runs_path, plots_dir):
    """``--replot``: the PNGs again from saved runs; exit status 0, or 1 with one
    line when the file cannot be read or matplotlib is missing."""
    try:
        rows, meta = report.load_runs(runs_path)
    except (OSError, ValueError) as error:
        log(f"bench: cannot replot from {runs_path}: {getattr(error, 'strerror', None) or error}")
        return 1
    plots, message = report.plot(rows, plots_dir, meta.get("brokers") or
                                 sorted({row.broker for row in rows}), meta)
    if message:
        log(f"bench: {message}")
        return 1
    log("bench: wrote " + ", ".join(str(path) for _, path in plots))
    return 0


def log(message):
    print(message, file=sys.stderr, flush=True)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.replot is not None:
        return replot(args.replot or str(Path(args.plots_dir) / report.RUNS_FILE), args.plots_dir)
    config = Config.quick() if args.quick else Config.full()
    if args.duration is not None:
        config.duration = args.duration
    if args.rounds is not None:
        config.rounds = args.rounds
    started = time.monotonic()
    # A bench started in the background (nohup, &) inherits SIGINT ignored, and an
    # ignored signal stays ignored across exec: the floor and the original, which
    # stop on SIGINT's KeyboardInterrupt, then sat out STOP_TIMEOUT on every run
    # (15 s each). A handler here is reset to the default in every child.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # Brokers inherit it: beanstalkd, too, must be able to hold 10,000 idle connections.
    loadgen.raise_nofile(1 << 20)
    split = split_cpus()
    if split:
        generator_cpus, Broker.cpus = split
        os.sched_setaffinity(0, generator_cpus)      # generator processes inherit it
    if args.wait_quiet > 0:
        procstat.wait_for_quiet(args.wait_quiet, args.quiet_load, log)
    load_before = procstat.load_average()

    path, message, version = None, "not requested", None
    if "beanstalkd" in args.broker_list:
        path, message = find_beanstalkd(install=not args.no_install, report=log)
        log(f"bench: {message}")
        version = beanstalkd_version(path) if path else None
    brokers = [b for b in args.broker_list if b != "beanstalkd" or path]

    bench = Bench(config, brokers, path, log, baselines=args.baselines,
                  probe_cpus=split and set().union(*split))
    revisions = {}                 # select@REV -> the commit's short hash
    try:
        for name in brokers:
            revision = split_revision(name)[1]
            if revision:
                bench.checkout(revision)
                revisions[name] = resolve_revision(revision)[:12]
    except (BrokerError, ValueError) as error:
        bench.close()
        log(f"bench: {error}")
        return 1
    log(f"bench: brokers {', '.join(brokers)}; scenarios {', '.join(args.scenario_list)}"
        f"{' (quick)' if args.quick else ''}")
    profiles = core_costs = None
    try:
        for scenario in args.scenario_list:
            log(f"bench: {scenario}")
            getattr(bench, scenario)()
        if args.profile:
            log("bench: profile of the select broker")
            profiles = profiling.run(config, log)
            log("bench: the core's steps, timed in process")
            core_costs = corecost.measure()
            core_costs["store"] = corecost.measure_store()
            log("bench: instructions per request under valgrind")
            counts = (160, 480) if args.quick else (instructions.SMALL, instructions.LARGE)
            core_costs["instructions"] = instructions.measure(log, not args.no_install, *counts)
    except KeyboardInterrupt:
        log("bench: interrupted; writing what was measured")
    finally:
        bench.close()

    output = Path(args.output)
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = procstat.machine_info()
    plot_meta = {"machine": machine, "date": date, "quick": args.quick, "brokers": brokers,
                 "revisions": revisions}
    Path(args.plots_dir).mkdir(parents=True, exist_ok=True)
    report.save_runs(bench.rows, plot_meta, Path(args.plots_dir) / report.RUNS_FILE)
    plots, plot_message = report.plot(bench.rows, args.plots_dir, brokers, plot_meta)
    if plot_message:
        log(f"bench: {plot_message}")
    plot_links = [(title, report.relative(p, output.resolve().parent)) for title, p in plots]
    command = "python3 -m tools.bench" + "".join(" " + shlex.quote(a) for a in argv)
    if os.environ.get("TOX_ENV_NAME"):
        command += f"      (run by tox -e {os.environ['TOX_ENV_NAME']})"
    meta = {
        "date": date,
        "command": command,
        "quick": args.quick,
        "machine": machine,
        "beanstalkd_version": version,
        "beanstalkd_message": message,
        "load_before": " / ".join(f"{x:.2f}" for x in load_before),
        "load_after": " / ".join(f"{x:.2f}" for x in procstat.load_average()),
        "elapsed": time.monotonic() - started,
        "cpus": split and tuple(", ".join(map(str, sorted(cpus))) for cpus in split),
        "rounds": config.rounds,
        "slow_host": config.slow_host,
        "retakes": config.retakes,
        "retake_wait": config.retake_wait,
        "params": {"duration": config.duration, "batch": config.batch, "depth": config.depth,
                   "jobs": config.pipelined_jobs, "prefill": config.cycle_prefill,
                   "workers": config.cycle_workers, "samples": config.dispatch_samples,
                   "interval": config.polling_interval, "polls": config.polling_samples,
                   "window_connections": config.window_connections,
                   "window_in_flight": config.window_in_flight,
                   "window_read": config.window_read, "window_jobs": config.window_jobs},
        "revisions": revisions,
        "baselines": args.baselines,
    }
    targets = report.evaluate_targets(bench.rows)
    text = report.render(bench.rows, meta, targets, profiles, plot_links, plot_message,
                         core_costs)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    log(f"bench: wrote {output}" + "".join(f", {p}" for _, p in plots))
    for target, measured, theirs, verdict in targets:
        log(f"  {verdict.strip('*'):12} {target}: {measured}")
    return 0
