"""SQLite writers queue on a file lock (backend.sqlite_writers) instead of SQLite's sleep-and-retry busy handler."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time

import pytest

from backend.sqlite_writers import QueuedWriterConnection, lock_path


def connect(path, busy_ms: int = 5000) -> QueuedWriterConnection:
    conn = sqlite3.connect(path, factory=QueuedWriterConnection, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA busy_timeout={busy_ms}")
    return conn


@pytest.fixture
def database(tmp_path):
    path = str(tmp_path / "w.db")
    with connect(path) as conn:
        conn.execute("CREATE TABLE t (n INTEGER)")
    return path


def lock_is_free(path: str) -> bool:
    fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing drops a lock we took
    return True


def test_a_write_transaction_holds_the_lock_until_it_ends(database):
    conn = connect(database)
    conn.execute("SELECT n FROM t").fetchall()
    assert lock_is_free(database)  # reads take nothing
    conn.execute("INSERT INTO t VALUES (1)")
    assert not lock_is_free(database)
    conn.commit()
    assert lock_is_free(database)
    conn.execute("UPDATE t SET n = 2")
    conn.rollback()
    assert lock_is_free(database)
    with pytest.raises(sqlite3.OperationalError):
        conn.execute("INSERT INTO missing VALUES (1)")  # fails before its transaction begins
    assert lock_is_free(database)
    conn.execute("/* a comment */ DELETE FROM t")
    assert not lock_is_free(database)
    conn.close()
    assert lock_is_free(database)


def test_a_second_writer_waits_for_the_first_without_sleeping_and_then_writes(database, monkeypatch):
    first, second = connect(database), connect(database)
    first.execute("INSERT INTO t VALUES (1)")
    sleeps = []
    monkeypatch.setattr(time, "sleep", lambda seconds: sleeps.append(seconds))
    done = threading.Event()

    def write() -> None:
        second.execute("INSERT INTO t VALUES (2)")
        second.commit()
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    assert not done.wait(0.2)  # queued behind the first writer
    first.commit()
    writer.join(5)
    assert done.is_set() and sleeps == []
    assert sorted(n for (n,) in first.execute("SELECT n FROM t")) == [1, 2]
    first.close()
    second.close()


def test_a_thread_never_waits_for_its_own_other_connection(database):
    # Two connections of one thread: the second write does not queue behind the first (that would hang for ever);
    # SQLite's own busy timeout answers instead, as it did without the lock.
    first, second = connect(database), connect(database, busy_ms=50)
    first.execute("INSERT INTO t VALUES (1)")
    outcome: list[BaseException | None] = []

    def write() -> None:
        try:
            second.execute("INSERT INTO t VALUES (2)")
            outcome.append(None)
        except sqlite3.OperationalError as exc:
            outcome.append(exc)

    # Run in this thread (not a helper thread), guarded by a watchdog so a regression fails instead of hanging.
    watchdog = threading.Timer(10, first.rollback)
    watchdog.start()
    try:
        write()
    finally:
        watchdog.cancel()
    assert isinstance(outcome[0], sqlite3.OperationalError) and "locked" in str(outcome[0])
    first.rollback()
    second.execute("INSERT INTO t VALUES (3)")
    second.commit()
    first.close()
    second.close()


def test_in_memory_and_uri_databases_take_no_lock():
    assert lock_path(":memory:") is None and lock_path("") is None and lock_path("file:x?mode=memory") is None
    conn = sqlite3.connect(":memory:", factory=QueuedWriterConnection)
    conn.execute("CREATE TABLE t (n INTEGER)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    conn.close()


def test_the_app_engine_uses_queued_writers_on_sqlite(app):
    from backend.extensions import db

    with app.app_context():
        if db.engine.dialect.name != "sqlite":
            pytest.skip("SQLite only")
        with db.engine.connect() as conn:
            assert isinstance(conn.connection.dbapi_connection, QueuedWriterConnection)
