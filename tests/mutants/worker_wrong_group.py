"""Mutant worker: sends its words to the multicast group 239.0.0.2 instead of
239.0.0.1 (still pinned to 127.0.0.1 with TTL 1)."""

import sys

import _mutant

if __name__ == "__main__":
    sys.argv += ["--mcast-group", "239.0.0.2"]     # defect: the last option wins
    _mutant.run_worker()
