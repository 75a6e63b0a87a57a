"""Mutant broker: answers with a blocking sendall(), as the original assignment's
select() loop does: once a client that does not read its replies has filled
the kernel's buffers, the whole broker waits in that send and answers nobody
else."""

import _mutant  # noqa: F401
from impl_select.broker import SelectBroker


def _write(self, peer, data):
    sock = peer.sock
    try:
        sock.setblocking(True)
        sock.sendall(data)         # defect: blocks the loop while the peer does not read
        sock.setblocking(False)
    except OSError:
        self._drop(peer)
        return
    if peer.conn.closing:
        self._drop(peer)


SelectBroker._write = _write

if __name__ == "__main__":
    _mutant.run_broker()
