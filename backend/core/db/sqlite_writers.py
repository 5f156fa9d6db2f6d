"""SQLite (the development and demo database): writers queue on an OS file lock instead of sleeping and retrying."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

# Leading blanks and comments, then the statement's first keyword (as the sqlite3 module reads it).
_BEGINS_TRANSACTION = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*(?:insert|update|delete|replace)\b",
                                 re.IGNORECASE | re.DOTALL)
_held = threading.local()  # per thread: the lock files it holds through some connection
_open: weakref.WeakSet[QueuedWriterConnection] = weakref.WeakSet()  # connections with a lock file open


def _forget_locks_in_child() -> None:
    """A forked child (the import's signing workers) must never hold or release its parent's lock: it closes its
    copies of the lock files, which leaves the parent's lock as it is (flock belongs to the open file, which the
    parent still has open)."""
    for conn in list(_open):
        if conn._lock_fd is not None:
            os.close(conn._lock_fd)
        conn._lock_fd, conn._holders = None, None
    _open.clear()
    _held.__dict__.pop("paths", None)


os.register_at_fork(after_in_child=_forget_locks_in_child)


def lock_path(database: Any) -> str | None:
    """The writers' lock file of a database file; None for in-memory databases and URI filenames."""
    name = os.fsdecode(database) if isinstance(database, str | bytes | os.PathLike) else ""
    if name in ("", ":memory:") or name.startswith("file:"):
        return None
    return f"{os.path.abspath(name)}-writers.lock"


def _busy() -> sqlite3.OperationalError:
    """The error SQLite itself raises when its busy timeout runs out, with its result code (SQLITE_BUSY)."""
    error = sqlite3.OperationalError("database is locked")
    error.sqlite_errorcode, error.sqlite_errorname = sqlite3.SQLITE_BUSY, "SQLITE_BUSY"
    return error


class QueuedWriterConnection(sqlite3.Connection):
    """A sqlite3 connection whose write transactions take the database's writers' lock first (see module doc)."""

    def __init__(self, database: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(database, *args, **kwargs)
        self._lock_path = lock_path(database)
        self._lock_fd: int | None = None
        self._holders: set[str] | None = None  # the holding thread's set, while this connection holds the lock

    def cursor(self, factory: Any = sqlite3.Cursor) -> Any:
        return super().cursor(QueuedWriterCursor if factory is sqlite3.Cursor else factory)

    # The shortcuts make their cursor in C, past `cursor`: route them through it.
    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Any:
        return self.cursor().executemany(sql, parameters)

    def before_statement(self, sql: str) -> None:
        if self._holders is not None or self._lock_path is None or self.in_transaction \
                or not _BEGINS_TRANSACTION.match(sql):
            return
        held: set[str] = _held.__dict__.setdefault("paths", set())
        if self._lock_path in held:
            return  # this thread already writes through another connection: waiting would be waiting for itself
        if self._lock_fd is None:
            self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            _open.add(self)
        self._wait_for_lock(self._lock_fd)
        held.add(self._lock_path)
        self._holders = held

    def _wait_for_lock(self, fd: int) -> None:
        """Take the lock, waiting at most the connection's busy_timeout, as SQLite itself would; then fail as it does.

        flock has no timeout, so a busy lock is polled, at first after 20 µs and then half as long again each time, at
        most every 0.5 ms: a writer starts soon after the lock's release (SQLite's handler sleeps 1, 2, 5, 10 … ms),
        and one behind a long import wakes 2,000 times a second at most.
        """
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        (busy_ms,) = super().execute("PRAGMA busy_timeout").fetchone()  # not a write: takes no lock
        deadline = time.monotonic() + busy_ms / 1000
        pause = 0.00002
        while True:
            time.sleep(pause)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _busy() from None
            pause = min(pause * 1.5, 0.0005)

    def after_statement(self) -> None:
        if self._holders is not None and not self.in_transaction:
            self.release()  # the statement failed before its transaction began, or ran in autocommit

    def release(self) -> None:
        if self._holders is not None and self._lock_fd is not None and self._lock_path is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            self._holders.discard(self._lock_path)
            self._holders = None

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.release()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.release()

    def __exit__(self, *exc_info: Any) -> Any:
        try:
            return super().__exit__(*exc_info)  # commits or rolls back in C, past `commit` and `rollback`
        finally:
            if not self.in_transaction:
                self.release()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._drop_lock()

    def __del__(self) -> None:
        # A connection collected without close() (sqlite3 closes it in C, past `close`) must not keep the lock.
        with contextlib.suppress(Exception):  # at interpreter shutdown modules may be gone; the process's end frees it
            self._drop_lock()

    def _drop_lock(self) -> None:
        self.release()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


class QueuedWriterCursor(sqlite3.Cursor):
    connection: QueuedWriterConnection

    def _run(self, run: Callable[[str, Any], object], sql: str, parameters: Any) -> QueuedWriterCursor:
        """One statement between the connection's lock checks (taken before a write begins, let go after)."""
        self.connection.before_statement(sql)
        try:
            run(sql, parameters)
        finally:
            self.connection.after_statement()
        return self

    def execute(self, sql: str, parameters: Any = (), /) -> QueuedWriterCursor:
        return self._run(super().execute, sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> QueuedWriterCursor:
        return self._run(super().executemany, sql, parameters)
