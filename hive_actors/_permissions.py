"""Why hive_actors cannot write a file it must write.

When a file hive_actors must write cannot be written, ``refused`` says why (a read-only
file system, its permissions, its owner) instead of letting SQLite call a sound database
unreadable.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from hive_actors.errors import ReadOnlyState, WorkspaceError

_NOT_ALLOWED = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def check_writable(path: Path) -> None:
    """Raise ReadOnlyState, saying why, if this process may not write ``path``.

    Asked of the kernel (``access``), so nothing is opened, let alone changed.
    """
    if not os.access(path, os.W_OK):
        raise refused(path, PermissionError(errno.EACCES, os.strerror(errno.EACCES)))


def refused(path: Path, exc: OSError) -> WorkspaceError:
    """The error to raise for ``exc``, met making or opening ``path`` to write it:
    ReadOnlyState saying why for a refusal (of ``path``, or of its directory if it does
    not exist yet), WorkspaceError for anything else."""
    if exc.errno not in _NOT_ALLOWED:
        return WorkspaceError(path, exc)
    found = path
    while not os.path.lexists(found) and found.parent != found:
        found = found.parent
    try:
        facts = found.stat()
        read_only_fs = bool(os.statvfs(found).f_flag & os.ST_RDONLY)
    except OSError:  # not even that may be looked at: the refusal as it came
        return WorkspaceError(path, exc)
    return ReadOnlyState(
        found,
        read_only_fs=read_only_fs,
        owner=facts.st_uid,
        mode=stat.S_IMODE(facts.st_mode),
        uid=os.geteuid(),
    )
