"""``python3 -m conformance [options]``: run the conformance suite.

Any pytest option works too (-k, -m, -n, -x, --junitxml ...); the suite's
own options are --impl, --broker-cmd, --worker-cmd, --broker-addr, --spec,
--netns (see ``python3 -m conformance --help``, section "workq").
"""

import sys
from pathlib import Path

import pytest


def main(argv=None):
    args = sys.argv[1:] if argv is None else list(argv)
    suite = Path(__file__).resolve().parent
    # -p by name, so that a conftest's pytest_plugins entry naming the same
    # module does not register it twice.
    return pytest.main(["-p", "conformance.plugin", "--rootdir", str(suite.parent),
                        str(suite), *args])


if __name__ == "__main__":
    sys.exit(main())
