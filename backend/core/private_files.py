"""Files and directories the platform keeps under its instance directory: the owner's only, whatever the umask."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

DIRECTORY_MODE, FILE_MODE = 0o700, 0o600


def private_directory(path: Path | str) -> Path:
    """`path` as a directory only its owner may enter; missing parents are made the same way (mkdir -p would make
    them with the umask's mode)."""
    path = Path(path)
    missing = []
    for candidate in (path, *path.parents):
        if candidate.is_dir():
            break
        missing.append(candidate)
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by another process
            os.mkdir(directory, DIRECTORY_MODE)
    narrow(path, DIRECTORY_MODE)
    return path


def private_sqlite_database(database: str) -> None:
    """Before SQLite opens a database file: create it 0600 if it is new (SQLite gives its -wal and -shm files the
    database file's mode), and narrow an existing database and its -wal/-shm files to 0600.

    An existing database file is never opened here: closing any descriptor of a file drops every POSIX lock the
    process holds on it, the locks of its open SQLite connections included, and another process closing its
    connection would then take itself for the last one, checkpoint and delete the live -wal (losing the commits
    this process makes afterwards).
    """
    if database in ("", ":memory:") or database.startswith("file:"):
        return
    try:  # a file that does not exist yet is locked by no one
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE))
    except FileExistsError:
        pass
    except FileNotFoundError:  # no such directory: SQLite reports it as it always did
        return
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            narrow(Path(database + suffix), FILE_MODE)


def narrow(path: Path, mode: int) -> None:
    """chmod to `mode` when the path is ours and grants more (a file of another user is left alone)."""
    info = path.stat()
    if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) != mode:
        os.chmod(path, mode)
