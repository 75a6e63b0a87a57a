"""Move this process into a private network namespace, if permitted.

Why: the workers send multicast; inside a namespace of our own nothing can
leave the machine and ports of parallel test processes cannot clash. The
namespace applies to the calling thread and is inherited by the processes it
starts, so call this before opening any socket or starting any target.
Outside a namespace everything still runs on loopback (workers pin the
multicast interface to 127.0.0.1).
"""

import ctypes
import os
import shutil
import subprocess

__all__ = ["enter_private_netns"]

CLONE_NEWNET = 0x40000000

LOOPBACK_SETUP = (
    ["ip", "link", "set", "lo", "up"],
    ["ip", "link", "set", "lo", "multicast", "on"],
    ["ip", "route", "add", "224.0.0.0/4", "dev", "lo"],
)


def enter_private_netns():
    """Try to unshare the network namespace and set up ``lo``.

    Returns (entered, description) for the report header; on any failure the
    process stays in (or returns to) the namespace it started in.
    """
    if not os.path.exists("/proc/thread-self/ns/net"):
        return False, "loopback (no network namespaces on this system)"
    if shutil.which("ip") is None:
        return False, "loopback (`ip` command not found)"
    libc = ctypes.CDLL(None, use_errno=True)
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            error = os.strerror(ctypes.get_errno())
            return False, f"loopback (unshare(CLONE_NEWNET) not permitted: {error})"
        for command in LOOPBACK_SETUP:
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                # Back to where we were: a namespace without lo is useless.
                libc.setns(original, CLONE_NEWNET)
                message = result.stderr.strip() or f"exit {result.returncode}"
                return False, f"loopback (`{' '.join(command)}` failed: {message})"
    finally:
        os.close(original)
    return True, "private network namespace (lo up, multicast on, 224.0.0.0/4 via lo)"
