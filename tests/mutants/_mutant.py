"""Shared by the mutant scripts: make the checkout importable, run a main()."""

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def run_broker():
    from impl_select.broker import main
    sys.exit(main())


def run_worker():
    from impl_select.worker import main
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
