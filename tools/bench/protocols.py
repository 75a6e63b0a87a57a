"""The two wire protocols the load generator speaks: workq's and beanstalkd's.

Each adapter gives the same few operations as bytes, so every scenario sends
the same work to every broker:

============  ==============================  =====================================
operation     workq                           beanstalkd
============  ==============================  =====================================
submit        ``JOB <text>``  -> ``ID <n>``     ``put 0 0 60 <bytes>`` + data -> ``INSERTED <n>``
fetch         ``FETCH`` -> ``JOB <n> <text>``   ``reserve-with-timeout 0`` -> ``RESERVED <n> <bytes>`` + data
              or ``NOJOB``                      or ``TIMED_OUT``
wait          ``FETCH 30`` (long-poll)          ``reserve`` (blocks until a job comes)
done          ``DONE <n>`` -> ``OK``            ``delete <n>`` -> ``DELETED``
connections   ``STATS`` (clients + workers)     ``stats`` (current-connections)
============  ==============================  =====================================
"""

import re

__all__ = ["ProtocolError", "Workq", "Beanstalk", "PAYLOAD"]

# The job text of every scenario: 25 bytes, as the memory target says.
PAYLOAD = b"benchmark job text 123456"
assert len(PAYLOAD) == 25


class ProtocolError(Exception):
    """A reply the scenario did not expect."""


class Workq:
    name = "workq"
    submit_ok = b"ID "
    done_ok = b"OK"
    fetch = b"FETCH\n"
    stats = b"STATS\n"

    @staticmethod
    def submit(payload=PAYLOAD):
        return b"JOB %s\n" % payload

    @staticmethod
    def wait_fetch(seconds=30):
        return b"FETCH %d\n" % seconds

    @staticmethod
    def done(job_id):
        return b"DONE %d\n" % job_id

    @staticmethod
    def parse_fetch(buf):
        """``(bytes used, job id)`` for a complete reply in ``buf`` (job id 0: no job),
        None while it is incomplete."""
        end = buf.find(b"\n")
        if end < 0:
            return None
        line = buf[:end]
        if line.startswith(b"JOB "):
            return end + 1, int(line[4:line.index(b" ", 4)])
        if line.rstrip(b"\r") == b"NOJOB":
            return end + 1, 0
        raise ProtocolError(f"unexpected reply to FETCH: {line[:80]!r}")

    @staticmethod
    def parse_stats(buf):
        """Open connections from a complete STATS reply, None while incomplete."""
        if not buf.endswith(b"\n"):
            return None
        fields = dict(pair.split(b"=", 1) for pair in buf.split()[1:] if b"=" in pair)
        try:
            return int(fields[b"clients"]) + int(fields[b"workers"])
        except (KeyError, ValueError):
            raise ProtocolError(f"unexpected reply to STATS: {buf[:120]!r}") from None


class Beanstalk:
    name = "beanstalkd"
    submit_ok = b"INSERTED "
    done_ok = b"DELETED"
    fetch = b"reserve-with-timeout 0\r\n"
    stats = b"stats\r\n"
    _CONNECTIONS = re.compile(rb"current-connections: (\d+)")

    @staticmethod
    def submit(payload=PAYLOAD):
        return b"put 0 0 60 %d\r\n%s\r\n" % (len(payload), payload)

    @staticmethod
    def wait_fetch(seconds=30):
        return b"reserve\r\n"

    @staticmethod
    def done(job_id):
        return b"delete %d\r\n" % job_id

    @staticmethod
    def parse_fetch(buf):
        end = buf.find(b"\r\n")
        if end < 0:
            return None
        line = buf[:end]
        if line.startswith(b"RESERVED "):
            _, job_id, size = line.split()
            used = end + 2 + int(size) + 2
            if len(buf) < used:
                return None
            return used, int(job_id)
        if line == b"TIMED_OUT":
            return end + 2, 0
        raise ProtocolError(f"unexpected reply to reserve: {line[:80]!r}")

    @classmethod
    def parse_stats(cls, buf):
        end = buf.find(b"\r\n")
        if end < 0:
            return None
        head = buf[:end].split()
        if len(head) != 2 or head[0] != b"OK":
            raise ProtocolError(f"unexpected reply to stats: {buf[:80]!r}")
        if len(buf) < end + 2 + int(head[1]) + 2:
            return None
        match = cls._CONNECTIONS.search(buf)
        if match is None:
            raise ProtocolError("stats without current-connections")
        return int(match.group(1))
