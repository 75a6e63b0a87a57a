"""Brokers correct at the core level that lack workq's additions in ways a
student's do (tests/mutants/, named in test_mutants.CORE_CORRECT): the suite
must pass them on every core case. A core case that fails them fails for a
reason other than its title."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

# Minutes, not seconds: outside the README's quick command (pytest.ini), run by
# `python3 -m pytest -n auto -m slow` in CI and `tox -e slow`.
pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parent.parent
MUTANTS = Path(__file__).resolve().parent / "mutants"
EXCHANGES = yaml.safe_load((REPO_ROOT / "spec" / "protocol.yaml").read_text())["exchanges"]
ROW = re.compile(r"^\| ([A-Z]+-\d+) \| (core|extended) \| .* \| ([^|]*) \|$")
QUIET_PLUGINS = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")


def test_a_core_broker_silent_on_extended_worker_commands_passes_every_core_case(tmp_path):
    """Only the broker is the student's: the suite's own worker plays the worker
    in the system cases, and must speak core to it (plain FETCH, DONE), not the
    long-poll FETCH <seconds> or TOUCH it sends our broker, which this broker
    never answers."""
    target = (f"silent={{python}} {MUTANTS / 'broker_silent_extended.py'} "
              "{client_port} {worker_port}")
    result = subprocess.run(
        [sys.executable, "-m", "conformance", *QUIET_PLUGINS, "-n", "2", "--target", target,
         "--level", "core", "--report", str(tmp_path / "core.md")],
        cwd=REPO_ROOT, capture_output=True, text=True, errors="replace", timeout=300)
    output = result.stdout + result.stderr
    rows = {match.group(1): match.group(3)
            for match in map(ROW.match, (tmp_path / "core.md").read_text().splitlines()) if match}
    core = sorted(e["id"] for e in EXCHANGES if e["level"] == "core")
    assert sorted(rows) == core, f"expected a row for every core case, got {sorted(rows)}:\n{output}"
    failed = {case: cell for case, cell in rows.items() if cell.strip() != "PASS"}
    assert not failed and result.returncode == 0, \
        f"expected every core case to pass a correct core broker, these failed: {failed}\n{output}"
