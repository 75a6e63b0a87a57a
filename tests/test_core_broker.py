"""The broker's job table and replies, driven as bytes in, bytes out."""

import pytest
from hypothesis import given, settings, strategies as st

from core.broker import CLIENT, WORKER, BrokerCore, TRANSITIONS, WAITING, RUNNING, COMPLETED


@pytest.fixture
def broker():
    return BrokerCore(max_line=100)


def talk(broker, conn, data):
    return broker.receive(conn, data).decode().splitlines()


def test_every_line_of_a_read_is_answered_in_one_reply(broker):
    client = broker.open(CLIENT)
    assert broker.receive(client, b"JOB a\nJOB b c\nSTATUS 2\n") == b"ID 1\nID 2\nwaiting\n"


def test_fifo_fetch_done_and_status(broker):
    client, worker = broker.open(CLIENT), broker.open(WORKER)
    talk(broker, client, b"JOB first\nJOB second\n")
    assert talk(broker, worker, b"FETCH\nFETCH\nFETCH\n") == ["JOB 1 first", "JOB 2 second", "NOJOB"]
    assert talk(broker, worker, b"DONE 1\n") == ["OK"]
    assert talk(broker, client, b"STATUS 1\nSTATUS 2\nSTATUS 3\n") == ["completed", "running", "unknown"]


def test_only_the_holder_completes_a_job(broker):
    client, holder, other = broker.open(CLIENT), broker.open(WORKER), broker.open(WORKER)
    talk(broker, client, b"JOB x\n")
    talk(broker, holder, b"FETCH\n")
    assert talk(broker, other, b"DONE 1\n")[0].startswith("ERR NOT_HOLDER ")
    assert talk(broker, client, b"STATUS 1\n") == ["running"]


def test_closing_a_worker_requeues_its_jobs_first_in_line_in_id_order(broker):
    client, dying, next_worker = broker.open(CLIENT), broker.open(WORKER), broker.open(WORKER)
    talk(broker, client, b"JOB a\nJOB b\nJOB c\n")
    talk(broker, dying, b"FETCH\nFETCH\n")
    broker.close(dying)
    assert talk(broker, client, b"STATUS 1\nSTATUS 2\n") == ["waiting", "waiting"]
    assert talk(broker, next_worker, b"FETCH\nFETCH\nFETCH\n") == ["JOB 1 a", "JOB 2 b", "JOB 3 c"]


def test_overlong_line_answers_earlier_lines_then_asks_to_close(broker):
    client = broker.open(CLIENT)
    replies = talk(broker, client, b"JOB ok\n" + b"x" * 200 + b"\n")
    assert replies[0] == "ID 1"
    assert replies[1].startswith("ERR LINE_TOO_LONG ")
    assert client.closing


def test_unterminated_last_line_is_answered_at_end_of_input(broker):
    client = broker.open(CLIENT)
    assert broker.receive(client, b"JOB tail") == b""
    assert broker.end_of_input(client) == b"ID 1\n"
    assert client.closing


def test_stats_counts_connections_and_jobs(broker):
    client, worker = broker.open(CLIENT), broker.open(WORKER)
    talk(broker, client, b"JOB a\nJOB b\n")
    talk(broker, worker, b"FETCH\n")
    assert talk(broker, client, b"STATS\n") == ["STATS waiting=1 running=1 completed=0 clients=1 workers=1"]
    broker.close(worker)
    assert talk(broker, client, b"STATS\n") == ["STATS waiting=2 running=0 completed=0 clients=1 workers=0"]


def test_state_table_matches_the_spec():
    import yaml
    from pathlib import Path
    spec = yaml.safe_load((Path(__file__).parents[1] / "spec" / "protocol.yaml").read_text())
    names = {WAITING: "waiting", RUNNING: "running", COMPLETED: "completed"}
    ours = {(names[src], names[dst]) for (src, _), dst in TRANSITIONS.items()}
    spec_moves = {(t["from"], t["to"]) for t in spec["transitions"] if t["from"] != "new"}
    assert ours == spec_moves


commands = st.sampled_from([b"JOB w", b"FETCH", b"DONE 1", b"DONE 2", b"DONE 3", b"STATUS 1", b"STATUS 2",
                            b"", b"job x y", b"\xff", b"NOPE"])


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, 2), commands), max_size=40), st.integers(0, 2))
def test_no_job_is_ever_held_by_two_workers_or_lost(script, dropped):
    broker = BrokerCore()
    conns = [broker.open(CLIENT), broker.open(WORKER), broker.open(WORKER)]
    for who, line in script:
        broker.receive(conns[who], line + b"\n")
    if dropped:
        broker.close(conns[dropped])
    issued = len(broker.texts) - 1
    held = [job for conn in conns[1:] if not (dropped and conn is conns[dropped]) for job in conn.held]
    assert len(held) == len(set(held)) == len(broker.holders)
    assert sorted(held) == sorted(broker.holders)
    assert len(broker.waiting) + len(held) + broker.completed == issued
