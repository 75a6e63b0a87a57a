"""Socket set-up shared by both brokers (impl_threads imports it too)."""

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


def keep_alive(sock):
    """Notice a peer that vanished without a FIN (its held jobs must be requeued)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 6)
