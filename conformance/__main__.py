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

Selection (combinable; each takes a comma list and may be repeated)
  --list             print the selected cases (id level role section title), run nothing
  --case ID[,ID...]  these cases only
  --section S        these spec sections ('framing' = framing and framing.errors)
  --level core|extended
                     core: the original system; extended: workq's additions
  --role broker|system|worker
  pytest's -k EXPRESSION and -m MARKERS (core, extended, broker, system, worker)
  work too.

Reports
  --report PATH.md   Markdown: one row per case, one column per target, totals per
                     target (core and extended), the wire transcript of each failure
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
    if "--pytest-help" in options:
        args = ["--help" if arg == "--pytest-help" else arg for arg in args]
    suite = Path(__file__).resolve().parent
    # -p by name, so that a conftest's pytest_plugins entry naming the same
    # module does not register it twice.
    return int(pytest.main(["-p", "conformance.plugin", "--rootdir", str(suite.parent),
                            str(suite), *args]))


if __name__ == "__main__":
    sys.exit(main())
