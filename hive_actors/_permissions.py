"""Who may read and write what hive_actors keeps on disk, and why it cannot write a file.

A session's task, metadata, conversation and its agent's output are its owner's alone: the
root, ``sessions/``, ``logs/``, each session dir and the dirs hive_actors makes in it are
made 0700, and every file hive_actors writes 0600, whatever the umask (as ssh, gpg and
docker keep their data). The output dir under ``output_root`` is the exception: the user
picks results up there, so it follows the umask, and so does whatever the agent makes (its
umask is left alone). A root made before this was so is tightened when a Hive opens it.

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

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
_OTHERS = 0o077
"""The group's and others' permission bits."""
_NOT_ALLOWED = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def private_dir(path: Path) -> None:
    """Make ``path`` owner-only if it is missing (its missing parents as the umask says)."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)


def open_private(path: str | Path, flags: int) -> int:
    """``os.open`` a file, owner-only if this makes it; ``flags`` say whether it may.

    Also an ``opener`` for ``open()``.
    """
    return os.open(path, flags | os.O_CLOEXEC, PRIVATE_FILE)


def tighten(path: Path) -> str | None:
    """Take the group's and others' permissions off ``path``; why not, if they stay.

    A missing path is fine. A sticky directory (``/tmp``) is shared by design and left as
    it is: what hive_actors keeps right in it is then not private.
    """
    try:
        mode = path.stat().st_mode
        if not mode & _OTHERS:
            return None
        if stat.S_ISDIR(mode) and mode & stat.S_ISVTX:
            return "a shared directory (sticky, like /tmp): left as it is"
        path.chmod(stat.S_IMODE(mode) & ~_OTHERS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot take the group's and others' permissions off it: {exc.strerror}"
    return None


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
