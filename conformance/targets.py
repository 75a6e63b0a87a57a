"""Processes under test: start from a command template, find out when they
listen, stop them, keep what they printed. Only sockets and /proc: the suite
never imports an implementation."""

import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time

__all__ = ["PAUSE_TIMEOUT", "TargetError", "Target", "free_tcp_port", "is_listening",
           "udp_ports_of_process_tree", "ports_of_process_tree", "why_cannot_start"]

STOP_GRACE_SECONDS = 2.0
# Longest wait for a paused target to be seen stopped.
PAUSE_TIMEOUT = 2.0


class TargetError(Exception):
    """A target could not be started or did not come up. ``cannot_start`` is
    True when its program could not even be executed (no such file, no
    execute bit): no case of that target can run."""

    cannot_start = False


def _program(words):
    """The program a command's words run, past ``env`` and its VAR=value words,
    and the script when the program is a Python interpreter."""
    while words and (words[0] == "env" or ("=" in words[0] and not words[0].startswith("-"))):
        words = words[1:]
    if not words:
        return None, None
    program, script = words[0], None
    if os.path.basename(program).startswith("python") and len(words) > 1 \
            and not words[1].startswith("-"):
        script = words[1]
    return program, script


def why_cannot_start(command_line, cwd):
    """Why ``command_line`` (placeholders filled) cannot start, run in ``cwd``:
    its program is missing or has no execute bit, or the Python script it
    names is missing. None when nothing is visibly wrong."""
    try:
        words = shlex.split(command_line)
    except ValueError as error:
        return f"the command cannot be split into words: {error}"
    program, script = _program(words)
    if program is None:
        return "the command names no program"
    if "/" in program:
        path = os.path.join(cwd, program)
        if not os.path.exists(path):
            return f"{program}: no such file (relative paths start at {cwd})"
        if os.path.isdir(path) or not os.access(path, os.X_OK):
            return (f"{program}: not executable (no execute bit): chmod +x it, or start it "
                    f"with its interpreter, e.g. '{{python}} {program} ...'")
    elif shutil.which(program) is None:
        return f"{program}: not found on PATH"
    if script is not None and not os.path.exists(os.path.join(cwd, script)):
        return f"{script}: no such file (relative paths start at {cwd})"
    return None


def free_tcp_port():
    # Bind port 0 to let the kernel pick; inside our own network namespace
    # nobody else can take it before the target binds it.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _proc_net_rows(table):
    # thread-self: the network namespace is per thread (see netns.py).
    try:
        with open(f"/proc/thread-self/net/{table}") as rows:
            return [row.split() for row in rows.readlines()[1:]]
    except OSError:
        return None


def is_listening(port, host="127.0.0.1"):
    """True when something listens on TCP ``port``.

    Read from /proc/net/tcp where we can, so that finding out costs the
    target no connection (a probe connection would show up, briefly, in
    STATS counts); elsewhere fall back to a connect probe.
    """
    rows = _proc_net_rows("tcp")
    if rows is None:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return True
        except OSError:
            return False
    rows += _proc_net_rows("tcp6") or []
    listen = "0A"
    return any(int(row[1].rsplit(":", 1)[1], 16) == port and row[3] == listen
               for row in rows)


def _thread_states(pid):
    """The state letter of every thread of every process in ``pid``'s tree
    (the third field of /proc/PID/task/TID/stat, proc(5)); gone ones are left out."""
    states = []
    for process in _process_tree(pid):
        try:
            tasks = os.listdir(f"/proc/{process}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{process}/task/{task}/stat") as stat:
                    states.append(stat.read().rsplit(")", 1)[1].split()[0])
            except (OSError, IndexError):
                continue
    return states


def _all_stopped(pid):
    """True when every thread of every process in ``pid``'s tree is stopped (T)
    or gone."""
    return all(state in ("T", "t", "Z", "X") for state in _thread_states(pid))


def _settled(pid):
    """True when nothing in ``pid``'s tree runs (every thread sleeps, S in its
    stat, proc(5): blocked in a system call, for a broker its wait for events;
    or is a zombie) and none of its TCP sockets holds what it has not taken:
    no unread bytes, no connection waiting for accept() (rx_queue 0 in
    /proc/net/tcp and tcp6, proc(5): for a listening socket that column is its
    accept backlog)."""
    if not all(state in ("S", "Z", "X") for state in _thread_states(pid)):
        return False
    inodes = _socket_inodes(pid)
    for table in ("tcp", "tcp6"):
        for row in _proc_net_rows(table) or []:
            if row[9] in inodes and int(row[4].split(":")[1], 16):
                return False
    return True


def _process_tree(pid):
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    todo += [int(child) for child in children.read().split()]
        except OSError:
            pass
    return pids


def udp_ports_of_process_tree(pid):
    """Local UDP ports of the sockets a process (or its children) holds.

    This is how a multicast or syslog datagram's source port is traced back
    to the worker that sent it, for ``expect_words`` with ``from:``.
    """
    return ports_of_process_tree(pid, ("udp", "udp6"))


def ports_of_process_tree(pid, tables):
    """Local ports of the sockets a process (or its children) holds, in the
    /proc/net ``tables`` named (``udp``, ``udp6``, ``tcp``, ``tcp6``)."""
    inodes = _socket_inodes(pid)
    ports = set()
    for table in tables:
        for row in _proc_net_rows(table) or []:
            if row[9] in inodes:
                ports.add(int(row[1].rsplit(":", 1)[1], 16))
    return ports


def _socket_inodes(pid):
    """The inode numbers (strings, as /proc/net lists them) of the sockets that
    the processes of ``pid``'s tree hold, from their /proc/PID/fd links."""
    inodes = set()
    for member in _process_tree(pid):
        try:
            for fd in os.listdir(f"/proc/{member}/fd"):
                link = os.readlink(f"/proc/{member}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    return inodes


class Target:
    """One started process (a broker or a worker) and its captured output."""

    def __init__(self, label, command_line, cwd):
        self.label = label
        self.command_line = command_line
        self.stdout = tempfile.TemporaryFile()
        self.stderr = tempfile.TemporaryFile()
        self.stop_note = ""
        # Unbuffered so that what a Python target printed survives SIGTERM.
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        try:
            self.process = subprocess.Popen(
                shlex.split(command_line), cwd=cwd, env=env,
                stdin=subprocess.DEVNULL, stdout=self.stdout, stderr=self.stderr,
                # Own process group: a wrapper's children get the signals too.
                start_new_session=True)
        except OSError as error:
            failure = TargetError(f"cannot start {label}: {command_line}: {error}")
            failure.cannot_start = True
            raise failure from None

    @property
    def pid(self):
        return self.process.pid

    @property
    def returncode(self):
        return self.process.poll()

    def wait_listening(self, ports, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not all(is_listening(port) for port in ports):
            if self.returncode is not None:
                raise TargetError(f"{self.label} exited with code {self.returncode} "
                                  f"before listening on {ports}")
            if time.monotonic() > deadline:
                raise TargetError(f"{self.label} was not listening on {ports} "
                                  f"after {timeout:.1f} s")
            time.sleep(0.01)

    def _signal(self, signum):
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass

    def pause(self, timeout=PAUSE_TIMEOUT, settle=False):
        """SIGSTOP the process group and return once every thread of the target's
        process tree is stopped (state T in /proc/PID/task/TID/stat, proc(5)),
        or after ``timeout`` s: kill() returns before a busy process on another
        CPU has stopped, and what a step sends meanwhile must find it stopped.
        The target runs no code until ``resume``.

        ``settle``: first wait (at most ``timeout`` s) until the target is
        asleep with nothing unread (see ``_settled``), so that it stops in its
        wait for events, not in the middle of a pass over them. Stopped mid-pass,
        an epoll broker keeps the descriptors of that pass on its ready list in
        that pass's order (level-triggered items go back to the list's tail,
        fs/eventpoll.c ep_send_events), and on resume it reads a connection
        that was ready before the pause ahead of one whose bytes came first
        during it. Returns False when the target was still busy at the
        timeout (it is paused anyway), else True."""
        settled = True
        if settle:
            deadline = time.monotonic() + timeout
            while not _settled(self.process.pid):
                if time.monotonic() > deadline or self.returncode is not None:
                    settled = False
                    break
                time.sleep(0.001)   # falling asleep is not an event we can wait on
        self._signal(signal.SIGSTOP)
        deadline = time.monotonic() + timeout
        while not _all_stopped(self.process.pid) and time.monotonic() < deadline:
            time.sleep(0.001)     # the group stop is not an event we can wait on
        return settled

    def resume(self):
        self._signal(signal.SIGCONT)

    def terminate(self, grace=STOP_GRACE_SECONDS):
        """SIGTERM, then SIGKILL after ``grace`` s; True if SIGTERM was enough."""
        if self.returncode is not None:
            return True
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(grace)
            self.stop_note = f"exited with code {self.returncode} after SIGTERM"
            return True
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.process.wait()
            self.stop_note = f"killed: still running {grace:.1f} s after SIGTERM"
            return False

    def output(self, limit=4000):
        """stdout and stderr, each cut to its last ``limit`` characters."""
        texts = []
        for stream in (self.stdout, self.stderr):
            stream.seek(0)
            text = stream.read().decode("utf-8", "replace")
            if len(text) > limit:
                text = f"[... {len(text) - limit} characters cut ...]\n" + text[-limit:]
            texts.append(text)
        return texts

    def close(self):
        self.stdout.close()
        self.stderr.close()

    def report(self):
        status = self.stop_note or (
            "running" if self.returncode is None else f"exited with code {self.returncode}")
        out, err = self.output()
        lines = [f"{self.label} (pid {self.pid}, {status}): {self.command_line}"]
        for name, text in (("stdout", out), ("stderr", err)):
            lines.append(f"  --- {name} ---" + ("" if text.strip() else " (empty)"))
            lines += ["  " + line for line in text.rstrip("\n").splitlines()]
        return "\n".join(lines)
