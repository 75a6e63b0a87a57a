"""``python3 -m conformance [options]``: run the conformance suite.

Without options it tests our select implementation. ``--help`` shows the
suite's own options; any pytest option works too (``--pytest-help`` lists
them). The exit status is pytest's: 0 when every selected case passed, 1
when one failed.
"""

import sys
import textwrap
from pathlib import Path

import pytest

from .specfile import from_checkout

USAGE = """\
usage: python3 -m conformance [OPTIONS] [PYTEST OPTIONS]

Runs the exchanges of spec/protocol.yaml against a broker and workers started
from command templates, one test per case (named by its id, e.g. JOB-001).
Without options: against our select implementation.

Targets (what is tested)
  --impl select|threads|select,threads
                     our implementation(s); the default when no --target is given
  --broker-cmd TEMPLATE
                     your broker; placeholders:
{broker_placeholders}
  --worker-cmd TEMPLATE
                     your worker; placeholders:
{worker_placeholders}
  --broker-addr HOST:CLIENT_PORT:WORKER_PORT
                     a broker that already runs (cases needing a fresh one are skipped)
  --target NAME=BROKER_TEMPLATE[;WORKER_TEMPLATE]
                     a named target, repeatable: every case runs once per target,
                     test ids become ID[NAME]; a missing part is our select
                     implementation; BROKER may be @HOST:CLIENT_PORT:WORKER_PORT
  --replies [TARGET:]STYLE
                     how a target words its client-port replies: workq (ID n,
                     completed; the default), assignment (a bare n, complete), or
                     id=FORMAT,STATE=WORD,... (<n> stands for the id); without
                     TARGET: every target not given by --impl. For a broker-worker
                     pair with a protocol of its own: --role system

Selection (combinable; each takes a comma list and may be repeated)
  --list             print the selected cases (id level role section title), run nothing
  --case ID[,ID...]  these cases only
  --section S        these spec sections ('framing' = framing and framing.errors)
  --level core|extended
                     core: exactly what the assignment requires; extended:
                     workq's additions and choices (TTL 1, syslog details, ...)
  --role broker|system|worker
  pytest's -k EXPRESSION and -m MARKERS (core, extended, broker, system, worker)
  work too.

Reports
  --report PATH.md   Markdown: the run's conditions, totals per target (core and
                     extended), failures grouped by cause, one row per case and one
                     column per target, the wire transcript of each failure
  --report-html PATH.html
                     the same as one HTML page
  --junitxml PATH.xml
                     JUnit XML (pytest's option); each testcase carries the properties
                     id, target, title, level, role and section

Other
  --workload         run the workload mode instead: random load, injected faults,
                     a checked history (python3 -m conformance --workload --help)
  --spec PATH        another spec file (default spec/protocol.yaml)
  --word-delay S, --fetch-interval S
                     the values of {{word_delay}} and {{fetch_interval}} in worker
                     templates; the timing checks compare against them
  --mcast-capture auto|off
                     auto: check the multicast output with a capture on lo where
                     permitted (destination, TTL); off: a joined receiver socket only
  --netns auto|off   auto: each test process runs in a private network namespace
                     where the system permits it
  -n N               run N test processes in parallel (pytest-xdist)
  -x, -v, -q, -rs    stop at the first failure, more or less output, skip reasons

Examples
  python3 -m conformance --list --level core
  python3 -m conformance --broker-cmd './broker {{client_port}} {{worker_port}}' --level core
  python3 -m conformance --impl select,threads --report report.md -n 4
  python3 -m conformance --target 'alice=alice/broker {{client_port}} {{worker_port}}' \\
      --target 'bob=java -jar bob/broker.jar {{client_port}} {{worker_port}}' --report class.md
  python3 -m conformance --role system --replies assignment \
      --target 'carol=carol/broker {{client_port}} {{worker_port}};carol/worker {{broker}} {{output_port}} {{syslog_port}}'

Exit status: 0 every selected case passed, 1 some failed, 4 bad options,
5 no case selected. More in IMPLEMENTERS.md. All of pytest's options:
python3 -m conformance --pytest-help
"""


def usage():
    # Imported here only: imported before pytest starts, the plugin would
    # escape pytest's assertion rewriting (and pytest would warn).
    from .plugin import BROKER_PLACEHOLDERS, WORKER_PLACEHOLDERS

    def names(placeholders):
        text = " ".join("{%s}" % name for name in placeholders)
        return "\n".join(textwrap.wrap(text, 79, initial_indent=" " * 21,
                                        subsequent_indent=" " * 21))
    # The placeholder lists come from the plugin; the examples' braces are doubled.
    return USAGE.replace("{broker_placeholders}", names(BROKER_PLACEHOLDERS)) \
        .replace("{worker_placeholders}", names(WORKER_PLACEHOLDERS)) \
        .replace("{{", "{").replace("}}", "}")


def _process_count_error(options):
    """pytest-xdist reads ``-n N`` with ``int()``, which takes ``\u0662`` and
    ``1_0``; the suite holds it to the spec's whole_number rule (or auto,
    logical). Returns a one-line error, or None."""
    from .grammar import rules
    from .specfile import load_spec
    for index, option in enumerate(options):
        if option in ("-n", "--numprocesses") and index + 1 < len(options):
            value = options[index + 1]
        elif option.startswith("--numprocesses="):
            value = option.split("=", 1)[1]
        elif option.startswith("-n") and len(option) > 2 and not option.startswith("--"):
            value = option[2:]
        else:
            continue
        if value in ("auto", "logical"):
            continue
        # The checkout's spec: the suite's own options are not the tested protocol's.
        spec = load_spec(Path(__file__).resolve().parent.parent / "spec" / "protocol.yaml")
        regex = rules(spec).get("whole_number")
        if regex is not None and not regex.fullmatch(value):
            return (f"ERROR: -n: {value!r} does not match the spec's grammar rule whole_number "
                    f"({regex.pattern}), nor auto or logical")
    return None


def main(argv=None):
    args = sys.argv[1:] if argv is None else list(argv)
    if "--workload" in args:
        # The workload mode (conformance/workload/): no pytest, its own options.
        from .workload.cli import main as workload_main
        return workload_main(args)
    options = args[:args.index("--")] if "--" in args else args
    if "-h" in options or "--help" in options:
        sys.stdout.write(usage())
        return 0
    problem = _process_count_error(options)
    if problem:
        print(problem, file=sys.stderr)
        return 4            # pytest's status for bad options, as the usage says
    if "--pytest-help" in options:
        args = ["--help" if arg == "--pytest-help" else arg for arg in args]
    suite = Path(__file__).resolve().parent
    # Installed, the rootdir is site-packages: pytest's cache goes to the
    # directory the run started in instead (a later -o cache_dir wins).
    cache = [] if from_checkout() else ["-o", f"cache_dir={Path.cwd() / '.pytest_cache'}"]
    # -p by name, so that a conftest's pytest_plugins entry naming the same
    # module (or the pytest11 entry point, which has its name) does not
    # register it twice.
    return int(pytest.main(["-p", "conformance.plugin", "--rootdir", str(suite.parent),
                            *cache, str(suite), *args]))


if __name__ == "__main__":
    sys.exit(main())
