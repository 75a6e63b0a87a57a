"""The broker changes no SQLite database that is not workq's: --store pointing at
another program's database (a path typo) is refused with one line naming the
path, exit status 1, and the file is left byte for byte as it was (no jobs
table added, no columns, no switch to WAL). workq marks its databases with
``PRAGMA application_id`` (shell.store.APPLICATION_ID); databases of earlier
workq versions, unmarked, still open with their jobs, and get marked."""

import sqlite3

import pytest

from shell.store import APPLICATION_ID
from tests.support import IMPLS, Broker, LineConnection
from tests.test_startup_errors import assert_one_line, run

IDS = [impl.split("_", 1)[1] for impl in IMPLS]

# The jobs table as earlier workq versions created it (shell/store.py's history):
# version 1 (commit 97f1962), and version 2 (commit 3e244f1, also what a
# version 1 file became once migrated). Neither set an application_id.
V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    text BLOB NOT NULL,
    completed INTEGER NOT NULL DEFAULT 0
)
"""
V2_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    text BLOB NOT NULL,
    completed INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    buried INTEGER NOT NULL DEFAULT 0
)
"""


def make_database(path, *statements, wal=False):
    db = sqlite3.connect(path)
    if wal:
        db.execute("PRAGMA journal_mode=WAL")
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()
    return path.read_bytes()


def files_beside(path):
    return sorted(p.name for p in path.parent.iterdir())


FOREIGN = {
    "jobs-table": ("CREATE TABLE jobs (id INTEGER PRIMARY KEY, name TEXT, due TEXT)",
                   "INSERT INTO jobs (name, due) VALUES ('backup', 'monday')"),
    "other-tables": ("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)",
                     "CREATE TABLE tags (note INTEGER, tag TEXT)",
                     "INSERT INTO notes (body) VALUES ('keep me')"),
    # workq's own table, but beside a table workq never made.
    "jobs-and-more": (V2_SCHEMA, "CREATE TABLE users (name TEXT)"),
    # Another program's mark on an otherwise empty file.
    "other-mark": ("PRAGMA application_id = 1196444487",),     # GeoPackage, 'GPKG'
}


@pytest.mark.parametrize("impl", IMPLS, ids=IDS)
@pytest.mark.parametrize("kind", FOREIGN)
def test_another_programs_database_is_refused_and_left_unchanged(impl, kind, tmp_path):
    path = tmp_path / "other.db"
    before = make_database(path, *FOREIGN[kind])
    proc = run(f"{impl}.broker", 0, 0, "--store", f"sqlite:{path}")
    assert_one_line(proc, 1, f"sqlite:{path}", "refusing to change it")
    assert path.read_bytes() == before, f"expected {path} byte-identical, it changed"
    assert files_beside(path) == ["other.db"], \
        f"expected no files made beside it, found {files_beside(path)}"


@pytest.mark.parametrize("impl", IMPLS, ids=IDS)
def test_another_programs_wal_database_is_refused_and_left_unchanged(impl, tmp_path):
    path = tmp_path / "other.db"
    before = make_database(path, "CREATE TABLE jobs (name TEXT)", wal=True)
    proc = run(f"{impl}.broker", 0, 0, "--store", f"sqlite:{path}")
    assert_one_line(proc, 1, f"sqlite:{path}", "not a workq database")
    assert path.read_bytes() == before, f"expected {path} byte-identical, it changed"


def application_id(path):
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA application_id").fetchone()[0]
    finally:
        db.close()


@pytest.mark.parametrize("impl", IMPLS, ids=IDS)
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_earlier_workq_database_opens_with_its_jobs_and_gets_marked(impl, version, tmp_path):
    path = tmp_path / "jobs.db"
    schema = V1_SCHEMA if version == "v1" else V2_SCHEMA
    make_database(path, schema, "INSERT INTO jobs (id, text, completed) VALUES "
                  "(1, CAST('a' AS BLOB), 1), (2, CAST('b c' AS BLOB), 0)", wal=True)
    broker = Broker(impl, "--store", f"sqlite:{path}")
    try:
        client = LineConnection(broker.client_port)
        try:
            got = [client.request(f"STATUS {n}") for n in (1, 2, 3)]
        finally:
            client.close()
    finally:
        status = broker.stop()
        stderr = broker.stderr()
        broker.close()
    expected = ["completed", "waiting", "unknown"]
    assert got == expected, f"expected the old jobs back {expected}, got {got}; " \
                            f"stderr {stderr!r}"
    assert status == 0, f"expected exit 0 after SIGTERM, got {status}; stderr {stderr!r}"
    assert application_id(path) == APPLICATION_ID, \
        f"expected the file marked {APPLICATION_ID:#x}, got {application_id(path):#x}"


def test_new_database_is_marked_as_workq(tmp_path):
    path = tmp_path / "new.db"
    broker = Broker("impl_select", "--store", f"sqlite:{path}")
    broker.close()
    assert application_id(path) == APPLICATION_ID, \
        f"expected a new store marked {APPLICATION_ID:#x}, got {application_id(path):#x}"
