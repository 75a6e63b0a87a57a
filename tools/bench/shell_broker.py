"""The shell: the select broker with its core's answer replaced by the floor's.

The select broker as it runs (``impl_select.broker``: its epoll loop, peers,
output buffers, the core's bookkeeping of connections), except that each read
is answered by ``floor_broker.answer`` (a look at the first byte and a
formatted reply) instead of ``BrokerCore.receive`` (framing, the spec's checks,
the job table). Measured beside the floor and select in the same run, it splits
select's excess over the floor into the shell's part (shell - floor) and the
core's (select - shell), per client count: where the remaining time goes.

Not a broker: it keeps no jobs and checks nothing; bench use only.

    python3 -m tools.bench.shell_broker CLIENT_PORT WORKER_PORT     (0: any free port)
"""

import sys

from core.broker import BrokerCore
from impl_select import broker as select_broker

from .floor_broker import answer


# Connection -> the unfinished line its last read ended with (reads of many
# lines: the job cycle's prefill pipelines its JOBs).
_partial = {}


def stub_receive(core, conn, data, now=0.0):
    """BrokerCore.receive's stand-in: the floor's answer to each line of the read,
    numbered like the floor's (one counter for every connection); a one-line
    read, the measured case, takes the floor's own shortcut."""
    counter = core.stub_counter = core.stub_counter + 1
    if data[-1] == 10 and 10 not in data[:-1] and conn not in _partial:
        return answer(data, counter)
    lines = (_partial.pop(conn, b"") + data).split(b"\n")
    if lines[-1]:
        _partial[conn] = lines[-1]
    core.stub_counter += len(lines)
    return b"".join(answer(line, counter + n) for n, line in enumerate(lines[:-1]))


def main(argv=None):
    """Run the select broker with stub_receive as its core's answer; returns its
    exit status (select's: 0 after SIGINT/SIGTERM, 2 for a bad command line)."""
    BrokerCore.stub_counter = 0
    BrokerCore.receive = stub_receive
    return select_broker.main(argv)


if __name__ == "__main__":
    sys.exit(main())
