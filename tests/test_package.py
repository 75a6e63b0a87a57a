"""workq as an installed package (pyproject.toml): the wheel built from this
checkout, installed into a fresh virtualenv, used from other directories.

Offline: the wheel is built without build isolation (setuptools and wheel
from requirements-dev.txt) and installed with ``--no-index``. The new
virtualenv sees the running interpreter's packages (pytest, PyYAML) through a
.pth file, as ``--system-site-packages`` would, also when this run is itself
in a virtualenv (tox); its own site-packages comes first, so ``conformance``,
``core`` and the rest are imported from the install, never from the checkout.

Every program runs with its working directory outside the checkout and
without PYTHONPATH (pytest-xdist sets it to the checkout). The "foreign
project" directory holds a test of its own, a broker of its own (the original
system's) and (Python 3.11+, where python -P exists) a folder named ``core/``
that fails on import, so that a target started there with ``python -m``
would break if the directory shadowed ours.

The build and install happen once per run: with pytest-xdist, the first
worker builds under a lock and the others reuse it.
"""

import fcntl
import os
import shutil
import site
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from support import (ROOT, BROKER_LINE, Process, SyslogListener, await_completions,
                     udp_sink)

SCRIPTS = ("workq-broker-select", "workq-broker-threads", "workq-worker-select",
           "workq-worker-threads", "workq-client", "workq-mcast-listen",
           "workq-syslog-listen", "workq-demo", "workq-conformance")
CASE_IDS = [exchange["id"] for exchange in
            yaml.safe_load((ROOT / "spec" / "protocol.yaml").read_text())["exchanges"]]
# Plugins these runs do without (hypothesis's alone costs a second or more).
QUIET = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")
RUN_TIMEOUT = 60
# What is copied to build from: the checkout without its caches and local state.
NOT_BUILT = shutil.ignore_patterns(".git", "__pycache__", ".pytest_cache", ".tox",
                                   ".hypothesis", "build", "dist", "*.egg-info", "reports")


class Installed:
    """The virtualenv with the wheel installed: ``python`` and ``script(name)``."""

    def __init__(self, venv):
        self.venv = venv
        self.python = venv / "bin" / "python"

    def script(self, name):
        return str(self.venv / "bin" / name)

    def site_packages(self):
        return next((self.venv / "lib").glob("python3*/site-packages"))


def _run(argv, cwd, check=False):
    result = subprocess.run(argv, cwd=cwd, env=clean_env(), stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, errors="replace",
                            timeout=RUN_TIMEOUT)
    if check:
        assert result.returncode == 0, \
            f"expected {' '.join(map(str, argv))} to succeed, got exit {result.returncode}:\n" \
            f"{result.stdout}{result.stderr}"
    return result


def clean_env():
    """This environment without what points Python or pytest at the checkout."""
    return {name: value for name, value in os.environ.items()
            if not name.startswith(("PYTHON", "PYTEST_")) and name != "VIRTUAL_ENV"}


def _install(where):
    """Build the wheel from a copy of the checkout and install it into a new
    virtualenv under ``where``."""
    source = where / "source"
    shutil.copytree(ROOT, source, ignore=NOT_BUILT)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--no-index", "-q", "-w", str(where / "wheel"), str(source)], where, check=True)
    wheel = next((where / "wheel").glob("workq-*.whl"))
    _run([sys.executable, "-m", "venv", "--without-pip", str(where / "venv")], where,
         check=True)
    installed = Installed(where / "venv")
    (installed.site_packages() / "_running_interpreter.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n")
    # --force-reinstall: a workq installed where the .pth points must not count.
    _run([installed.python, "-m", "pip", "install", "--no-index", "--no-deps",
          "--force-reinstall", "-q", str(wheel)], where, check=True)
    return installed


@pytest.fixture(scope="session")
def installed(tmp_path_factory):
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None:
        return _install(tmp_path_factory.mktemp("package"))
    shared = tmp_path_factory.getbasetemp().parent / "package"  # one per xdist run
    with open(f"{shared}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / "installed").exists():
            shutil.rmtree(shared, ignore_errors=True)  # a worker's failed attempt
            shared.mkdir()
            _install(shared)
            (shared / "installed").touch()
    return Installed(shared / "venv")


@pytest.fixture
def elsewhere(tmp_path):
    """A working directory outside the checkout."""
    return tmp_path


@pytest.fixture
def foreign(tmp_path):
    """Another project: a test of its own, the original system's broker, and
    a core/ folder that breaks whatever imports it from there."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_foreign.py").write_text("def test_foreign():\n    assert True\n")
    shutil.copy(ROOT / "tests" / "original" / "workQueue.py", tmp_path / "workQueue.py")
    if sys.version_info >= (3, 11):  # python -P keeps it out (README, "Install")
        (tmp_path / "core").mkdir()
        (tmp_path / "core" / "__init__.py").write_text(
            "raise ImportError('the foreign project\\'s core/ was imported')\n")
    return tmp_path


def test_the_packages_import_from_the_virtualenv(installed, elsewhere):
    result = _run([installed.python, "-c",
                   "import conformance, core, impl_select, impl_threads, shell, tools\n"
                   "for m in (conformance, core, impl_select, impl_threads, shell, tools):\n"
                   "    print(m.__file__)"], elsewhere, check=True)
    site_packages = installed.site_packages().resolve()
    for path in result.stdout.split():
        assert Path(path).resolve().is_relative_to(site_packages), \
            f"expected every package from {site_packages}, got {path}"


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_console_script_runs_from_another_directory(installed, foreign, name):
    result = _run([installed.script(name), "--help"], foreign)
    assert result.returncode == 0 and "usage:" in result.stdout, \
        f"expected {name} --help to print its usage and exit 0, got exit " \
        f"{result.returncode}:\n{result.stdout}{result.stderr}"


def test_the_broker_worker_and_client_scripts_run_a_job(installed, foreign):
    broker = Process(None, argv=[installed.script("workq-broker-select"), "0", "0"],
                     cwd=foreign, env=clean_env())
    syslog, output = SyslogListener(), udp_sink()
    worker = None
    try:
        match = BROKER_LINE.search(broker.startup_line())
        assert match, f"expected the broker's start-up line, got {broker.startup_line()!r}"
        client_port, worker_port = match[2], match[3]
        client = [installed.script("workq-client"), f"127.0.0.1:{client_port}"]
        submitted = _run([*client, "JOB", "installed", "words"], foreign, check=True)
        assert submitted.stdout.strip() == "ID 1", \
            f"expected workq-client JOB to print ID 1, got {submitted.stdout!r}"
        worker = Process(None, argv=[installed.script("workq-worker-select"),
                                     f"127.0.0.1:{worker_port}",
                                     str(output.getsockname()[1]), str(syslog.port),
                                     "--word-delay", "0"], cwd=foreign, env=clean_env())
        worker.startup_line()
        await_completions(syslog, [1], time.monotonic() + RUN_TIMEOUT)
        status = _run([*client, "STATUS", "1"], foreign, check=True)
        assert status.stdout.strip() == "completed", \
            f"expected STATUS 1 to say completed, got {status.stdout!r}"
    finally:
        for process in (worker, broker):
            if process is not None:
                process.close()
        syslog.close()
        output.close()


def test_pytest_shows_the_suite_options_through_the_entry_point(installed, foreign):
    result = _run([installed.python, "-m", "pytest", "--help"], foreign, check=True)
    for expected in ("workq conformance suite", "--broker-cmd", "--worker-cmd", "--impl"):
        assert expected in result.stdout, \
            f"expected {expected!r} in pytest --help, got:\n{result.stdout}"


def test_the_suite_script_lists_the_cases(installed, foreign):
    result = _run([installed.script("workq-conformance"), "--list"], foreign, check=True)
    lines = result.stdout.splitlines()
    listed = [line.split()[0] for line in lines[:-1]]
    assert listed == CASE_IDS and lines[-1] == f"{len(CASE_IDS)} cases selected", \
        f"expected the spec's {len(CASE_IDS)} cases, got:\n{result.stdout}{result.stderr}"


def test_the_suite_script_tests_our_implementation_from_the_package(installed, foreign):
    # With pytest's cache on (QUIET[2:]): it goes to the working directory.
    result = _run([installed.script("workq-conformance"), *QUIET[2:], "--case", "SYS-001"],
                  foreign)
    output = result.stdout + result.stderr
    spec = installed.site_packages() / "conformance" / "spec" / "protocol.yaml"
    assert f"workq spec: {spec.resolve()}" in output, \
        f"expected the spec shipped in the package, got:\n{output}"
    assert result.returncode == 0 and "1 passed" in output, \
        f"expected SYS-001 to pass against the installed implementation, got:\n{output}"
    assert (foreign / ".pytest_cache").is_dir() \
        and not (installed.site_packages() / ".pytest_cache").exists(), \
        "expected pytest's cache in the working directory, not in site-packages"


def test_the_plugin_leaves_another_projects_run_alone(installed, foreign):
    result = _run([installed.python, "-m", "pytest", "-p", "no:hypothesispytest",
                   "-p", "no:benchmark"], foreign)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "1 passed" in output, \
        f"expected the project's one test to pass, got:\n{output}"
    plugins = next((line for line in output.splitlines() if line.startswith("plugins:")), "")
    assert "workq-" in plugins, f"expected the plugin loaded by its entry point, got:\n{output}"
    assert "workq spec" not in output and "workq network" not in output, \
        f"expected the suite to stay idle without its options, got:\n{output}"


def test_a_suite_option_tests_another_projects_broker(installed, foreign):
    result = _run([installed.python, "-m", "pytest", *QUIET, "-rA",
                   "--broker-cmd", "{python} workQueue.py {client_port} {worker_port}",
                   "--case", "JOB-001,SYS-001"], foreign)
    output = result.stdout + result.stderr
    assert "workq broker: {python} workQueue.py" in output, \
        f"expected the project's broker as the target, got:\n{output}"
    assert result.returncode == 0 and "3 passed" in output, \
        f"expected the project's test and JOB-001 and SYS-001 to pass, got:\n{output}"


def test_the_checkout_loads_the_plugin_once_with_the_package_installed(installed):
    # The entry point and conftest.py name the same module: pytest keeps one.
    result = _run([installed.python, "-m", "pytest", *QUIET, "--collect-only", "-q",
                   "conformance", "--case", "JOB-001"], ROOT)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "spec/protocol.yaml::JOB-001" in output, \
        f"expected the checkout's suite to collect JOB-001, got:\n{output}"
