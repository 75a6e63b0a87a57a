"""Socket set-up both brokers share: listeners, keepalive, descriptor limits."""

import math
import os
import resource
import socket
import struct

# One recv takes this much: a whole burst of pipelined lines in one pass, yet
# under glibc's 128 KiB mmap threshold, so the buffer of each recv comes from
# the heap instead of an mmap/munmap pair (measured: two page faults per job).
READ_SIZE = 64 * 1024


def raise_descriptor_limit():
    """Use the hard limit on open files: epoll has no 1,024 ceiling, the default rlimit does.

    Returns the soft limit on open files (RLIMIT_NOFILE, getrlimit(2)) now in
    effect: a count of descriptors, or None when unlimited."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def open_descriptors():
    """How many file descriptors this process has open now (/proc/self/fd on
    Linux, proc(5)); 3 (stdin, stdout, stderr) where that cannot be read."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1     # less the one listdir opened
    except OSError:
        return 3


def listen(host, port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(socket.SOMAXCONN)
    sock.setblocking(False)
    return sock


# Keepalive probes sent before a silent peer is given up (spec leases.peers),
# unless a long timeout needs more of them (see keep_alive).
KEEPALIVE_PROBES = 3
# The largest values Linux takes, in seconds or probes (include/net/tcp.h:
# MAX_TCP_KEEPIDLE, MAX_TCP_KEEPINTVL, MAX_TCP_KEEPCNT; tcp(7)); setsockopt
# fails with EINVAL above them. TCP_USER_TIMEOUT is a C int of milliseconds.
MAX_KEEPIDLE = 32767
MAX_KEEPINTVL = 32767
MAX_KEEPCNT = 127
MAX_USER_TIMEOUT_MS = 2**31 - 1


def keepalive_settings(timeout):
    """The keepalive that gives up on a silent peer after about ``timeout``
    seconds (> 0), within the limits Linux takes (tcp(7)): returns
    ``(idle, interval, probes, user_timeout_ms)``, idle and interval in whole
    seconds, user_timeout_ms the TCP_USER_TIMEOUT in milliseconds.

    Probes start after ceil(timeout / 2) s of silence (at most MAX_KEEPIDLE),
    KEEPALIVE_PROBES of them spread over the rest, at least 1 s apart; when
    the rest needs probes further apart than MAX_KEEPINTVL, more probes are
    sent (at most MAX_KEEPCNT). Linux's TCP_USER_TIMEOUT (tcp(7), RFC 5482)
    drops a connection whose data stays unacknowledged that long, and with
    keepalive on it replaces the probe count: the kernel gives up at the
    first probe timer that finds the peer silent for at least that long. So
    it is set to the last probe's time (idle + probes x interval), capped at
    ``timeout`` and at MAX_USER_TIMEOUT_MS: measured, a value between two
    probe times was only acted on at the next probe (20 s gave 22 s). A
    timeout beyond what these limits reach (about 24.8 days) is shortened to
    it. Never raises for a positive finite ``timeout``.
    """
    idle = min(MAX_KEEPIDLE, max(1, math.ceil(timeout / 2)))
    rest = max(0.0, timeout - idle)
    probes = min(MAX_KEEPCNT, max(KEEPALIVE_PROBES, math.ceil(rest / MAX_KEEPINTVL)))
    interval = min(MAX_KEEPINTVL, max(1, int(rest // probes)))
    give_up = min(timeout, idle + probes * interval)
    return idle, interval, probes, min(MAX_USER_TIMEOUT_MS, int(give_up * 1000))


def keep_alive(sock, timeout):
    """Notice a peer that vanished without FIN or RST within about ``timeout``
    seconds (>= 2), so its held jobs are requeued (spec leases.peers); the
    settings are ``keepalive_settings(timeout)``, within the kernel's limits.
    A stopped process's kernel still answers the probes, so a hung
    (SIGSTOPped) peer is the lease's business, not this. Raises OSError when
    the kernel refuses an option (the caller drops that one connection).
    """
    idle, interval, probes, user_timeout_ms = keepalive_settings(timeout)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, probes)
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, user_timeout_ms)


def set_up_accepted(sock, peer_timeout, send_timeout=None):
    """The options every accepted connection gets: TCP_NODELAY (replies are
    single short lines), keepalive after ``peer_timeout`` seconds (keep_alive)
    and, when ``send_timeout`` is given, SO_SNDTIMEO of that many whole
    seconds (socket(7): a blocking send fails with EAGAIN after it; unlike
    settimeout() it leaves recv blocking). Raises OSError when the kernel
    refuses one: the caller closes that connection and goes on accepting.
    """
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if send_timeout is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                        struct.pack("ll", int(send_timeout), 0))
    keep_alive(sock, peer_timeout)
