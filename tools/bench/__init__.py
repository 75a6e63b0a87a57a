"""Benchmarks of our brokers against beanstalkd: ``python3 -m tools.bench``.

Starts beanstalkd (installing the Debian package when it is missing and we
are root), the select broker and the threads broker on loopback ports, runs
the same scenarios against each with the same load generator, and writes
BENCHMARKS.md and the plots in benchmarks/. See ``--help``.
"""
