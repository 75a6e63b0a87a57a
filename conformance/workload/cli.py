"""``python3 -m conformance --workload [options]``: run the workload mode.

Exit status: 0 every target's history is valid, 1 an anomaly was found,
2 bad options (a one-line usage error), 3 the run could not be carried out
(a target did not start, ...).
"""

import argparse
import os
import sys
import time
from pathlib import Path

from ..grammar import GrammarError, number, rules
from ..netns import describe, enter_private_netns
from ..specfile import default_spec, load_spec
from ..targetset import TargetOptionError, check_ports, resolve_targets
from .checkers import check
from .history import load_history
from .nemesis import KINDS, NemesisError, parse_nemesis
from .report import write_results

__all__ = ["main", "EXIT_VALID", "EXIT_ANOMALY", "EXIT_USAGE", "EXIT_NOT_RUN"]

EXIT_VALID, EXIT_ANOMALY, EXIT_USAGE, EXIT_NOT_RUN = 0, 1, 2, 3
REPO_ROOT = Path(__file__).resolve().parents[2]

DESCRIPTION = """\
Runs a random, seeded workload against a broker and its workers with faults
injected (the nemesis), records every operation, fault and datagram in a
history, and checks it: jobs lost, ids issued twice, a job held by two
workers, DONE accepted from a non-holder, STATUS going backwards or stale,
FIFO violated, words missing, out of order, torn or sent after DONE, replies
the protocol does not allow, requests left unanswered, crashes, the queue
not draining after the faults stop. Exit status: 0 valid, 1 anomaly found,
2 bad options, 3 could not run. More in IMPLEMENTERS.md, "Workload mode"."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _grammar():
    """The spec's number rules, read once (the suite never parses numbers with
    float() or int() alone: spec section grammar)."""
    if not hasattr(_grammar, "rules"):
        _grammar.rules = rules(load_spec(default_spec()))
    return _grammar.rules


def _by_rule(rule, text):
    try:
        return number(_grammar(), rule, text, "value")
    except GrammarError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("value: ")) from None


def _positive(text):
    value = _by_rule("seconds", text)
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 3600")
    return value


def _count(text):
    value = _by_rule("whole_number", text)
    if not 2 <= value <= 32:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 2 to 32")
    return value


def _seed(text):
    return _by_rule("whole_number", text)


def parser():
    p = _Parser(prog="python3 -m conformance --workload", description=DESCRIPTION,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--time", type=_positive, default=20.0, metavar="S",
                   help="seconds of load (default 20); faults stop at 75%% of it, then the "
                        "queue must drain")
    p.add_argument("--seed", type=_seed, default=None, metavar="N",
                   help="seed of every random choice (default: a random one, printed)")
    p.add_argument("--nemesis", default="all", metavar="LIST",
                   help=f"faults: a comma list of {', '.join(KINDS)}; all (default: those the "
                        "target supports) or none")
    p.add_argument("--results", default=None, metavar="DIR",
                   help="results folder (default workload-results/RUN); with several targets "
                        "one subfolder per target")
    p.add_argument("--impl", metavar="select|threads|select,threads",
                   help="our implementation(s) (default select when no other target is given)")
    p.add_argument("--broker-cmd", metavar="TEMPLATE",
                   help="your broker, as for the suite: {client_port} {worker_port} {python}")
    p.add_argument("--worker-cmd", metavar="TEMPLATE",
                   help="your worker, as for the suite: {broker} {output_port} {syslog_port} "
                        "{word_delay} {fetch_interval} {python} ...")
    p.add_argument("--target", action="append", metavar="NAME=BROKER[;WORKER]",
                   help="a named target (repeatable); a missing part is our select "
                        "implementation")
    p.add_argument("--durable", action="store_true",
                   help="the broker command keeps its jobs across a restart (enables "
                        "restart-broker for a third-party broker; ours get --store sqlite:)")
    p.add_argument("--rate", type=_positive, default=40.0, metavar="N",
                   help="jobs a second the clients offer, in total (default 40)")
    p.add_argument("--workers", type=_count, default=3, metavar="N",
                   help="target worker processes (default 3)")
    p.add_argument("--word-delay", type=_positive, default=0.01, metavar="S",
                   help="{word_delay} in worker templates (default 0.01)")
    p.add_argument("--fetch-interval", type=_positive, default=0.05, metavar="S",
                   help="{fetch_interval} in worker templates (default 0.05)")
    p.add_argument("--netns", choices=["auto", "off"], default="auto",
                   help="auto: run in a private network namespace where permitted")
    p.add_argument("--mcast-capture", choices=["auto", "off"], default="auto",
                   help="auto: capture datagrams and DONE lines on lo with scapy where "
                        "permitted; off: a joined receiver socket (DONE unseen)")
    p.add_argument("--check", metavar="HISTORY",
                   help="run nothing: check a saved history.jsonl again, print the summary")
    return p


def main(argv):
    """Entry point; returns the exit status."""
    from ..plugin import IMPLEMENTATIONS   # the suite's templates of our implementations
    from .workload import RunError, WorkloadOptions, WorkloadRun
    options = parser().parse_args(argv)
    if options.check:
        try:
            events = load_history(options.check)
        except (OSError, ValueError) as error:
            print(f"python3 -m conformance --workload: error: {error}", file=sys.stderr)
            return EXIT_USAGE
        verdict = check(events)
        folder = options.results or os.path.dirname(os.path.abspath(options.check))
        name = next((e["value"].get("name") for e in events if e["f"] == "target"), None)
        print(write_results(folder, name or "rechecked", events, verdict), end="")
        return EXIT_VALID if verdict["valid"] else EXIT_ANOMALY
    try:
        kinds = parse_nemesis(options.nemesis)
        targets = resolve_targets(
            options.impl, options.broker_cmd, options.worker_cmd, None, options.target,
            {name: IMPLEMENTATIONS["impl_" + name] for name in ("select", "threads")})
        check_ports(targets)
    except (NemesisError, TargetOptionError) as error:
        print(f"python3 -m conformance --workload: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if any(target.broker_addr for target in targets):
        print("python3 -m conformance --workload: error: a broker given as @HOST:PORTS "
              "cannot be started, paused or restarted: give its command", file=sys.stderr)
        return EXIT_USAGE
    seed = options.seed if options.seed is not None else int(time.time()) % 1_000_000
    network = ("loopback (--netns off)" if options.netns == "off"
               else describe(enter_private_netns()))
    results = options.results or os.path.join(
        "workload-results", time.strftime("%Y%m%d-%H%M%S"))
    print(f"workq workload: seed {seed}, {options.time:g} s, network: {network}", flush=True)
    status = EXIT_VALID
    for target in targets:
        folder = results if len(targets) == 1 else os.path.join(results, target.name)
        run_options = WorkloadOptions(
            seconds=options.time, seed=seed, nemesis=kinds, word_delay=options.word_delay,
            fetch_interval=options.fetch_interval, durable=options.durable,
            cwd=REPO_ROOT, capture=options.mcast_capture == "auto", workers=options.workers,
            rate=options.rate)
        run_options.nemesis_explicit = options.nemesis not in ("all", "")
        run_options.ours_broker = target.broker_cmd in {
            broker for broker, _ in IMPLEMENTATIONS.values()}
        run = WorkloadRun(target, run_options)
        try:
            events = run.execute()
        except RunError as error:
            print(f"workq workload: {target.name}: could not run: {error}", file=sys.stderr)
            return EXIT_NOT_RUN
        if run.errors:
            print(f"workq workload: {target.name}: could not run: {run.errors[0]}",
                  file=sys.stderr)
            return EXIT_NOT_RUN
        verdict = check(events)
        print(write_results(folder, target.name, events, verdict, run.history), end="")
        print(f"workq workload results: {folder}", flush=True)
        if not verdict["valid"]:
            status = EXIT_ANOMALY
    return status
