"""The results folder of a workload run.

=================  ============================================================
history.jsonl      the history, one event a line (history.py)
results.json       the checkers' results (checkers.py), anomalies with the
                   events proving them
summary.txt        the text summary (also printed)
junit.xml          one testcase per checker, for CI
timeline.png       each job's life across the workers over time, faults shaded
latency.png        JOB latency quantiles over time, faults shaded
throughput.png     jobs acknowledged and completed per second, faults shaded
timeline.html      one self-contained page: the timeline as SVG (hover a bar
                   for the job), the two plots inlined, the summary
=================  ============================================================

The plots need matplotlib; without it they are left out and the summary says
so. The HTML timeline is drawn by hand and needs nothing.
"""

import base64
import html
import json
import os
from collections import Counter, defaultdict
from xml.sax.saxutils import escape, quoteattr

from .checkers import Facts, _holdings

__all__ = ["write_results", "summary_text", "fault_windows"]

RULE = 79


def fault_windows(events):
    """[(start, end, kind)] of the faults in a history."""
    open_, windows = {}, []
    for event in events:
        if event["f"] != "fault":
            continue
        value = event["value"]
        key = (value.get("fault"), tuple(value.get("targets", ())))
        if value.get("phase") == "start":
            open_[key] = event["time"]
        elif value.get("phase") == "end" and key in open_:
            windows.append((open_.pop(key), event["time"], key[0]))
    end = max((e["time"] for e in events), default=0.0)
    windows += [(start, end, key[0]) for key, start in open_.items()]
    return sorted(windows)


def _show(event):
    value = {k: v for k, v in event["value"].items() if k not in ("command",)}
    op = f" (op {event['op']})" if "op" in event else ""
    return (f"{event['time']:9.3f}s  {event['process']:<15} {event['type']:<6} {event['f']:<10} "
            f"{json.dumps(value, separators=(',', ':'))[:140]}{op}")


def summary_text(name, events, verdict):
    """The summary: verdict, counts, checkers, and each anomaly with its events."""
    facts = Facts(events)
    target = facts.target
    lines = ["=" * RULE, f" workq workload summary: {name} ".center(RULE, "="), "=" * RULE]
    state = "VALID" if verdict["valid"] else "INVALID"
    lines.append(f"target {name}: {state}  (seed {target.get('seed')}, {target.get('seconds')} s, "
                 f"level {target.get('level')}, {'capture' if facts.capture else 'receiver socket'})")
    lines.append(f"broker: {target.get('broker')}")
    lines.append(f"worker: {target.get('worker')}")
    faults = Counter(e["value"]["fault"] for e in events
                     if e["f"] == "fault" and e["value"].get("phase") == "start")
    lines.append("nemesis: " + (", ".join(f"{k} x{n}" for k, n in sorted(faults.items()))
                               or "none"))
    if target.get("skipped_nemesis"):
        lines.append("not run on this target: " + ", ".join(target["skipped_nemesis"])
                     + " (restart-broker needs a durable broker; faults that lose a holder's "
                       "jobs need an extended broker, or --nemesis naming them)")
    by_name = {r["checker"]: r for r in verdict["results"]}
    stats = by_name["total-queue"]["stats"]
    lines.append(f"jobs: {stats['attempted']} submitted, {stats['acknowledged']} acknowledged, "
                 f"{stats['completed']} completed; run more than once: {stats['duplicated']} "
                 f"({stats['extra_executions']} extra executions, at-least-once: not a failure)")
    drain = by_name["drain"]["stats"]
    if drain:
        lines.append(f"drain: the last job completed {drain['drained_after']:.1f} s after the "
                     f"faults stopped at {drain['heal']:.1f} s (bound {drain['bound']:.1f} s)")
    lines.append("")
    lines.append(f"{'checker':<20}{'result':<10}anomalies")
    for result in verdict["results"]:
        mark = {True: "valid", False: "INVALID", "unknown": "unknown"}[result["valid"]]
        counts = ", ".join(f"{k} {n}" for k, n in sorted(result["count"].items())) or "-"
        note = f"  ({result['note']})" if result["note"] else ""
        lines.append(f"{result['checker']:<20}{mark:<10}{counts}{note}")
    for result in verdict["results"]:
        if result["valid"] is not False:
            continue
        for anomaly in result["anomalies"][:5]:
            lines += ["", f"anomaly {anomaly['name']}: {anomaly['text']}"]
            lines += ["  " + _show(event) for event in anomaly["events"]]
        hidden = sum(result["count"].values()) - min(5, len(result["anomalies"]))
        if hidden > 0:
            lines.append(f"  ... and {hidden} more {result['checker']} anomalies in results.json")
    return "\n".join(lines) + "\n"


def _junit(name, verdict):
    cases = []
    for result in verdict["results"]:
        body = ""
        if result["valid"] is False:
            text = "\n".join(f"{a['name']}: {a['text']}" for a in result["anomalies"])
            message = ", ".join(f"{k} {n}" for k, n in sorted(result["count"].items()))
            body = f"<failure message={quoteattr(message)}>{escape(text)}</failure>"
        elif result["valid"] == "unknown":
            body = f"<skipped message={quoteattr(result['note'])}/>"
        cases.append(f'  <testcase classname="workload.{escape(name)}" '
                     f'name={quoteattr(result["checker"])}>{body}</testcase>')
    failures = sum(1 for r in verdict["results"] if r["valid"] is False)
    skipped = sum(1 for r in verdict["results"] if r["valid"] == "unknown")
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<testsuites>\n'
            f'<testsuite name={quoteattr("workq-workload-" + name)} tests="{len(cases)}" '
            f'failures="{failures}" skipped="{skipped}" errors="0">\n'
            + "\n".join(cases) + "\n</testsuite>\n</testsuites>\n")


def _lanes(events):
    """Timeline bars: (lane, start, end, job id, label) from every known holding."""
    facts = Facts(events)
    bars = []
    for job_id, holder, start, end, _, _ in _holdings(facts):
        bars.append((holder, start, max(end, start + 0.004), job_id))
    order = sorted({b[0] for b in bars}, key=lambda n: (not n.startswith("worker-"),
                                                        int(n.rsplit("-", 1)[1])
                                                        if n.rsplit("-", 1)[1].isdigit() else 0, n))
    return bars, order


def _anomaly_times(verdict):
    times = []
    for result in verdict["results"]:
        if result["valid"] is False:
            for anomaly in result["anomalies"]:
                times.append((anomaly.get("at", 0.0), anomaly["name"]))
    return times


def _plots(folder, events, verdict):
    """Write the PNGs; returns the names written, or a note why none."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        return [], f"plots left out: matplotlib is not installed ({error})"
    windows = fault_windows(events)
    colors = {}
    palette = plt.get_cmap("tab10")

    def shade(ax):
        for start, end, kind in windows:
            if kind not in colors:
                colors[kind] = palette(len(colors) % 10)
            ax.axvspan(start, end, color=colors[kind], alpha=0.15, lw=0)
        for kind, color in colors.items():
            ax.plot([], [], color=color, alpha=0.4, lw=8, label=kind)

    written = []
    end = max((e["time"] for e in events), default=1.0)

    def finish(fig, ax, name, title, ylabel=None, legend_y=-0.18):
        """The time axis, labels and legend every plot shares; saved as ``name``."""
        ax.set_xlim(0, end)
        ax.set_xlabel("seconds since the run began")
        if ylabel:
            ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, legend_y), fontsize="small",
                  ncol=9, frameon=False)
        fig.tight_layout()
        fig.savefig(os.path.join(folder, name), dpi=90)
        plt.close(fig)
        written.append(name)

    bars, lanes = _lanes(events)
    fig, ax = plt.subplots(figsize=(12, 0.5 * len(lanes) + 2.6))
    shade(ax)
    cmap = plt.get_cmap("viridis")
    top = max((b[3] for b in bars), default=1)
    for lane, start, stop, job_id in bars:
        y = lanes.index(lane)
        ax.barh(y, stop - start, left=start, height=0.6, color=cmap(job_id / max(top, 1)),
                edgecolor="none")
    for at, name in _anomaly_times(verdict):
        ax.axvline(at, color="red", lw=0.8)
    if _anomaly_times(verdict):
        ax.plot([], [], color="red", lw=0.8, label="anomaly")
    ax.set_yticks(range(len(lanes)), lanes)
    finish(fig, ax, "timeline.png",
           "jobs held by each worker over time (colour: job id; shaded: faults)",
           legend_y=-0.1)

    latencies = []
    for invoke, result in Facts(events).ops:
        if invoke["f"] == "job" and result is not None and result["type"] == "ok":
            latencies.append((invoke["time"], (result["time"] - invoke["time"]) * 1000))
    width = 0.5
    buckets = defaultdict(list)
    for at, ms in latencies:
        buckets[int(at / width)].append(ms)
    fig, ax = plt.subplots(figsize=(12, 4.4))
    shade(ax)
    keys = sorted(buckets)
    for q, style in ((0.5, "-"), (0.95, "--"), (0.99, ":"), (1.0, "-.")):
        values = []
        for k in keys:
            data = sorted(buckets[k])
            values.append(data[min(len(data) - 1, int(q * len(data)))])
        ax.plot([k * width for k in keys], values, style, label=f"p{int(q * 100)}"
                if q < 1 else "max")
    ax.set_yscale("log")
    finish(fig, ax, "latency.png", "JOB latency quantiles per 0.5 s (shaded: faults)",
           "JOB latency (ms)")

    completed = Facts(events).completed_at()
    acked = Counter(int(t / width) for t, _ in latencies)
    done = Counter(int(t / width) for t in completed.values())
    fig, ax = plt.subplots(figsize=(12, 4))
    shade(ax)
    span = range(int(end / width) + 1)
    ax.plot([k * width for k in span], [acked[k] / width for k in span], label="acknowledged")
    ax.plot([k * width for k in span], [done[k] / width for k in span], label="completed (seen)")
    finish(fig, ax, "throughput.png", "throughput (shaded: faults)", "jobs per second")
    return written, ""


FAULT_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                "#7f7f7f"]


def _svg_timeline(events, verdict):
    bars, lanes = _lanes(events)
    end = max((e["time"] for e in events), default=1.0) or 1.0
    left, width, row = 120, 1000, 26
    height = row * len(lanes) + 50
    scale = width / end
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 20}" '
             f'height="{height}" font-family="sans-serif" font-size="12">']
    kinds = {}
    for start, stop, kind in fault_windows(events):
        color = kinds.setdefault(kind, FAULT_COLORS[len(kinds) % len(FAULT_COLORS)])
        parts.append(f'<rect x="{left + start * scale:.1f}" y="0" width="{(stop - start) * scale:.1f}" '
                     f'height="{row * len(lanes)}" fill="{color}" opacity="0.18">'
                     f'<title>{html.escape(kind)} {start:.2f}-{stop:.2f} s</title></rect>')
    for i, lane in enumerate(lanes):
        parts.append(f'<text x="4" y="{i * row + 17}">{html.escape(lane)}</text>')
    top = max((b[3] for b in bars), default=1)
    for lane, start, stop, job_id in bars:
        hue = int(280 * job_id / max(top, 1))
        parts.append(f'<rect x="{left + start * scale:.1f}" y="{lanes.index(lane) * row + 4}" '
                     f'width="{max(1.0, (stop - start) * scale):.1f}" height="{row - 8}" '
                     f'fill="hsl({hue},70%,45%)"><title>job {job_id} on {html.escape(lane)} '
                     f'{start:.3f}-{stop:.3f} s</title></rect>')
    for at, name in _anomaly_times(verdict):
        parts.append(f'<line x1="{left + at * scale:.1f}" x2="{left + at * scale:.1f}" y1="0" '
                     f'y2="{row * len(lanes)}" stroke="red"><title>{html.escape(name)} at '
                     f'{at:.3f} s</title></line>')
    for tick in range(0, int(end) + 1, max(1, int(end / 10))):
        x = left + tick * scale
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{row * len(lanes)}" '
                     f'y2="{row * len(lanes) + 5}" stroke="black"/>'
                     f'<text x="{x - 4:.1f}" y="{row * len(lanes) + 18}">{tick}</text>')
    parts.append(f'<text x="{left}" y="{row * len(lanes) + 38}">seconds since the run began; '
                 'shaded: faults (' + ", ".join(
                     f'<tspan fill="{c}">{html.escape(k)}</tspan>' for k, c in kinds.items())
                 + '); red: anomalies</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _html(folder, name, events, verdict, summary, images):
    embedded = []
    for image in images:
        if image == "timeline.png":
            continue
        with open(os.path.join(folder, image), "rb") as png:
            data = base64.b64encode(png.read()).decode()
        embedded.append(f'<h2>{html.escape(image[:-4])}</h2><img alt="{image}" '
                        f'src="data:image/png;base64,{data}">')
    state = "VALID" if verdict["valid"] else "INVALID"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>workq workload: {html.escape(name)}</title>
<style>body{{font-family:sans-serif;margin:1.5em;max-width:1200px}}
pre{{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:12px}}
.valid{{color:#186a18}}.invalid{{color:#b00}}img{{max-width:100%}}</style></head>
<body><h1>workq workload: {html.escape(name)} <span class="{state.lower()}">{state}</span></h1>
<h2>timeline</h2><p>Each bar is a job held by a worker: a suite worker from its FETCH to its
DONE or disconnect, a target worker from its first to its last datagram of the job.
Hover for the job.</p>
{_svg_timeline(events, verdict)}
{''.join(embedded)}
<h2>summary</h2><pre>{html.escape(summary)}</pre>
</body></html>
"""


def write_results(folder, name, events, verdict, history=None):
    """Write the whole folder; returns the summary text."""
    os.makedirs(folder, exist_ok=True)
    if history is not None:
        history.write(os.path.join(folder, "history.jsonl"))
    with open(os.path.join(folder, "results.json"), "w") as out:
        json.dump(verdict, out, indent=1)
    summary = summary_text(name, events, verdict)
    images, note = _plots(folder, events, verdict)
    if note:
        summary += note + "\n"
    with open(os.path.join(folder, "summary.txt"), "w") as out:
        out.write(summary)
    with open(os.path.join(folder, "junit.xml"), "w") as out:
        out.write(_junit(name, verdict))
    with open(os.path.join(folder, "timeline.html"), "w") as out:
        out.write(_html(folder, name, events, verdict, summary, images))
    return summary
