"""The conformance plugin, tried against throwaway fakes.

A tiny fake broker (core commands only; `--broken` answers every STATUS
with `running`) and a fake worker live in this file. The suite runs as a
user runs it, `python3 -m conformance ...`, in a subprocess.
"""

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from conformance.patterns import SpecError, match_line, substitute
from conformance.wire import syslog_message

REPO_ROOT = Path(__file__).resolve().parent.parent

FAKE_BROKER = r'''
import selectors, socket, sys
client_port, worker_port = int(sys.argv[1]), int(sys.argv[2])
broken = "--broken" in sys.argv
jobs, waiting, buffers = {}, [], {}
selector = selectors.DefaultSelector()
for port in (client_port, worker_port):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen()
    selector.register(listener, selectors.EVENT_READ, "listener")

def answer(line):
    word, _, arg = line.strip().partition(" ")
    word = word.upper()
    if word == "JOB":
        jobs[len(jobs) + 1] = ["waiting", arg]
        waiting.append(len(jobs))
        return f"ID {len(jobs)}"
    if word == "STATUS":
        return "running" if broken else jobs.get(int(arg), ["unknown"])[0]
    if word == "FETCH":
        if not waiting:
            return "NOJOB"
        job = waiting.pop(0)
        jobs[job][0] = "running"
        return f"JOB {job} {jobs[job][1]}"
    if word == "DONE":
        jobs[int(arg)][0] = "completed"
        return "OK"
    return "ERR UNKNOWN_COMMAND " + word

while True:
    for key, _ in selector.select():
        if key.data == "listener":
            conn, _ = key.fileobj.accept()
            selector.register(conn, selectors.EVENT_READ, "conn")
            buffers[conn] = b""
            continue
        conn = key.fileobj
        data = conn.recv(65536)
        buffers[conn] += data
        *lines, buffers[conn] = buffers[conn].split(b"\n")
        if not data and buffers[conn]:
            lines.append(buffers[conn])
        too_long = len(buffers[conn]) > 1000 or any(len(line) > 1000 for line in lines)
        replies = [answer(line.decode()) for line in lines if len(line) <= 1000]
        if too_long:
            replies.append("ERR LINE_TOO_LONG line longer than 1000 bytes")
        conn.sendall("".join(reply + "\n" for reply in replies).encode())
        if not data or too_long:
            selector.unregister(conn)
            conn.close()
'''

FAKE_WORKER = r'''
import os, socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
output_port, syslog_port = int(sys.argv[2]), int(sys.argv[3])
multicast = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
multicast.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
multicast.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
syslog = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

def log(message):
    syslog.sendto(f"<14>fake-worker[{os.getpid()}]: {message}\x00".encode(),
                  ("127.0.0.1", syslog_port))

broker = socket.create_connection((host, int(port)))
replies = broker.makefile("rb")
while True:
    log("fetching job")
    broker.sendall(b"FETCH\n")
    reply = replies.readline().decode().rstrip("\n")
    if reply == "NOJOB":
        time.sleep(0.02)
        continue
    _, job, text = reply.split(" ", 2)
    log(f"starting job {job}")
    for word in text.split():
        multicast.sendto(word.encode() + b"\n", ("239.0.0.1", output_port))
        time.sleep(0.005)
    broker.sendall(f"DONE {job}\n".encode())
    replies.readline()
    log(f"completed job {job}")
'''

# One system exchange that uses every step kind of spec/EXCHANGES.md.
EVERY_STEP_SPEC = r'''
exchanges:
  - id: ALL-001
    title: every step kind works against the fakes
    section: test
    level: core
    role: system
    steps:
      - connect: c
      - send_raw: "JOB one two\nJOB thr"
      - send_raw: "ee four\n"
      - expect: "ID {a:int}"
      - expect: "ID {b:int}"
      - send_repeat: {prefix: "JOB ", fill: "x ", count: 3}
      - expect: "ID {_:int}"
      - start_worker: w
      - expect_words: [one, two]
        from: w
      - expect_words: [three, four]
      - expect_syslog: "starting job {a}"
      - expect_syslog: "completed job {b}"
      - wait_state: {id: "{b}", state: completed}
      - stop_worker: w
      - connect: long
        port: worker
      - send_repeat: {fill: "y", count: 2000}
      - expect: "ERR LINE_TOO_LONG {_:any}"
      - expect_closed: true
      - connect: e
      - send_raw: "STATUS {a}"
      - shutdown_write: e
      - expect: "{state:word}"
        timeout: 2
      - close: e
      - send: STATUS {a}
        conn: c
      - expect: "{state}"
        conn: c
'''

WRONG_WORDS_SPEC = r'''
exchanges:
  - id: BAD-001
    title: expects words the worker does not send
    section: test
    level: core
    role: system
    steps:
      - connect: c
      - send: JOB alpha beta
      - expect: "ID {id:int}"
      - start_worker: w
      - expect_words: [alpha, gamma]
        timeout: 1
'''

SILENT_SPEC = r'''
exchanges:
  - id: BAD-002
    title: waits for a reply the broker never sends
    section: test
    level: extended
    role: broker
    steps:
      - connect: c
      - send: JOB hello
      - expect: "ID {id:int}"
      - expect: "ID {id}"
        timeout: 0.5
'''


@pytest.fixture
def fakes(tmp_path):
    (tmp_path / "fake_broker.py").write_text(FAKE_BROKER)
    (tmp_path / "fake_worker.py").write_text(FAKE_WORKER)
    return tmp_path


def broker_cmd(fakes, *flags):
    return " ".join(["{python}", str(fakes / "fake_broker.py"), "{client_port}",
                     "{worker_port}", *flags])


def worker_cmd(fakes):
    return f"{{python}} {fakes / 'fake_worker.py'} {{broker}} {{output_port}} {{syslog_port}}"


def run_suite(*args, timeout=120):
    result = subprocess.run([sys.executable, "-m", "conformance", "-p", "no:cacheprovider",
                             *args], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=timeout)
    return result.returncode, result.stdout + result.stderr


def write_spec(directory, text):
    path = directory / "spec.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


# -- against the real spec ------------------------------------------------------

def test_a_correct_fake_passes_job_001(fakes):
    code, output = run_suite("--broker-cmd", broker_cmd(fakes), "-k", "JOB-001")
    assert code == 0, output
    assert "1 passed" in output
    assert "workq network:" in output and "workq broker: {python} " in output


def test_a_broken_fake_fails_with_a_transcript(fakes):
    code, output = run_suite("--broker-cmd", broker_cmd(fakes, "--broken"), "-k", "JOB-001")
    assert code == 1, output
    for text in ["JOB-001: JOB is answered with ID", "c C> JOB hello world", "c S< ID 1",
                 "step 5  expect on c: waiting", "c S< running",
                 "FAILED at step 5: expect on c", "expected: waiting", "received: running",
                 "broker (pid", "--- stderr ---"]:
        assert text in output, f"{text!r} missing from:\n{output}"


def test_markers_and_keywords_select_exchanges(fakes):
    code, output = run_suite("--co", "-q", "-m", "core and broker", "-k", "client.job")
    assert code == 0, output
    assert "spec/protocol.yaml::JOB-001" in output
    assert "JOB-003" not in output  # extended
    assert "STA-001" not in output  # another section


def test_a_shared_broker_skips_exchanges_that_need_a_fresh_one(fakes):
    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    broker = subprocess.Popen([sys.executable, str(fakes / "fake_broker.py"), *map(str, ports)])
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", ports[0])).close()
                break
            except OSError:
                subprocess.run(["sleep", "0.02"])
        code, output = run_suite("--broker-addr", f"127.0.0.1:{ports[0]}:{ports[1]}",
                                 "-k", "JOB-001 or JOB-002", "-rs")
    finally:
        broker.kill()
        broker.wait()
    assert code == 0, output
    assert "1 passed, 1 skipped" in output and "needs a fresh broker" in output


# -- pause_broker stops a broker in its wait for events ----------------------

# The late-deliveries mutant with every pass of its loop made 20 ms busy: a broker on a
# loaded host, whose pass is long enough for several connections' bytes to come in one.
SLOW_LATE_BROKER = r"""
import sys, time
sys.path.insert(0, sys.argv.pop(1))
import _mutant
import broker_deliveries_late
from impl_select.broker import SelectBroker

patched_init = SelectBroker.__init__

def __init__(self, core, *args, **kwargs):
    patched_init(self, core, *args, **kwargs)
    next_deadline = core.next_deadline
    def busy_end_of_pass():
        end = time.perf_counter() + 0.02
        while time.perf_counter() < end:
            pass
        return next_deadline()
    core.next_deadline = busy_end_of_pass

SelectBroker.__init__ = __init__
_mutant.run_broker()
"""


def test_pause_broker_catches_late_deliveries_after_a_pass_over_both_connections(tmp_path):
    """LPL-008 with its first two writes held back until both are in (the broker reads the
    worker's FETCH and the client's STATS in one pass, as a loaded CI host made it do):
    pause_broker must still find the broker in its wait, else on resume it reads the worker's
    STATS ahead of the client's JOB and the mutant passes (seen once in CI)."""
    case = next(exchange for exchange in yaml.safe_load(
        (REPO_ROOT / "spec" / "protocol.yaml").read_text())["exchanges"]
        if exchange["id"] == "LPL-008")
    steps = case["steps"]
    first_expect = next(i for i, step in enumerate(steps) if "expect" in step)
    case["steps"] = ([{"pause_broker": True}] + steps[:first_expect]
                     + [{"resume_broker": True}] + steps[first_expect:])
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"exchanges": [case]}))
    (tmp_path / "slow_late_broker.py").write_text(SLOW_LATE_BROKER)
    mutants = REPO_ROOT / "tests" / "mutants"
    code, output = run_suite("--spec", str(spec), "--broker-cmd",
                             f"{{python}} {tmp_path / 'slow_late_broker.py'} {mutants} "
                             "{client_port} {worker_port}")
    assert code == 1 and "expected: JOB {id:int} order matters" in output \
        and "received: STATS" in output, (
        "expected LPL-008 to fail the late-deliveries mutant with its JOB overtaken by the "
        f"worker's STATS; the run said:\n{output}")


# -- every step kind, against a spec of our own -------------------------------

def test_every_step_kind_passes_against_correct_fakes(fakes):
    code, output = run_suite("--spec", write_spec(fakes, EVERY_STEP_SPEC),
                             "--broker-cmd", broker_cmd(fakes), "--worker-cmd", worker_cmd(fakes))
    assert code == 0, output
    assert "1 passed" in output


def test_wrong_words_report_what_each_source_sent(fakes):
    code, output = run_suite("--spec", write_spec(fakes, WRONG_WORDS_SPEC),
                             "--broker-cmd", broker_cmd(fakes), "--worker-cmd", worker_cmd(fakes))
    assert code == 1, output
    assert "mcast< alpha  (from w)" in output
    assert "expected: alpha gamma  (from one source)" in output
    assert "received from w: alpha beta" in output
    assert "syslog< starting job 1  (from w)" in output
    assert "worker w (pid" in output


def test_a_missing_reply_reports_nothing_within_the_timeout(fakes):
    code, output = run_suite("--spec", write_spec(fakes, SILENT_SPEC),
                             "--broker-cmd", broker_cmd(fakes))
    assert code == 1, output
    assert "expected: ID {id}" in output and "i.e.: ID 1" in output
    assert "received: nothing within 0.5 s" in output


def test_a_broker_that_exits_at_once_fails_with_its_stderr(fakes):
    crash = "{python} -c \"import sys; sys.exit('cannot start: boom')\" {client_port} {worker_port}"
    code, output = run_suite("--broker-cmd", crash, "-k", "JOB-001")
    assert code == 1, output
    assert "broker exited with code 1 before listening" in output
    assert "cannot start: boom" in output


# -- the pieces ---------------------------------------------------------------------

def test_patterns_capture_substitute_and_match_whole_lines():
    values = {}
    assert match_line("ID {id:int}", "ID 42", values) == {"id": "42"}
    assert match_line("ID {id:int}", "ID 42 ", values) is None
    assert match_line("ID {id:int}", "ID x", values) is None
    assert match_line("JOB {n:int} {text:any}", "JOB 1 a b", values) == {"n": "1", "text": "a b"}
    assert match_line("{w:word} rest", "a rest", values) == {"w": "a"}
    assert match_line("{w:word}", "a b", values) is None
    assert match_line("ERR X {_:any}", "ERR X", values) is None  # the space is literal
    assert match_line("ERR X{_:any}", "ERR X", values) == {}
    assert match_line("a.b (c)*", "a.b (c)*", values) == {}
    assert match_line("a.b", "axb", values) is None
    assert match_line("JOB {id} text", "JOB 7 text", {"id": "7"}) == {}
    assert match_line("JOB {id} text", "JOB 8 text", {"id": "7"}) is None
    assert substitute("STATUS {id}", {"id": "7"}) == "STATUS 7"
    assert substitute('{"json": 1}', {}) == '{"json": 1}'
    with pytest.raises(SpecError):
        substitute("STATUS {nope}", {})


def test_syslog_prefix_is_stripped():
    assert syslog_message(b"<14>workq-worker[123]: fetching job\x00") == "fetching job"
    assert syslog_message(b"<14>Nov 28 09:18:00 host w[1]: starting job 3") == "starting job 3"
    assert syslog_message(b"<14>connection to broker 127.0.0.1:5 lost: EOF") == \
        "connection to broker 127.0.0.1:5 lost: EOF"


# -- the worker role: the suite plays the broker ------------------------------

# A worker with defects to order. Plain FETCH (no long-poll); a SIGTERM handler
# that exits 0 (or 1 with --exit-1), and optionally sends DONE first.
FAKE_ROLE_WORKER = r'''
import os, signal, socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
output_port, syslog_port = int(sys.argv[2]), int(sys.argv[3])
flags = set(sys.argv[4:])
group = "239.0.0.2" if "--wrong-group" in flags else "239.0.0.1"
multicast = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
multicast.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
multicast.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL,
                     64 if "--ttl-64" in flags else 1)
syslog = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
broker = None
job = None

def log(message):
    syslog.sendto(f"<14>role-worker[{os.getpid()}]: {message}".encode(),
                  ("127.0.0.1", syslog_port))

def on_term(signum, frame):
    if "--done-on-term" in flags and job is not None:
        broker.sendall(f"DONE {job}\n".encode())
    sys.exit(1 if "--exit-1" in flags else 0)

signal.signal(signal.SIGTERM, on_term)
broker = socket.create_connection((host, int(port)))
replies = broker.makefile("rb")
log(f"connected to broker {host}:{port}")
log(("x" * 2000 if "--long-log" in flags else "cut") + "...[truncated]")
while True:
    log("fetching job")
    broker.sendall(b"FETCH 10\n" if "--long-poll" in flags else b"FETCH\n")
    reply = replies.readline().decode().rstrip("\n")
    if not reply:
        break
    if reply == "NOJOB":
        time.sleep(0 if "--busy" in flags else 0.05)
        continue
    _, job, text = reply.split(" ", 2)
    log(f"starting job {job}")
    words = text.split()
    if "--reverse" in flags:
        words.reverse()
    if "--drop-last" in flags:
        words.pop()
    for index, word in enumerate(words):
        if index:
            time.sleep(0 if "--no-delay" in flags else 0.02)
        if "--done-first" in flags and index == len(words) - 1:
            broker.sendall(f"DONE {job}\n".encode())
        multicast.sendto(word.encode() + b"\n", (group, output_port))
    if "--no-done" not in flags and "--done-first" not in flags:
        broker.sendall(f"DONE {job}\n".encode())
        replies.readline()
        log(f"completed job {job}")
    job = None
'''

WORKER_ROLE_SPEC = r'''
exchanges:
  - id: WRK-901
    title: the steps of the worker role against a fake worker
    section: test
    level: core
    role: worker
    steps:
      - start_worker: w
      - accept_worker: c
      - expect: FETCH
      - send: NOJOB
      - expect_idle_wait: {min: 0.5, max: 40}
      - send: JOB 7 a b c
      - expect_words: [a, b, c]
        job: 7
        timeout: 1
      - expect: DONE 7
        timeout: 1
      - send: OK
      - expect: FETCH
      - expect_syslog: "starting job 7"
      - expect_syslog: "completed job 7"
      - close: c
  - id: WRK-902
    title: SIGTERM mid-job against a fake worker
    section: test
    level: core
    role: worker
    steps:
      - start_worker: w
      - accept_worker: c
      - expect: FETCH
      - send: JOB 8 one two three four five six seven eight nine ten eleven twelve
      - expect_words: [one, two]
      - stop_worker: w
        exit_status: 0
      - expect_closed: true
  - id: WRK-903
    title: max_bytes of expect_syslog against a fake worker
    section: test
    level: core
    role: worker
    steps:
      - start_worker: w
      - expect_syslog: "{_:any}...[truncated]"
        max_bytes: 1024
  - id: WRK-904
    title: long_poll_fetch steps hands FETCH <seconds> to the steps
    section: test
    level: core
    role: worker
    long_poll_fetch: steps
    steps:
      - start_worker: w
      - accept_worker: c
      - expect: "FETCH 10"
      - send: NOJOB
      - expect_idle_wait: {min: 0.5, max: 40, pattern: "FETCH 10"}
  - id: WRK-905
    title: the TTL check (ttl true) against a fake worker
    section: test
    level: extended
    role: worker
    steps:
      - start_worker: w
      - accept_worker: c
      - expect: FETCH
      - send: NOJOB
      - expect: FETCH
      - send: JOB 7 a b c
      - expect_words: [a, b, c]
        job: 7
        ttl: true
'''


def role_worker_cmd(fakes, *flags):
    (fakes / "role_worker.py").write_text(FAKE_ROLE_WORKER)
    return " ".join(["{python}", str(fakes / "role_worker.py"), "{broker}", "{output_port}",
                     "{syslog_port}", *flags])


def capture_permitted():
    from conformance.capture import probe_capture
    return probe_capture().capture


def run_worker_role(fakes, *flags, case="WRK-901", extra=()):
    return run_suite("--spec", write_spec(fakes, WORKER_ROLE_SPEC), "-k", case,
                     "--worker-cmd", role_worker_cmd(fakes, *flags), *extra)


def test_worker_role_steps_pass_against_a_correct_fake_worker(fakes):
    code, output = run_worker_role(fakes, case="WRK-901 or WRK-902 or WRK-903")
    assert code == 0, output
    assert "3 passed" in output
    assert "workq multicast checks: " in output
    assert "workq timing: word delay 0.02 s, fetch interval 0.05 s" in output


@pytest.mark.parametrize("flags, case, messages", [
    (["--reverse"], "WRK-901",
     ["FAILED at step 7: expect words: word 'b' arrived before 'a' (job 7)",
      "expected: a b c", "received from w: c b a"]),
    (["--drop-last"], "WRK-901", ["expect words: missing word 'c' (job 7)"]),
    (["--no-delay"], "WRK-901",
     ["expect words: words 'a' and 'b' of job 7 only 0.0",
      "apart, expected at least 0.010 s (word delay 0.02 s x 0.5)", "measured spacing: "]),
    (["--no-done"], "WRK-901",
     ["FAILED at step 8: expect on c", "expected: DONE 7", "received: FETCH"]),
    (["--busy"], "WRK-901",
     ["FAILED at step 5: FETCH 0.0", "s after NOJOB, expected at least 0.025 s",
      "measured wait: "]),
    (["--done-on-term"], "WRK-902",
     ["FAILED at step 7: expect c closed", "received: DONE 8"]),
    (["--exit-1"], "WRK-902",
     ["FAILED at step 6: worker w exited with status 1 after SIGTERM, expected 0"]),
    (["--long-log"], "WRK-903",
     ["FAILED at step 2: syslog datagram of 20", " bytes, expected at most 1024",
      "received: 20"]),
    (["--long-poll", "--busy"], "WRK-904",
     ["FAILED at step 5: FETCH 10 0.0", "s after NOJOB, expected at least 0.025 s"]),
])
def test_a_broken_fake_worker_is_caught_and_the_defect_named(fakes, flags, case, messages):
    code, output = run_worker_role(fakes, *flags, case=case)
    assert code == 1, output
    for text in messages + ([] if case == "WRK-903" else ["c W< FETCH", "c B> "]):
        assert text in output, f"{text!r} missing from:\n{output}"


@pytest.mark.parametrize("flag, message", [
    ("--ttl-64", "FAILED at step 7: expect words: TTL 64, expected 1 (datagram 'a' from w)"),
    ("--wrong-group", "FAILED at step 7: expect words: datagram 'a' to 239.0.0.2:"),
    ("--done-first", "FAILED at step 7: expect words: DONE 7 went out 0.0"),
])
def test_the_capture_sees_ttl_and_destination(fakes, flag, message):
    if not capture_permitted():
        pytest.skip("capturing on lo is not permitted here")
    # The TTL is checked only where a step asks (ttl: true): WRK-905.
    code, output = run_worker_role(fakes, flag, case="WRK-905" if flag == "--ttl-64" else "WRK-901")
    assert code == 1, output
    assert "-- multicast checks: scapy capture on lo" in output
    assert message in output, output
    if flag == "--done-first":
        assert "s before the last word 'c' of job 7" in output
    if flag == "--wrong-group":
        assert "expected 239.0.0.1 (from w)" in output and "capture< a  to 239.0.0.2:" in output


def test_long_poll_fetch_steps_lets_the_steps_answer_fetch_with_seconds(fakes):
    code, output = run_worker_role(fakes, "--long-poll", case="WRK-904")
    assert code == 0, output
    assert "1 passed" in output, output


def test_the_ttl_is_not_checked_where_no_step_asks(fakes):
    if not capture_permitted():
        pytest.skip("capturing on lo is not permitted here")
    code, output = run_worker_role(fakes, "--ttl-64")
    assert code == 0, output   # WRK-901's words pass: the TTL is WRK-905's property
    assert "TTL 64, expected" not in output


def test_a_ttl_case_is_skipped_without_the_capture(fakes):
    code, output = run_worker_role(fakes, case="WRK-905", extra=["--mcast-capture", "off", "-rs"])
    assert code == 0, output
    assert "1 skipped" in output and "checks the multicast TTL, which only the capture" in output


def test_without_capture_the_report_says_what_goes_unchecked(fakes):
    code, output = run_worker_role(fakes, "--ttl-64", "--reverse",
                                   extra=["--mcast-capture", "off"])
    assert code == 1, output
    unchecked = "joined receiver socket (capture off: TTL and destination unchecked)"
    assert f"workq multicast checks: {unchecked}" in output
    assert f"-- multicast checks: {unchecked}" in output
    assert "TTL 64" not in output  # unseen without a capture, and not claimed
    assert "word 'b' arrived before 'a' (job 7)" in output


def test_word_defects_name_what_is_wrong():
    from conformance.capture import word_defects
    assert word_defects(["a", "b", "c"], [b"a\n", b"b\n", b"c\n"]) == []
    assert word_defects(["a", "b", "c"], [b"b\n", b"a\n", b"c\n"], job=7) == [
        "word 'b' arrived before 'a' (job 7)"]
    assert word_defects(["a", "b", "c"], [b"a\n", b"b\n"]) == ["missing word 'c'"]
    assert word_defects(["a", "b"], [b"a\n", b"x\n", b"b\n"]) == [
        "unexpected word 'x' between 'a' and 'b'"]
    assert word_defects(["a", "b"], [b"x\n", b"a\n", b"b\n"], job=3, strict=True) == [
        "unexpected word 'x' before 'a' (job 3)"]
    assert word_defects(["a"], [b"a"]) == [
        "datagram 'a' has no LF (the payload is the word and LF)"]
    assert word_defects(["slow", "slow"], [b"slow\n"]) == ["missing word 'slow'"]
