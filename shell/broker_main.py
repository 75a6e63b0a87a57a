"""Start-up shared by both brokers: command line, store, token, listeners, core, and
the line saying it stopped."""

import signal
import sqlite3
import threading

from core.broker import CLIENT, WORKER, BrokerCore, default_max_memory
from core.options import broker_parser, startup_line

from .logs import BROKER_LOG, EXIT_STDOUT_CLOSED, TracingCore, configure, say
from .netutil import listen, raise_descriptor_limit
from .store import open_store


def read_token(path):
    """The first line of ``path``, stripped of ASCII whitespace (bytes). Raises
    ValueError naming the file when it cannot be read or the line is empty."""
    try:
        with open(path, "rb") as token_file:
            token = token_file.readline().strip()
    except OSError as error:
        raise ValueError(f"cannot read --token-file {path}: "
                         f"{error.strerror or error}") from None
    if not token:
        raise ValueError(f"token file {path} is empty")
    return token


def run_broker(module, flavour, argv, make_broker):
    """Parse the command line, set everything up, run ``make_broker(core, listeners, args).serve()``.

    Returns the exit status: 0 after SIGINT/SIGTERM (with a line on stderr
    saying what the broker held), 1 when start-up fails (with one clear line on
    stderr) or the store fails while serving, 1 without a word when stdout is
    a closed pipe at start-up (shell.logs.say). At --log-level debug the core is
    a shell.logs.TracingCore, which logs every connection and job.
    """
    parser = broker_parser(f"python3 -m {module}", flavour)
    args = parser.parse_args(argv)
    configure(BROKER_LOG, "workq broker", args.log_level)
    if args.client_port == args.worker_port != 0:
        parser.error(f"the client port and the worker port are both {args.client_port}: "
                     "give two different ports")
    if args.max_memory is None:
        args.max_memory = default_max_memory()
    raise_descriptor_limit()
    try:
        token = read_token(args.token_file) if args.token_file else None
        store = open_store(args.store)
    except (OSError, ValueError) as error:
        BROKER_LOG.error("%s", error)
        return 1
    core_class = TracingCore if args.log_level == "debug" else BrokerCore
    core = core_class(max_line=args.max_line, max_waiting=args.max_waiting,
                      idle_timeout=args.idle_timeout, token=token, store=store,
                      max_memory=args.max_memory, auth_timeout=args.auth_timeout,
                      lease=args.lease, max_deliveries=args.max_deliveries)
    if store is not None:
        try:
            core.restore(*store.load())
        except sqlite3.Error as error:       # a database, but not one of ours
            BROKER_LOG.error("cannot read the jobs in --store %s: %s", args.store, error)
            return 1
    listeners = {}
    for kind, role, port in ((CLIENT, "clients", args.client_port),
                             (WORKER, "workers", args.worker_port)):
        try:
            listeners[kind] = listen(args.host, port)
        except OSError as error:
            # Name the port that failed: "ports 50005/50001" left the user guessing.
            for sock in listeners.values():
                sock.close()
            BROKER_LOG.error("cannot listen for %s on %s port %s: %s", role, args.host, port,
                             error.strerror or error)
            return 1
    args.client_port = listeners[CLIENT].getsockname()[1]
    args.worker_port = listeners[WORKER].getsockname()[1]
    broker = make_broker(core, listeners, args)
    signal.signal(signal.SIGINT, broker.stop)
    signal.signal(signal.SIGTERM, broker.stop)
    said = say(startup_line(flavour, args))
    if said and store is not None and (core.waiting or core.completed or core.buried):
        said = say(f"broker: restored {len(core.waiting)} waiting, {core.completed} completed "
                   f"and {core.buried} buried jobs from {store.path}; next id {len(core.texts)}")
    if not said:                      # stdout closed (| head -0): stop quietly, as tools do
        for sock in listeners.values():
            sock.close()
        if store is not None:
            store.close()
        return EXIT_STDOUT_CLOSED
    default_hook = threading.excepthook
    failure = _store_failures(broker) if store is not None else None
    try:
        broker.serve()
        if store is not None and not failure:
            store.close()             # commits what is left
    except sqlite3.Error as error:    # the select broker syncs on its own thread
        failure.append(error)
    finally:
        threading.excepthook = default_hook
    if failure:
        # Disk full, file locked or gone: nothing more can be acknowledged.
        BROKER_LOG.error("store %s failed: %s; stopped (jobs acknowledged so far are on disk)",
                         args.store, failure[0])
        return 1
    BROKER_LOG.info("%s", stopped_line(core, args.store if store is not None else None))
    return 0


def _store_failures(broker):
    """A list that gets the first sqlite3.Error a broker thread dies of (the threads
    broker syncs the store on its peers' threads); the broker is stopped then,
    instead of each thread printing a traceback. Other exceptions are left to
    the default hook. Replaces threading.excepthook (run_broker puts it back)."""
    failures = []
    default_hook = threading.excepthook

    def hook(args):
        if not isinstance(args.exc_value, sqlite3.Error):
            default_hook(args)
        elif not failures:
            failures.append(args.exc_value)
            broker.stop()

    threading.excepthook = hook
    return failures


def stopped_line(core, store):
    """What a stopping broker says: the jobs it held, and whether they are kept
    (``store``: the --store value, None for memory)."""
    waiting, running = len(core.waiting), len(core.holders)
    held = f"{waiting} waiting and {running} running jobs"
    if store is None:
        return f"stopped: {held} lost (store memory)" if waiting or running else \
            "stopped: no jobs waiting or running"
    return (f"stopped: {held} kept in {store}, all waiting at the next start; "
            f"{core.completed} completed, {core.buried} buried")
