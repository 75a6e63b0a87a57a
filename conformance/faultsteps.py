"""Steps that make a worker hang or a connection vanish (mixed into runner.ExchangeRun).

``pause_worker: NAME`` stops a worker the suite started (SIGSTOP to its process
group): its kernel still answers TCP, so only a lease can free its job.
``resume_worker: NAME`` lets it run again (SIGCONT); the suite always resumes a
paused worker before it stops it.

``partition: NAME`` cuts one of the suite's own connections without FIN or RST,
as a network fault does: from then on no packet of that connection passes,
either way. It needs the suite's private network namespace (root): there it
adds two policy-routing rules, ``ip rule add pref 1 ipproto tcp sport|dport
PORT blackhole`` (PORT: the connection's local port), ahead of the ``local``
table (moved from preference 0 to 2 for it), and removes them when the case
ends. Measured here: nothing crosses (no FIN, no data), other connections are
untouched, and a peer with TCP_USER_TIMEOUT sees ETIMEDOUT after it. Netfilter
(iptables/nft) and tc's netem and gact are not available in every kernel this
suite runs on; policy routing is. Outside a private namespace the case is skipped
(it would change the host's routing).
"""

import subprocess

from .netns import inside_private_netns
from .patterns import SpecError

__all__ = ["FaultSteps", "PARTITION_STEPS"]

# Steps that need the private network namespace.
PARTITION_STEPS = ("partition",)
RULE_PREF = "1"        # the blackhole rules, ahead of ...
LOCAL_PREF = "2"       # ... the local table, moved here from preference 0


def _ip(*args):
    """Run ``ip ARGS``; returns (exit status, stderr text)."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    return done.returncode, done.stderr.strip()


class FaultSteps:
    """pause_worker, resume_worker, partition (see the module docstring)."""

    paused_workers = ()
    partition_rules = ()

    def _pause_worker(self, name, step, deadline, timeout):
        worker = self.workers.get(name)
        if worker is None:
            raise SpecError(f"pause_worker: no worker named {name!r}")
        worker.pause()
        self.paused_workers = {*self.paused_workers, name}
        self._step_note(f"-- worker {name} paused (SIGSTOP): it runs no code, its kernel "
                        "still answers TCP")

    def _resume_worker(self, name, step, deadline, timeout):
        if name not in self.paused_workers:
            raise SpecError(f"resume_worker: worker {name!r} is not paused")
        self.workers[name].resume()
        self.paused_workers = self.paused_workers - {name}
        self._step_note(f"-- worker {name} resumed (SIGCONT)")

    def _partition(self, name, step, deadline, timeout):
        if not inside_private_netns():
            raise SpecError("partition needs the suite's private network namespace")
        connection = self.connections.get(name)
        if connection is None:
            raise SpecError(f"partition: no connection named {name!r}")
        port = str(connection.sock.getsockname()[1])
        if not self.partition_rules:
            self._rule("del", "pref", "0", "lookup", "local")
            self._rule("add", "pref", LOCAL_PREF, "lookup", "local")
        for field in ("sport", "dport"):
            rule = ("pref", RULE_PREF, "ipproto", "tcp", field, port, "blackhole")
            self._rule("add", *rule)
            self.partition_rules = [*self.partition_rules, rule]
        connection.closed_by_us = True      # the suite never closes it: nothing may cross
        self._step_note(f"-- connection {name} (local port {port}) partitioned: its packets "
                        "are dropped both ways, no FIN or RST is ever sent")

    def _rule(self, *args):
        status, error = _ip("rule", *args)
        if status != 0:
            raise SpecError(f"ip rule {' '.join(args)} failed: {error}")

    def _resume_paused_workers(self):
        """Before the targets stop: SIGTERM must find no worker stopped."""
        for name in self.paused_workers:
            self.workers[name].resume()
        self.paused_workers = ()

    def _heal_partitions(self):
        """After the targets stop: close the cut connections, remove the rules."""
        if self.partition_rules:
            for connection in self.connections.values():
                if connection.sock.fileno() != -1:
                    connection.sock.close()
            for rule in self.partition_rules:
                _ip("rule", "del", *rule)
            _ip("rule", "add", "pref", "0", "lookup", "local")
            _ip("rule", "del", "pref", LOCAL_PREF, "lookup", "local")
            self.partition_rules = ()
