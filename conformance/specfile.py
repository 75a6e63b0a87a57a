"""Loading spec/protocol.yaml."""

import yaml

__all__ = ["load_spec"]


def load_spec(path):
    with open(path, encoding="utf-8") as spec:
        return yaml.safe_load(spec)
