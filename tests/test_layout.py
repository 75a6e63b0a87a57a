"""The layout says what depends on what (DESIGN.md, "The product").

Each top-level package may import only the packages listed for it below (the
standard library is always allowed). A reader can then trust the tree: the
two implementations are siblings built on ``core/`` and ``shell/``, never on
each other; ``core/`` does no I/O of ours; the suite is black-box.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {"core", "shell", "impl_select", "impl_threads", "conformance", "tools", "tests"}

ALLOWED = {
    "core": {"core"},
    "shell": {"core", "shell"},
    "impl_select": {"core", "shell", "impl_select"},
    "impl_threads": {"core", "shell", "impl_threads"},
    "conformance": {"conformance"},
}


def imported_packages(path):
    """Top-level names of our packages that the module at ``path`` imports.

    Returns a set of (package, line number) pairs; relative imports count as
    the module's own package.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                names = [path.relative_to(ROOT).parts[0]]
            else:
                names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in OURS:
                found.add((top, node.lineno))
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_it_builds_on(package):
    wrong = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for top, line in sorted(imported_packages(path)):
            if top not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {top}")
    assert not wrong, (f"expected {package}/ to import only "
                       f"{sorted(ALLOWED[package])} of ours; found:\n" + "\n".join(wrong))
