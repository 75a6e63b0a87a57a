"""Start-up shared by both brokers: command line, store, token, listeners, core."""

import signal
import sys

from core.broker import CLIENT, WORKER, BrokerCore, default_max_memory
from core.options import broker_parser, startup_line

from .netutil import listen, raise_descriptor_limit
from .store import open_store


def read_token(path):
    with open(path, "rb") as token_file:
        token = token_file.readline().strip()
    if not token:
        raise ValueError(f"token file {path} is empty")
    return token


def run_broker(module, flavour, argv, make_broker):
    """Parse the command line, set everything up, run ``make_broker(core, listeners, args).serve()``.

    Returns the exit status: 0 after SIGINT/SIGTERM, 1 when start-up fails
    (with one clear line on stderr).
    """
    args = broker_parser(f"python3 -m {module}", flavour).parse_args(argv)
    if args.max_memory is None:
        args.max_memory = default_max_memory()
    raise_descriptor_limit()
    try:
        token = read_token(args.token_file) if args.token_file else None
        store = open_store(args.store)
    except (OSError, ValueError) as error:
        print(f"broker: {error}", file=sys.stderr)
        return 1
    core = BrokerCore(max_line=args.max_line, max_waiting=args.max_waiting,
                      idle_timeout=args.idle_timeout, token=token, store=store,
                      max_memory=args.max_memory, auth_timeout=args.auth_timeout,
                      lease=args.lease, max_deliveries=args.max_deliveries)
    if store is not None:
        core.restore(*store.load())
    try:
        listeners = {CLIENT: listen(args.host, args.client_port),
                     WORKER: listen(args.host, args.worker_port)}
    except OSError as error:
        print(f"broker: cannot listen on {args.host} ports {args.client_port}/{args.worker_port}: "
              f"{error.strerror or error}", file=sys.stderr)
        return 1
    args.client_port = listeners[CLIENT].getsockname()[1]
    args.worker_port = listeners[WORKER].getsockname()[1]
    broker = make_broker(core, listeners, args)
    signal.signal(signal.SIGINT, broker.stop)
    signal.signal(signal.SIGTERM, broker.stop)
    print(startup_line(flavour, args), flush=True)
    if store is not None and (core.waiting or core.completed or core.buried):
        print(f"broker: restored {len(core.waiting)} waiting, {core.completed} completed and "
              f"{core.buried} buried jobs from {store.path}; next id {len(core.texts)}", flush=True)
    try:
        broker.serve()
    finally:
        if store is not None:
            store.close()
    return 0
