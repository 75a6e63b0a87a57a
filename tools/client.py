"""Reference client for the workq broker (standard library only).

Run ``python3 -m tools.client --help`` for the command line. Other code can
reuse :class:`Connection`, :func:`auto_call`, :func:`parse_address`,
:func:`submit_job` and :func:`job_status`.
"""

import random
import socket
import sys
import time

from core.grammar import JOB_ID, NumberError, parse_seconds, parse_whole
from core.grammar import parse_port as _grammar_port
from core.logline import escape
from core.messages import LINE_LIMIT, parse_reply
from core.options import DEFAULT_CLIENT_PORT, MAX_SECONDS, HostError, check_host
from shell.logs import silence_stdout
from tools.words import random_job_text

__all__ = [
    "DEFAULT_DELAY",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEFAULT_NUM_JOBS",
    "DEFAULT_TIMEOUT",
    "AutoCallResult",
    "BrokerError",
    "ClientError",
    "Connection",
    "UsageError",
    "auto_call",
    "connect",
    "job_status",
    "main",
    "parse_address",
    "parse_port",
    "submit_job",
]

DEFAULT_TIMEOUT = 10.0
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = DEFAULT_CLIENT_PORT      # the broker's default client port
COMMANDS = ("JOB", "STATUS", "AUTOCALL")
DEFAULT_NUM_JOBS = 50
DEFAULT_DELAY = 0.1

# Exit codes.
EXIT_OK = 0
EXIT_FAILED = 1        # an ERR reply, an unexpected reply, failed autoCall jobs
EXIT_USAGE = 2         # bad command line
EXIT_CONNECTION = 3    # cannot connect, connection lost, reply timed out
EXIT_INTERRUPTED = 130

HELP = """\
usage: python3 -m tools.client [--timeout S] [--token-file PATH] [HOST [PORT]] COMMAND...
       python3 -m tools.client [--timeout S] [--token-file PATH] HOST:PORT COMMAND...

Talk to a workq broker on its client port. HOST and PORT are optional: the
defaults are 127.0.0.1 and 50000 (the broker's default client port), so
"STATUS 1" asks 127.0.0.1:50000, "50000 STATUS 1" gives just the port and
"localhost STATUS 1" just the host. A host named like a command word
(job, status, autocall) must be written HOST:PORT.

commands (the command word is case-insensitive):
  JOB text...          submit one job; prints "ID <n>". Without text
                       arguments the job text is read from stdin: the whole
                       input is one job, its line breaks turned into spaces.
                       Everything after JOB is job text, taken verbatim.
  STATUS id            print the job's state: waiting, running, completed
                       or unknown
  autoCall [--num-jobs N] [--delay S] [--seed X]
                       submit N jobs (default 50), S seconds apart (default
                       0.1), each 1-5 random distributed-systems words, over
                       one connection (reconnected once if it drops). Prints
                       one progress line per job and a summary. A failed
                       submission is reported and counted; the rest go on.
                       --seed makes the generated texts reproducible.

options:
  --token-file PATH    send AUTH <token> first, the token being the first
                       line of PATH (for a broker started with --token-file)
  --timeout S          seconds to wait for connecting and for each reply
                       (default 10)
  -h, --help           show this help and exit

exit status:
  0 success; 1 the broker answered ERR (printed on stderr), an unexpected
  reply, or some autoCall jobs failed; 2 bad command line; 3 cannot connect,
  connection lost or reply timed out; 130 interrupted (Ctrl-C).

examples:
  python3 -m tools.client JOB compile the kernel          (127.0.0.1:50000)
  python3 -m tools.client 127.0.0.1 50000 JOB compile the kernel
  echo "index rebuild" | python3 -m tools.client 127.0.0.1:50000 job
  python3 -m tools.client localhost:50000 STATUS 1
  python3 -m tools.client localhost 50000 autoCall --num-jobs 10 --delay 0
"""


class ClientError(Exception):
    """A failure with a one-line message for the user; ``exit_code`` tells how
    ``main`` ends."""

    exit_code = EXIT_CONNECTION


class UsageError(ClientError):
    exit_code = EXIT_USAGE


class BrokerError(ClientError):
    """The broker answered ``ERR <code> <text>``. The message (what the
    client prints) has control characters escaped as in the workers' syslog
    (core.logline), so a broker's text cannot drive the user's terminal."""

    exit_code = EXIT_FAILED

    def __init__(self, code, text):
        super().__init__(escape(f"ERR {code} {text}".rstrip(), backslash=False))
        self.code = code
        self.text = text


class UnexpectedReply(ClientError):
    exit_code = EXIT_FAILED


def parse_port(text):
    """Return ``text`` as a TCP port number (grammar rule ``port``, 1-65535),
    or raise UsageError."""
    try:
        return _grammar_port(text, lowest=1)
    except NumberError as error:
        raise UsageError(str(error)) from None


def _is_command(word):
    return word.upper() in COMMANDS


def _looks_numeric(word):
    """Meant as a port: digits (any script, so that the grammar names a wrong
    one) and no letter or dot, which every host name and IPv4 address has."""
    return any(c.isdigit() for c in word) and not any(c.isalpha() or c == "." for c in word)


def parse_address(args):
    """Split ``[HOST [PORT]] rest...`` or ``HOST:PORT rest...``.

    Returns ``(host, port, rest)``; raises UsageError. HOST and PORT are
    optional, as the README promises: an argument that is a command word
    (``JOB``, ``STATUS``, ``autoCall``, any case) starts the command, so
    ``STATUS 1`` asks 127.0.0.1:50000 and ``localhost STATUS 1`` asks
    localhost:50000; a first argument of ASCII digits is a PORT on
    127.0.0.1 (``50000 STATUS 1``). A host whose name is a command word
    must be written ``HOST:PORT``. ``[::1]:50000`` is accepted for IPv6.
    """
    host, port, rest = _split_address(args)
    try:
        check_host(host)        # "" would be read as "any" by the sockets API
    except HostError as error:
        raise UsageError(str(error)) from None
    return host, port, rest


def _split_address(args):
    if not args or _is_command(args[0]):
        return DEFAULT_HOST, DEFAULT_PORT, list(args)
    first = args[0]
    if first.startswith("[") and "]:" in first:          # [v6]:port
        host, _, port = first[1:].partition("]:")
        return host, parse_port(port), list(args[1:])
    if first.count(":") == 1:
        host, _, port = first.partition(":")
        if not host:
            raise UsageError(f"missing host in {first!r}")
        return host, parse_port(port), list(args[1:])
    if _looks_numeric(first):                           # PORT alone: this machine
        return DEFAULT_HOST, parse_port(first), list(args[1:])
    if len(args) < 2 or _is_command(args[1]):           # HOST alone: the default port
        return first, DEFAULT_PORT, list(args[1:])
    if not _looks_numeric(args[1]):
        raise UsageError(f"after host {first!r} expected a port number or a command "
                         f"(JOB, STATUS, autoCall), got {args[1]!r}")
    return first, parse_port(args[1]), list(args[2:])


def _describe(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Connection:
    """One TCP connection to the broker's client port.

    ``request(line)`` sends one line and returns the parsed reply
    (``core.messages.Reply``). Raises ClientError (connection trouble,
    timeout), UnexpectedReply; ERR replies are returned, not raised, by
    ``request`` but raised as BrokerError by ``submit`` and ``status``.
    After a connection error or timeout the connection is closed (a late
    reply would otherwise be taken for the next one).
    """

    # Set from --token-file: every connection of this process starts with AUTH.
    default_token = None

    def __init__(self, host, port, timeout=DEFAULT_TIMEOUT, token=None):
        self.host = host
        self.port = port
        self.timeout = timeout
        self.address = _describe(host, port)
        self._buf = b""
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except ConnectionRefusedError:
            raise ClientError(f"cannot connect to {self.address}: connection refused"
                              " — is the broker running?") from None
        except socket.gaierror as exc:
            raise ClientError(f"cannot connect to {self.address}: "
                              f"cannot resolve host {host!r} ({exc.strerror})") from None
        except TimeoutError:
            raise ClientError(f"cannot connect to {self.address}: timed out after "
                              f"{timeout:g} s") from None
        except OverflowError:
            raise UsageError(f"bad port {port!r}: must be a number from 1 to 65535") from None
        except OSError as exc:
            raise ClientError(f"cannot connect to {self.address}: "
                              f"{(exc.strerror or str(exc)).lower()}") from None
        self.sock.settimeout(timeout)
        token = token if token is not None else self.default_token
        if token is not None:
            reply = self.request(f"AUTH {token}")
            if reply.kind == "ERR":
                self.close()
                raise BrokerError(reply.code, reply.text)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def closed(self):
        return self.sock is None

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def _lost(self, what):
        self.close()
        return ClientError(f"connection to {self.address} {what}")

    def send_line(self, line):
        if self.sock is None:
            raise ClientError(f"connection to {self.address} is closed")
        try:
            self.sock.sendall(line.encode("utf-8", "surrogateescape") + b"\n")
        except TimeoutError:
            raise self._lost(f"timed out sending (after {self.timeout:g} s)") from None
        except OSError as exc:
            raise self._lost(f"lost while sending: {(exc.strerror or str(exc)).lower()}") from None

    def read_line(self):
        """Return the next reply line (str, no terminator)."""
        if self.sock is None:
            raise ClientError(f"connection to {self.address} is closed")
        while b"\n" not in self._buf:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise self._lost(f"timed out: no reply within {self.timeout:g} s") from None
            except OSError as exc:
                raise self._lost(f"lost: {(exc.strerror or str(exc)).lower()}") from None
            if not data:
                raise self._lost("closed by the broker before it replied")
            self._buf += data
            if b"\n" not in self._buf and len(self._buf) > LINE_LIMIT + 1:
                # +1: a CR that may be the first half of CRLF (spec: framing)
                raise self._lost(f"sent a reply line longer than {LINE_LIMIT} bytes")
        line, _, self._buf = self._buf.partition(b"\n")
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def request(self, line):
        self.send_line(line)
        reply_line = self.read_line()
        try:
            return parse_reply(reply_line)
        except ValueError:
            raise UnexpectedReply(f"unexpected reply from {self.address}: "
                                  f"{reply_line[:200]!r}") from None

    def submit(self, text):
        """Submit a job; return its id. Raises BrokerError on ERR."""
        reply = self.request(f"JOB {text}")
        if reply.kind == "ERR":
            raise BrokerError(reply.code, reply.text)
        if reply.kind != "ID":
            raise UnexpectedReply(f"unexpected reply to JOB from {self.address}: "
                                  f"{reply!r}")
        return reply.job_id

    def status(self, job_id):
        """Return the job's state string. Raises BrokerError on ERR."""
        reply = self.request(f"STATUS {job_id}")
        if reply.kind == "ERR":
            raise BrokerError(reply.code, reply.text)
        if reply.kind != "STATE":
            raise UnexpectedReply(f"unexpected reply to STATUS from {self.address}: "
                                  f"{reply!r}")
        return reply.text


def connect(host, port, timeout=DEFAULT_TIMEOUT):
    """Open a :class:`Connection` (raises ClientError with a clear message)."""
    return Connection(host, port, timeout)


def submit_job(host, port, text, timeout=DEFAULT_TIMEOUT):
    """One-shot JOB: connect, submit, close; return the id."""
    with Connection(host, port, timeout) as conn:
        return conn.submit(text)


def job_status(host, port, job_id, timeout=DEFAULT_TIMEOUT):
    """One-shot STATUS: connect, ask, close; return the state."""
    with Connection(host, port, timeout) as conn:
        return conn.status(job_id)


class AutoCallResult:
    """Outcome of :func:`auto_call`.

    ``jobs``: list of ``(text, job_id)`` in submission order, ``job_id`` None
    for a failed submission; ``errors``: list of ``(index, message)``;
    ``submitted``/``failed``/``not_attempted`` counts; ``elapsed`` seconds;
    ``delay`` the pause between submissions (the summary gives a jobs/s rate
    only without one: with one, the rate would measure the pause).
    """

    def __init__(self, num_jobs, delay=0.0):
        self.num_jobs = num_jobs
        self.delay = delay       # the pause between submissions, seconds
        self.jobs = []
        self.errors = []
        self.elapsed = 0.0
        self.interrupted = False
        self.aborted = None      # message when the run stopped early

    @property
    def submitted(self):
        return sum(1 for _, job_id in self.jobs if job_id is not None)

    @property
    def failed(self):
        return len(self.jobs) - self.submitted

    @property
    def not_attempted(self):
        return self.num_jobs - len(self.jobs)

    @property
    def rate(self):
        return self.submitted / self.elapsed if self.elapsed > 0 else 0.0

    def summary(self):
        parts = [f"submitted {self.submitted}", f"failed {self.failed}"]
        if self.not_attempted:
            parts.append(f"not attempted {self.not_attempted}")
        parts.append(f"elapsed {self.elapsed:.2f} s")
        if self.delay == 0:
            # With a pause between jobs the rate would only measure the pause.
            parts.append(f"rate {self.rate:.1f} jobs/s")
        return "summary: " + ", ".join(parts)


def auto_call(host, port, num_jobs=DEFAULT_NUM_JOBS, delay=DEFAULT_DELAY, *,
              rng=None, seed=None, timeout=DEFAULT_TIMEOUT, out=None,
              texts=None, on_job=None):
    """Submit ``num_jobs`` random jobs over one connection, ``delay`` s apart.

    Prints a progress line per job to ``out`` (None: silent). ``texts`` (a
    list) replaces the random texts. ``on_job(index, text, job_id_or_None,
    error_or_None)`` is called after each submission. The connection is
    re-opened once if it drops; if it cannot be (or drops again) the rest
    are not attempted. Returns an :class:`AutoCallResult`; raises
    ClientError only when the first connect fails. KeyboardInterrupt stops
    the run and is re-raised with ``result`` attached as
    ``exc.autocall_result``.
    """
    if rng is None:
        rng = random.Random(seed)
    if texts is not None:
        num_jobs = len(texts)
    result = AutoCallResult(num_jobs, delay)
    width = len(str(num_jobs))
    start = time.monotonic()
    conn = Connection(host, port, timeout)
    reconnected = False

    def emit(line):
        if out is not None:
            print(line, file=out, flush=True)

    try:
        for index in range(num_jobs):
            if index and delay > 0:
                time.sleep(delay)
            text = texts[index] if texts is not None else random_job_text(rng)
            tag = f"[{index + 1:>{width}}/{num_jobs}]"
            if conn is None or conn.closed:
                if reconnected:
                    result.aborted = "connection lost again; giving up"
                    emit(f"{tag} giving up: connection to {_describe(host, port)} "
                         f"lost twice; {num_jobs - index} job(s) not attempted")
                    break
                reconnected = True
                try:
                    conn = Connection(host, port, timeout)
                    emit(f"{tag} reconnected to {conn.address}")
                except ClientError as exc:
                    result.aborted = str(exc)
                    emit(f"{tag} giving up: {exc}; {num_jobs - index} job(s) "
                         "not attempted")
                    break
            try:
                job_id = conn.submit(text)
            except ClientError as exc:
                result.jobs.append((text, None))
                result.errors.append((index, str(exc)))
                emit(f"{tag} FAILED {exc}  <- {text}")
                if on_job:
                    on_job(index, text, None, str(exc))
                continue
            result.jobs.append((text, job_id))
            emit(f"{tag} ID {job_id}  <- {text}")
            if on_job:
                on_job(index, text, job_id, None)
    except KeyboardInterrupt as exc:
        result.interrupted = True
        result.elapsed = time.monotonic() - start
        exc.autocall_result = result
        raise
    finally:
        if conn is not None:
            conn.close()
    result.elapsed = time.monotonic() - start
    return result


# ---------------------------------------------------------------- command line

def _take_float(name, value, minimum=0.0):
    """Seconds for option ``name`` by the grammar (rule ``seconds``), at least
    ``minimum`` and at most core.options.MAX_SECONDS (a wait the system calls
    can take); raises UsageError."""
    try:
        return parse_seconds(str(value), low=minimum, high=MAX_SECONDS,
                             what=f"a number of seconds for {name}")
    except NumberError as error:
        raise UsageError(str(error)) from None


def _parse_options(args, allowed):
    """Pull ``--opt value`` / ``--opt=value`` pairs in ``allowed`` out of args.

    Returns (options dict, remaining args).
    """
    options, rest = {}, []
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if name in allowed:
            if not eq:
                if i + 1 >= len(args):
                    raise UsageError(f"{name} needs a value")
                value = args[i + 1]
                i += 1
            options[name] = value
        elif arg.startswith("--") and len(arg) > 2:
            raise UsageError(f"unknown option {arg!r} (see --help)")
        else:
            rest.append(arg)
        i += 1
    return options, rest


def _read_stdin_job(stdin):
    if stdin is None:
        raise UsageError("JOB needs text: give it as arguments or pipe it on stdin")
    if stdin.isatty():
        print("reading the job text from stdin (end with Ctrl-D)...", file=sys.stderr)
    data = stdin.read()
    # Line breaks are the protocol's (LF, CRLF, a lone CR), ends trimmed of SP and
    # HTAB: str.splitlines() and strip() would also take U+2028, U+0085, U+00A0...
    data = data.replace("\r\n", "\n").replace("\r", "\n")
    lines = (line.strip(" \t") for line in data.split("\n"))
    return " ".join(line for line in lines if line)


def run(argv, stdin=None, out=None):
    """Execute a command line (without the program name); return exit code.

    Raises ClientError subclasses for failures (``main`` prints them).
    """
    out = out if out is not None else sys.stdout
    # Global options come before the command word.
    i = 0
    timeout = DEFAULT_TIMEOUT
    while i < len(argv) and argv[i].startswith("-"):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if arg in ("-h", "--help"):
            print(HELP, end="", file=out)
            return EXIT_OK
        if name == "--token-file":
            if not eq:
                if i + 1 >= len(argv):
                    raise UsageError("--token-file needs a path")
                value = argv[i + 1]
                i += 1
            try:
                # As the broker and the worker read it: the first line, bytes
                # stripped of ASCII whitespace only (str.strip() would also
                # take U+00A0, U+2028... off a token the broker keeps).
                with open(value, "rb") as token_file:
                    Connection.default_token = token_file.readline().strip().decode()
            except OSError as exc:
                raise UsageError(f"cannot read --token-file {value}: {exc.strerror}") from None
            except UnicodeDecodeError:
                raise UsageError(f"--token-file {value}: the token is not UTF-8") from None
        elif name == "--timeout":
            if not eq:
                if i + 1 >= len(argv):
                    raise UsageError("--timeout needs a value")
                value = argv[i + 1]
                i += 1
            timeout = _take_float("--timeout", value)
            if timeout == 0:
                raise UsageError("--timeout must be greater than 0")
        else:
            raise UsageError(f"unknown option {arg!r} (see --help)")
        i += 1
    host, port, rest = parse_address(argv[i:])
    if not rest:
        given = f" after the address {_describe(host, port)}" if argv[i:] else ""
        raise UsageError(f"missing COMMAND{given}: JOB, STATUS or autoCall (see --help)")
    command, args = rest[0], rest[1:]
    upper = command.upper()
    if upper == "JOB":
        if args:
            # A line break inside an argument would end the request line early.
            text = " ".join(args).replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
        else:
            text = _read_stdin_job(stdin)
        if not text.strip(" \t"):      # the broker trims SP and HTAB only
            raise UsageError("job text is empty: give it as arguments or pipe it on stdin")
        job_id = submit_job(host, port, text, timeout)
        print(f"ID {job_id}", file=out, flush=True)
        return EXIT_OK
    if upper == "STATUS":
        options, args = _parse_options(args, {"--timeout"})
        if "--timeout" in options:
            timeout = _take_float("--timeout", options["--timeout"])
        if len(args) != 1:
            raise UsageError("STATUS needs exactly one job id, e.g. STATUS 17")
        if not JOB_ID.fullmatch(args[0]):      # str.isdigit() takes '²' and '٣'
            raise UsageError(f"STATUS needs a job id number (ASCII digits, at most 18), "
                             f"got {args[0]!r}")
        print(job_status(host, port, int(args[0]), timeout), file=out, flush=True)
        return EXIT_OK
    if upper == "AUTOCALL":
        if any(a in ("-h", "--help") for a in args):
            print(HELP, end="", file=out)
            return EXIT_OK
        options, extra = _parse_options(
            args, {"--num-jobs", "--delay", "--seed", "--timeout"})
        if extra:
            raise UsageError(f"autoCall: unexpected argument {extra[0]!r} (see --help)")
        num_jobs = DEFAULT_NUM_JOBS
        if "--num-jobs" in options:
            try:
                num_jobs = parse_whole(options["--num-jobs"], what="a whole number for --num-jobs")
            except NumberError as error:
                raise UsageError(str(error)) from None
        delay = _take_float("--delay", options.get("--delay", DEFAULT_DELAY))
        if "--timeout" in options:
            timeout = _take_float("--timeout", options["--timeout"])
            if timeout == 0:
                raise UsageError("--timeout must be greater than 0")
        seed = options.get("--seed")
        print(f"autoCall: {num_jobs} job(s) to {_describe(host, port)}, "
              f"{delay:g} s apart", file=out, flush=True)
        try:
            result = auto_call(host, port, num_jobs, delay, seed=seed,
                               timeout=timeout, out=out)
        except KeyboardInterrupt as exc:
            result = getattr(exc, "autocall_result", None)
            if result is not None:
                print(result.summary() + " (interrupted)", file=out, flush=True)
            raise
        print(result.summary(), file=out, flush=True)
        if result.failed or result.not_attempted:
            return EXIT_FAILED
        return EXIT_OK
    raise UsageError(f"unknown command {command!r}: expected JOB, STATUS or autoCall "
                     "(see --help)")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        return run(argv, stdin=sys.stdin)
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:      # stdout closed early (e.g. piped into head): stop quietly
        silence_stdout()
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
