"""Locks on a root: an flock on a file that also records the holder's pid.

``<root>/hive.lock`` is held by the one Hive that manages the root's sessions (its
supervisors own the agents: a second Hive would adopt them too). ``<root>/daemon.lock``
is held by the one daemon serving the root, from before it opens its Hive until after
it has closed it, so that hivectl can tell a daemon that is starting or stopping.

The kernel drops a lock when its holder dies, however it dies, so a stale pid in the file
never blocks the next holder, and a waiter is woken the moment the holder exits. An flock
belongs to one open file: a second Hive in the same process is refused as well, and a
child forked without exec (multiprocessing's "fork") would keep its copy of the file open
and the root locked after the parent let go, so a forked child closes its copies at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import weakref
from pathlib import Path

LOCK_NAME = "daemon.lock"
HIVE_LOCK_NAME = "hive.lock"


_held: weakref.WeakSet[PidLock] = weakref.WeakSet()
"""The locks this process holds."""


def _not_in_a_forked_child() -> None:
    """The child of a fork holds none of its parent's locks: close its copies of their
    files (never unlock: the lock is the parent's, and stays in force for it)."""
    for lock in list(_held):
        if lock._fd is not None:
            with contextlib.suppress(OSError):
                os.close(lock._fd)
            lock._fd = None
    _held.clear()


os.register_at_fork(after_in_child=_not_in_a_forked_child)


class PidLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock and write our pid; False if another process holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        _held.add(self)
        return True

    def release(self) -> None:
        _held.discard(self)
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def holder(self) -> int | None:
        """The pid written by the current holder, if the lock is held."""
        if not self.path.exists() or not self.held():
            return None
        with contextlib.suppress(ValueError, OSError):
            return int(self.path.read_text().strip())
        return None

    def held(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def wait_released(self, timeout: float) -> bool:
        """Block until no process holds the lock (woken by the kernel, not by polling)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return True
        released = threading.Event()

        def take() -> None:
            fcntl.flock(fd, fcntl.LOCK_SH)  # blocks until the holder lets go
            released.set()

        waiter = threading.Thread(target=take, daemon=True)
        waiter.start()
        waiter.join(timeout)
        if released.is_set():
            os.close(fd)
        # else: the waiter still blocks on fd; the process is about to report a timeout
        return released.is_set()


class DaemonLock(PidLock):
    """One daemon per root."""

    def __init__(self, root: Path) -> None:
        super().__init__(root / LOCK_NAME)


class HiveLock(PidLock):
    """One Hive per root."""

    def __init__(self, root: Path) -> None:
        super().__init__(root / HIVE_LOCK_NAME)
