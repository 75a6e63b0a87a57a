"""workq conformance suite: runs the exchanges of spec/protocol.yaml against
a broker and workers started from command templates (black box: sockets
only). Run it with ``python3 -m conformance [pytest options]``.

PYTEST_DONT_REWRITE: this module has no assertions, and the installed
``workq-conformance`` script imports it before pytest starts; the marker keeps
pytest from warning that it cannot rewrite it (the plugin modules are
imported by pytest and rewritten as usual)."""
