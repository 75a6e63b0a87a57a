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
    crash = "{python} -c \"import sys; sys.exit('cannot start: boom')\""
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
