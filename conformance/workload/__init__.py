"""Workload mode: a random, seeded load against a target with injected faults,
a recorded history and checkers that name the anomaly.

``python3 -m conformance --workload [--time S] [--seed N] [--nemesis LIST]
[--results DIR]`` (cli.py). The pieces are separate, as in Jepsen:

- workload.py: clients, STATUS pollers, the suite's own (misbehaving)
  workers and the target's worker processes, all recording into one history;
- nemesis.py: the faults (kill -9, SIGSTOP, broker restart, network), on a
  seeded schedule that ends before the run does;
- history.py: the history, one JSON event a line;
- checkers.py: pure functions from a history to a result (valid?, the
  anomalies, and for each the smallest part of the history proving it), so a
  saved history can be checked again later (``--check HISTORY``);
- report.py: the results folder (summary, JSON, JUnit, plots, HTML page).

Like the rest of the suite it never imports core/, an implementation or tools/.
"""
