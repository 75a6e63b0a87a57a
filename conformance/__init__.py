"""workq conformance suite: runs the exchanges of spec/protocol.yaml against
a broker and workers started from command templates (black box: sockets
only). Run it with ``python3 -m conformance [pytest options]``."""
