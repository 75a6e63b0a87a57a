"""Vocabulary for ``autoCall``: distributed-systems, database, networking and
computing terms. Each generated job is 1-5 of these words."""

__all__ = ["WORDS", "random_job_text"]

WORDS = (
    # distributed systems
    "consensus", "replica", "quorum", "leader", "follower", "election",
    "heartbeat", "partition", "gossip", "vector-clock", "lamport", "paxos",
    "raft", "byzantine", "failover", "sharding", "rebalance", "membership",
    "idempotent", "saga", "coordinator", "lease", "fencing", "epoch",
    "split-brain", "anti-entropy", "hinted-handoff", "linearizable",
    # databases
    "transaction", "commit", "rollback", "isolation", "snapshot", "mvcc",
    "index", "b-tree", "lsm-tree", "compaction", "write-ahead-log", "checkpoint",
    "deadlock", "lock", "schema", "query", "optimizer", "join", "cursor",
    "tuple", "vacuum", "replication", "materialized-view", "two-phase-commit",
    # networking
    "packet", "datagram", "socket", "multicast", "unicast", "broadcast",
    "latency", "bandwidth", "throughput", "congestion", "handshake", "tcp",
    "udp", "router", "switch", "subnet", "gateway", "firewall", "ttl",
    "checksum", "retransmit", "backoff", "keepalive", "loopback", "port",
    # computing operations
    "scheduler", "thread", "process", "mutex", "semaphore", "queue", "stack",
    "heap", "cache", "eviction", "buffer", "pipeline", "batch", "stream",
    "serialize", "deserialize", "compress", "encrypt", "hash", "checksum32",
    "allocate", "garbage-collect", "interrupt", "syscall", "epoll", "select",
    "fork", "signal", "kernel", "daemon", "worker", "broker", "dispatch",
)


def random_job_text(rng, min_words=1, max_words=5):
    """Return 1-5 (by default) space-separated words drawn with ``rng``
    (a ``random.Random``)."""
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words)))
