"""Move this process into a private network namespace, if permitted.

Used by the conformance suite (per test process) and by tools.demo.

Inside it only a loopback interface exists, so no datagram (multicast
included) can reach a real network. ``enter_private_netns()`` returns True
when the process is now inside such a namespace with ``lo`` up, multicast on
and ``224.0.0.0/4`` routed to ``lo``; False (never an exception) when that is
not permitted or not possible, in which case the process is left in the
namespace it started in. Child processes started afterwards inherit the
namespace. Call it before starting threads.
"""

import ctypes
import ctypes.util
import os
import shutil
import subprocess
import sys

__all__ = ["describe", "enter_private_netns", "inside_private_netns", "last_error"]

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000

_last_error = ""
_entered = False


def last_error():
    """Why the last ``enter_private_netns()`` returned False ('' otherwise)."""
    return _last_error


def _libc():
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _call(func, *args):
    if func(*args) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


# The contract's default ports (DESIGN.md: clients 50000, workers 50001, words 30000,
# syslog 30001), kept out of the namespace's ephemeral range: an outgoing connection
# that drew one of them held it in TIME_WAIT for a minute, and a broker started on the
# defaults could not listen there (seen in CI). ip(7): ip_local_reserved_ports, a
# setting of each network namespace.
RESERVED_PORTS = "30000-30001,50000-50001"


def _reserve_default_ports():
    """Best effort: a user namespace may not be allowed to write the setting."""
    try:
        _write("/proc/sys/net/ipv4/ip_local_reserved_ports", RESERVED_PORTS)
    except OSError:
        pass


def _setup_loopback():
    ip = shutil.which("ip") or next(
        (p for p in ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip")
         if os.access(p, os.X_OK)), None)
    if ip is None:
        raise OSError("the 'ip' command (iproute2) is not installed")
    for args in (["link", "set", "lo", "up"],
                 ["link", "set", "lo", "multicast", "on"],
                 ["route", "add", "224.0.0.0/4", "dev", "lo"]):
        proc = subprocess.run([ip, *args], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise OSError(f"'ip {' '.join(args)}' failed: "
                          f"{(proc.stderr or proc.stdout).strip()}")


def enter_private_netns():
    """Enter a fresh network namespace with a multicast-capable loopback.

    Tries ``unshare(CLONE_NEWNET)`` (needs root / CAP_SYS_ADMIN), then, if
    not permitted, ``unshare(CLONE_NEWUSER | CLONE_NEWNET)`` with the
    current uid mapped to root (needs unprivileged user namespaces and a
    single-threaded process). Returns True on success, False otherwise.
    """
    global _last_error, _entered
    _last_error = ""
    if not sys.platform.startswith("linux"):
        _last_error = "network namespaces exist only on Linux"
        return False
    try:
        libc = _libc()
        old_ns = os.open("/proc/self/ns/net", os.O_RDONLY)
    except OSError as exc:
        _last_error = f"cannot prepare: {exc}"
        return False
    try:
        try:
            _call(libc.unshare, CLONE_NEWNET)
        except OSError as exc:
            if os.geteuid() == 0:
                _last_error = f"unshare(CLONE_NEWNET) failed: {exc.strerror}"
                return False
            uid, gid = os.geteuid(), os.getegid()
            try:
                _call(libc.unshare, CLONE_NEWUSER | CLONE_NEWNET)
            except OSError as exc2:
                _last_error = (f"unshare not permitted ({exc.strerror}; "
                               f"with a user namespace: {exc2.strerror})")
                return False
            try:
                _write("/proc/self/setgroups", "deny")
            except OSError:
                pass
            # No way back to the old user namespace: if the mapping fails we
            # still have a usable (if unmapped) process, only lo stays down.
            _write("/proc/self/uid_map", f"0 {uid} 1")
            _write("/proc/self/gid_map", f"0 {gid} 1")
        try:
            _setup_loopback()
        except OSError as exc:
            _last_error = str(exc)
            try:
                _call(libc.setns, old_ns, CLONE_NEWNET)
            except OSError:
                pass
            return False
        _reserve_default_ports()
        _entered = True
        return True
    except OSError as exc:
        _last_error = str(exc)
        return False
    finally:
        os.close(old_ns)


def inside_private_netns():
    """True once enter_private_netns() has succeeded in this process."""
    return _entered


def describe(entered):
    """One line for a report header: where this process's traffic can go."""
    if entered:
        return "private network namespace (lo up, multicast on, 224.0.0.0/4 via lo)"
    return f"loopback only, no private namespace ({last_error()})"
