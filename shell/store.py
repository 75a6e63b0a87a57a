"""Durable jobs for both brokers: ``--store sqlite:PATH`` (standard library sqlite3, WAL).

The core reports each new job (``add``) and each completion (``complete``);
they wait in memory until ``sync`` writes them all in one transaction (group
commit: every connection served since the last commit shares one fsync). A
shell syncs before it sends the replies that acknowledge them. Running jobs
are not recorded: after a crash they are waiting again. Each delivery that
ended without DONE (``failed``: holder lost, lease expired, or a KICK that
resets the count) records the job's count and whether it is buried, so a
poison job stays buried, and keeps its count, across restarts (spec leases).

Schema version 2 added the ``failures`` and ``buried`` columns; a version 1
file (no such columns) is migrated in place when opened: every job gets 0 and
not buried, which is what version 1 knew.

A workq database is marked with ``PRAGMA application_id = APPLICATION_ID``
(the 32-bit big-endian integer at offset 68 of the file header, reserved for
the application that owns the file: https://www.sqlite.org/pragma.html#pragma_application_id,
https://www.sqlite.org/fileformat2.html#application_id). Before changing
anything in a file (journal mode, tables, columns) the store checks that it is
workq's: marked, empty (no schema objects: a new file), or holding exactly
the ``jobs`` table of version 1 or 2 and nothing else (a file of an earlier
workq, which gets marked). Anything else is another program's database, and
is refused untouched (ForeignDatabase): a typo in --store must not add a
table or columns to it, nor switch it to WAL.
"""

import errno
import os
import pwd
import sqlite3
import stat
import threading

from core.options import parse_store

__all__ = ["APPLICATION_ID", "ForeignDatabase", "SqliteStore", "open_store"]

# "wrkq" in ASCII: the application_id of every workq database (0x77726b71).
APPLICATION_ID = 0x77726B71

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    text BLOB NOT NULL,
    completed INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    buried INTEGER NOT NULL DEFAULT 0
)
"""
# Columns added after version 1, with their definitions (ALTER TABLE ADD COLUMN).
ADDED_COLUMNS = (("failures", "INTEGER NOT NULL DEFAULT 0"),
                 ("buried", "INTEGER NOT NULL DEFAULT 0"))
# The jobs table of each schema version as PRAGMA table_info lists it:
# (name, declared type, NOT NULL, default, primary key), in column order.
# Version 1: commit 97f1962; version 2 (a new file, or version 1 migrated by
# ALTER TABLE ADD COLUMN, which lists the same): commit 3e244f1.
JOBS_V1 = (("id", "INTEGER", 0, None, 1), ("text", "BLOB", 1, None, 0),
           ("completed", "INTEGER", 1, "0", 0))
JOBS_V2 = JOBS_V1 + (("failures", "INTEGER", 1, "0", 0), ("buried", "INTEGER", 1, "0", 0))


class ForeignDatabase(ValueError):
    """The file is an SQLite database of another program (not marked as
    workq's and not empty); the message says why, in one line."""


class SqliteStore:
    def __init__(self, path):
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            self._open()
        except BaseException:
            self.db.close()      # releases the file (and its locks) before anyone looks at it
            raise
        self._added = []
        self._completed = []
        self._failed = []
        self._pending_lock = threading.Lock()            # add/complete vs. sync taking them
        self._sync_lock = threading.Lock()               # one transaction at a time
        self.recorded = 0     # changes handed in so far
        self.synced = 0       # changes on disk
        self._failure = None  # the sqlite3.Error a commit failed with, once one has

    def _open(self):
        """Lock the file, set WAL and durability, create or migrate the table.
        Raises sqlite3.Error."""
        # One broker per file: the first to open it keeps it locked, so a second
        # broker on the same file fails at start-up ("database is locked")
        # instead of handing out the same ids. With the lock held from the start,
        # WAL mode needs no shared-memory index and no fcntl lock calls per
        # commit (sqlite.org/wal.html, "Use of WAL Without Shared-Memory").
        self.db.execute("PRAGMA locking_mode=EXCLUSIVE")
        self._check_ours()                               # reads only: before any change
        # A new file gets 1 KiB pages: each commit of a few small jobs writes one
        # WAL frame of 1 KiB, not 4 KiB. Measured with one job per commit:
        # 175 -> 145 us per commit (fdatasync included). No effect on a file
        # that already has pages.
        self.db.execute("PRAGMA page_size=1024")
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")      # a commit is on disk when it returns
        self.db.execute("BEGIN EXCLUSIVE")               # take the lock now, not at the first job
        self.db.execute("COMMIT")
        self.db.execute("BEGIN")
        self.db.execute(SCHEMA)
        self._migrate()
        self.db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        self.db.execute("COMMIT")

    def _check_ours(self):
        """Raise ForeignDatabase unless the file is workq's: marked with
        APPLICATION_ID, or unmarked and either empty or holding exactly an
        earlier workq's ``jobs`` table (JOBS_V1, JOBS_V2). Only reads (takes
        the shared lock); raises sqlite3.Error when the file cannot be read."""
        (app_id,) = self.db.execute("PRAGMA application_id").fetchone()
        if app_id == APPLICATION_ID:
            return
        if app_id != 0:
            raise ForeignDatabase(f"it is marked as another program's database "
                                  f"(application_id 0x{app_id & 0xFFFFFFFF:08x}, workq's is "
                                  f"0x{APPLICATION_ID:08x}); refusing to change it")
        objects = self.db.execute("SELECT type, name FROM sqlite_master").fetchall()
        if not objects:
            return                                       # new (or empty): ours to set up
        columns = tuple(tuple(row[1:]) for row in self.db.execute("PRAGMA table_info(jobs)"))
        if objects == [("table", "jobs")] and columns in (JOBS_V1, JOBS_V2):
            return                                       # an earlier workq's: marked below
        names = ", ".join(f"{kind} {name}" for kind, name in sorted(objects)[:5])
        more = f" and {len(objects) - 5} more" if len(objects) > 5 else ""
        other = "; its jobs table has columns workq never made" if columns else ""
        raise ForeignDatabase(f"it is not a workq database (no workq application_id; it holds "
                              f"{names}{more}{other}); "
                              "refusing to change it: give the path of a workq database "
                              "or of a new file")

    def _migrate(self):
        """Bring a version 1 file (no failures/buried columns) to the current schema."""
        present = {row[1] for row in self.db.execute("PRAGMA table_info(jobs)")}
        for name, definition in ADDED_COLUMNS:
            if name not in present:
                self.db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {definition}")

    def load(self):
        """(next_id, waiting [(id, text)] in id order, completed ids, buried
        [(id, text)] in id order, failures {id: count > 0}) as on disk: the
        arguments of BrokerCore.restore."""
        (last,) = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM jobs").fetchone()
        waiting = [(job_id, bytes(text)) for job_id, text in self.db.execute(
            "SELECT id, CAST(text AS BLOB) FROM jobs "
            "WHERE completed = 0 AND buried = 0 ORDER BY id")]
        completed = [job_id for (job_id,) in
                     self.db.execute("SELECT id FROM jobs WHERE completed = 1")]
        buried = [(job_id, bytes(text)) for job_id, text in self.db.execute(
            "SELECT id, CAST(text AS BLOB) FROM jobs "
            "WHERE completed = 0 AND buried = 1 ORDER BY id")]
        failures = dict(self.db.execute(
            "SELECT id, failures FROM jobs WHERE completed = 0 AND failures > 0"))
        return last + 1, waiting, completed, buried, failures

    def add(self, job_id, text):
        with self._pending_lock:
            self._added.append((job_id, text))
            self.recorded += 1

    def complete(self, job_id):
        with self._pending_lock:
            self._completed.append((job_id,))
            self.recorded += 1

    def failed(self, job_id, count, buried):
        """Job ``job_id`` now has ``count`` deliveries ended without DONE and is
        ``buried`` (bool) or not (0, False: a KICK)."""
        with self._pending_lock:
            self._failed.append((count, int(buried), job_id))
            self.recorded += 1

    def sync(self, upto=None):
        """Make every change up to number ``upto`` (default: all so far) durable.
        Raises sqlite3.Error when it cannot (nothing of this batch is then on disk),
        and again at every later sync: what that batch held never counts as synced."""
        if upto is None:
            upto = self.recorded
        if self.synced >= upto:
            return
        with self._sync_lock:
            if self.synced >= upto:          # another thread's commit covered ours
                return
            if self._failure is not None:
                # The failed batch was taken from the pending lists: a later commit
                # that succeeded would count it as on disk (and its replies went out).
                raise type(self._failure)(*self._failure.args)
            with self._pending_lock:
                added, self._added = self._added, []
                completed, self._completed = self._completed, []
                failed, self._failed = self._failed, []
                through = self.recorded
            self.db.execute("BEGIN")
            try:
                if added:
                    self.db.executemany("INSERT INTO jobs (id, text) VALUES (?, ?)", added)
                if failed:  # before completions: a job may fail, then complete, in one batch
                    self.db.executemany("UPDATE jobs SET failures = ?, buried = ? WHERE id = ?",
                                        failed)
                if completed:
                    self.db.executemany("UPDATE jobs SET completed = 1 WHERE id = ?",
                                        completed)
                self.db.execute("COMMIT")
            except sqlite3.Error as error:
                # Leave no transaction open, and fail every later sync the same way.
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                self._failure = error
                raise
            self.synced = through

    def close(self):
        """Commit what is left, then close the file; no other thread's commit is
        under way as it closes (closing an sqlite3 connection another thread is
        using is undefined: it crashed a broker)."""
        self.sync()
        with self._sync_lock:
            self.db.close()


def open_store(spec):
    """``sqlite:PATH`` -> SqliteStore; None for ``memory`` (the default) or None.

    Raises ValueError (core.options.StoreError) for a value that names no
    store (the command line refuses those first, as usage errors), and
    ValueError with one line for the user when the database cannot be opened."""
    if spec is None:
        return None
    kind, path = parse_store(spec)
    if kind == "memory":
        return None
    try:
        return SqliteStore(path)
    except ForeignDatabase as error:
        raise ForeignDatabase(f"cannot open --store {spec}: {error}") from None
    except sqlite3.Error as error:
        # sqlite3 says "unable to open database file" without the path or the cause.
        raise ValueError(f"cannot open --store {spec}: {_store_trouble(path, error)}") from None


def _store_trouble(path, error):
    """Why ``path`` could not be opened, in words: the likely cause when the file
    system tells it (a missing directory, a permission the broker's user lacks,
    a read-only file system), else the sqlite3 error.

    Called only after sqlite3 failed; every claim rests on what the system says
    now (stat(2), open(2) with O_RDWR, access(2)), so "permission denied" is
    said only when the kernel denies this user, never guessed from sqlite3's
    words ("disk I/O error", "unable to open database file")."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.stat(directory)
    except (FileNotFoundError, NotADirectoryError):
        return f"directory {directory} does not exist"
    except PermissionError:
        return (f"permission denied: the broker runs as {_user()}, which may not reach "
                f"directory {directory} (a directory on the way lacks search permission)")
    if os.path.isdir(path):
        return "it is a directory"
    # The database, and the write-ahead log SQLite keeps next to it (-wal; -shm
    # too, unless the lock is exclusive: sqlite.org/wal.html): each must open
    # for reading and writing.
    for name in (path, path + "-wal", path + "-shm"):
        trouble = _open_trouble(name)
        if trouble:
            return trouble
    # A new database, or a -wal file to create next to it: the directory must
    # be writable (and searchable).
    creates = path if not os.path.exists(path) else path + "-wal"
    if not os.path.exists(creates) and not _may(directory, os.W_OK | os.X_OK):
        if _read_only(directory):
            return f"directory {directory} is on a read-only file system"
        what = ("create the database" if creates == path else
                "create its write-ahead log " + os.path.basename(creates))
        return (f"permission denied: the broker runs as {_user()}, which may not write in "
                f"directory {directory} ({_owner_mode(directory)}) to {what}")
    if "locked" in str(error):
        return f"{error}: another broker (or program) has it open"
    return str(error)


def _open_trouble(name):
    """One line when file ``name`` exists but cannot be opened for reading and
    writing by this process (open(2): EACCES, EPERM, EROFS), else None. Opening
    and closing changes nothing in the file."""
    try:
        fd = os.open(name, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except PermissionError:
        return (f"permission denied: the broker runs as {_user()}, which may not read and "
                f"write {name} ({_owner_mode(name)})")
    except OSError as error:
        if error.errno == errno.EROFS:
            return f"{name} is on a read-only file system"
        return None
    os.close(fd)
    return None


def _may(path, mode):
    """access(2) for this process's effective user and group where the system
    can say so (os.supports_effective_ids), else for the real ones."""
    return os.access(path, mode, effective_ids=os.access in os.supports_effective_ids)


def _read_only(path):
    """Whether ``path`` is on a file system mounted read-only (statvfs(3) ST_RDONLY)."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _user():
    """This process's effective user as ``uid N (name)``; ``uid N`` alone when the
    user has no name (systemd's DynamicUser=yes names it only while it runs,
    through nss-systemd)."""
    uid = os.geteuid()
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def _owner_mode(path):
    """``owner uid N, mode 0644`` of ``path`` (lstat(2)), or "" when it cannot be read."""
    try:
        info = os.lstat(path)
    except OSError:
        return "owner and mode unknown"
    return f"owner uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):04o}"
