"""Mutant worker: what one read returns is taken for whole lines (a student's
`line = sock.recv(4096)`): the worker reads at most 4,096 bytes at a time and
ends each read with a line, so a JOB line longer than that, or one that
arrives in two writes, is cut short and its last words are lost."""

import _mutant  # noqa: F401
from core.worker import _CONNECTED, WorkerSlot

READ = 4096
_original_data_received = WorkerSlot.data_received


def data_received(self, data, now):
    actions = []
    for start in range(0, len(data), READ):
        if self.state not in _CONNECTED:
            break                         # an earlier chunk closed the connection
        chunk = data[start:start + READ]
        if not chunk.endswith(b"\n"):
            chunk += b"\n"                # defect: the read is taken for the whole line
        actions += _original_data_received(self, chunk, now)
    return actions


WorkerSlot.data_received = data_received

if __name__ == "__main__":
    _mutant.run_worker()
