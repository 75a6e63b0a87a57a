"""Output sockets a worker shell needs: the multicast word sender and the syslog logger.

Shared by both workers, through shell.worker_io.
"""

import logging
import logging.handlers
import os
import socket

__all__ = ["multicast_sender", "syslog_logger", "syslog_header_bytes"]


def multicast_sender(interface="127.0.0.1", ttl=1):
    """UDP socket for multicast words, pinned to ``interface`` (an IPv4 address).

    Pinning matters: with the default interface, datagrams for 239.0.0.1 leave
    through the real network card. Loop is on so receivers on this host hear it.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    except OSError:
        sock.close()
        raise
    return sock


def syslog_logger(port, name="workq-worker", host="127.0.0.1"):
    """Logger whose INFO messages go as UDP syslog datagrams ``<14>NAME[PID]: message``.

    Facility user, no trailing NUL. The logger does not propagate, so nothing
    reaches the root logger or stderr.
    """
    handler = logging.handlers.SysLogHandler(
        address=(host, port), facility=logging.handlers.SysLogHandler.LOG_USER)
    handler.append_nul = False
    handler.ident = f"{name}[{os.getpid()}]: "   # prepended verbatim, unlike a format string
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(f"workq.syslog.{name}.{host}.{port}")
    for old in logger.handlers[:]:   # a second call in one process replaces, not duplicates
        logger.removeHandler(old)
        old.close()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def syslog_header_bytes(logger):
    """Bytes SysLogHandler adds to an INFO message of ``logger`` (from
    syslog_logger): ``<14>NAME[PID]: `` encoded, plus a trailing NUL if it
    appends one. A message may have the rest of the datagram's 1,024 bytes
    (RFC 3164 section 4.1)."""
    handler = logger.handlers[0]
    priority = "<%d>" % handler.encodePriority(handler.facility, handler.mapPriority("INFO"))
    return len((priority + (handler.ident or "")).encode("utf-8")) + (1 if handler.append_nul else 0)
