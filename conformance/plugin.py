"""pytest plugin: every exchange of spec/protocol.yaml is one test.

It follows pytest's "tests in YAML files" pattern: a collector reads the
spec and yields one ``ExchangeItem`` per exchange, named by its id, marked
with its level and role and keyed by its section (``-m core``, ``-k
client.job``). A failure shows the wire transcript and what the targets
printed. The suite is black-box: it starts the targets from command
templates and talks to them over sockets only.

With several targets (targetset.py) each exchange is one item per target,
``JOB-001[select]``. Case selection and --list live in selection.py; the
summary table and the Markdown/HTML reports in report.py.

Loaded but idle: installed with pip, pytest loads this plugin in every run
(the ``pytest11`` entry point, pyproject.toml), where it only adds its
options. It runs (targets, private network namespace, the spec's cases) when
a run asks for it (``suite_requested``): loaded by name (``-p
conformance.plugin``, a conftest's ``pytest_plugins``, as this checkout's
conftest.py and ``python3 -m conformance`` do), the suite's directory or spec
named as a path, or one of REQUEST_OPTIONS given, which also adds the spec's
cases to a run that does not name them.
"""

import os
import sys
import types
from pathlib import Path

import pytest

from .faultsteps import PARTITION_STEPS
from .netns import describe, enter_private_netns, inside_private_netns
from .replies import Replies, RepliesError, parse_replies, split_target
from .capture import probe_capture
from .grammar import GrammarError, number, rules as grammar_rules
from .runner import ExchangeFailure, ExchangeRun, Settings, SpecError
from .specfile import default_spec, from_checkout, load_spec
from .targets import TargetError, why_cannot_start
from .targetset import TargetOptionError, check_ports, resolve_targets

# Case selection and --list; the summary table and --report/--report-html.
pytest_plugins = ["conformance.selection", "conformance.report"]

SUITE_DIR = Path(__file__).resolve().parent
# Where our packages are importable from: a checkout's root (where the targets
# run, as they always did), or the installed packages' site-packages.
REPO_ROOT = SUITE_DIR.parent
DEFAULT_SPEC = default_spec()
FROM_CHECKOUT = from_checkout()

# Installed, the targets run in the user's directory: there -P (Python 3.11+)
# keeps a folder named core/ or tools/ from shadowing our packages.
_SAFE_PATH = "" if FROM_CHECKOUT or sys.version_info < (3, 11) else " -P"
IMPLEMENTATIONS = {
    impl: (f"{{python}}{_SAFE_PATH} -m {impl}.broker {{client_port}} {{worker_port}}",
           f"{{python}}{_SAFE_PATH} -m {impl}.worker 127.0.0.1:{{worker_port}} "
           "{output_port} {syslog_port} --word-delay {word_delay} "
           "--fetch-interval {fetch_interval}")
    for impl in ("impl_select", "impl_threads")
}

# Options that ask for a conformance run (the others only tune one): given
# in a run that does not name the suite, they add the spec's cases to it.
REQUEST_OPTIONS = ("impl", "target", "broker_cmd", "worker_cmd", "broker_addr",
                   "workq_list", "workq_case", "workq_section", "workq_level",
                   "workq_role", "workq_report", "workq_report_html")

MARKERS = {
    "core": "exchange of the core level (what the assignment requires)",
    "extended": "exchange of the extended level (workq's additions and choices)",
    "broker": "the suite plays clients and workers against a broker",
    "system": "a broker and workers run together; the suite watches their output",
    "worker": "the suite plays the broker against a worker",
}

BROKER_PLACEHOLDERS = ("python", "client_port", "worker_port")
WORKER_PLACEHOLDERS = ("python", "broker", "worker_port", "output_port", "syslog_port",
                       "client_port", "word_delay", "fetch_interval")

SETTINGS = pytest.StashKey[Settings]()  # of the first target
TARGETS = pytest.StashKey[dict]()  # target name -> Settings, in option order
SPEC_PATH = pytest.StashKey[Path]()
ACTIVE = pytest.StashKey[bool]()


def pytest_addoption(parser):
    group = parser.getgroup("workq", "workq conformance suite")
    group.addoption("--spec", default=str(DEFAULT_SPEC), metavar="PATH",
                    help="protocol spec whose exchanges run (default: workq's "
                         "spec/protocol.yaml)")
    group.addoption("--impl", metavar="select|threads|select,threads",
                    help="test impl_select, impl_threads or both (default select "
                         "when no --target is given)")
    group.addoption("--target", action="append", metavar="NAME=BROKER[;WORKER]",
                    help="a named target (repeatable: each case runs once per target, "
                         "test ids become ID[NAME]); BROKER and WORKER are command "
                         "templates like --broker-cmd and --worker-cmd, BROKER may be "
                         "@HOST:CLIENT_PORT:WORKER_PORT, an empty or missing part is "
                         "played by our select implementation")
    group.addoption("--broker-cmd", metavar="TEMPLATE",
                    help="broker command; placeholders {client_port} {worker_port} {python}")
    group.addoption("--worker-cmd", metavar="TEMPLATE",
                    help="worker command; placeholders {broker} {worker_port} "
                         "{output_port} {syslog_port} {python}")
    group.addoption("--broker-addr", metavar="HOST:CLIENT_PORT:WORKER_PORT",
                    help="test an already running broker instead of starting one per "
                         "exchange; exchanges that need a fresh broker are skipped")
    # Read by the spec's grammar in pytest_configure (rule seconds), not by float().
    group.addoption("--word-delay", default="0.02", metavar="S",
                    help="the worker's word delay: {word_delay} in the worker template; "
                         "timing checks compare against it (default 0.02)")
    group.addoption("--fetch-interval", default="0.05", metavar="S",
                    help="the worker's fetch interval: {fetch_interval} in the worker "
                         "template; timing checks compare against it (default 0.05)")
    group.addoption("--mcast-capture", choices=["auto", "off"], default="auto",
                    help="auto: check multicast output with a scapy capture on lo where "
                         "permitted; off: only with a joined receiver socket")
    group.addoption("--replies", action="append", metavar="[TARGET:]STYLE",
                    help="how a target words its client-port replies: workq (ID n, "
                         "completed; the default), assignment (a bare n, complete), or "
                         "id=FORMAT,completed=WORD,... with <n> for the id; without "
                         "TARGET: every target not given by --impl (repeatable)")
    group.addoption("--netns", choices=["auto", "off"], default="auto",
                    help="auto: run in a private network namespace where permitted")


def suite_requested(config):
    """Whether this pytest run is a conformance run (see the module's doc)."""
    if ACTIVE not in config.stash:  # decided once, before the spec is added to a run
        config.stash[ACTIVE] = (_loaded_by_name(config) or _asked_by_option(config)
                                or _suite_named(config))
    return config.stash[ACTIVE]


def _loaded_by_name(config):
    """-p conformance.plugin, PYTEST_PLUGINS, or a module's pytest_plugins."""
    names = list(config.option.plugins or [])
    names += os.environ.get("PYTEST_PLUGINS", "").split(",")
    for plugin in config.pluginmanager.get_plugins():
        listed = getattr(plugin, "pytest_plugins", None) \
            if isinstance(plugin, types.ModuleType) else None
        names += [listed] if isinstance(listed, str) else list(listed or [])
    return __name__ in names


def _asked_by_option(config):
    return (any(config.getoption(dest) for dest in REQUEST_OPTIONS)
            or config.getoption("spec") != str(DEFAULT_SPEC))


def _suite_named(config):
    """The suite's directory or its spec file is a path of the command line."""
    return bool({SUITE_DIR, Path(config.getoption("spec")).resolve()} & _named_paths(config))


def pytest_configure(config):
    if not suite_requested(config):
        return  # installed and not asked for: a foreign project's run, untouched
    if _asked_by_option(config) and not _suite_named(config):
        config.args.append(str(SUITE_DIR))  # collected once, also when a parent is named
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    spec_path = Path(config.getoption("spec")).resolve()
    grammar = _grammar(spec_path)
    try:
        targets = resolve_targets(
            config.getoption("impl"), config.getoption("broker_cmd"),
            config.getoption("worker_cmd"), config.getoption("broker_addr"),
            config.getoption("target"),
            {name: IMPLEMENTATIONS["impl_" + name] for name in ("select", "threads")},
            port=lambda text: _port(grammar, text))
        word_delay, fetch_interval = (
            number(grammar, "seconds", str(config.getoption(name)), "--" + name.replace("_", "-"))
            for name in ("word_delay", "fetch_interval"))
    except (TargetOptionError, GrammarError) as error:
        raise pytest.UsageError(str(error)) from None
    for target in targets:
        _checked(f"{target.origin}: broker", target.broker_cmd, BROKER_PLACEHOLDERS)
        _checked(f"{target.origin}: worker", target.worker_cmd, WORKER_PLACEHOLDERS)
    try:
        check_ports(targets)
    except TargetOptionError as error:
        raise pytest.UsageError(str(error)) from None
    replies = _replies_of(targets, config.getoption("replies") or [])
    target_cwd = REPO_ROOT if FROM_CHECKOUT else config.invocation_params.dir
    _check_startable(targets, target_cwd)
    # Before any socket exists: the namespace is per thread and inherited.
    if any(target.broker_addr for target in targets):
        network = "loopback (--netns off: --broker-addr names a broker outside)"
    elif config.getoption("netns") == "off":
        network = "loopback (--netns off)"
    else:
        network = describe(enter_private_netns())
    capture = probe_capture(config.getoption("mcast_capture"))  # inside the namespace
    config.stash[SPEC_PATH] = spec_path
    multicast_group = _multicast_group(spec_path)
    config.stash[TARGETS] = {
        target.name: Settings(broker_cmd=target.broker_cmd, worker_cmd=target.worker_cmd,
                              helper_worker=target.helper_worker,
                              cwd=target_cwd,
                              python=sys.executable,
                              multicast_group=multicast_group,
                              broker_addr=target.broker_addr, network=network,
                              word_delay=word_delay, fetch_interval=fetch_interval,
                              capture=capture, multicast_ttl=_multicast_ttl(spec_path),
                              broker_options=_broker_options(spec_path),
                              replies=replies[target.name])
        for target in targets}
    config.stash[SETTINGS] = next(iter(config.stash[TARGETS].values()))


def _check_startable(targets, cwd):
    """One clear error, and no run, for a target whose program cannot start
    in ``cwd``, where targets run (rather than the same failure in every one
    of its cases)."""
    problems = []
    for target in targets:
        parts = [("worker", target.worker_cmd, WORKER_PLACEHOLDERS)]
        if not target.broker_addr:
            parts.insert(0, ("broker", target.broker_cmd, BROKER_PLACEHOLDERS))
        for part, template, placeholders in parts:
            values = dict.fromkeys(placeholders, "0")
            values["python"] = sys.executable
            why = why_cannot_start(template.format(**values), cwd)
            if why:
                problems.append(f"{target.origin}: the {part} cannot start: {why}")
    if problems:
        raise pytest.UsageError("\n".join(problems + [
            "no case was run; fix the command (or leave the target out) and run again"]))


# Targets whose program could not be executed in this process: target -> the first error.
_UNSTARTABLE = {}


def _replies_of(targets, values):
    """Target name -> Replies, from the --replies options (see replies.py)."""
    names = {target.name for target in targets}
    ours = {target.name for target in targets if target.origin.startswith("--impl")}
    result = {target.name: Replies() for target in targets}
    for value in values:
        name, style = split_target(value)
        if name is not None and name not in names:
            raise pytest.UsageError(f"--replies {value!r}: no target named {name!r} "
                                    f"(targets: {', '.join(sorted(names))})")
        try:
            parsed = parse_replies(style)
        except RepliesError as error:
            raise pytest.UsageError(str(error)) from None
        for target in [name] if name is not None else [n for n in result if n not in ours]:
            result[target] = parsed
    return result


def _checked(option, template, placeholders):
    try:
        template.format(**dict.fromkeys(placeholders, "0"))
    except (KeyError, IndexError, ValueError) as error:
        raise pytest.UsageError(
            f"{option} {template!r}: {error!r}; the placeholders are "
            + " ".join("{%s}" % name for name in placeholders)) from None
    return template


def _grammar(spec_path):
    try:
        return grammar_rules(load_spec(spec_path))
    except Exception:  # as _multicast_group
        return {}


def _port(grammar, text):
    value = number(grammar, "port", text, "port")
    if not 0 < value <= 65535:
        raise GrammarError(f"port {text} is out of range 1-65535")
    return value


def _multicast_group(spec_path):
    try:
        return load_spec(spec_path)["multicast"]["group"]
    except Exception:  # the collector reports a broken spec; here: a default
        return "239.0.0.1"


def _broker_options(spec_path):
    try:
        return load_spec(spec_path)["broker_options"]
    except Exception:  # as _multicast_group
        return {}


def _multicast_ttl(spec_path):
    try:
        return int(load_spec(spec_path)["multicast"]["ttl"])
    except Exception:  # as _multicast_group
        return 1


def pytest_report_header(config):
    if not suite_requested(config):
        return None
    settings = config.stash[SETTINGS]
    targets = config.stash[TARGETS]
    lines = [f"workq spec: {config.stash[SPEC_PATH]}",
             f"workq network: {settings.network}",
             f"workq multicast checks: {settings.capture.describe()}",
             f"workq timing: word delay {settings.word_delay:g} s, fetch interval "
             f"{settings.fetch_interval:g} s (--word-delay, --fetch-interval)",
             f"workq levels: {_levels_line(config)}",
             f"workq target{'s' if len(targets) > 1 else ''}: {', '.join(targets)}"]
    for name, settings in targets.items():
        which = f" [{name}]" if len(targets) > 1 else ""
        if settings.broker_addr:
            lines.append(f"workq broker{which}: already running at %s:%d (client), "
                         "%d (worker)" % settings.broker_addr)
        else:
            lines.append(f"workq broker{which}: {settings.broker_cmd}")
        lines.append(f"workq worker{which}: {settings.worker_cmd}")
        if not settings.replies.is_default:
            lines.append(f"workq replies{which}: {settings.replies.describe()}")
    return lines


def _levels_line(config):
    """Which levels run, and what core means: for the header and every report."""
    chosen = [value for values in (config.getoption("workq_level", None) or [])
              for value in str(values).split(",") if value]
    which = ", ".join(chosen) if chosen else "core and extended"
    return (f"{which} (core: exactly what the assignment requires; extended: workq's "
            "additions and choices)")


@pytest.hookimpl(tryfirst=True)
def pytest_collect_directory(path, parent):
    # Collecting conformance/ means collecting the spec's exchanges.
    if path.name == SUITE_DIR.name and path.resolve() == SUITE_DIR \
            and suite_requested(parent.config):
        return SuiteDirectory.from_parent(parent, path=path)
    return None


def pytest_collect_file(file_path, parent):
    # Also when the spec file itself is named: pytest spec/protocol.yaml::JOB-001
    config = parent.config
    if not suite_requested(config):
        return None
    spec_path = config.stash[SPEC_PATH]
    if file_path.name == spec_path.name and file_path.resolve() == spec_path \
            and spec_path in _named_paths(config):
        return SpecFile.from_parent(parent, path=file_path)
    return None


def _named_paths(config):
    start = config.invocation_params.dir
    return {(start / arg.split("::")[0]).resolve() for arg in config.args}


class SuiteDirectory(pytest.Directory):
    def collect(self):
        yield SpecFile.from_parent(self, path=self.config.stash[SPEC_PATH])


class SpecFile(pytest.File):
    def collect(self):
        spec = load_spec(self.path)
        targets = self.config.stash[TARGETS]
        for exchange in spec.get("exchanges") or []:
            # One item per target; with several, the id says which: JOB-001[select]
            for target, settings in targets.items():
                name = exchange["id"] if len(targets) == 1 else f"{exchange['id']}[{target}]"
                yield ExchangeItem.from_parent(self, name=name, exchange=exchange,
                                               target=target, settings=settings)


class ExchangeItem(pytest.Item):
    def __init__(self, *, exchange, target=None, settings=None, **kwargs):
        super().__init__(**kwargs)
        self.exchange = exchange
        self.exchange_run = None
        self.settings = settings or self.config.stash[SETTINGS]
        self.target = target or next(iter(self.config.stash[TARGETS]))
        for marker in (exchange.get("level"), exchange.get("role")):
            if marker in MARKERS:
                self.add_marker(marker)
        if exchange.get("section"):
            self.extra_keyword_matches.add(exchange["section"])
        self.extra_keyword_matches.add(self.target)
        # In every report of this item, so in --junitxml and --report too.
        self.user_properties += [
            ("id", exchange["id"]), ("target", self.target),
            ("title", exchange.get("title", "")), ("level", exchange.get("level", "")),
            ("role", exchange.get("role", "")), ("section", exchange.get("section", ""))]

    def runtest(self):
        settings = self.settings
        if settings.broker_addr and self.exchange.get("fresh_broker"):
            pytest.skip("needs a fresh broker; --broker-addr names a shared one")
        if settings.broker_addr and self.exchange.get("broker_options"):
            pytest.skip("needs a broker started with "
                        + ", ".join(self.exchange["broker_options"]) + "; --broker-addr names a running one")
        if settings.broker_addr and any("pause_broker" in step for step in self.exchange["steps"]):
            pytest.skip("pauses the broker (SIGSTOP); --broker-addr names one the suite did not start")
        if not (settings.capture and settings.capture.capture) and any(
                step.get("ttl") for step in self.exchange["steps"]):
            pytest.skip("checks the multicast TTL, which only the capture on lo sees; "
                        f"multicast checks here: {settings.capture.describe() if settings.capture else 'none'}")
        if self.target in _UNSTARTABLE:
            pytest.skip(f"not run: target {self.target} cannot start "
                        f"({_UNSTARTABLE[self.target]})")
        if (any(key in step for step in self.exchange["steps"] for key in PARTITION_STEPS)
                and not inside_private_netns()):
            pytest.skip("cuts a connection with policy routing; needs the suite's private "
                        "network namespace (root)")
        self.exchange_run = ExchangeRun(self.exchange, settings)
        try:
            self.exchange_run.run()
        except TargetError as error:
            if error.cannot_start:
                _UNSTARTABLE[self.target] = f"see {self.exchange['id']}: {error}"
                if set(_UNSTARTABLE) >= set(self.config.stash[TARGETS]):
                    self.session.shouldstop = "no target can start"
            raise

    def teardown(self):
        # The report is written by now; keep no files open across the session.
        if self.exchange_run is not None:
            self.exchange_run.release()
            self.exchange_run = None

    def repr_failure(self, excinfo):
        exchange, run = self.exchange, self.exchange_run
        lines = [f"{exchange['id']}: {exchange.get('title', '')}",
                 f"level {exchange.get('level')}, role {exchange.get('role')}, "
                 f"section {exchange.get('section')}",
                 f"target: {self.target}",
                 f"network: {self.settings.network}"]
        if run is not None:
            lines += ["", "transcript (seconds since the exchange began):",
                      run.transcript.render()]
        error = excinfo.value
        if isinstance(error, ExchangeFailure):
            lines += ["", f"FAILED at {error.summary}"] + [f"  {d}" for d in error.details]
        elif isinstance(error, (SpecError, TargetError)):
            kind = "the exchange is malformed" if isinstance(error, SpecError) else "target"
            lines += ["", f"ERROR ({kind}): {error}"]
        else:
            lines += ["", str(super().repr_failure(excinfo))]
        for target in run.targets() if run is not None else []:
            lines += ["", target.report()]
        return "\n".join(lines)

    def reportinfo(self):
        return self.path, None, f"{self.name}: {self.exchange.get('title', '')}"
