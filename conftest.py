# The conformance plugin for every test run from this checkout: it collects
# the spec's exchanges and, first of all, moves the run into a private network
# namespace (where permitted), so tests/ run there too.
pytest_plugins = ["conformance.plugin"]
