"""Mutant worker: sends its words as the course's multicast helper does,
with TTL 32 on the system's default interface (no IP_MULTICAST_IF), and is
otherwise our worker. The spec's TTL 1 on 127.0.0.1 is workq's safety
default, not a requirement of the assignment.

With the default interface, datagrams to 239.0.0.1 would leave through a
real network card, so this script refuses to start unless its network
namespace has no interface but ``lo`` (the suite's private namespace).
"""

import socket
import sys

import _mutant  # noqa: F401
import shell.worker_io

COURSE_TTL = 32


def _course_sender(interface="127.0.0.1", ttl=1):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, COURSE_TTL)  # defect
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    return sock                                        # defect: no IP_MULTICAST_IF


shell.worker_io.multicast_sender = _course_sender

if __name__ == "__main__":
    interfaces = sorted(name for _, name in socket.if_nameindex())
    if interfaces != ["lo"]:
        sys.exit(f"worker_ttl32_default_if: refusing to send multicast on the default "
                 f"interface outside a private network namespace (interfaces: "
                 f"{', '.join(interfaces)})")
    _mutant.run_worker()
