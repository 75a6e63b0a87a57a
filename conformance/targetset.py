"""Which targets a run tests, and under which names.

A target is a broker (a command template, or the address of a broker that
already runs) and a worker command template. They come from:

- ``--impl select|threads`` (also ``select,threads``): our implementations;
- ``--broker-cmd``, ``--worker-cmd``, ``--broker-addr``: replace the broker or
  the worker of the ``--impl`` target(s), which are then named after the
  program (``--broker-cmd './alice/broker ...'``: ``broker``; a Python
  script: its name without ``.py``; ``--broker-addr``: ``running-broker``),
  with ``-select``/``-threads`` added when there are several;
- ``--target NAME=BROKER[;WORKER]`` (repeatable): a named target. An empty
  or missing part is played by our select implementation; BROKER may be
  ``@HOST:CLIENT_PORT:WORKER_PORT`` for a broker that already runs.

With neither ``--target`` nor ``--impl`` nor a command option, the run tests
our select implementation.
"""

import os
import re
import shlex
import string
from dataclasses import dataclass

__all__ = ["TargetOptionError", "TargetSpec", "IMPL_NAMES", "check_ports", "parse_impl_list",
           "parse_broker_addr", "split_templates", "parse_target", "resolve_targets"]

IMPL_NAMES = ("select", "threads")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*\Z")


class TargetOptionError(ValueError):
    """A target option that cannot be understood."""


@dataclass(frozen=True)
class TargetSpec:
    name: str
    broker_cmd: str
    worker_cmd: str
    broker_addr: tuple = None  # (host, client_port, worker_port) or None
    origin: str = ""           # the option it came from, for error messages
    helper_worker: bool = False  # the worker is the suite's own, helping the target's broker


def parse_impl_list(text):
    """``select``, ``threads``, ``select,threads`` -> a list of names."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    bad = [name for name in names if name not in IMPL_NAMES]
    if not names or bad:
        raise TargetOptionError(
            f"--impl {text!r}: choose from {', '.join(IMPL_NAMES)} "
            "(several separated by commas)")
    return list(dict.fromkeys(names))


def parse_broker_addr(text, option="--broker-addr", port=int):
    """``HOST:CLIENT_PORT:WORKER_PORT`` -> (host, int, int). ``port`` reads one
    port or raises ValueError (the plugin passes the spec's grammar rule)."""
    try:
        host, client_port, worker_port = text.rsplit(":", 2)
        if not host:
            raise ValueError
        return host, port(client_port), port(worker_port)
    except ValueError:
        raise TargetOptionError(
            f"{option} wants HOST:CLIENT_PORT:WORKER_PORT, not {text!r}") from None


def split_templates(text):
    """Split ``BROKER;WORKER`` at the first ``;`` outside quotes."""
    quote = None
    for index, char in enumerate(text):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == ";":
            return text[:index].strip(), text[index + 1:].strip()
    return text.strip(), None


def parse_target(text, default_broker, default_worker, port=int):
    """``NAME=BROKER[;WORKER]`` -> TargetSpec (``port`` as in parse_broker_addr)."""
    name, equals, templates = text.partition("=")
    name = name.strip()
    if not equals or not NAME.match(name):
        raise TargetOptionError(
            f"--target {text!r}: wants NAME=BROKER_TEMPLATE[;WORKER_TEMPLATE], NAME made "
            "of letters, digits and _ . + - (it becomes part of the test ids)")
    origin = f"--target {name}"
    broker, worker = split_templates(templates)
    broker_addr = None
    if broker.startswith("@"):
        broker_addr = parse_broker_addr(broker[1:], origin, port)
        broker = ""
    if not broker and not worker and broker_addr is None:
        raise TargetOptionError(f"{origin}: neither a broker nor a worker template given")
    return TargetSpec(name, broker or default_broker, worker or default_worker,
                      broker_addr, origin, helper_worker=not worker)


def _program_name(template):
    """A target name from a command template: its program's (or Python
    script's) file name without extension; ``custom`` when none fits."""
    try:
        words = shlex.split(template or "")
    except ValueError:
        words = []
    for word in words:
        if word in ("{python}", "env") or "=" in word or word.startswith("-") \
                or os.path.basename(word).startswith("python") or word in ("java", "node"):
            continue
        stem = os.path.splitext(os.path.basename(word.rstrip("/")))[0]
        stem = re.sub(r"[^A-Za-z0-9_.+-]", "-", stem).strip("-.")
        if stem and NAME.match(stem):
            return stem
        break
    return "custom"


# Placeholders a command template cannot do without (one of each group): the
# suite chooses the ports of every run, so the broker must listen where it is
# told and the worker connect where it is told.
BROKER_NEEDS = (("client_port",), ("worker_port",))
WORKER_NEEDS = (("broker", "worker_port"),)


def check_ports(targets):
    """Raise TargetOptionError for the first template of ``targets`` (TargetSpecs)
    without one of each group of BROKER_NEEDS (a broker to start) or WORKER_NEEDS:
    without them every run would wait for a program listening, or connecting,
    where the suite never looks."""
    for target in targets:
        parts = [("worker", target.worker_cmd, WORKER_NEEDS)]
        if not target.broker_addr:
            parts.insert(0, ("broker", target.broker_cmd, BROKER_NEEDS))
        for part, template, needs in parts:
            try:
                used = {field for _, field, _, _ in string.Formatter().parse(template) if field}
            except ValueError as error:
                raise TargetOptionError(f"{target.origin}: {part} {template!r}: {error}") \
                    from None
            for group in needs:
                if not used & set(group):
                    wanted = " or ".join("{%s}" % name for name in group)
                    raise TargetOptionError(
                        f"{target.origin}: {part} {template!r} has no {wanted}: the suite "
                        "chooses the ports of every run, and the template must pass them "
                        "to your program")


def resolve_targets(impl, broker_cmd, worker_cmd, broker_addr, target_texts,
                    implementations, port=int):
    """All targets of a run, in order; ``implementations`` maps ``select`` and
    ``threads`` to their (broker, worker) templates; ``port`` reads a port of
    a broker address (as in parse_broker_addr)."""
    target_texts = list(target_texts or [])
    for option, value in (("--broker-cmd", broker_cmd), ("--worker-cmd", worker_cmd),
                          ("--broker-addr", broker_addr)):
        if value is not None and not value.strip():
            # An unset shell variable: testing our select implementation instead
            # would report a pass for a program that never ran.
            raise TargetOptionError(f"{option} is empty; give your program's command "
                                    "template (see --help), or leave the option out")
    default_broker, default_worker = implementations["select"]
    targets = []
    custom = bool(broker_cmd or worker_cmd or broker_addr)
    if impl is not None or custom or not target_texts:
        impls = parse_impl_list(impl) if impl is not None else ["select"]
        addr = parse_broker_addr(broker_addr, port=port) if broker_addr else None
        for name in impls:
            impl_broker, impl_worker = implementations[name]
            if custom:
                stem = _program_name(broker_cmd) if broker_cmd else (
                    "running-broker" if broker_addr else _program_name(worker_cmd))
                label = stem if len(impls) == 1 else f"{stem}-{name}"
                origin = " ".join(
                    option for option, value in (("--broker-cmd", broker_cmd),
                                                 ("--worker-cmd", worker_cmd),
                                                 ("--broker-addr", broker_addr)) if value)
            else:
                label, origin = name, f"--impl {name}"
            targets.append(TargetSpec(label, broker_cmd or impl_broker,
                                      worker_cmd or impl_worker, addr, origin,
                                      helper_worker=custom and not worker_cmd))
    for text in target_texts:
        targets.append(parse_target(text, default_broker, default_worker, port))
    seen = set()
    for target in targets:
        if target.name in seen:
            raise TargetOptionError(f"two targets are named {target.name!r}; "
                                    "each target needs its own name")
        seen.add(target.name)
    return targets
