"""Finding and loading spec/protocol.yaml.

The spec lives at ``spec/protocol.yaml`` in a checkout; an installed package
(pyproject.toml) ships it as package data inside this package, at
``conformance/spec/protocol.yaml``. ``default_spec()`` finds whichever exists.
"""

from importlib import resources
from pathlib import Path

import yaml

__all__ = ["CHECKOUT_SPEC", "default_spec", "from_checkout", "load_spec"]

# Where the spec is when this package runs from a checkout of workq.
CHECKOUT_SPEC = Path(__file__).resolve().parent.parent / "spec" / "protocol.yaml"


def _packaged_spec():
    """The spec shipped in the installed package, or None (a checkout)."""
    resource = resources.files(__package__) / "spec" / "protocol.yaml"
    # A wheel installs as files, so the resource is a path; the suite needs
    # one (pytest collects the spec as a file).
    return resource if isinstance(resource, Path) and resource.is_file() else None


def from_checkout():
    """True when this package runs from a checkout of workq (not installed):
    then the default targets run in the checkout's root, as they always did."""
    return _packaged_spec() is None


def default_spec():
    """Path of the spec the suite runs by default: the installed package's,
    else the checkout's (which may be missing; loading it then says so)."""
    return _packaged_spec() or CHECKOUT_SPEC


def load_spec(path):
    """The spec at ``path`` as plain data (dicts and lists); raises OSError
    when it cannot be read and yaml.YAMLError when it is not YAML."""
    with open(path, encoding="utf-8") as spec:
        return yaml.safe_load(spec)
