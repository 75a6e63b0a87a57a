"""pytest plugin: every exchange of spec/protocol.yaml is one test.

It follows pytest's "tests in YAML files" pattern: a collector reads the
spec and yields one ``ExchangeItem`` per exchange, named by its id, marked
with its level and role and keyed by its section (``-m core``, ``-k
client.job``). A failure shows the wire transcript and what the targets
printed. The suite is black-box: it starts the targets from command
templates and talks to them over sockets only.
"""

import sys
from pathlib import Path

import pytest

from .netns import describe, enter_private_netns
from .runner import ExchangeFailure, ExchangeRun, Settings, SpecError
from .specfile import load_spec
from .targets import TargetError

SUITE_DIR = Path(__file__).resolve().parent
REPO_ROOT = SUITE_DIR.parent  # where spec/ is and the default targets run
DEFAULT_SPEC = REPO_ROOT / "spec" / "protocol.yaml"

IMPLEMENTATIONS = {
    impl: (f"{{python}} -m {impl}.broker {{client_port}} {{worker_port}}",
           f"{{python}} -m {impl}.worker 127.0.0.1:{{worker_port}} {{output_port}} "
           "{syslog_port} --word-delay 0.02 --fetch-interval 0.05")
    for impl in ("impl_select", "impl_threads")
}

MARKERS = {
    "core": "exchange of the core level (the original system passes it)",
    "extended": "exchange of the extended level (workq's additions)",
    "broker": "the suite plays clients and workers against a broker",
    "system": "a broker and workers run together; the suite watches their output",
    "worker": "the suite plays the broker against a worker",
}

BROKER_PLACEHOLDERS = ("python", "client_port", "worker_port")
WORKER_PLACEHOLDERS = ("python", "broker", "worker_port", "output_port", "syslog_port",
                       "client_port")

SETTINGS = pytest.StashKey[Settings]()
SPEC_PATH = pytest.StashKey[Path]()


def pytest_addoption(parser):
    group = parser.getgroup("workq", "workq conformance suite")
    group.addoption("--spec", default=str(DEFAULT_SPEC), metavar="PATH",
                    help="protocol spec whose exchanges run (default: spec/protocol.yaml)")
    group.addoption("--impl", choices=["select", "threads"], default="select",
                    help="run impl_select.* or impl_threads.* (default select)")
    group.addoption("--broker-cmd", metavar="TEMPLATE",
                    help="broker command; placeholders {client_port} {worker_port} {python}")
    group.addoption("--worker-cmd", metavar="TEMPLATE",
                    help="worker command; placeholders {broker} {worker_port} "
                         "{output_port} {syslog_port} {python}")
    group.addoption("--broker-addr", metavar="HOST:CLIENT_PORT:WORKER_PORT",
                    help="test an already running broker instead of starting one per "
                         "exchange; exchanges that need a fresh broker are skipped")
    group.addoption("--netns", choices=["auto", "off"], default="auto",
                    help="auto: run in a private network namespace where permitted")


def pytest_configure(config):
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    broker_addr = config.getoption("broker_addr")
    # Before any socket exists: the namespace is per thread and inherited.
    if broker_addr:
        network = "loopback (--netns off: --broker-addr names a broker outside)"
    elif config.getoption("netns") == "off":
        network = "loopback (--netns off)"
    else:
        network = describe(enter_private_netns())
    impl_broker, impl_worker = IMPLEMENTATIONS["impl_" + config.getoption("impl")]
    spec_path = Path(config.getoption("spec")).resolve()
    config.stash[SPEC_PATH] = spec_path
    config.stash[SETTINGS] = Settings(
        broker_cmd=_checked("--broker-cmd", config.getoption("broker_cmd") or impl_broker,
                            BROKER_PLACEHOLDERS),
        worker_cmd=_checked("--worker-cmd", config.getoption("worker_cmd") or impl_worker,
                            WORKER_PLACEHOLDERS),
        cwd=REPO_ROOT, python=sys.executable,
        multicast_group=_multicast_group(spec_path),
        broker_addr=_parse_broker_addr(broker_addr) if broker_addr else None,
        network=network)


def _checked(option, template, placeholders):
    try:
        template.format(**dict.fromkeys(placeholders, "0"))
    except (KeyError, IndexError, ValueError) as error:
        raise pytest.UsageError(
            f"{option} {template!r}: {error!r}; the placeholders are "
            + " ".join("{%s}" % name for name in placeholders)) from None
    return template


def _multicast_group(spec_path):
    try:
        return load_spec(spec_path)["multicast"]["group"]
    except Exception:  # the collector reports a broken spec; here: a default
        return "239.0.0.1"


def _parse_broker_addr(text):
    try:
        host, client_port, worker_port = text.rsplit(":", 2)
        return host, int(client_port), int(worker_port)
    except ValueError:
        raise pytest.UsageError(f"--broker-addr wants HOST:CLIENT_PORT:WORKER_PORT, not {text!r}")


def pytest_report_header(config):
    settings = config.stash[SETTINGS]
    lines = [f"workq spec: {config.stash[SPEC_PATH]}",
             f"workq network: {settings.network}"]
    if settings.broker_addr:
        lines.append("workq broker: already running at %s:%d (client), %d (worker)"
                     % settings.broker_addr)
    else:
        lines.append(f"workq broker: {settings.broker_cmd}")
    lines.append(f"workq worker: {settings.worker_cmd}")
    return lines


@pytest.hookimpl(tryfirst=True)
def pytest_collect_directory(path, parent):
    # Collecting conformance/ means collecting the spec's exchanges.
    if path.name == SUITE_DIR.name and path.resolve() == SUITE_DIR:
        return SuiteDirectory.from_parent(parent, path=path)
    return None


def pytest_collect_file(file_path, parent):
    # Also when the spec file itself is named: pytest spec/protocol.yaml::JOB-001
    config = parent.config
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
        for exchange in spec.get("exchanges") or []:
            yield ExchangeItem.from_parent(self, name=exchange["id"], exchange=exchange)


class ExchangeItem(pytest.Item):
    def __init__(self, *, exchange, **kwargs):
        super().__init__(**kwargs)
        self.exchange = exchange
        self.exchange_run = None
        for marker in (exchange.get("level"), exchange.get("role")):
            if marker in MARKERS:
                self.add_marker(marker)
        if exchange.get("section"):
            self.extra_keyword_matches.add(exchange["section"])

    def runtest(self):
        settings = self.config.stash[SETTINGS]
        if settings.broker_addr and self.exchange.get("fresh_broker"):
            pytest.skip("needs a fresh broker; --broker-addr names a shared one")
        self.exchange_run = ExchangeRun(self.exchange, settings)
        self.exchange_run.run()

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
                 f"network: {self.config.stash[SETTINGS].network}"]
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
