"""What /proc says about a process and about this machine.

The broker's CPU time is read from ``/proc/PID/stat`` (utime + stime, every
thread of the process included), before and after a measured run, so the
load generator's own cost never counts.
"""

import os
import platform
import time

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid):
    with open(f"/proc/{pid}/stat", "rb") as stat:
        data = stat.read()
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    return data[data.rindex(b")") + 2:].split()


def cpu_seconds(pid):
    """User + system CPU time of process ``pid`` (all its threads), in seconds."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS     # utime, stime: fields 14, 15


def snapshot(pid):
    """(CPU seconds, minor page faults, system CPU seconds) of process ``pid`` so
    far (proc(5): utime, stime, minflt are fields 14, 15, 10)."""
    fields = _stat_fields(pid)
    system = int(fields[12]) / CLOCK_TICKS
    return int(fields[11]) / CLOCK_TICKS + system, int(fields[7]), system


def status_field(pid, name):
    """A ``Name:  value kB`` line of /proc/PID/status, in bytes (None when absent)."""
    prefix = name.encode() + b":"
    with open(f"/proc/{pid}/status", "rb") as status:
        for line in status:
            if line.startswith(prefix):
                parts = line.split()
                value = int(parts[1])
                return value * 1024 if len(parts) > 2 and parts[2] == b"kB" else value
    return None


def rss_bytes(pid):
    """Resident set size (VmRSS) of process ``pid``, in bytes."""
    return status_field(pid, "VmRSS")


def thread_count(pid):
    return status_field(pid, "Threads")


def own_cpu_seconds():
    """CPU time of this process (user + system)."""
    times = os.times()
    return times.user + times.system


def load_average():
    return os.getloadavg()


def machine_info():
    """CPU model, cores, RAM, kernel: for the report's header."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ram = None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    ram = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "ram_bytes": ram,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def wait_for_quiet(max_wait, threshold, report=print, poll=10.0):
    """Wait up to ``max_wait`` seconds for the 1-minute load average to drop
    below ``threshold``; returns the load average when it stops waiting."""
    deadline = time.monotonic() + max_wait
    load = load_average()[0]
    while load >= threshold and time.monotonic() < deadline:
        report(f"bench: load average {load:.2f} >= {threshold:g}; waiting for a quieter machine "
               f"({deadline - time.monotonic():.0f} s left)")
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
        load = load_average()[0]
    return load


# The host probe's loop: sum(range(PROBE_SPAN)) takes about 2.5 ms on this
# machine when its host is quiet. Short enough to take before every run, long
# enough that the clock's resolution does not matter.
PROBE_SPAN = 200_000


def host_probe(cpus=None, repeats=5):
    """How fast the host lets this guest compute right now: the seconds of the best
    of ``repeats`` runs of ``sum(range(PROBE_SPAN))`` (pure CPU: no I/O, no
    allocation that grows), on each of ``cpus`` in turn, the slowest CPU's best
    returned. ``cpus``: CPU numbers (default: where this process runs now); the
    process's affinity is restored afterwards. About 12 ms per CPU.

    On a virtual machine, a host busy with other guests slows every guest's CPU by
    tens of percent for minutes at a time, which the guest's load average does not
    show but this probe does (on this machine, in a slow hour of 2026-12-01, the
    best of five ``sum(range(1000))`` ranged from 13.0 to 17.9 µs within a minute).
    The same idea as pyperf's warnings about an unstable system, applied per run."""
    allowed = os.sched_getaffinity(0)
    slowest = 0.0
    try:
        for cpu in (sorted(cpus) if cpus else [None]):
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})
            best = float("inf")
            for _ in range(repeats):
                started = time.perf_counter()
                sum(range(PROBE_SPAN))
                best = min(best, time.perf_counter() - started)
            slowest = max(slowest, best)
    finally:
        if cpus:
            os.sched_setaffinity(0, allowed)
    return slowest
