"""SQLite writers queue on a file lock (backend.core.db.sqlite_writers), not SQLite's sleep-and-retry busy handler."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading

import pytest

from backend.core.db.sqlite_writers import QueuedWriterConnection, lock_path


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


def test_a_second_writer_queues_on_the_lock_and_writes_once_the_first_commits(database, monkeypatch):
    first, second = connect(database), connect(database)
    first.execute("INSERT INTO t VALUES (1)")
    polls = []
    real_flock = fcntl.flock
    monkeypatch.setattr(fcntl, "flock", lambda fd, op: (polls.append(op), real_flock(fd, op))[1])
    done = threading.Event()

    def write() -> None:
        second.execute("INSERT INTO t VALUES (2)")
        second.commit()
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    assert not done.wait(0.2)  # queued behind the first writer, on our lock
    assert polls.count(fcntl.LOCK_EX | fcntl.LOCK_NB) >= 2
    first.commit()
    writer.join(5)
    assert done.is_set()
    assert sorted(n for (n,) in first.execute("SELECT n FROM t")) == [1, 2]
    first.close()
    second.close()


def test_a_writer_waits_no_longer_than_the_busy_timeout(database):
    first, second = connect(database), connect(database, busy_ms=100)
    first.execute("INSERT INTO t VALUES (1)")
    outcome: list[BaseException] = []

    def write() -> None:
        try:
            second.execute("INSERT INTO t VALUES (2)")
        except sqlite3.OperationalError as exc:
            outcome.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    writer.join(10)
    assert not writer.is_alive() and "locked" in str(outcome[0])
    assert not second.in_transaction
    first.commit()
    second.execute("INSERT INTO t VALUES (3)")  # nothing left behind: the lock is free again
    second.commit()
    first.close()
    second.close()


def test_a_forked_child_neither_holds_nor_releases_the_parents_lock(database):
    conn = connect(database)
    conn.execute("INSERT INTO t VALUES (1)")
    pid = os.fork()
    if pid == 0:  # the child: its copy of the lock file is closed, the parent's lock is untouched
        ok = conn._lock_fd is None and not lock_is_free(database)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not lock_is_free(database)  # still the parent's
    conn.commit()
    assert lock_is_free(database)
    conn.close()


def test_the_context_manager_commit_lets_go_of_the_lock(database):
    conn = connect(database)
    with conn:
        conn.execute("INSERT INTO t VALUES (1)")
        assert not lock_is_free(database)
    assert lock_is_free(database)
    conn.close()


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


def test_a_connection_collected_without_close_lets_go_of_the_lock(database):
    import gc

    conn = connect(database)
    conn.execute("INSERT INTO t VALUES (1)")
    assert not lock_is_free(database)
    del conn
    gc.collect()
    assert lock_is_free(database)
