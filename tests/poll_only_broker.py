"""The select broker on a system without epoll: ``select.epoll`` is removed
before the broker is imported, so it takes its ``select.poll`` fallback (as on
BSD and macOS).

    python3 tests/poll_only_broker.py CLIENT_PORT WORKER_PORT [options]
"""

import runpy
import select
import sys
from pathlib import Path

del select.epoll
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.argv[0] = "impl_select.broker"
runpy.run_module("impl_select.broker", run_name="__main__", alter_sys=True)
