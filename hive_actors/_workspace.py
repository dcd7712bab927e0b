"""A session's place on disk: working dir, its own SQLite file, output dir, log, session.json."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from hive_actors import _git
from hive_actors._config import HiveConfig
from hive_actors._models import SessionInfo
from hive_actors._permissions import PRIVATE_DIR, open_private, private_dir
from hive_actors.errors import CorruptState, WorkspaceError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SessionPaths:
    working_dir: Path
    database: Path
    output_dir: Path
    """Where output goes: ``<working_dir>/output``, or ``<output_root>/<uuid>`` it links to."""
    output_link: Path | None
    log_file: Path
    session_json: Path

    @classmethod
    def of(cls, config: HiveConfig, session_id: str) -> SessionPaths:
        """The paths of a session; ``session_id`` must already be validated."""
        working_dir = config.sessions_dir / session_id
        if config.output_root is None:
            output_dir, output_link = working_dir / "output", None
        else:
            output_dir, output_link = config.output_root / session_id, working_dir / "output"
        return cls(
            working_dir=working_dir,
            database=working_dir / ".swarm" / "memory.db",
            output_dir=output_dir,
            output_link=output_link,
            log_file=config.logs_dir / f"{session_id}.log",
            session_json=working_dir / "session.json",
        )

    @classmethod
    def of_info(cls, info: SessionInfo) -> SessionPaths:
        """The paths a session was created with (the config may have changed since)."""
        working_dir = Path(info.working_dir)
        output_dir = Path(info.output_dir)
        inside = output_dir == working_dir / "output"
        return cls(
            working_dir=working_dir,
            database=Path(info.database),
            output_dir=output_dir,
            output_link=None if inside else working_dir / "output",
            log_file=Path(info.log_file),
            session_json=working_dir / "session.json",
        )


def create(paths: SessionPaths, origin: _git.Origin | None = None, branch: str = "") -> None:
    """Make a session's directories, its WAL SQLite file and its empty log, owner-only
    but for an output dir under ``output_root`` (the user's: it follows the umask).

    With ``origin``, the working dir is a new worktree of that repository on ``branch``.
    All or nothing: on any error what was made is removed (the worktree and its branch
    too) and the error re-raised.
    """
    try:
        if origin is None:
            _in_place(lambda: paths.working_dir.mkdir(PRIVATE_DIR), paths.working_dir)
        else:
            _in_place(
                lambda: paths.working_dir.parent.mkdir(PRIVATE_DIR, exist_ok=True),
                paths.working_dir.parent,
            )
            _git.add_worktree(origin, paths.working_dir, branch)
            paths.working_dir.chmod(PRIVATE_DIR)
    except OSError as exc:
        if origin is not None:
            remove(paths, origin.repo, branch, delete_branch=True)
        raise WorkspaceError(paths.working_dir, exc) from exc
    try:
        paths.database.parent.mkdir(PRIVATE_DIR)
        create_wal(paths.database)
        # the shim's exit status files (made already in a worktree: its excludes file)
        (paths.working_dir / ".hive").mkdir(PRIVATE_DIR, exist_ok=origin is not None)
        if paths.output_link is None:
            paths.output_dir.mkdir(PRIVATE_DIR)
        else:  # the user's exchange point, where the umask says who may look
            paths.output_dir.mkdir(parents=True)
            paths.output_link.symlink_to(paths.output_dir, target_is_directory=True)
        flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
        os.close(_in_place(lambda: open_private(paths.log_file, flags), paths.log_file))
    except OSError as exc:
        remove(paths, origin.repo if origin else None, branch, delete_branch=True)
        raise WorkspaceError(Path(exc.filename or paths.working_dir), exc) from exc
    except BaseException:
        remove(paths, origin.repo if origin else None, branch, delete_branch=True)
        raise


def _in_place(make: Callable[[], T], path: Path) -> T:
    """``make()`` ``path``; if its parent directory is missing (someone removed the sessions
    or logs dir), make that first and try again; if it is not a directory, that is the
    error raised. Not checked up front: it is always there but in those cases, and the
    check would cost every session two more system calls."""
    try:
        return make()
    except (FileNotFoundError, NotADirectoryError):
        private_dir(path.parent)
        return make()


def remove(
    paths: SessionPaths,
    repo: str | None = None,
    branch: str | None = None,
    *,
    delete_branch: bool = False,
) -> None:
    """Delete everything a session owns on disk; what is already gone is fine.

    A worktree of ``repo`` is removed from it first (its branch stays, unless
    ``delete_branch``); a repository that is gone does not stop the rest. Only
    directories named after the session are removed, whatever a registry row says.
    """
    session_id = paths.working_dir.name
    if repo is not None:
        _git.remove_worktree(repo, paths.working_dir, branch, delete_branch)
    shutil.rmtree(paths.working_dir, ignore_errors=True)
    if paths.output_link is not None and paths.output_dir.name == session_id:
        shutil.rmtree(paths.output_dir, ignore_errors=True)
    with contextlib.suppress(OSError):  # the log dir may be what is broken
        for rotated in paths.log_file.parent.glob(paths.log_file.name + ".*"):
            rotated.unlink()
    with contextlib.suppress(OSError):
        paths.log_file.unlink()


def write_info(working_dir: str | Path, info: SessionInfo) -> None:
    """Write session.json atomically (temp file + rename): readers never see half a file.

    One writer at a time per session (its supervisor; the manager or recovery only once
    the supervisor is gone), so the temp file can have a fixed name. Raises
    WorkspaceError when the disk refuses it (full, or the session dir removed).
    """
    temp = f"{working_dir}/.session.json.tmp"  # a str: this runs for every transition
    try:
        _write(temp, info.model_dump_json(indent=2).encode(), os.O_TRUNC)
        os.replace(temp, f"{working_dir}/session.json")
    except OSError as exc:
        raise WorkspaceError(f"{working_dir}/session.json", exc, action="write") from exc


def create_wal(path: Path | str) -> None:
    """Create an empty SQLite file in WAL mode, and nothing beside it; never replace one.

    An empty database in WAL mode is one page, the same bytes every time. The first file
    of a process is made by SQLite; every later one is a copy of it: one open, one write,
    one close, where SQLite's connect, pragmas and header write cost ~1 ms of CPU and
    several waits for the GIL.
    """
    global _empty_wal  # noqa: PLW0603 - one per process, learnt from the first file made
    if _empty_wal is None:
        _empty_wal = _make_wal_with_sqlite(path)
    else:
        _write(path, _empty_wal, os.O_EXCL)


_empty_wal: bytes | None = None
"""An empty WAL database as this process's SQLite makes it, once one was made."""


def _make_wal_with_sqlite(path: Path | str) -> bytes | None:
    """Have SQLite make ``path`` an empty database in WAL mode; return its bytes if they
    can be copied for the next ones (one page, whose header says WAL).

    The rollback journal is kept in memory for the header write: no journal file is made
    and deleted beside the database.
    """
    os.close(open_private(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL))  # not SQLite's 0644
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=MEMORY")
        connection.execute("PRAGMA journal_mode=WAL")
        (page_size,) = connection.execute("PRAGMA page_size").fetchone()
    finally:
        connection.close()
    data = Path(path).read_bytes()
    header_ok = data[:16] == b"SQLite format 3\0" and data[18:20] == b"\x02\x02"
    return data if header_ok and len(data) == page_size else None


def _write(path: Path | str, data: bytes, flag: int) -> None:
    """Write ``data`` to a file opened with ``O_CREAT`` and ``flag`` (O_EXCL, O_TRUNC)."""
    fd = open_private(path, os.O_WRONLY | os.O_CREAT | flag)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def read_info(working_dir: Path) -> SessionInfo:
    """Read session.json back; CorruptState if it is not what ``write_info`` wrote."""
    path = working_dir / "session.json"
    data = path.read_bytes()
    try:
        return SessionInfo.model_validate_json(data)
    except ValueError as exc:
        raise CorruptState(f"{path} is corrupted: {exc}") from exc
