#!/usr/bin/env python3
"""A student's worker for the original assignment, as a grading fixture.

It speaks its broker's own protocol (see broker.py beside it), sends each
word of a job as one multicast datagram to 239.0.0.1 on the output port, a
word delay apart, and logs "fetching job", "starting job N" and "completed
job N" to syslog in its own format. Its multicast sender is the course
helper's, TTL 32, but pinned to 127.0.0.1 so that nothing leaves the
machine wherever it runs. Delays come from the environment (WORD_DELAY,
FETCH_INTERVAL; 0.25 s and 0.5 s by default), as in many submissions.

    python3 worker.py HOST:PORT OUTPUT_PORT SYSLOG_PORT
"""

import os
import signal
import socket
import sys
import time

GROUP = "239.0.0.1"
WORD_DELAY = float(os.environ.get("WORD_DELAY", "0.25"))
FETCH_INTERVAL = float(os.environ.get("FETCH_INTERVAL", "0.5"))


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    output_port, syslog_port = int(sys.argv[2]), int(sys.argv[3])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 32)
    sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
    syslog = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def log(message):
        syslog.sendto(f"<14>student-worker: {message}".encode(), ("127.0.0.1", syslog_port))

    while True:
        try:
            with socket.create_connection((host, int(port))) as broker:
                replies = broker.makefile("r")
                while True:
                    log("fetching job")
                    broker.sendall(b"GIMME\n")
                    reply = replies.readline().strip()
                    if not reply:
                        break
                    if reply == "EMPTY":
                        time.sleep(FETCH_INTERVAL)
                        continue
                    number, _, text = reply.removeprefix("TASK ").partition("|")
                    log(f"starting job {number}")
                    for index, word in enumerate(text.split()):
                        if index:
                            time.sleep(WORD_DELAY)
                        sender.sendto(word.encode() + b"\n", (GROUP, output_port))
                    broker.sendall(f"FINISHED {number}\n".encode())
                    replies.readline()
                    log(f"completed job {number}")
        except OSError:
            pass
        time.sleep(1)


if __name__ == "__main__":
    main()
