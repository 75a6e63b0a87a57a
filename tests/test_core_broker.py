"""The broker's job table and replies, driven as bytes in, bytes out."""

import os

import pytest
from hypothesis import given, settings, strategies as st

from core.broker import (
    BURIED, CLIENT, COMPLETED, JOB_OVERHEAD, LINE_OVERHEAD, RUNNING, TRANSITIONS, WAITING, WORKER,
    BrokerCore,
    default_max_memory,
)


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


@pytest.mark.parametrize("sent", [b"FETCH 5\n", b"FETCH 5"], ids=["with LF", "without LF"])
def test_a_waiting_fetch_gets_nojob_at_end_of_input_then_the_close(broker, sent):
    client, worker = broker.open(CLIENT), broker.open(WORKER)
    assert broker.receive(worker, sent, now=0.0) == b""
    assert broker.end_of_input(worker, now=0.0) == b"NOJOB\n", "the FETCH is owed its reply"
    assert worker.closing
    broker.close(worker)
    talk(broker, client, b"JOB later\n")
    assert broker.deliveries == [], "a closed connection's FETCH must not be handed a job"
    assert talk(broker, client, b"STATUS 1\n") == ["waiting"]


def test_lines_held_behind_a_waiting_fetch_are_answered_in_order_at_end_of_input(broker):
    worker = broker.open(WORKER)
    broker.receive(worker, b"FETCH 5\nFETCH 5\nDONE 9\nSTATS", now=0.0)
    lines = broker.end_of_input(worker, now=0.0).decode().splitlines()
    assert lines[:2] == ["NOJOB", "NOJOB"] and lines[2].startswith("ERR UNKNOWN_JOB "), lines
    assert lines[3].startswith("STATS "), f"the unterminated last line is answered last: {lines}"
    assert worker.closing


def test_the_longest_job_text_fits_the_job_line_every_reader_accepts():
    from core.messages import LINE_LIMIT, MAX_ID_DIGITS, MAX_JOB_TEXT
    core = BrokerCore()
    client, worker = core.open(CLIENT), core.open(WORKER)
    text = b"e " * (MAX_JOB_TEXT // 2) + b"e"
    assert len(text) == MAX_JOB_TEXT
    assert core.receive(client, b"JOB " + text + b"\n") == b"ID 1\n"
    line = core.receive(worker, b"FETCH\n")
    assert line == b"JOB 1 " + text + b"\n"
    longest = len(b"JOB ") + MAX_ID_DIGITS + 1 + MAX_JOB_TEXT
    assert longest == LINE_LIMIT, f"JOB line with an 18-digit id is {longest} bytes, limit {LINE_LIMIT}"
    reply = core.receive(client, b"JOB " + text + b"e\n")
    assert reply.startswith(b"ERR JOB_TOO_LONG "), reply[:80]
    assert core.receive(client, b"STATUS 2\n") == b"unknown\n", "a refused job must not be queued"


def test_a_word_that_no_datagram_can_carry_is_refused():
    from core.messages import MAX_WORD
    core = BrokerCore()
    client = core.open(CLIENT)
    assert core.receive(client, b"JOB a " + b"w" * MAX_WORD + b"\n") == b"ID 1\n"
    reply = core.receive(client, b"JOB a " + b"w" * (MAX_WORD + 1) + b"\n")
    assert reply.startswith(b"ERR WORD_TOO_LONG "), reply[:80]
    reply = core.receive(client, b"JOB a\t" + b"w" * (MAX_WORD + 1) + b"\n")
    assert reply.startswith(b"ERR WORD_TOO_LONG "), "a tab separates words too"


def test_stats_counts_connections_and_jobs(broker):
    client, worker = broker.open(CLIENT), broker.open(WORKER)
    talk(broker, client, b"JOB a\nJOB b\n")
    talk(broker, worker, b"FETCH\n")
    assert talk(broker, client, b"STATS\n") == ["STATS waiting=1 running=1 completed=0 clients=1 workers=1 buried=0"]
    broker.close(worker)
    assert talk(broker, client, b"STATS\n") == ["STATS waiting=2 running=0 completed=0 clients=1 workers=0 buried=0"]


def test_state_table_matches_the_spec():
    import yaml
    from pathlib import Path
    spec = yaml.safe_load((Path(__file__).parents[1] / "spec" / "protocol.yaml").read_text())
    names = {WAITING: "waiting", RUNNING: "running", COMPLETED: "completed", BURIED: "buried"}
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


heads = st.sampled_from([b"", b"JOB ", b"job ", b"FETCH", b"FETCH ", b"DONE ", b"STATUS ", b"STATS", b"AUTH "])


@settings(max_examples=300)
@given(st.sampled_from([CLIENT, WORKER]), heads, st.binary(max_size=12), st.sampled_from([b"\n", b"\r\n"]))
def test_a_read_of_one_line_is_answered_as_that_line_arriving_in_pieces(port, head, rest, end):
    data = head + rest + end
    whole, pieces = BrokerCore(max_line=16), BrokerCore(max_line=16)
    answers = []
    for broker, reads in ((whole, [data]), (pieces, [data[:1], data[1:]])):
        broker.receive(broker.open(CLIENT), b"JOB first\n")
        conn = broker.open(port)
        answers.append(b"".join(broker.receive(conn, read) for read in reads))
        answers.append((bytes(broker.states), conn.closing, conn.waiting_fetch))
    assert answers[0:2] == answers[2:4], f"{data!r} read whole vs in pieces"


# -- long-poll, limits, authentication ----------------------------------------------

def deliveries_to(broker, conn):
    sent = b"".join(data for target, data in broker.deliveries if target is conn)
    broker.deliveries.clear()
    return sent.decode().splitlines()


def test_fetch_with_seconds_waits_for_the_next_job(broker):
    client, worker = broker.open(CLIENT), broker.open(WORKER)
    assert broker.receive(worker, b"FETCH 5\n", now=100.0) == b""
    assert broker.next_deadline() == 105.0
    assert talk(broker, client, b"JOB late\n") == ["ID 1"]
    assert deliveries_to(broker, worker) == ["JOB 1 late"]
    assert talk(broker, client, b"STATUS 1\n") == ["running"]
    assert broker.next_deadline() is None, "an answered FETCH leaves no timer behind"


def test_fetch_with_seconds_answers_nojob_when_time_runs_out(broker):
    worker = broker.open(WORKER)
    broker.receive(worker, b"FETCH 2\n", now=10.0)
    broker.tick(11.9)
    assert broker.deliveries == []
    broker.tick(12.0)
    assert deliveries_to(broker, worker) == ["NOJOB"]


def test_lines_behind_a_waiting_fetch_are_answered_after_it_in_order(broker):
    client, worker = broker.open(CLIENT), broker.open(WORKER)
    assert broker.receive(worker, b"FETCH 5\nSTATS\n", now=0.0) == b""
    talk(broker, client, b"JOB x\n")
    replies = deliveries_to(broker, worker)
    assert replies[0] == "JOB 1 x" and replies[1].startswith("STATS waiting=0 running=1 ")


def test_waiting_fetchers_are_served_oldest_first_and_a_closed_one_is_skipped(broker):
    client = broker.open(CLIENT)
    first, gone, second = (broker.open(WORKER) for _ in range(3))
    for worker in (gone, first, second):
        broker.receive(worker, b"FETCH 9\n", now=0.0)
    broker.close(gone)
    talk(broker, client, b"JOB a\nJOB b\n")
    sent = {id(target): data for target, data in broker.deliveries}
    assert sent == {id(first): b"JOB 1 a\n", id(second): b"JOB 2 b\n"}


def test_a_requeued_job_goes_straight_to_a_waiting_fetch(broker):
    client, dying, waiting = broker.open(CLIENT), broker.open(WORKER), broker.open(WORKER)
    talk(broker, client, b"JOB again\n")
    talk(broker, dying, b"FETCH\n")
    broker.receive(waiting, b"FETCH 30\n", now=0.0)
    broker.close(dying)
    assert deliveries_to(broker, waiting) == ["JOB 1 again"]


def test_fetch_rejects_a_bad_wait(broker):
    worker = broker.open(WORKER)
    for bad in (b"FETCH soon", b"FETCH -1", b"FETCH nan", b"FETCH 99999"):
        assert talk(broker, worker, bad + b"\n")[0].startswith("ERR BAD_ARGUMENT "), bad
    assert talk(broker, worker, b"FETCH 0\n") == ["NOJOB"]


def test_queue_full():
    broker = BrokerCore(max_waiting=2)
    client = broker.open(CLIENT)
    replies = talk(broker, client, b"JOB a\nJOB b\nJOB c\n")
    assert replies[:2] == ["ID 1", "ID 2"] and replies[2].startswith("ERR QUEUE_FULL ")


def test_a_line_left_unfinished_times_out():
    broker = BrokerCore(idle_timeout=10)
    slow, quiet = broker.open(CLIENT), broker.open(CLIENT)
    broker.receive(slow, b"JOB never ends", now=0.0)
    broker.receive(quiet, b"STATUS 1\n", now=0.0)
    broker.tick(5.0)
    assert broker.deliveries == []
    broker.tick(11.0)
    assert deliveries_to(broker, slow)[0].startswith("ERR IDLE_TIMEOUT ")
    assert slow.closing and not quiet.closing


def test_a_connection_being_closed_gets_no_more_answers():
    """A shell may read a line from a connection the core has just decided to close
    (ERR IDLE_TIMEOUT sent by a timer, or a shed victim): it must not be answered,
    nor queue a job, after the reply that ended the connection."""
    broker = BrokerCore(idle_timeout=10)
    slow, worker = broker.open(CLIENT), broker.open(WORKER)
    assert talk(broker, slow, b"JOB first\n") == ["ID 1"]
    broker.receive(slow, b"JOB never ends", now=0.0)
    broker.tick(11.0)
    assert deliveries_to(broker, slow)[0].startswith("ERR IDLE_TIMEOUT ")
    reply = broker.receive(slow, b"\nJOB after the timeout\nSTATUS 1\n", now=11.0)
    assert reply == b"" and len(broker.texts) == 2, (
        f"expected no reply and no job after ERR IDLE_TIMEOUT, got {reply!r} and "
        f"{len(broker.texts) - 1} jobs")
    shed = broker.open(WORKER)
    shed.closing = True               # what a shell sets on the core's shed() choice
    assert broker.receive(shed, b"FETCH\n", now=12.0) == b"" and 1 in broker.waiting, \
        "expected a shed connection's FETCH unanswered and job 1 still waiting"
    assert talk(broker, worker, b"FETCH\n") == ["JOB 1 first"]


def test_a_waiting_fetch_on_a_connection_being_closed_gets_no_job():
    """ERR IDLE_TIMEOUT (an unfinished line behind a waiting FETCH) ends the wait: a JOB
    submitted before the shell closes the connection goes to a live worker, not to
    it (where it would come back counted as a failed delivery), and the FETCH's own
    time running out answers nothing after the ERR."""
    broker = BrokerCore(idle_timeout=10)
    timed_out, client = broker.open(WORKER), broker.open(CLIENT)
    assert broker.receive(timed_out, b"FETCH 60\nunfinis", now=0.0) == b""
    broker.tick(11.0)
    assert deliveries_to(broker, timed_out)[0].startswith("ERR IDLE_TIMEOUT ")
    assert talk(broker, client, b"JOB for a live worker\n") == ["ID 1"]
    assert broker.deliveries == [] and not timed_out.held, (
        f"expected no JOB for a timed-out connection, got {broker.deliveries} (held "
        f"{sorted(timed_out.held)})")
    broker.tick(61.0)
    assert broker.deliveries == [], f"expected no NOJOB after ERR IDLE_TIMEOUT, got {broker.deliveries}"
    assert talk(broker, broker.open(WORKER), b"FETCH\n") == ["JOB 1 for a live worker"]


def test_lines_held_behind_a_waiting_fetch_stop_at_the_one_that_closes():
    """A worker waits in FETCH <seconds> with AUTH <wrong token> and FETCH held behind it:
    when a JOB ends the wait, AUTH_FAILED closes the connection and the FETCH after it
    is not answered (it would take a job for a connection about to close)."""
    broker = BrokerCore(token=b"tok")
    worker, client = broker.open(WORKER), broker.open(CLIENT)
    assert talk(broker, worker, b"AUTH tok\n") == ["OK"]
    assert talk(broker, client, b"AUTH tok\n") == ["OK"]
    assert broker.receive(worker, b"FETCH 60\nAUTH bad\nFETCH\n", now=1.0) == b""
    assert talk(broker, client, b"JOB a\nJOB b\n") == ["ID 1", "ID 2"]
    replies = deliveries_to(broker, worker)
    assert len(replies) == 2 and replies[0] == "JOB 1 a" and replies[1].startswith("ERR AUTH_FAILED "), (
        f"expected JOB 1, then ERR AUTH_FAILED and nothing more, got {replies}")
    assert list(broker.waiting) == [2], f"expected job 2 still waiting, got {list(broker.waiting)}"


def test_auth_token_is_required_first_and_checked():
    broker = BrokerCore(token="s3cret")
    anonymous, wrong, right = (broker.open(CLIENT) for _ in range(3))
    assert talk(broker, anonymous, b"JOB x\nJOB y\n")[0].startswith("ERR AUTH_REQUIRED ")
    assert anonymous.closing and len(broker.texts) == 1, "nothing queued without AUTH"
    assert talk(broker, wrong, b"AUTH guess\n")[0].startswith("ERR AUTH_FAILED ")
    assert wrong.closing
    assert talk(broker, right, b"AUTH s3cret\nJOB x\n") == ["OK", "ID 1"]


class RecordingStore:
    def __init__(self):
        self.changes = []

    def add(self, job_id, text):
        self.changes.append(("add", job_id, text))

    def complete(self, job_id):
        self.changes.append(("complete", job_id))


def test_store_sees_new_and_completed_jobs_and_restore_continues_ids():
    store = RecordingStore()
    broker = BrokerCore(store=store)
    client, worker = broker.open(CLIENT), broker.open(WORKER)
    talk(broker, client, b"JOB a\nJOB b\n")
    talk(broker, worker, b"FETCH\nDONE 1\n")
    assert store.changes == [("add", 1, b"a"), ("add", 2, b"b"), ("complete", 1)]
    restarted = BrokerCore()
    restarted.restore(3, [(2, b"b")], [1])
    client = restarted.open(CLIENT)
    assert talk(restarted, client, b"STATUS 1\nSTATUS 2\nJOB c\n") == ["completed", "waiting", "ID 3"]


# -- resources: the memory budget (spec limits.memory) ---------------------------------

def test_job_is_refused_past_the_jobs_share_of_the_budget_and_accepted_after_a_done():
    broker = BrokerCore(max_memory=4000)         # jobs may hold 3,000 bytes
    client, worker = broker.open(CLIENT), broker.open(WORKER)
    text = b"x" * (1000 - JOB_OVERHEAD)          # counts 1,000 bytes
    replies = talk(broker, client, b"".join(b"JOB " + text + b"\n" for _ in range(4)))
    assert replies[:3] == ["ID 1", "ID 2", "ID 3"], f"expected three jobs accepted, got {replies}"
    assert replies[3].startswith("ERR QUEUE_FULL ") and "memory" in replies[3], (
        f"expected the fourth refused for memory, got {replies[3]!r}")
    assert broker.job_bytes == 3000, f"expected 3000 bytes counted, got {broker.job_bytes}"
    assert talk(broker, worker, b"FETCH\n")[0].startswith("JOB 1 ")
    assert talk(broker, worker, b"DONE 1\n") == ["OK"]
    assert talk(broker, client, b"JOB " + text + b"\n") == ["ID 4"], "a done job gives its bytes back"


def test_unfinished_lines_share_the_buffers_share_and_are_refused_with_memory_full():
    broker = BrokerCore(max_memory=4000)         # buffers may hold 1,000 bytes
    slow, greedy = broker.open(CLIENT), broker.open(CLIENT)
    broker.receive(slow, b"JOB " + b"a" * 300)
    assert broker.buffer_bytes == 304 + LINE_OVERHEAD, f"got {broker.buffer_bytes}"
    reply = broker.receive(greedy, b"JOB " + b"b" * 700).decode()
    assert reply.startswith("ERR MEMORY_FULL ") and greedy.closing, f"got {reply!r}"
    assert broker.receive(slow, b"\n") == b"ID 1\n"
    assert (broker.buffer_bytes, broker.job_bytes) == (0, 300 + JOB_OVERHEAD), \
        "the finished line is counted as a job only"
    broker.close(greedy)
    assert broker.memory_used == 300 + JOB_OVERHEAD


def test_a_full_queue_leaves_the_buffers_share_and_the_reverse():
    broker = BrokerCore(max_memory=4000)
    client, other = broker.open(CLIENT), broker.open(CLIENT)
    talk(broker, client, b"JOB " + b"x" * (3000 - JOB_OVERHEAD) + b"\n")
    assert broker.receive(other, b"JOB " + b"y" * 800) == b"", "an unfinished line still fits"
    assert talk(broker, client, b"JOB z\n")[0].startswith("ERR QUEUE_FULL ")
    broker.close(other)
    assert not broker.charge_output(other, 10), "nothing is charged for a closed connection"
    peer = broker.open(CLIENT)
    assert broker.charge_output(peer, 1000)
    assert not broker.charge_output(peer, 1), "the buffers' share is full"
    broker.receive(broker.open(WORKER), b"FETCH\n")              # a worker still takes a job
    broker.output_taken(peer, 1000)
    assert broker.buffer_bytes == 0


def test_lines_held_behind_a_waiting_fetch_are_counted_until_answered():
    broker = BrokerCore(max_memory=40_000)
    worker, client = broker.open(WORKER), broker.open(CLIENT)
    broker.receive(worker, b"FETCH 30\nSTATS\nSTATS\n", now=0.0)
    assert broker.buffer_bytes == 10 + 2 * LINE_OVERHEAD, f"got {broker.buffer_bytes}"
    talk(broker, client, b"JOB a\n")
    assert broker.buffer_bytes == 0, "the held lines were answered and released"
    assert broker.receive(worker, b"FETCH 30\n" + b"STATS\n" * 2000).startswith(b"ERR BACKLOG_FULL")


def test_too_many_held_lines_for_the_budget_get_memory_full():
    broker = BrokerCore(max_memory=4000)
    worker = broker.open(WORKER)
    reply = broker.receive(worker, b"FETCH 30\n" + b"STATS\n" * 20).decode()
    assert reply.startswith("ERR MEMORY_FULL ") and worker.closing, f"got {reply!r}"
    assert broker.memory_used == 0


def test_replies_to_one_read_count_the_job_texts_they_copy():
    broker = BrokerCore(max_memory=8000)       # buffers 2,000: one copy of 864 fits, two do
    client, worker = broker.open(CLIENT), broker.open(WORKER)
    talk(broker, client, b"".join(b"JOB " + b"x" * 800 + b"\n" for _ in range(3)))
    replies = talk(broker, worker, b"FETCH\n" * 3)
    assert [r[:6] for r in replies] == ["JOB 1 ", "JOB 2 ", "ERR ME"], (
        f"expected two jobs then ERR MEMORY_FULL, got {[r[:30] for r in replies]}")
    assert broker.buffer_bytes == 0, "the copies are counted only while the read is answered"
    broker.close(worker)
    again = broker.open(WORKER)
    assert talk(broker, again, b"FETCH\n")[0].startswith("JOB 1 "), "the jobs it took are back"


def test_unsent_output_is_charged_released_and_bounded():
    broker = BrokerCore(max_memory=4000)
    peer = broker.open(CLIENT)
    assert broker.charge_output(peer, 600) and broker.buffer_bytes == 600
    assert not broker.charge_output(peer, 600), "past the buffers' share: refused"
    broker.output_taken(peer, 100)
    assert broker.buffer_bytes == 500
    broker.close(peer)
    broker.output_taken(peer, 500)       # the shell reports a send after close: harmless
    assert broker.memory_used == 0, f"got {broker.memory_used}"


# -- resources: silent peers (spec limits.connections) ---------------------------------

def test_a_connection_that_does_not_authenticate_in_time_gets_auth_timeout():
    broker = BrokerCore(token="s3cret", auth_timeout=5)
    silent, prompt = broker.open(CLIENT, now=0.0), broker.open(CLIENT, now=0.0)
    assert talk(broker, prompt, b"AUTH s3cret\n") == ["OK"]
    broker.tick(4.0)
    assert broker.deliveries == []
    assert broker.next_deadline() is not None
    broker.tick(5.5)
    assert deliveries_to(broker, silent)[0].startswith("ERR AUTH_TIMEOUT ")
    assert silent.closing and not prompt.closing


def test_without_a_token_nothing_times_out_for_silence():
    broker = BrokerCore(auth_timeout=5)
    quiet = broker.open(CLIENT, now=0.0)
    assert broker.next_deadline() is None
    broker.tick(100.0)
    assert broker.deliveries == [] and not quiet.closing


def test_shed_chooses_those_that_gave_least_and_never_a_busy_one():
    broker = BrokerCore(token="s3cret")
    authed_old = broker.open(CLIENT, now=0.0)
    talk_at = lambda conn, data, now: broker.receive(conn, data, now)
    talk_at(authed_old, b"AUTH s3cret\n", 1.0)
    authed_new = broker.open(CLIENT, now=0.0)
    talk_at(authed_new, b"AUTH s3cret\n", 5.0)
    spoke = broker.open(CLIENT, now=2.0)
    talk_at(spoke, b"AUTH s3c", 3.0)                 # sent something, not authenticated
    silent_old, silent_new = broker.open(CLIENT, now=1.0), broker.open(CLIENT, now=3.0)
    young = broker.open(CLIENT, now=9.5)
    holder = broker.open(WORKER, now=0.0)
    talk_at(holder, b"AUTH s3cret\n", 0.5)
    submitter = broker.open(CLIENT)
    talk_at(submitter, b"AUTH s3cret\nJOB a\n", 0.5)
    talk_at(holder, b"FETCH\n", 0.5)
    waiter = broker.open(WORKER, now=0.0)
    talk_at(waiter, b"AUTH s3cret\nFETCH 60\n", 0.5)
    order = broker.shed(10.0, count=10)
    assert order == [silent_old, silent_new, spoke, submitter, authed_old, authed_new], order
    assert not any(conn.closing for conn in order), "shed only chooses"
    authed_new.closing = True
    assert broker.shed(10.0, count=10)[-1] is authed_old, "a closing one is not chosen"
    for conn in order:
        broker.close(conn)
    assert broker.shed(10.0) == [], "a job holder, a waiting FETCH, a young one: never"
    assert not (holder.closing or waiter.closing or young.closing)


def test_default_memory_budget_is_a_quarter_of_ram_or_of_a_lower_cgroup_limit(tmp_path, monkeypatch):
    import core.broker as broker_module
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    monkeypatch.setattr(broker_module, "CGROUP_LIMIT_FILES", (str(tmp_path / "absent"),))
    assert default_max_memory() == ram // 4
    limit = tmp_path / "memory.max"
    limit.write_text("max\n")                   # cgroup v2: no limit
    monkeypatch.setattr(broker_module, "CGROUP_LIMIT_FILES", (str(limit),))
    assert default_max_memory() == ram // 4
    limit.write_text(f"{512 << 20}\n")         # a container of 512 MiB
    assert default_max_memory() == 128 << 20


# -- leases and poison jobs (spec leases, leases.poison) ------------------------------

def test_a_lease_that_runs_out_requeues_first_and_the_late_done_gets_lease_expired():
    broker = BrokerCore(lease=5.0)
    client, holder, other = broker.open(CLIENT), broker.open(WORKER), broker.open(WORKER)
    talk(broker, client, b"JOB a\nJOB b\n")
    assert talk(broker, holder, b"FETCH\nTOUCH 1\n") == ["JOB 1 a", "OK"]
    assert broker.next_deadline() == 5.0, "the lease is the only deadline"
    broker.tick(4.9)
    assert broker.receive(holder, b"TOUCH 1\n", 4.9) == b"OK\n", "renewed before it ran out"
    broker.tick(9.8)
    assert broker.states[1] == RUNNING, f"expected still running at 9.8 s, got state {broker.states[1]}"
    broker.tick(9.9)
    assert broker.states[1] == WAITING, "expected waiting once 5 s passed since the last TOUCH"
    assert talk(broker, other, b"FETCH\n") == ["JOB 1 a"], "expected the requeued job first in line"
    replies = talk(broker, holder, b"DONE 1\nTOUCH 1\n")
    assert [r.split()[:2] for r in replies] == [["ERR", "LEASE_EXPIRED"]] * 2, replies
    assert talk(broker, other, b"DONE 1\n") == ["OK"], "the new holder completes it"
    assert broker.failures == {}, "a completed job keeps no count"


def test_a_job_never_touched_has_no_lease_however_long_it_runs():
    broker = BrokerCore(lease=0.5)
    client, worker = broker.open(CLIENT), broker.open(WORKER)
    talk(broker, client, b"JOB long\n")
    talk(broker, worker, b"FETCH\n")
    assert broker.next_deadline() is None, "no timer for a job nobody touched"
    broker.tick(600.0)
    assert broker.receive(worker, b"DONE 1\n", 600.0) == b"OK\n"


def test_the_delivery_limit_buries_a_job_while_others_flow_and_kick_puts_it_back():
    broker = BrokerCore(max_deliveries=3)
    client = broker.open(CLIENT)
    talk(broker, client, b"JOB poison\nJOB healthy\n")
    for attempt in range(3):
        worker = broker.open(WORKER)
        assert talk(broker, worker, b"FETCH\n") == ["JOB 1 poison"], f"delivery {attempt + 1}"
        broker.close(worker)
    worker = broker.open(WORKER)
    assert talk(broker, worker, b"FETCH\nDONE 2\nFETCH\n") == ["JOB 2 healthy", "OK", "NOJOB"]
    assert talk(broker, client, b"STATUS 1\nSTATS\n") == [
        "buried", "STATS waiting=0 running=0 completed=1 clients=1 workers=1 buried=1"]
    assert talk(broker, client, b"KICK 2\nKICK 1\nKICK 1\nSTATUS 1\n") == [
        "ERR NOT_BURIED job 2 is not buried", "OK", "ERR NOT_BURIED job 1 is not buried", "waiting"]
    assert broker.failures == {}, "KICK resets the count"
    assert talk(broker, worker, b"FETCH\n") == ["JOB 1 poison"]


def test_an_expired_lease_counts_as_a_failed_delivery():
    broker = BrokerCore(lease=1.0, max_deliveries=1)
    client, worker = broker.open(CLIENT), broker.open(WORKER)
    talk(broker, client, b"JOB hangs\n")
    talk(broker, worker, b"FETCH\nTOUCH 1\n")
    broker.tick(1.0)
    assert talk(broker, client, b"STATUS 1\n") == ["buried"]


class FailureStore:
    def __init__(self):
        self.changes = []

    def add(self, job_id, text):
        pass

    def complete(self, job_id):
        pass

    def failed(self, job_id, count, buried):
        self.changes.append((job_id, count, buried))


def test_store_sees_counts_and_burials_and_restore_keeps_them():
    store = FailureStore()
    broker = BrokerCore(store=store, max_deliveries=2)
    client = broker.open(CLIENT)
    talk(broker, client, b"JOB a\nJOB b\n")
    for _ in range(2):
        worker = broker.open(WORKER)
        talk(broker, worker, b"FETCH\n")
        broker.close(worker)
    talk(broker, client, b"KICK 1\n")
    assert store.changes == [(1, 1, False), (1, 2, True), (1, 0, False)]
    restarted = BrokerCore(max_deliveries=2)
    restarted.restore(3, [(2, b"b")], [], buried=[(1, b"a")], failures={2: 1})
    client, worker = restarted.open(CLIENT), restarted.open(WORKER)
    assert talk(restarted, client, b"STATUS 1\n") == ["buried"]
    assert talk(restarted, worker, b"FETCH\n") == ["JOB 2 b"]
    restarted.close(worker)
    assert talk(restarted, client, b"STATUS 2\n") == ["buried"], "its count went on from 1"


def test_sqlite_store_migrates_a_version_1_file_and_keeps_burials(tmp_path):
    import sqlite3
    from shell.store import SqliteStore
    path = str(tmp_path / "jobs.db")
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, text BLOB NOT NULL, "
                "completed INTEGER NOT NULL DEFAULT 0)")
    old.executemany("INSERT INTO jobs VALUES (?, ?, ?)", [(1, b"a", 1), (2, b"b", 0), (3, b"c", 0)])
    old.commit()
    old.close()
    store = SqliteStore(path)
    assert store.load() == (4, [(2, b"b"), (3, b"c")], [1], [], {}), "version 1 rows, unchanged"
    store.failed(2, 20, True)
    store.failed(3, 4, False)
    store.close()
    store = SqliteStore(path)
    assert store.load() == (4, [(3, b"c")], [1], [(2, b"b")], {2: 20, 3: 4})
    store.close()


def test_an_unfinished_line_is_a_deadline_and_its_end_clears_it(broker):
    client = broker.open(CLIENT, now=0.0)
    assert broker.next_deadline() is None, "nothing timed on a fresh connection"
    broker.receive(client, b"JOB half", now=1.0)
    assert broker.next_deadline() is not None, \
        "an unfinished line must be swept for the idle timeout"
    broker.receive(client, b" done\n", now=2.0)
    assert broker.next_deadline() is None, "a finished line leaves no deadline behind"


def test_every_attribute_of_the_core_is_a_slot():
    # A new attribute missing from __slots__ lands in the instance dict, and with it
    # every attribute access slows down (see BrokerCore.__slots__).
    broker = BrokerCore(token="s3cret")
    broker.restore(3, [(1, b"a")], [2], [], {1: 1})
    client = broker.open(CLIENT)
    broker.receive(client, b"AUTH s3cret\nJOB b\n")
    assert vars(broker) == {}, f"attributes outside __slots__: {sorted(vars(broker))}"
