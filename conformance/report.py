"""Results per case and target: a summary table at the end of the terminal
output, ``--report PATH.md`` and ``--report-html PATH.html``.

The results are read from the test reports (``pytest_runtest_logreport``)
by the process that writes the terminal output: the only process, or the
pytest-xdist controller, which receives every worker's reports. Each
exchange item carries its case id, target, title, level, role and section
as ``user_properties``, so the reports (and pytest's ``--junitxml``) say
which case and target they are about.
"""

import datetime
import html
import os
import re

import pytest

from .causes import group_failures
from .specfile import load_spec

__all__ = ["CaseResult", "ResultBook", "PROPERTY_NAMES"]

MAX_TERMINAL_CAUSES = 6
# The user_properties of an exchange item, in this order.
PROPERTY_NAMES = ("id", "target", "title", "level", "role", "section")
LEVELS = ("core", "extended")


def pytest_addoption(parser):
    group = parser.getgroup("workq", "workq conformance suite")
    group.addoption("--report", dest="workq_report", metavar="PATH.md",
                    help="write a Markdown report: one row per case, one column per "
                         "target, totals per target and the wire transcript of each "
                         "failure (JUnit XML: pytest's --junitxml=PATH.xml)")
    group.addoption("--report-html", dest="workq_report_html", metavar="PATH.html",
                    help="write the same report as a single HTML page")


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    if hasattr(config, "workerinput"):
        return  # an xdist worker: the controller receives its reports and writes
    from .plugin import suite_requested  # as in _target_settings
    if suite_requested(config):  # not in a foreign project's own run
        config.pluginmanager.register(ResultBook(config), "workq-results")


class CaseResult:
    """How one case went on one target."""

    def __init__(self, status, reason="", text=""):
        self.status = status  # PASS, FAIL, ERROR or SKIP
        self.reason = reason  # one line: why it failed or was skipped
        self.text = text      # the whole failure report, transcript included

    @property
    def failed(self):
        return self.status in ("FAIL", "ERROR")

    def cell(self):
        return f"{self.status}: {self.reason}" if self.reason else self.status


def _properties(report):
    try:
        props = {str(name): value for name, value in report.user_properties}
    except (TypeError, ValueError):
        return None
    if "id" not in props or "target" not in props:
        return None  # not an exchange of the suite
    return {name: "" if props.get(name) is None else str(props.get(name))
            for name in PROPERTY_NAMES}


def _skip_reason(report):
    longrepr = report.longrepr
    if isinstance(longrepr, (tuple, list)) and len(longrepr) == 3:
        reason = str(longrepr[2])
    else:
        reason = report.longreprtext
    return reason.removeprefix("Skipped: ").strip()


def _failure_text(report):
    """The failure report, without the line pytest-xdist puts first."""
    text = report.longreprtext
    first, newline, rest = text.partition("\n")
    return rest if XDIST_NODE_LINE.match(first) else text


XDIST_NODE_LINE = re.compile(r"\[gw\d+\] .* -- Python ")


def _failure_summary(text, limit=400):
    """One line: the failed step, what was expected and what was received."""
    lines = [line.strip() for line in text.splitlines()]
    for index, line in enumerate(lines):
        if line.startswith("FAILED at ") or line.startswith("ERROR ("):
            parts = [line.removeprefix("FAILED at ")]
            for detail in lines[index + 1:]:
                if not detail:
                    break
                if detail.startswith(("expected:", "received:", "note:")):
                    parts.append(detail)
            summary = "; ".join(parts)
            break
    else:
        summary = next((line for line in reversed(lines) if line), "")
    return summary if len(summary) <= limit else summary[:limit - 3] + "..."


class ResultBook:
    """Collects the results and writes the summary and the reports."""

    def __init__(self, config):
        self.config = config
        self.cases = {}    # id -> properties (title, level, role, section)
        self.targets = []  # target names in order of appearance
        self.results = {}  # (id, target) -> CaseResult
        self.written = []  # report files written, for the terminal summary
        self.write_errors = []
        self._spec_order = None
        self._needs = {}   # case id -> ids of the cases it needs (the spec's needs:)

    # -- collecting ------------------------------------------------------------

    def pytest_runtest_logreport(self, report):
        props = _properties(report)
        if props is None:
            return
        key = (props["id"], props["target"])
        self.cases.setdefault(props["id"], props)
        if props["target"] not in self.targets:
            self.targets.append(props["target"])
        current = self.results.get(key)
        text = _failure_text(report) if report.failed else ""
        if report.when in ("setup", "call"):
            if report.failed:
                status = "FAIL" if report.when == "call" else "ERROR"
                self.results[key] = CaseResult(status, _failure_summary(text), text)
            elif report.skipped:
                self.results[key] = CaseResult("SKIP", _skip_reason(report))
            elif report.when == "call":
                self.results[key] = CaseResult("PASS")
        elif report.failed:  # teardown
            if current is None or not current.failed:
                self.results[key] = CaseResult("ERROR", "in teardown: "
                                               + _failure_summary(text), text)
            else:
                current.text += "\n\nand in teardown:\n" + text

    # -- what to show ------------------------------------------------------------

    def ordered_cases(self):
        """The cases in the order of the spec (and of its ids where it is unknown)."""
        if self._spec_order is None:
            self._spec_order = {}
            try:
                spec = load_spec(self.config.getoption("spec"))
                for index, exchange in enumerate(spec.get("exchanges") or []):
                    self._spec_order.setdefault(str(exchange.get("id")), index)
                    if exchange.get("needs"):
                        self._needs[str(exchange["id"])] = [str(n) for n in exchange["needs"]]
            except Exception:
                pass
        order = self._spec_order
        return sorted(self.cases, key=lambda case: (order.get(case, len(order)), case))

    def ordered_targets(self):
        configured = list(_target_settings(self.config))
        return ([name for name in configured if name in self.targets]
                + [name for name in self.targets if name not in configured])

    def totals(self, target):
        counts = {"failed": 0, "skipped": 0, "passed": 0, "run": 0}
        for level in LEVELS:
            counts[level] = [0, 0]  # passed, selected
        for case, props in self.cases.items():
            result = self.results.get((case, target))
            if result is None:
                continue
            counts["run"] += 1
            counts["passed"] += result.status == "PASS"
            counts["failed"] += result.failed
            counts["skipped"] += result.status == "SKIP"
            if props["level"] in LEVELS:
                counts[props["level"]][0] += result.status == "PASS"
                counts[props["level"]][1] += 1
        return counts

    def totals_line(self, target):
        counts = self.totals(target)
        levels = ", ".join(f"{level} {counts[level][0]}/{counts[level][1]}"
                           for level in LEVELS if counts[level][1])
        return (f"{levels or 'no case'}; {counts['failed']} failed, "
                f"{counts['skipped']} skipped")

    def causes(self, target):
        """The failures of ``target`` grouped by cause (causes.py), biggest first."""
        failures = [(case, self.cases[case]["level"], result.reason)
                    for case, name, result in self.failures() if name == target]
        self.ordered_cases()   # loads the spec's needs
        return group_failures(failures, self._needs)

    def failures(self):
        for case in self.ordered_cases():
            for target in self.ordered_targets():
                result = self.results.get((case, target))
                if result is not None and result.failed:
                    yield case, target, result

    # -- the terminal ------------------------------------------------------------

    def pytest_terminal_summary(self, terminalreporter):
        tr = terminalreporter
        if self.results:
            self._summary_table(tr)
        for path in self.written:
            tr.write_line(f"workq report written to {path}")
        for error in self.write_errors:
            tr.write_line(error, red=True)

    def _summary_table(self, tr):
        tr.write_sep("=", "workq conformance summary")
        rows = [("target", *LEVELS, "failed", "skipped")]
        for target in self.ordered_targets():
            counts = self.totals(target)
            rows.append((target, *(f"{counts[level][0]}/{counts[level][1]}"
                                   if counts[level][1] else "-" for level in LEVELS),
                         str(counts["failed"]), str(counts["skipped"])))
        widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
        for number, row in enumerate(rows):
            line = "  ".join(value.ljust(width) for value, width in zip(row, widths))
            failed = number > 0 and row[-2] != "0"
            tr.write_line(line.rstrip(), red=failed, green=number > 0 and not failed)
        failed = {}
        for case, target, _ in self.failures():
            failed.setdefault(target, []).append(case)
        for target in self.ordered_targets():
            if target in failed:
                tr.write_line(f"failed on {target}: {', '.join(failed[target])}")
                causes = self.causes(target)
                for cause in causes[:MAX_TERMINAL_CAUSES]:
                    tr.write_line(f"  {len(cause.cases)} x {cause.describe()}: "
                                  f"{', '.join(cause.cases)}")
                if len(causes) > MAX_TERMINAL_CAUSES:
                    tr.write_line(f"  ... {len(causes) - MAX_TERMINAL_CAUSES} more causes "
                                  "in the report (--report)")

    # -- the files ---------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session, exitstatus):
        written = []
        base = self.config.invocation_params.dir
        for option, render in (("workq_report", self.markdown),
                               ("workq_report_html", self.html)):
            path = self.config.getoption(option)
            if not path:
                continue
            path = base / path
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(render(int(exitstatus)), encoding="utf-8")
            except OSError as error:
                self.write_errors.append(f"workq report NOT written: {path}: {error}")
                session.exitstatus = pytest.ExitCode.INTERNAL_ERROR
                continue
            written.append(os.path.relpath(path, base) if path.is_relative_to(base)
                           else str(path))
        self.written = written

    def _about(self):
        settings = _target_settings(self.config)
        spec_path = self.config.getoption("spec")
        try:
            version = load_spec(spec_path).get("version")
        except Exception:
            version = None
        network = next((s.network for s in settings.values()), "")
        when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
        return settings, spec_path, version, network, when

    def conditions(self):
        """(label, value) of everything that shaped the verdicts, for every report."""
        settings, spec_path, version, network, when = self._about()
        first = next(iter(settings.values()), None)
        rows = [("spec", f"{spec_path}" + (f" (version {version})" if version else "")),
                ("levels", _levels_line(self.config)),
                ("selection", _selection_line(self.config)),
                ("network", network)]
        if first is not None:
            rows += [("multicast checks", first.capture.describe() if first.capture
                      else "joined receiver socket"),
                     ("timing", f"word delay {first.word_delay:g} s, fetch interval "
                                f"{first.fetch_interval:g} s (--word-delay, --fetch-interval); "
                                "step timeout 5 s unless the case sets its own")]
        return rows

    def _cause_lines(self, target):
        """Markdown lines: the causes of ``target``'s failures and the cases each explains."""
        out = []
        for cause in self.causes(target):
            cases = ", ".join(
                f"{case} ({self.cases[case]['level']}"
                + (f", needs {cause.premise_of[case]}" if case in cause.premise_of else "")
                + ")" for case in cause.cases)
            out.append(f"- **{_md(cause.describe())}**: {len(cause.cases)} "
                       f"case{'s' if len(cause.cases) != 1 else ''}: {_md(cases)}; "
                       f"e.g. {_md(cause.example)}")
        return out

    def _target_rows(self, settings):
        for target in self.ordered_targets():
            setting = settings.get(target)
            if setting is None:
                broker = worker = ""
            else:
                broker = ("already running at %s:%d (client), %d (worker)"
                          % setting.broker_addr if setting.broker_addr
                          else setting.broker_cmd)
                worker = setting.worker_cmd
            yield target, broker, worker

    def markdown(self, exitstatus):
        settings, spec_path, version, network, when = self._about()
        targets = self.ordered_targets()
        out = ["# workq conformance report", "",
               f"- run: {when}; pytest exit status {exitstatus}"]
        out += [f"- {label}: {_md(value)}" for label, value in self.conditions()]
        out += ["", "## Targets", "",
                "| target | totals | broker | worker | client-port replies |",
                "|---|---|---|---|---|"]
        for target, broker, worker in self._target_rows(settings):
            out.append(f"| {_md(target)} | {_md(self.totals_line(target))} | "
                       f"{_md_code(broker)} | {_md_code(worker)} | "
                       f"{_md(_replies_of(settings.get(target)))} |")
        if not targets:
            out.append("| (no case ran) | | | | |")
        out += ["", "## Totals", ""]
        out += [f"- **{target}**: {self.totals_line(target)}" for target in targets]
        out += ["", "## Causes", "",
                "Failures grouped by what the target did; a cause explains each case "
                "listed after it (a case that `needs` a failing case is filed under it).", ""]
        for target in targets:
            lines = self._cause_lines(target)
            out += [f"### Causes on {_md(target)}", ""] + (lines or ["None."]) + [""]
        out += ["", "## Cases", "",
                "| id | level | role | section | title | " + " | ".join(
                    _md(t) for t in targets) + " |",
                "|---|---|---|---|---|" + "---|" * len(targets)]
        for case in self.ordered_cases():
            props = self.cases[case]
            cells = []
            for target in targets:
                result = self.results.get((case, target))
                cell = _md(result.cell()) if result else "not run"
                cells.append(f"**{cell}**" if result and result.failed else cell)
            out.append(f"| {_md(case)} | {_md(props['level'])} | {_md(props['role'])} | "
                       f"{_md(props['section'])} | {_md(props['title'])} | "
                       + " | ".join(cells) + " |")
        failures = list(self.failures())
        out += ["", "## Failures", ""]
        if not failures:
            out += ["None.", ""]
        for case, target, result in failures:
            fence = "`" * max(3, _longest_backtick_run(result.text) + 1)
            out += [f"### {case} on {target}: {self.cases[case]['title']}", "",
                    f"{result.status}: {result.reason}", "",
                    fence + "text", result.text.rstrip("\n"), fence, ""]
        return "\n".join(out)

    def html(self, exitstatus):
        settings, spec_path, version, network, when = self._about()
        targets = self.ordered_targets()
        e = html.escape
        out = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
               "<title>workq conformance report</title>", "<style>",
               "body{font-family:sans-serif;margin:2em}",
               "table{border-collapse:collapse}td,th{border:1px solid #ccc;"
               "padding:.2em .5em;text-align:left;vertical-align:top}",
               "td.id,th.id{white-space:nowrap;font-family:monospace}",
               "td.title{min-width:18em}td.cell{max-width:28em}",
               # Core failures stand out; extended ones (workq's additions) are paler.
               ".PASS{background:#dfd}.SKIP{background:#eee}",
               ".core .FAIL,.core .ERROR{background:#f99}",
               ".extended .FAIL,.extended .ERROR{background:#fde3c0}",
               "pre{background:#f6f6f6;padding:1em;overflow-x:auto}",
               "</style></head><body>", "<h1>workq conformance report</h1>", "<ul>",
               f"<li>run: {e(when)}; pytest exit status {exitstatus}</li>"]
        out += [f"<li>{e(label)}: {e(str(value))}</li>" for label, value in self.conditions()]
        out += ["</ul>", "<h2>Targets</h2>",
                "<table><tr><th>target</th><th>totals</th><th>broker</th><th>worker</th>"
                "<th>client-port replies</th></tr>"]
        for target, broker, worker in self._target_rows(settings):
            out.append(f"<tr><td class='id'>{e(target)}</td><td>{e(self.totals_line(target))}"
                       f"</td><td><code>{e(broker)}</code></td><td><code>{e(worker)}</code>"
                       f"</td><td>{e(_replies_of(settings.get(target)))}</td></tr>")
        out += ["</table>", "<h2>Causes</h2>",
                "<p>Failures grouped by what the target did; a cause explains each case "
                "listed after it (a case that needs a failing case is filed under it).</p>"]
        for target in targets:
            out.append(f"<h3>Causes on {e(target)}</h3>")
            causes = self.causes(target)
            if not causes:
                out.append("<p>None.</p>")
                continue
            out.append("<ul>")
            for cause in causes:
                links = ", ".join(
                    f"<a href='#{e(case)}-{e(target)}'>{e(case)}</a> "
                    f"({e(self.cases[case]['level'])})" for case in cause.cases)
                out.append(f"<li><b>{e(cause.describe())}</b>: {links}<br>"
                           f"<small>e.g. {e(cause.example)}</small></li>")
            out.append("</ul>")
        for level in LEVELS:
            cases = [case for case in self.ordered_cases()
                     if self.cases[case]["level"] == level]
            if not cases:
                continue
            out += [f"<h2>{level.capitalize()} cases ({len(cases)})</h2>",
                    f"<table class='{level}'><tr><th class='id'>id</th><th>role</th>"
                    "<th>section</th><th>title</th>"
                    + "".join(f"<th class='id'>{e(t)}</th>" for t in targets) + "</tr>"]
            for case in cases:
                props = self.cases[case]
                row = (f"<td>{e(props['role'])}</td><td>{e(props['section'])}</td>"
                       f"<td class='title'>{e(props['title'])}</td>")
                for target in targets:
                    result = self.results.get((case, target))
                    if result is None:
                        row += "<td class='cell'>not run</td>"
                    elif result.failed:
                        row += (f"<td class='cell {result.status}'><a href='#{e(case)}-"
                                f"{e(target)}'>{e(result.cell())}</a></td>")
                    else:
                        row += f"<td class='cell {result.status}'>{e(result.cell())}</td>"
                out.append(f"<tr><td class='id'>{e(case)}</td>{row}</tr>")
            out.append("</table>")
        out.append("<h2>Failures</h2>")
        failures = list(self.failures())
        if not failures:
            out.append("<p>None.</p>")
        for case, target, result in failures:
            out += [f"<h3 id='{e(case)}-{e(target)}'>{e(case)} on {e(target)} "
                    f"({e(self.cases[case]['level'])}): {e(self.cases[case]['title'])}</h3>",
                    f"<p>{e(result.status)}: {e(result.reason)}</p>",
                    f"<pre>{e(result.text)}</pre>"]
        out.append("</body></html>")
        return "\n".join(out) + "\n"


def _replies_of(setting):
    replies = getattr(setting, "replies", None)
    return replies.describe() if replies is not None else "workq (JOB -> 'ID <n>')"


def _levels_line(config):
    from . import plugin  # loaded by now, as in _target_settings
    return plugin._levels_line(config)


def _selection_line(config):
    """The case selection options of the run, as given."""
    parts = []
    for option, dest in (("--case", "workq_case"), ("--section", "workq_section"),
                         ("--role", "workq_role"), ("-k", "keyword"), ("-m", "markexpr")):
        try:
            values = config.getoption(dest)
        except ValueError:
            continue
        for value in values if isinstance(values, list) else [values]:
            if value:
                parts.append(f"{option} {value}")
    return " ".join(parts) or "every case"


def _target_settings(config):
    """Target name -> runner Settings, as the plugin configured them."""
    from . import plugin  # the plugin module is loaded by now; no import cycle
    targets_key = getattr(plugin, "TARGETS", None)
    settings = config.stash.get(targets_key, None) if targets_key is not None else None
    return settings or {}


def _md(text):
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_code(text):
    if not text:
        return ""
    fence = "`" * (_longest_backtick_run(text) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}".replace("|", "\\|")


def _longest_backtick_run(text):
    longest = run = 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    return longest
