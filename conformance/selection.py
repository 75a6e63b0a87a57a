"""Choosing cases: --case, --section, --level, --role, and --list.

The options combine (a case must pass all of them); each takes a value or
several separated by commas, and may be repeated. ``--section framing``
selects ``framing`` and ``framing.errors``. They act on the exchanges only:
other tests collected in the same run are left alone. ``--list`` prints the
selected cases, one per line, and runs nothing.
"""

import os
import sys

import pytest

from .specfile import load_spec

LEVELS = ("core", "extended")
ROLES = ("broker", "system", "worker")

SELECTION = pytest.StashKey[dict]()


def pytest_addoption(parser):
    group = parser.getgroup("workq", "workq conformance suite")
    group.addoption("--list", action="store_true", dest="workq_list",
                    help="print the selected cases (id, level, role, section, title), "
                         "one per line, and exit without running anything")
    group.addoption("--case", action="append", dest="workq_case", metavar="ID[,ID...]",
                    help="run only these cases (by exchange id, e.g. JOB-001,STA-002)")
    group.addoption("--section", action="append", dest="workq_section",
                    metavar="S[,S...]",
                    help="run only cases of these spec sections; a prefix of dotted "
                         "names: 'framing' selects framing and framing.errors")
    group.addoption("--level", action="append", dest="workq_level",
                    metavar="core|extended",
                    help="run only cases of this level (core: exactly what the assignment "
                         "requires; extended: workq's additions and choices)")
    group.addoption("--role", action="append", dest="workq_role",
                    metavar="broker|system|worker",
                    help="run only cases of this role")


def _values(config, dest):
    values = []
    for text in config.getoption(dest) or []:
        values += [value.strip() for value in text.split(",") if value.strip()]
    return values


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    # Before pytest-xdist decides to distribute: --list only collects.
    if config.getoption("workq_list"):
        config.option.collectonly = True


@pytest.hookimpl(trylast=True)  # after the terminal reporter exists
def pytest_configure(config):
    selection = {
        "case": [value.upper() for value in _values(config, "workq_case")],
        "section": _values(config, "workq_section"),
        "level": _values(config, "workq_level"),
        "role": _values(config, "workq_role"),
    }
    for key, allowed in (("level", LEVELS), ("role", ROLES)):
        bad = [value for value in selection[key] if value not in allowed]
        if bad:
            raise pytest.UsageError(f"--{key} {','.join(bad)}: choose from "
                                    + ", ".join(allowed))
    if selection["case"] or selection["section"]:
        _check_against_spec(config, selection)
    config.stash[SELECTION] = selection
    if config.getoption("workq_list"):
        # Print only the list: pytest's own terminal output is not wanted here.
        terminal = config.pluginmanager.get_plugin("terminalreporter")
        if terminal is not None:
            config.pluginmanager.unregister(terminal)
        config.pluginmanager.register(Lister(config), "workq-list")


def _check_against_spec(config, selection):
    """Unknown ids and sections are usage errors (a typo must not pass as 0 cases)."""
    try:
        exchanges = load_spec(config.getoption("spec"))["exchanges"] or []
    except Exception:
        return  # the collector reports a broken spec
    ids = {str(exchange.get("id", "")).upper() for exchange in exchanges}
    unknown = [case for case in selection["case"] if case not in ids]
    if unknown:
        raise pytest.UsageError(f"--case {','.join(unknown)}: no such case in "
                                f"{config.getoption('spec')} (python3 -m conformance "
                                "--list shows them)")
    sections = {str(exchange.get("section", "")) for exchange in exchanges}
    unknown = [prefix for prefix in selection["section"]
               if not any(_in_section(section, prefix) for section in sections)]
    if unknown:
        raise pytest.UsageError(f"--section {','.join(unknown)}: no case has this section; "
                                f"the sections are {', '.join(sorted(sections))}")


def _in_section(section, prefix):
    return section == prefix or section.startswith(prefix + ".")


def selected(exchange, selection):
    """Whether one exchange (a dict of the spec) passes the selection options."""
    if selection["case"] and str(exchange.get("id", "")).upper() not in selection["case"]:
        return False
    if selection["section"] and not any(
            _in_section(str(exchange.get("section", "")), prefix)
            for prefix in selection["section"]):
        return False
    if selection["level"] and exchange.get("level") not in selection["level"]:
        return False
    if selection["role"] and exchange.get("role") not in selection["role"]:
        return False
    return True


def pytest_collection_modifyitems(config, items):
    selection = config.stash.get(SELECTION, None)
    if not selection or not any(selection.values()):
        return
    keep, drop = [], []
    for item in items:
        exchange = getattr(item, "exchange", None)
        if exchange is None or selected(exchange, selection):
            keep.append(item)
        else:
            drop.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


class Lister:
    """--list: print the selected cases instead of pytest's collection output."""

    def __init__(self, config):
        self.config = config

    def pytest_collectreport(self, report):
        # The terminal reporter is gone: show collection errors here.
        if report.failed:
            sys.stderr.write(f"ERROR collecting {report.nodeid}:\n{report.longreprtext}\n")

    def pytest_collection_finish(self, session):
        cases, targets = {}, []
        for item in session.items:
            exchange = getattr(item, "exchange", None)
            if exchange is None:
                continue
            cases.setdefault(exchange.get("id"), exchange)
            target = getattr(item, "target", None)
            if target is not None and target not in targets:
                targets.append(target)
        rows = [(str(e.get("id")), str(e.get("level")), str(e.get("role")),
                 str(e.get("section")), str(e.get("title", ""))) for e in cases.values()]
        widths = [max([len(row[column]) for row in rows] or [0]) for column in range(4)]
        lines = ["  ".join(value.ljust(width) for value, width in zip(row, widths))
                 + "  " + row[4] for row in rows]
        summary = f"{len(rows)} case{'s' if len(rows) != 1 else ''} selected"
        if len(targets) > 1:
            summary += f", each for {len(targets)} targets ({', '.join(targets)})"
        try:
            sys.stdout.write("\n".join(lines + [summary]) + "\n")
            sys.stdout.flush()
        except BrokenPipeError:  # --list | head
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session, exitstatus):
        # Listing nothing is still a successful listing.
        if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
            session.exitstatus = pytest.ExitCode.OK
