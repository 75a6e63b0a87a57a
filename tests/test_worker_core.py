"""Unit tests of core/worker.py: the worker's state machine, driven with explicit times."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.worker import (
    TRANSITIONS, Backoff, Close, Connect, Emit, Log, Send, State, WorkerSlot,
)

BROKER = "127.0.0.1:50001"


def new_slot(**options):
    options.setdefault("word_delay", 0.25)
    options.setdefault("fetch_interval", 0.5)
    return WorkerSlot(BROKER, **options)


def connected_slot(now=0.0, **options):
    """A slot that has connected and sent its first FETCH."""
    slot = new_slot(**options)
    assert slot.start(now) == [Connect()]
    slot.connected(now)
    assert slot.state is State.AWAITING_JOB
    return slot


def of(kind, actions):
    return [a for a in actions if isinstance(a, kind)]


def messages(actions):
    return [a.message for a in of(Log, actions)]


def sent(actions):
    return b"".join(a.data for a in of(Send, actions))


def words(actions):
    return [a.payload for a in of(Emit, actions)]


FETCH = [Log("fetching job"), Send(b"FETCH\n")]


# --- connecting --------------------------------------------------------------

def test_start_connects_then_fetches():
    slot = new_slot()
    assert slot.start(0.0) == [Connect()]
    assert slot.state is State.CONNECTING
    actions = slot.connected(0.1)
    assert actions == [Log(f"connected to broker {BROKER}", "info"), *FETCH]
    assert slot.next_deadline() is None, "no timer while waiting for the FETCH reply"


def test_connect_timeout_closes_and_retries():
    slot = new_slot(connect_timeout=5.0)
    slot.start(0.0)
    assert slot.next_deadline() == 5.0
    assert slot.tick(4.9) == []
    actions = slot.tick(5.0)
    assert actions == [Close(), Log(f"cannot connect to broker {BROKER}: timed out; "
                                    "retrying in 1 s", "error")]
    assert slot.state is State.DISCONNECTED
    assert slot.next_deadline() == 6.0


# --- the job cycle -------------------------------------------------------------

def test_nojob_waits_fetch_interval_then_fetches_again():
    slot = connected_slot()
    assert slot.data_received(b"NOJOB\n", 10.0) == []
    assert slot.state is State.IDLE_WAIT
    assert slot.next_deadline() == 10.5
    assert slot.tick(10.49) == [], "FETCH again only once the fetch interval is over"
    assert slot.tick(10.5) == FETCH
    assert slot.state is State.AWAITING_JOB


def test_job_words_come_at_their_deadlines_in_order_then_done():
    slot = connected_slot()
    actions = slot.data_received(b"JOB 7 alpha  beta\tgamma\n", 10.0)
    assert actions == [Log("starting job 7"), Emit(b"alpha\n")], "first word at once"
    assert slot.next_deadline() == 10.25
    assert slot.tick(10.2) == [], "nothing before the word delay is over"
    assert slot.tick(10.25) == [Emit(b"beta\n")]
    assert slot.next_deadline() == 10.5
    actions = slot.tick(10.5)
    assert actions == [Emit(b"gamma\n"), Send(b"DONE 7\n")], "DONE right after the last word"
    assert slot.state is State.AWAITING_OK
    assert slot.next_deadline() is None


def test_late_tick_emits_one_word_and_keeps_the_delay_after_it():
    slot = connected_slot()
    slot.data_received(b"JOB 1 a b c\n", 0.0)
    assert slot.tick(3.0) == [Emit(b"b\n")], "a late tick must not bunch words up"
    assert slot.next_deadline() == 3.25


def test_ok_logs_completed_and_fetches_at_once():
    slot = connected_slot()
    slot.data_received(b"JOB 3 only\n", 0.0)
    actions = slot.data_received(b"OK\n", 0.1)
    assert actions == [Log("completed job 3"), *FETCH]
    assert slot.next_deadline() is None


def test_syslog_order_for_one_job():
    slot = new_slot()
    log = messages(slot.start(0.0))
    log += messages(slot.connected(0.0))
    log += messages(slot.data_received(b"JOB 4 x y\n", 1.0))
    log += messages(slot.tick(1.25))
    log += messages(slot.data_received(b"OK\n", 1.3))
    assert log == [f"connected to broker {BROKER}", "fetching job", "starting job 4",
                   "completed job 4", "fetching job"]


def test_job_without_words_is_done_at_once():
    slot = connected_slot()
    assert slot.data_received(b"JOB 9 \n", 0.0) == [Log("starting job 9"), Send(b"DONE 9\n")]
    assert slot.state is State.AWAITING_OK


def test_words_are_utf8_and_undecodable_bytes_pass_through():
    slot = connected_slot(word_delay=0.0)
    actions = slot.data_received("JOB 2 héllo wörld\n".encode(), 0.0)
    actions += slot.tick(0.0)
    assert words(actions) == ["héllo\n".encode(), "wörld\n".encode()]
    slot.data_received(b"OK\n", 0.0)
    assert words(slot.data_received(b"JOB 3 \xff\xfe\n", 0.0)) == [b"\xff\xfe\n"]


def test_words_split_at_spaces_and_tabs_only():
    """U+00A0, U+0085, U+2028 and U+3000 are text (spec grammar: word_separator)."""
    slot = connected_slot(word_delay=0.0)
    actions = slot.data_received("JOB 4 a\u00a0b\t c\u3000d e\u2028f g\u0085h\n".encode(), 0.0)
    actions += slot.tick(0.0) + slot.tick(0.0) + slot.tick(0.0)
    assert words(actions) == [w.encode() + b"\n" for w in
                              ["a\u00a0b", "c\u3000d", "e\u2028f", "g\u0085h"]]


def test_a_job_id_of_other_digits_is_a_protocol_error():
    slot = connected_slot()
    actions = slot.data_received("JOB \u0663 x\n".encode(), 0.0)
    assert actions[0] == Close() and not words(actions) and not sent(actions), actions
    assert slot.state is State.DISCONNECTED


# --- errors from the broker ----------------------------------------------------------

def test_err_to_fetch_is_logged_and_treated_as_nojob():
    slot = connected_slot()
    actions = slot.data_received(b"ERR BUSY try later\n", 2.0)
    assert actions == [Log("FETCH failed: ERR BUSY try later", "error")]
    assert slot.state is State.IDLE_WAIT
    assert slot.next_deadline() == 2.5


def test_err_to_done_is_logged_and_the_worker_carries_on():
    slot = connected_slot()
    slot.data_received(b"JOB 5 w\n", 0.0)
    actions = slot.data_received(b"ERR NOT_HOLDER job 5 is held by another worker\n", 0.1)
    assert actions == [Log("DONE 5 failed: ERR NOT_HOLDER job 5 is held by another worker",
                           "error"),
                       *FETCH]
    assert "completed job 5" not in messages(actions)


def test_unsolicited_err_is_logged_and_changes_nothing():
    slot = connected_slot()
    slot.data_received(b"JOB 1 a b\n", 0.0)
    assert slot.data_received(b"ERR IDLE_TIMEOUT bye\n", 0.1) == [
        Log("broker error: ERR IDLE_TIMEOUT bye", "error")]
    assert slot.state is State.STREAMING
    assert slot.tick(0.25) == [Emit(b"b\n"), Send(b"DONE 1\n")]


@pytest.mark.parametrize("line", [b"HELLO\n", b"OK\n", b"JOB x text\n"])
def test_unexpected_line_closes_and_reconnects(line):
    slot = connected_slot()
    actions = slot.data_received(line, 1.0)
    assert actions[0] == Close(), f"expected Close first, got {actions}"
    assert messages(actions)[0].startswith(f"connection to broker {BROKER} lost: protocol error")
    assert slot.state is State.DISCONNECTED
    assert slot.next_deadline() == 2.0


def test_overlong_line_from_broker_is_a_protocol_error():
    slot = connected_slot(max_line=16)
    actions = slot.data_received(b"JOB 1 " + b"x" * 40, 0.0)
    assert actions[0] == Close()
    assert "line from broker too long" in messages(actions)[0]


# --- framing -----------------------------------------------------------------------

def test_partial_lines_and_crlf():
    slot = connected_slot()
    assert slot.data_received(b"JO", 0.0) == []
    assert slot.data_received(b"B 12 one tw", 0.0) == []
    actions = slot.data_received(b"o\r\n", 0.0)
    assert actions == [Log("starting job 12"), Emit(b"one\n")], "CR must not reach a word"
    assert slot.tick(0.25) == [Emit(b"two\n"), Send(b"DONE 12\n")]
    assert slot.data_received(b"O", 0.3) == []
    assert slot.data_received(b"K\r\n", 0.3) == [Log("completed job 12"), *FETCH]


def test_partial_line_does_not_survive_a_reconnect():
    slot = connected_slot()
    slot.data_received(b"JOB 1 half", 0.0)
    slot.connection_lost("closed by broker", 0.0)
    slot.tick(1.0)
    slot.connected(1.0)
    actions = slot.data_received(b"NOJOB\n", 1.0)
    assert Close() not in actions, f"expected NOJOB read as a line of its own, got {actions}"
    assert slot.state is State.IDLE_WAIT


# --- losing the connection -------------------------------------------------------

def test_lost_mid_job_abandons_it_and_backs_off_1_2_4_8_8():
    slot = connected_slot()
    slot.data_received(b"JOB 6 a b c\n", 0.0)
    actions = slot.connection_lost("Connection reset by peer", 0.1)
    assert actions == [Log(f"connection to broker {BROKER} lost: Connection reset by peer",
                           "error"), Log("abandoned job 6", "info")]
    assert sent(actions) == b"", "an abandoned job is never DONE'd"
    now, delays = 0.1, []
    for _ in range(5):
        due = slot.next_deadline()
        delays.append(round(due - now, 6))
        assert slot.tick(due) == [Connect()]
        now = due
        actions = slot.connect_failed("Connection refused", now)
        # stderr (at the default level) hears of the outage once, syslog of every attempt
        level = "error" if not delays[:-1] else "debug"
        assert actions == [Log(f"cannot connect to broker {BROKER}: Connection refused; "
                               f"retrying in {min(2 ** len(delays), 8)} s", level)]
    delays.append(round(slot.next_deadline() - now, 6))
    assert delays == [1, 2, 4, 8, 8, 8]
    slot.tick(slot.next_deadline())
    actions = slot.connected(100.0)
    assert sent(actions) == b"FETCH\n", "the new connection starts with FETCH, not DONE 6"


def test_backoff_resets_once_the_broker_answers():
    slot = connected_slot()
    slot.connection_lost("closed by broker", 0.0)
    slot.tick(1.0)
    slot.connect_failed("Connection refused", 1.0)   # next wait 2
    slot.tick(3.0)
    slot.connected(3.0)
    slot.data_received(b"NOJOB\n", 3.5)               # a broker: the connection works
    slot.connection_lost("closed by broker", 5.0)
    assert slot.next_deadline() == 6.0, \
        f"expected a retry 1 s after losing a working broker, got {slot.next_deadline() - 5.0} s"


def turned_away(slot, now, reply):
    """One reconnect that the broker turns away with ``reply`` (bytes, after
    AUTH or FETCH): returns (the delay before that attempt, its Log actions)."""
    due = slot.next_deadline()
    assert slot.tick(due) == [Connect()]
    actions = slot.connected(due)
    actions += slot.data_received(reply, due)
    assert slot.state is State.DISCONNECTED, f"expected the connection dropped, got {slot!r}"
    return due - now, due, of(Log, actions)


@pytest.mark.parametrize("token, reply", [
    (b"wrong", b"ERR AUTH_FAILED wrong token\n"),       # --token-file not the broker's
    (None, b"SSH-2.0-OpenSSH_9.6\n"),                    # not a workq broker at all
    (None, b"HTTP/1.1 400 Bad Request\n"),
])
def test_a_broker_that_turns_the_worker_away_is_retried_1_2_4_8_8_apart(token, reply):
    slot = new_slot(token=token)
    slot.start(0.0)
    logs = slot.connected(0.0)
    logs += slot.data_received(reply, 0.0)
    now, delays, said = 0.0, [], [(a.message, a.level) for a in of(Log, logs)]
    for _ in range(5):
        delay, now, logs = turned_away(slot, now, reply)
        delays.append(delay)
        said += [(a.message, a.level) for a in logs]
    assert delays == [1, 2, 4, 8, 8], \
        f"expected reconnects 1, 2, 4, 8, 8 s apart after each refusal, got {delays}"
    loud = [message for message, level in said if level != "debug"]
    assert len(loud) == 2 and loud[0] == f"connected to broker {BROKER}" \
        and loud[1].startswith(f"connection to broker {BROKER} lost: protocol error"), \
        f"expected 'connected' and the refusal once on stderr for the outage, got {loud}"
    lost = [message for message, _ in said if " lost: " in message]
    assert len(lost) == 6, f"expected syslog to hear of each of the 6 refusals, got {said}"


def test_a_broker_that_closes_before_answering_is_retried_with_backoff():
    slot = connected_slot()
    delays, now = [], 0.0
    said = messages(slot.connection_lost("closed by broker", now))
    for _ in range(4):
        due = slot.next_deadline()
        delays.append(due - now)
        now = due
        slot.tick(now)
        said += messages(slot.connected(now))
        said += messages(slot.connection_lost("closed by broker", now))
    assert delays == [1, 2, 4, 8], f"expected 1, 2, 4, 8 s between attempts, got {delays}"
    assert said.count(f"connected to broker {BROKER}") == 4, \
        f"expected each reconnect said (a restarting broker is no refusal), got {said}"


def test_after_refusals_connected_is_said_when_the_broker_accepts():
    slot = new_slot(token=b"s3cret")
    slot.start(0.0)
    slot.connected(0.0)
    slot.data_received(b"ERR AUTH_FAILED wrong token\n", 0.0)
    _, now, _ = turned_away(slot, 0.0, b"ERR AUTH_FAILED wrong token\n")
    slot.tick(slot.next_deadline())
    now = slot.next_deadline()
    actions = slot.connected(now)
    assert of(Log, actions) == [], f"expected no 'connected' before the broker answers, got {actions}"
    actions = slot.data_received(b"OK\n", now)
    assert actions == [Log(f"connected to broker {BROKER}", "info"), *FETCH], \
        f"expected 'connected' once AUTH is accepted, then FETCH; got {actions}"
    slot.connection_lost("closed by broker", now + 10)
    assert slot.next_deadline() == now + 11, \
        f"expected the backoff reset by the accepted AUTH (retry in 1 s), got " \
        f"{slot.next_deadline() - now - 10} s"


def test_lost_while_awaiting_ok_is_not_called_abandoned():
    slot = connected_slot()
    slot.data_received(b"JOB 2 w\n", 0.0)
    actions = slot.connection_lost("closed by broker", 0.1)
    assert messages(actions) == [f"connection to broker {BROKER} lost: closed by broker"]


def test_backoff_policy():
    backoff = Backoff(first=1.0, cap=8.0)
    assert [backoff.next_delay() for _ in range(6)] == [1, 2, 4, 8, 8, 8]
    backoff.reset()
    assert backoff.next_delay() == 1


def test_each_outage_reaches_stderr_once_and_its_end_too():
    """At the default --log-level a worker says "cannot connect" once per outage
    (the first failed attempt), not per retry, and "connected" when it ends; a
    new outage after that is reported again."""
    slot = new_slot()
    slot.start(0.0)
    levels = []
    now = 0.0
    for _ in range(3):
        levels += [a.level for a in slot.connect_failed("Connection refused", now)]
        now = slot.next_deadline()
        slot.tick(now)
    levels += [a.level for a in slot.connected(now) if isinstance(a, Log)]
    slot.connection_lost("closed by broker", now)
    now = slot.next_deadline()
    slot.tick(now)
    levels += [a.level for a in slot.connect_failed("Connection refused", now)]
    assert levels == ["error", "debug", "debug", "info", "debug", "error"], \
        f"expected one error per outage, then info when connected; got {levels}"


# --- stopping ------------------------------------------------------------------------

def test_stop_mid_job_abandons_without_done():
    slot = connected_slot()
    slot.data_received(b"JOB 8 a b c\n", 0.0)
    actions = slot.stop(0.1)
    assert actions == [Log("abandoned job 8", "info"), Close()]
    assert slot.state is State.STOPPED
    assert slot.next_deadline() is None
    assert slot.connection_lost("closed", 0.2) == [], "a late EOF after stop is ignored"


@pytest.mark.parametrize("setup", ["disconnected", "idle", "awaiting_ok"])
def test_stop_elsewhere_only_closes(setup):
    slot = connected_slot()
    if setup == "disconnected":
        slot.connection_lost("closed", 0.0)
        expected = []
    elif setup == "idle":
        slot.data_received(b"NOJOB\n", 0.0)
        expected = [Close()]
    else:
        slot.data_received(b"JOB 1 w\n", 0.0)
        expected = [Close()]
    assert slot.stop(0.0) == expected


# --- the table and misuse ----------------------------------------------------------

def test_transition_table_covers_every_state():
    assert set(TRANSITIONS) == set(State)
    for targets in TRANSITIONS.values():
        assert targets <= set(State)


def test_inputs_in_the_wrong_state_are_refused():
    slot = new_slot()
    with pytest.raises(RuntimeError, match="connected"):
        slot.connected(0.0)
    with pytest.raises(RuntimeError, match="data_received"):
        slot.data_received(b"NOJOB\n", 0.0)


# --- long-poll and authentication ------------------------------------------------------

def test_long_poll_asks_with_seconds_and_asks_again_at_once_after_nojob():
    slot = connected_slot(long_poll=10)
    assert slot.data_received(b"NOJOB\n", 10.0) == [Log("fetching job"), Send(b"FETCH 10\n")]
    assert slot.state is State.AWAITING_JOB


@pytest.mark.parametrize("seconds, line", [(0.5, b"FETCH 0.5\n"), (1e-05, b"FETCH 0.00001\n"),
                                           (3600.0, b"FETCH 3600\n")])
def test_long_poll_seconds_are_written_as_the_grammar_reads_them(seconds, line):
    slot = connected_slot(long_poll=seconds)
    held = max(1.0, seconds)      # the broker held the FETCH its whole time
    assert slot.data_received(b"NOJOB\n", held) == [Log("fetching job"), Send(line)]


def test_long_poll_refused_with_err_falls_back_to_polling():
    slot = connected_slot(long_poll=10)
    actions = slot.data_received(b"ERR BAD_ARGUMENT FETCH takes no argument\n", 1.0)
    assert "polling every 0.5 s" in messages(actions)[0]
    assert slot.tick(1.5) == FETCH, "after the fetch interval, a plain FETCH"


def test_long_poll_never_answered_reconnects_and_polls():
    slot = connected_slot(long_poll=10)
    deadline = slot.next_deadline()
    assert deadline is not None and deadline > 10, "a FETCH <seconds> waits at least its seconds"
    actions = slot.tick(deadline)
    assert Close() in actions and slot.state is State.DISCONNECTED
    slot.tick(slot.next_deadline())
    assert slot.connected(20.0)[-1] == Send(b"FETCH\n")


def test_long_poll_nojob_at_once_waits_the_fetch_interval():
    """A broker that answers FETCH 10 with NOJOB at once (the original system's)
    is asked again only after the fetch interval, never in a loop."""
    slot = connected_slot(long_poll=10)                 # FETCH 10 sent at 0.0
    actions = slot.data_received(b"NOJOB\n", 0.001)
    assert sent(actions) == b"", f"expected no FETCH right after an early NOJOB, got {actions}"
    assert slot.state is State.IDLE_WAIT
    assert slot.next_deadline() == 0.501, "expected the next FETCH a fetch interval after NOJOB"
    assert "without waiting; asking again every 0.5 s" in messages(actions)[0]
    assert slot.tick(0.5) == [], "no FETCH before the fetch interval is over"
    actions = slot.tick(0.501)
    assert actions == [Log("fetching job"), Send(b"FETCH 10\n")], \
        f"expected FETCH 10 again (a broker may still hold it next time), got {actions}"
    again = slot.data_received(b"NOJOB\n", 0.502)
    assert sent(again) == b"" and messages(again) == [], \
        f"expected a quiet wait the second time (logged once per connection), got {again}"
    assert slot.next_deadline() == pytest.approx(1.002)


@pytest.mark.parametrize("waited, at_once", [(9.0, True), (8.99, False), (0.0, False),
                                             (30.0, True)])
def test_long_poll_nojob_counts_as_held_from_90_percent_of_the_wait(waited, at_once):
    slot = connected_slot(long_poll=10)
    actions = slot.data_received(b"NOJOB\n", waited)
    assert (sent(actions) == b"FETCH 10\n") is at_once, \
        f"NOJOB {waited} s after FETCH 10: expected FETCH at once: {at_once}, got {actions}"


def test_long_poll_early_nojob_is_measured_from_each_fetch():
    slot = connected_slot(long_poll=10)
    slot.data_received(b"NOJOB\n", 10.0)                # held: FETCH 10 again at 10.0
    actions = slot.data_received(b"NOJOB\n", 10.1)      # this one was not held
    assert sent(actions) == b"" and slot.state is State.IDLE_WAIT, \
        f"expected a wait after a NOJOB 0.1 s after its FETCH 10, got {actions}"


def test_long_poll_early_nojob_is_logged_again_after_a_reconnect():
    slot = connected_slot(long_poll=10)
    assert messages(slot.data_received(b"NOJOB\n", 0.0))
    slot.connection_lost("closed by broker", 0.1)
    slot.tick(slot.next_deadline())
    slot.connected(2.0)
    assert messages(slot.data_received(b"NOJOB\n", 2.0)), \
        "expected the early NOJOB of a new connection to be logged again"


def test_log_messages_carry_the_brokers_bytes_for_the_shell_to_escape():
    """core.logline turns them into the spec's form (tests/test_logline.py)."""
    from core.logline import syslog_message
    slot = connected_slot()
    actions = slot.data_received(b"ERR X \xff\xfe\n", 0.0)
    assert [syslog_message(m, 27) for m in messages(actions)] == [
        "FETCH failed: ERR X \\xff\\xfe"]
    slot = connected_slot()
    actions = slot.data_received(b"HELLO \x1b[2J\xc2\x85\n", 0.0)
    text = syslog_message(messages(actions)[0], 27)
    assert "unexpected line 'HELLO \\x1b[2J\\u0085'" in text, f"got {text!r}"


def test_token_is_sent_first_and_fetch_follows_ok():
    slot = new_slot(token=b"s3cret")
    slot.start(0.0)
    assert sent(slot.connected(0.0)) == b"AUTH s3cret\n"
    assert slot.data_received(b"OK\n", 0.1) == FETCH


def test_refused_token_drops_the_connection_and_retries_later():
    slot = new_slot(token=b"wrong")
    slot.start(0.0)
    slot.connected(0.0)
    actions = slot.data_received(b"ERR AUTH_FAILED wrong token\n", 0.1)
    assert Close() in actions and slot.state is State.DISCONNECTED
    assert any("AUTH refused" in message for message in messages(actions))


# --- leases: TOUCH while streaming (spec leases) ---------------------------------

def streaming_slot(renew_interval=2.0, text=b"a b c d e f g h i j"):
    slot = connected_slot(renew_interval=renew_interval, word_delay=1.0)
    actions = slot.data_received(b"JOB 7 " + text + b"\n", 0.0)
    return slot, actions


def test_a_renewing_worker_touches_at_once_then_every_renew_interval():
    slot, actions = streaming_slot()
    assert sent(actions) == b"TOUCH 7\n", "TOUCH binds the lease when the job arrives"
    assert words(actions) == [b"a\n"]
    assert slot.data_received(b"OK\n", 0.0) == []
    touches = []
    while slot.state is State.STREAMING:
        now = slot.next_deadline()
        if b"TOUCH 7" in sent(slot.tick(now)):
            touches.append(now)
            assert slot.data_received(b"OK\n", now) == []
    assert touches == [2.0, 4.0, 6.0, 8.0], f"expected a TOUCH every 2 s while streaming, got {touches}"


def test_ok_to_touch_is_not_taken_for_the_ok_to_done():
    slot, _ = streaming_slot(text=b"a")
    assert slot.state is State.AWAITING_OK, "one word: DONE right after the TOUCH"
    assert slot.data_received(b"OK\n", 0.1) == [], "the TOUCH's OK"
    assert slot.state is State.AWAITING_OK
    actions = slot.data_received(b"OK\n", 0.2)
    assert messages(actions)[0] == "completed job 7", messages(actions)


def test_lease_expired_stops_the_stream_and_fetches_again():
    slot, _ = streaming_slot()
    actions = slot.data_received(b"ERR LEASE_EXPIRED the lease of job 7 ran out\n", 0.5)
    assert messages(actions)[:2] == ["lost the lease of job 7: ERR LEASE_EXPIRED the lease "
                                     "of job 7 ran out", "abandoned job 7"], messages(actions)
    assert sent(actions) == b"FETCH\n" and slot.state is State.AWAITING_JOB


@pytest.mark.parametrize("reply", [b"ERR UNKNOWN_COMMAND unknown command 'TOUCH'",
                                   b"ERROR unknown command"])
def test_a_broker_without_touch_is_not_asked_again_and_the_job_goes_on(reply):
    slot, _ = streaming_slot()
    actions = slot.data_received(reply + b"\n", 0.1)
    assert messages(actions) == [f"broker does not renew leases ({reply.decode()}); "
                                 "no TOUCH on this connection"], messages(actions)
    assert slot.state is State.STREAMING
    out = b""
    while slot.state is State.STREAMING:
        out += sent(slot.tick(slot.next_deadline()))
    assert out == b"DONE 7\n", f"expected no more TOUCH, got {out!r}"


def test_renew_interval_zero_never_touches():
    slot, actions = streaming_slot(renew_interval=0.0)
    assert sent(actions) == b""
