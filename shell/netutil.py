"""Socket set-up both brokers share: listeners, keepalive, descriptor limits."""

import math
import resource
import socket

# One recv takes this much: a whole burst of pipelined lines in one pass, yet
# under glibc's 128 KiB mmap threshold, so the buffer of each recv comes from
# the heap instead of an mmap/munmap pair (measured: two page faults per job).
READ_SIZE = 64 * 1024


def raise_descriptor_limit():
    """Use the hard limit on open files: epoll has no 1,024 ceiling, the default rlimit does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def listen(host, port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(socket.SOMAXCONN)
    sock.setblocking(False)
    return sock


# Keepalive probes sent before a silent peer is given up (spec leases.peers).
KEEPALIVE_PROBES = 3


def keep_alive(sock, timeout):
    """Notice a peer that vanished without FIN or RST within about ``timeout``
    seconds (>= 2), so its held jobs are requeued (spec leases.peers).

    Quiet connection: keepalive probes start after ceil(timeout / 2) s of
    silence, KEEPALIVE_PROBES of them spread over the other half (whole
    seconds, at least 1 apart). Linux's TCP_USER_TIMEOUT (tcp(7), RFC 5482)
    drops a connection whose data stays unacknowledged that long, and with
    keepalive on it replaces the probe count: the kernel gives up at the
    first probe timer that finds the peer silent for at least that long. So
    it is set to the last probe's time (idle + probes x interval), capped at
    ``timeout``: measured, a value between two probe times was only acted on
    at the next probe (20 s gave 22 s). A stopped process's kernel still
    answers both, so a hung (SIGSTOPped) peer is the lease's business, not this.
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    idle = max(1, math.ceil(timeout / 2))
    interval = max(1, int((timeout - idle) // KEEPALIVE_PROBES))
    if hasattr(socket, "TCP_KEEPIDLE"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        give_up = min(timeout, idle + KEEPALIVE_PROBES * interval)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(give_up * 1000))
