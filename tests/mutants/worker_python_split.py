"""Mutant worker: splits a job's text with Python's str.split(), so a no-break
space (U+00A0), U+2028 or U+3000 splits a word (the spec: SP and HTAB only)."""

import _mutant  # noqa: F401
import core.worker

core.worker.split_words = str.split     # defect: Python's idea of whitespace

if __name__ == "__main__":
    _mutant.run_worker()
