#!/usr/bin/env python3
"""worker.py: the worker of the original assignment.

A faithful reconstruction of the worker that seeds/system-description.md and
DESIGN.md describe, kept as a test fixture (tests/test_original_system.py).
Standard library only; it imports nothing from this checkout.

    python3 worker.py [HOST:PORT [OUTPUT_PORT [SYSLOG_PORT]]]
                                  (defaults localhost:50001 30000 30001)

It connects to the work queue, sends FETCH; on NOJOB it waits FETCH_INTERVAL
and asks again; on ``JOB <n> <text>`` it sends each word as one UDP datagram
(``word\\n``) to the multicast group 239.0.0.1 on OUTPUT_PORT, WORD_DELAY
apart, then ``DONE <n>``, and reads the OK. It logs "fetching job",
"starting job N" and "completed job N" to syslog (UDP, 127.0.0.1:SYSLOG_PORT,
Python's SysLogHandler). When the connection to the broker is lost it
reconnects after 1 s. SIGINT and SIGTERM stop it at once, without DONE for
an unfinished job.

FETCH_INTERVAL (0.5 s) and WORD_DELAY (0.25 s) are the original constants;
the environment variables of the same names override them, so that the
conformance suite can run it with short delays (through `env`).

Network safety (not in the original, which used the default interface):
multicast goes out on 127.0.0.1 with TTL 1, so nothing leaves the machine.
"""

import logging
import logging.handlers
import os
import signal
import socket
import sys
import time

FETCH_INTERVAL = float(os.environ.get("FETCH_INTERVAL", "0.5"))
WORD_DELAY = float(os.environ.get("WORD_DELAY", "0.25"))
MULTICAST_GROUP = "239.0.0.1"
MULTICAST_TTL = 1
MULTICAST_INTERFACE = "127.0.0.1"
RECONNECT_DELAY = 1.0


def make_sender():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, MULTICAST_TTL)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                    socket.inet_aton(MULTICAST_INTERFACE))
    return sock


def make_logger(syslog_port):
    logger = logging.getLogger("worker")
    logger.setLevel(logging.INFO)
    logger.addHandler(logging.handlers.SysLogHandler(address=("127.0.0.1", syslog_port)))
    return logger


def read_line(sock, buffer):
    """One line from the broker, and what is left of the buffer."""
    while b"\n" not in buffer:
        data = sock.recv(4096)
        if not data:
            raise ConnectionError("connection closed by the work queue")
        buffer += data
    line, buffer = buffer.split(b"\n", 1)
    return line.decode().strip(), buffer


def work(sock, sender, logger, output_port):
    buffer = b""
    while True:
        logger.info("fetching job")
        sock.sendall(b"FETCH\n")
        reply, buffer = read_line(sock, buffer)
        if reply == "NOJOB":
            time.sleep(FETCH_INTERVAL)
            continue
        parts = reply.split(None, 2)
        if len(parts) < 2 or parts[0] != "JOB":
            print(f"unexpected reply: {reply}", flush=True)
            time.sleep(FETCH_INTERVAL)
            continue
        job_id = parts[1]
        words = parts[2].split() if len(parts) == 3 else []
        logger.info(f"starting job {job_id}")
        print(f"starting job {job_id}", flush=True)
        for index, word in enumerate(words):
            if index:
                time.sleep(WORD_DELAY)
            print(word, flush=True)
            sender.sendto(word.encode() + b"\n", (MULTICAST_GROUP, output_port))
        sock.sendall(f"DONE {job_id}\n".encode())
        reply, buffer = read_line(sock, buffer)
        logger.info(f"completed job {job_id}")
        print(f"completed job {job_id} ({reply})", flush=True)


def stop(signum, frame):
    print("worker stopping", flush=True)
    sys.exit(0)


def main():
    broker = sys.argv[1] if len(sys.argv) > 1 else "localhost:50001"
    host, port = broker.rsplit(":", 1)
    output_port = int(sys.argv[2]) if len(sys.argv) > 2 else 30000
    syslog_port = int(sys.argv[3]) if len(sys.argv) > 3 else 30001
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print(f"worker: work queue {host}:{port}, multicast {MULTICAST_GROUP}:{output_port}, "
          f"syslog port {syslog_port}, word delay {WORD_DELAY} s, "
          f"fetch interval {FETCH_INTERVAL} s", flush=True)
    sender = make_sender()
    logger = make_logger(syslog_port)
    while True:
        try:
            sock = socket.create_connection((host, int(port)))
        except OSError as error:
            print(f"cannot connect to {host}:{port}: {error}; retrying", flush=True)
            time.sleep(RECONNECT_DELAY)
            continue
        print(f"connected to {host}:{port}", flush=True)
        try:
            work(sock, sender, logger, output_port)
        except OSError as error:     # ConnectionError included
            print(f"connection lost: {error}; reconnecting", flush=True)
        finally:
            sock.close()
        time.sleep(RECONNECT_DELAY)


if __name__ == "__main__":
    main()
