"""What SQLite needs to take many writers well: one write lock for every process on the file, and
checkpoints of the write-ahead log run off the write path.

SQLite has one writer at a time. A writer that finds the database locked sleeps in its busy handler
(1, 2, 5 ... then 100 ms at a time) and tries again, so writers of two processes (two replicas, or
`--processes 2`) waited milliseconds for a lock that was free (docs/performance.md). A writer that holds the gate and
never lets go (a process stopped in a debugger) makes the next writer of another process wait for it,
not fail: flock has no timeout. `WriteGate` is taken before BEGIN IMMEDIATE:
a lock for the threads of this process, then an flock(2) of a file beside the database for the
processes, each woken by the kernel as soon as it is free; SQLite's busy timeout still bounds a
writer that does not take the gate (another program, the sqlite3 shell). The kernel drops the flock
of a process that dies. A forked child shares its parent's open file, and so its flock: the services
never fork (their server processes are new interpreters, see credit_common.processes).

In WAL mode the commit that takes the log past `wal_autocheckpoint` pages runs the checkpoint itself,
copying pages into the database file and syncing it, while it still holds the write lock: every other
writer of every process waits for it (docs/performance.md).
`Checkpointer` runs PASSIVE checkpoints on a thread of its own after writes instead, which copy what
no reader still needs while writers go on; the commits' own checkpoints remain as a backstop, at a
log ten times the default.

Files are private to the service's user: `create_private_file` makes the database file 0600 (and its
directory 0700) before SQLite first opens it, and SQLite gives the -wal and -shm files the mode of the
database file; the gate's lock file is created 0600 too.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
from typing import IO

log = logging.getLogger("credit_grants.db")

# Pages of write-ahead log past which a commit checkpoints by itself (SQLite's default: 1,000 pages).
BACKSTOP_AUTOCHECKPOINT_PAGES = 10_000


PRIVATE_FILE_MODE = 0o600
PRIVATE_DIRECTORY_MODE = 0o700


def create_private_file(database: str) -> None:
    """Create the database file, empty (an empty file is an empty SQLite database), with mode 0600,
    and its missing directories with mode 0700, whatever the umask; an existing file is left as it
    is. SQLite creates the -wal and -shm files with the mode of the database file."""
    path = os.path.abspath(database)
    _make_private_directories(os.path.dirname(path))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)  # the umask only takes bits away; this makes it exact
    finally:
        os.close(fd)


def _make_private_directories(directory: str) -> None:
    if os.path.isdir(directory):
        return
    _make_private_directories(os.path.dirname(directory))
    try:
        os.mkdir(directory, PRIVATE_DIRECTORY_MODE)
    except FileExistsError:  # made by another process meanwhile: its mode is its own
        return
    os.chmod(directory, PRIVATE_DIRECTORY_MODE)


def _open_private_for_append(path: str) -> IO[bytes]:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE_MODE)
    return os.fdopen(fd, "ab")


def gate_path(database: str) -> str:
    return f"{database}-writer.lock"


class WriteGate:
    """The write lock of one SQLite file for the threads of this process and for the other processes
    (see the module's docstring). `database`: the file's path; None for an in-memory database, which
    no other process can open."""

    def __init__(self, database: str | None) -> None:
        self._path = gate_path(os.path.abspath(database)) if database else None
        self._threads = threading.Lock()
        self._file: IO[bytes] | None = None

    def acquire(self, timeout_s: float) -> bool:
        """Wait until this thread is the one writer of the file (False: not within `timeout_s` for the
        threads of this process; the caller then leaves it to SQLite's busy timeout)."""
        if not self._threads.acquire(timeout=timeout_s):
            return False
        if self._path is not None:
            try:
                if self._file is None:
                    self._file = _open_private_for_append(self._path)  # kept open: the flock lives on it
                fcntl.flock(self._file, fcntl.LOCK_EX)
            except BaseException:
                self._threads.release()
                raise
        return True

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
        self._threads.release()

    def close(self) -> None:
        """Close the lock file at the engine's dispose, unless a writer holds it; the next `acquire`
        opens it again."""
        if self._threads.acquire(blocking=False):
            try:
                if self._file is not None:
                    self._file.close()
                    self._file = None
            finally:
                self._threads.release()


class Checkpointer:
    """PASSIVE checkpoints of one SQLite file's write-ahead log on a thread of its own, `interval_s`
    apart at most while there are writes: `wrote()` after each commit wakes it; with no write it
    sleeps. The thread starts at the first write and stops at `stop()` (the engine's dispose)."""

    def __init__(self, database: str, interval_s: float = 0.05) -> None:
        self._database = database
        self._interval_s = interval_s
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()

    def wrote(self) -> None:
        if self._thread is None:
            with self._mutex:
                if self._thread is None and not self._stopping.is_set():
                    self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
                    self._thread.start()
        self._wake.set()

    def stop(self) -> None:
        with self._mutex:
            thread, self._thread = self._thread, None
            if thread is None:
                return
            self._stopping.set()
        self._wake.set()
        thread.join(10)
        self._stopping.clear()

    def _run(self) -> None:
        connection = sqlite3.connect(self._database, isolation_level=None, check_same_thread=False)
        try:
            while True:
                self._wake.wait()
                if self._stopping.is_set():
                    return
                self._wake.clear()
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as error:  # e.g. the disk is full: the commits' backstop remains
                    log.warning("WAL checkpoint failed", extra={"error": str(error)})
                self._stopping.wait(self._interval_s)
        finally:
            with contextlib.suppress(sqlite3.Error):
                connection.close()
