"""The shell: the select broker with its core's answer replaced by the floor's.

The select broker as it runs (``impl_select.broker``: its epoll loop, peers,
output buffers, the core's bookkeeping of connections), except that each read
is answered by ``floor_broker.answer`` (a look at the first byte and a
formatted reply) instead of ``BrokerCore.receive`` (framing, the spec's checks,
the job table). Measured beside the floor and select in the same run, it splits
select's excess over the floor into the shell's part (shell - floor) and the
core's (select - shell), per client count: where the remaining time goes.

Not a broker: it keeps no jobs, checks nothing and answers each read as one
line (the closed loop and the job cycle, where the bench runs it, write one
request at a time); bench use only.

    python3 -m tools.bench.shell_broker CLIENT_PORT WORKER_PORT     (0: any free port)
"""

import sys

from core.broker import BrokerCore
from impl_select import broker as select_broker

from .floor_broker import answer


def stub_receive(core, conn, data, now=0.0):
    """BrokerCore.receive's stand-in: the floor's answer to the read, numbered
    like the floor's (one counter for every connection)."""
    core.stub_counter += 1
    return answer(data, core.stub_counter)


def main(argv=None):
    """Run the select broker with stub_receive as its core's answer; returns its
    exit status (select's: 0 after SIGINT/SIGTERM, 2 for a bad command line)."""
    BrokerCore.stub_counter = 0
    BrokerCore.receive = stub_receive
    return select_broker.main(argv)


if __name__ == "__main__":
    sys.exit(main())
