"""The durable registry: every session and the journal of every event, in one SQLite file.

Each change updates the session row and appends its events atomically; changes arriving
together share one transaction (group commit). The events are handed to ``publish`` only
after the commit, and under the same lock, so the order subscribers see is the journal's
``seq`` order and nothing is announced that a crash could take back. WAL with
``synchronous=NORMAL`` survives a crash of this process (the case that matters: the
daemon dying); only a power loss can drop the last commits.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import structlog

from hive_actors._models import Event, EventBase, JournalTrimmedEvent, SessionInfo, parse_event
from hive_actors._permissions import check_writable, open_private, refused
from hive_actors._workspace import create_wal
from hive_actors.errors import CorruptState, HiveError, WorkspaceError

log = structlog.get_logger(__name__)

SCHEMA_VERSION = 1
_PAGE = 1000
_BUSY_TIMEOUT_MS = 30_000
"""How long a write waits for a lock held by another process before it fails."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    status     TEXT NOT NULL,
    created    TEXT NOT NULL,
    updated    TEXT NOT NULL,
    info       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    type       TEXT NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_session ON events (session_id, seq);
CREATE TABLE IF NOT EXISTS meta (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS trimmed (
    session_id TEXT PRIMARY KEY,
    through    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS trimmed_by_seq ON trimmed (through);
"""

E = TypeVar("E", bound=EventBase)
Hook = Callable[[], None] | None
T = TypeVar("T")


def _open(path: Path) -> sqlite3.Connection:
    """The registry's connection for writing, opened only once the file proved writable
    and sound: a refused registry is left byte for byte as it was, nothing made beside it.

    A root without one gets a new registry, made under a temporary name and renamed into
    place whole, so no crash leaves an empty file there: an empty registry.db is damage.
    """
    if not os.path.lexists(path):
        try:
            _create(path)
        except OSError as exc:
            raise refused(path, exc) from exc
    check_writable(path.parent)  # where SQLite makes the -wal and -shm files
    for part in (path, *(Path(f"{path}{suffix}") for suffix in ("-wal", "-shm"))):
        if part == path or os.path.lexists(part):  # one left by `sudo sqlite3`, say
            check_writable(part)
    _check(path)
    try:
        return connect_wal(path)
    except sqlite3.DatabaseError as exc:
        raise _failed(path, exc) from exc


def _create(path: Path) -> None:
    new = path.with_name(path.name + ".new")
    new.unlink(missing_ok=True)  # left by a crash while the last one was made
    create_wal(new)
    new.rename(path)


def _check(path: Path) -> None:
    """Refuse a registry that is empty, damaged or newer than this hive_actors, reading it
    on a read-only connection: nothing that looks at a damaged file may write to it.

    With no WAL to replay, the file alone is the whole database and SQLite is told so
    (``immutable``): it then makes no -wal or -shm file to read it.
    """
    if path.stat().st_size == 0:
        raise CorruptState(
            f"{path} is empty (0 bytes), not a hive registry; restore it from a backup "
            "or move it aside to start with an empty registry"
        )
    wal = Path(f"{path}-wal")
    uri = path.absolute().as_uri() + "?mode=ro"
    if not (wal.exists() and wal.stat().st_size > 0):
        uri += "&immutable=1"
    try:
        db = sqlite3.connect(uri, uri=True)
        try:
            (verdict,) = db.execute("PRAGMA quick_check(1)").fetchone()
            (version,) = db.execute("PRAGMA user_version").fetchone()
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise _failed(path, exc) from exc
    if verdict != "ok":  # the first problem found; the header line says nothing
        raise _unreadable(path, " ".join(verdict.replace("*** in database main ***", "").split()))
    if version > SCHEMA_VERSION:
        raise CorruptState(
            f"{path} has schema version {version}; this hive_actors reads up to "
            f"{SCHEMA_VERSION}: upgrade hive_actors to open it"
        )


def _failed(path: Path, exc: sqlite3.DatabaseError) -> HiveError:
    """What an SQLite error met opening the registry means: SQLite may not write the file
    (though ``check_writable`` saw no reason why), or the file is damaged."""
    if exc.sqlite_errorname.startswith("SQLITE_READONLY"):
        return refused(path, PermissionError(errno.EACCES, str(exc)))
    return _unreadable(path, exc)


def _unreadable(path: Path, why: object) -> CorruptState:
    return CorruptState(
        f"{path} is not a readable hive registry ({why}); restore it from a backup "
        "or move it aside to start with an empty registry"
    )


def connect_wal(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) an SQLite file in WAL mode, shared by the threads that lock it.

    A file it makes is owner-only, as are the -wal and -shm SQLite makes beside it (SQLite
    gives them the database's permissions).
    """
    with contextlib.suppress(FileExistsError):  # SQLite would make it 0644
        os.close(open_private(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
    connection = sqlite3.connect(
        path, check_same_thread=False, isolation_level=None, timeout=_BUSY_TIMEOUT_MS / 1000
    )
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
    return connection


class Registry:
    """Sessions and the event journal; thread-safe; every write is one transaction."""

    def __init__(self, path: Path, publish: Callable[[EventBase], None], created: str = "") -> None:
        self._path = path
        self._publish = publish
        self._lock = threading.Lock()
        """Held for every use of the connection; ``attach`` runs between two commits."""
        self._queue = threading.Lock()
        """Guards ``_pending`` and ``_leading``: who waits, and whether someone commits."""
        self._pending: list[_Write] = []
        self._leading = False
        self._db = _open(path)
        try:
            _vacuum_incrementally(self._db, path)
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('created', ?)", (created,)
            )
            (created_at,) = self._db.execute(
                "SELECT value FROM meta WHERE key = 'created'"
            ).fetchone()
            last_seq = _last_seq(self._db)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise _failed(path, exc) from exc
        except BaseException:
            self._db.close()
            raise
        self._last_seq: int = last_seq
        self.created: str = created_at
        """When this registry was first opened (ISO 8601)."""

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def scrub(self) -> None:
        """Rebuild the file so that no byte of a replaced row is left in its free space
        (env values an older hive_actors kept in the rows), the WAL's copy included."""
        with self._lock:
            try:
                self._db.execute("VACUUM")
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.DatabaseError as exc:  # the disk is full, say: the file is as it was
                cause = OSError(f"{exc} (it holds env values an older version kept)")
                raise WorkspaceError(self._path, cause, action="rebuild") from exc

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def insert(self, info: SessionInfo, events: Sequence[E], committed: Hook = None) -> list[E]:
        """Add a new session with its first events; return the events with their seq.

        ``committed`` runs after the commit and before the events are published.
        """
        return self._write(_Write("insert", _row(info), events, committed))

    def update(self, info: SessionInfo, events: Sequence[E], committed: Hook = None) -> list[E]:
        """Replace a session's row and append the events that explain the change."""
        return self._write(_Write("update", _row(info), events, committed))

    def delete(self, session_id: str, events: Sequence[E], committed: Hook = None) -> list[E]:
        """Forget a session; append the events that say so (``compact_removed`` later
        drops its other events from the journal)."""
        return self._write(_Write("delete", (session_id,), events, committed))

    def append(self, events: Sequence[E]) -> list[E]:
        """Journal events that change no session row (context messages)."""
        return self._write(_Write(None, (), events, None))

    def mirror(
        self,
        rows: Sequence[SessionInfo],
        removed: Sequence[str],
        events: Sequence[E],
        meta: Mapping[str, str],
        committed: Hook = None,
    ) -> list[E]:
        """Journal events that happened elsewhere (a cluster host's), with the session rows
        as they left them and the caller's bookkeeping (``meta``), in one transaction;
        then publish them. Return the events with their seq here.

        ``committed`` runs after the commit and before the events are published."""
        rows_values = [_row(info) for info in rows]
        event_rows = [_event_row(event) for event in events]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for row in rows_values:
                    self._db.execute(_UPSERT_SESSION, row)
                for session_id in removed:
                    self._db.execute(_delete_sessions(1), (session_id,))
                seqs = []
                for event_row in event_rows:
                    seq = self._db.execute(_insert_events(1), event_row).lastrowid
                    assert seq is not None
                    seqs.append(seq)
                for key, value in meta.items():
                    self._set_meta(key, value)
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            stamped = [
                event.model_copy(update={"seq": seq})
                for event, seq in zip(events, seqs, strict=True)
            ]
            if stamped:
                self._last_seq = stamped[-1].seq
            if committed is not None:
                committed()
            for event in stamped:
                self._publish(event)
        return stamped

    def meta(self, key: str, default: str) -> str:
        """A value the owner of this registry keeps beside the journal."""
        with self._lock:
            return self._meta(key, default)

    def attach(self, connect: Callable[[], T]) -> tuple[T, int]:
        """Run ``connect`` between two commits; return its result and the last seq before it.

        A subscriber connected here sees live every event after that seq and can replay
        everything up to it from the journal: no gap, no duplicate.
        """
        with self._lock:
            return connect(), self._last_seq

    def sessions(self) -> list[SessionInfo]:
        with self._lock:
            rows = self._db.execute("SELECT session_id, info FROM sessions").fetchall()
        infos = []
        for session_id, info in rows:
            try:
                infos.append(SessionInfo.model_validate_json(info))
            except ValueError as exc:
                raise CorruptState(
                    f"{self._path}: the row of session {session_id} cannot be read ({exc})"
                ) from exc
        return infos

    def events(
        self, since: int = 0, session_id: str | None = None, until: int | None = None
    ) -> Iterator[Event]:
        """Journaled events with ``since < seq <= until``, oldest first, read page by page.

        Where the journal no longer has some of them (trimmed), a JournalTrimmedEvent says
        so and the events go on from its ``first_seq``: never a silent gap.
        """
        until = self._last_seq if until is None else until
        cursor = since
        while cursor < until:
            query = "SELECT seq, body FROM events WHERE seq > ? AND seq <= ?"
            params: list[Any] = [cursor, until]
            if session_id is not None:
                query += " AND session_id = ?"
                params.append(session_id)
            query += f" ORDER BY seq LIMIT {_PAGE}"
            with self._lock:  # a trim between the check and the page could not go unseen
                first_seq = self._trimmed_after(cursor, session_id)
                if first_seq is not None:
                    cursor = min(first_seq, until + 1) - 1  # what comes live is not trimmed
                    params[0] = cursor
                rows = self._db.execute(query, params).fetchall()
            if first_seq is not None:
                yield JournalTrimmedEvent(seq=cursor, first_seq=cursor + 1, session_id=session_id)
            if not rows:
                return
            for seq, body in rows:
                yield parse_event({**json.loads(body), "seq": seq})
            cursor = rows[-1][0]

    def _trimmed_after(self, cursor: int, session_id: str | None) -> int | None:
        """The oldest seq the topic still has, if events of it after ``cursor`` were
        trimmed; else None. Called under the lock.

        Trimming only ever takes a topic's oldest events: by age, a prefix of the journal;
        for a removed session, all of its events but its last (``session.removed``). So a
        session whose first kept event is its ``session.created`` lost none.
        """
        if session_id is not None:
            # Nothing of the topic after ``cursor`` was deleted unless a trim reached past
            # it: by age (a prefix of the journal), or this removed session's compaction.
            row = self._db.execute(
                "SELECT through FROM trimmed WHERE session_id = ?", (session_id,)
            ).fetchone()
            through = max(int(self._meta(_AGE_TRIMMED, "0")), 0 if row is None else row[0])
            if cursor >= through:
                return None
            first = self._db.execute(
                "SELECT seq, type FROM events WHERE session_id = ? ORDER BY seq LIMIT 1",
                (session_id,),
            ).fetchone()
            if first is not None:
                seq, kind = first
                return seq if kind != "session.created" and cursor + 1 < seq else None
        (oldest,) = self._db.execute("SELECT min(seq) FROM events").fetchone()
        oldest = self._last_seq + 1 if oldest is None else oldest
        return oldest if cursor + 1 < oldest else None

    # -- trimming: called by the housekeeping pass, a bounded batch at a time ---------------

    def compact_removed(self, window: int, limit: int) -> int | None:
        """Drop the events of removed sessions but their ``session.removed``; one batch.

        Looks through the next ``window`` seqs after where the last batch stopped (kept in
        the meta table) for ``session.removed`` events, deleting about ``limit`` events at
        most. Returns how many went, or None once it has caught up with the journal.
        """
        with self._lock:
            cursor = int(self._meta(_COMPACTED, "0"))
            end = min(cursor + window, self._last_seq)
            if end <= cursor:
                return None
            removals = self._db.execute(
                "SELECT seq, session_id FROM events WHERE seq > ? AND seq <= ? "
                "AND type = 'session.removed' ORDER BY seq",
                (cursor, end),
            ).fetchall()
            deleted = 0
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for seq, session_id in removals:
                    # Its oldest first: what is left of a topic is always its newest.
                    gone = self._db.execute(
                        "SELECT count(*), max(seq) FROM (SELECT seq FROM events "
                        "WHERE session_id = ? AND seq < ? ORDER BY seq LIMIT ?)",
                        (session_id, seq, limit - deleted + 1),
                    ).fetchone()
                    count, through = gone
                    if count:
                        self._db.execute(
                            "DELETE FROM events WHERE session_id = ? AND seq <= ?",
                            (session_id, through),
                        )
                        self._db.execute(  # what a replay of its topic was not given
                            "INSERT INTO trimmed (session_id, through) VALUES (?, ?) "
                            "ON CONFLICT (session_id) DO UPDATE SET "
                            "through = max(through, excluded.through)",
                            (session_id, through),
                        )
                    deleted += count
                    if deleted > limit:  # some of it may be left: look at it again
                        end = seq - 1
                        break
                self._set_meta(_COMPACTED, str(end))
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # a failed COMMIT may have rolled back already
                    self._db.execute("ROLLBACK")
                raise
        return deleted

    def trim_older_than(self, cutoff: datetime, limit: int) -> int:
        """Delete the oldest events up to the first one stamped ``cutoff`` or later, at
        most ``limit`` of them; return how many went (``limit``: there may be more)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, json_extract(body, '$.at') FROM events ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        old = 0
        for _seq, at in rows:
            if datetime.fromisoformat(at) >= cutoff:
                break
            old += 1
        if old:
            through = rows[old - 1][0]
            with self._lock:  # nothing came below it meanwhile: new events come above
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.execute("DELETE FROM events WHERE seq <= ?", (through,))
                    self._set_meta(_AGE_TRIMMED, str(through))
                    # A removed session's record is covered by the prefix once it is.
                    self._db.execute("DELETE FROM trimmed WHERE through <= ?", (through,))
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
        return old

    def reclaim(self, pages: int) -> int:
        """Give up to ``pages`` free pages of the file back to the file system; return
        how many free pages are left (0 if the file cannot: see _vacuum_incrementally)."""
        with self._lock:
            if self._db.execute("PRAGMA auto_vacuum").fetchone()[0] != _INCREMENTAL:
                return 0
            # executescript steps the pragma to its end; execute would free one page.
            self._db.executescript(f"PRAGMA incremental_vacuum({int(pages)})")
            (free,) = self._db.execute("PRAGMA freelist_count").fetchone()
        return int(free)

    def _meta(self, key: str, default: str) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def _write(self, write: _Write) -> list[Any]:
        """Commit one change and publish its events; returns them stamped with their seq.

        Group commit: writers that arrive while a transaction is in progress queue up, and
        the first of them leads the next commit, for all of them in one transaction. Their
        ``committed`` hooks and events then run in queue order, which is seq order. Each
        waiter is woken once, when its write is done or it is its turn to lead.
        """
        with self._queue:
            self._pending.append(write)
            leader, self._leading = not self._leading, True
        if not leader:
            write.wake.acquire()  # released by a leader: done, or ours to lead
            if write.done:
                return write.outcome()
        with self._queue:
            batch, self._pending = self._pending, []  # ours among them: it is not done
        try:
            self._commit(batch)
        finally:
            with self._queue:
                for each in batch:
                    each.done = True
                following = self._pending[0] if self._pending else None
                self._leading = following is not None
            for each in batch:
                if each is not write:
                    each.wake.release()
            if following is not None:
                following.wake.release()  # it leads the next commit
        return write.outcome()

    def _commit(self, batch: list[_Write]) -> None:
        """Commit a batch: all of it in a few statements, or, if one of its writes fails,
        each write in its own savepoint, so that only the failing one fails.

        Every statement lets go of the GIL and has to win it back from the busy threads,
        while every other writer waits on this lock: the fewer statements, the shorter the
        wait (one statement a kind of change, not one a row).
        """
        with self._lock:
            try:
                if _distinct_sessions(batch):
                    try:
                        self._transaction(batch, self._apply_together)
                    except sqlite3.Error:  # one write's fault, or all of theirs: see which
                        self._transaction(batch, self._apply_alone)
                else:
                    self._transaction(batch, self._apply_alone)
            except BaseException as exc:
                for write in batch:
                    write.stamped, write.error = [], write.error or exc
                if not isinstance(exc, Exception):
                    raise
                return
            for write in batch:
                if write.error is not None:
                    continue
                if write.stamped:
                    self._last_seq = write.stamped[-1].seq
                if write.committed is not None:
                    write.committed()
                for event in write.stamped:
                    self._publish(event)

    def _transaction(self, batch: list[_Write], apply: Callable[[list[_Write]], None]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            apply(batch)
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _apply_together(self, batch: list[_Write]) -> None:
        """The whole batch in one statement per kind of change (no session twice in it)."""
        for kind, statement in _STATEMENTS.items():
            rows = [write.row for write in batch if write.kind == kind]
            size = _ROWS_PER_STATEMENT if kind != "update" or _UPDATE_FROM else 1
            for chunk in _chunks(rows, size):
                self._db.execute(statement(len(chunk)), _flat(chunk))
        seqs: list[int] = []
        events = [row for write in batch for row in write.event_rows]
        for some in _chunks(events, _ROWS_PER_STATEMENT):
            last = self._db.execute(_insert_events(len(some)), _flat(some)).lastrowid
            assert last is not None  # the rows got consecutive seqs, in VALUES order
            seqs.extend(range(last - len(some) + 1, last + 1))
        stamps = iter(seqs)
        for write in batch:
            write.stamped = write.stamp([next(stamps) for _ in write.event_rows])
            write.error = None

    def _apply_alone(self, batch: list[_Write]) -> None:
        """Each write in its own savepoint: one failing statement fails only its own write."""
        for write in batch:
            write.stamped, write.error = [], None
            self._db.execute("SAVEPOINT write")
            try:
                if write.kind is not None:
                    self._db.execute(_STATEMENTS[write.kind](1), write.row)
                seqs = []
                for row in write.event_rows:
                    seq = self._db.execute(_insert_events(1), row).lastrowid
                    assert seq is not None
                    seqs.append(seq)
                write.stamped = write.stamp(seqs)
            except sqlite3.Error as exc:
                self._db.execute("ROLLBACK TO write")
                write.error = exc
            self._db.execute("RELEASE write")


_COMPACTED = "journal_compacted_through"
"""Meta key: the seq up to which removed sessions' events have been compacted."""
_AGE_TRIMMED = "journal_trimmed_through"
"""Meta key: every event up to this seq was trimmed by age."""
_INCREMENTAL = 2
"""PRAGMA auto_vacuum's value for INCREMENTAL."""


def _vacuum_incrementally(db: sqlite3.Connection, path: Path) -> None:
    """Make the file one whose free pages ``reclaim`` can give back (auto_vacuum=INCREMENTAL).

    The setting takes effect only through a VACUUM once the file exists (WAL mode has
    written its first page already): instant for a new file; a file made before
    trimming existed is rebuilt once, about a second per 100 MB of data here, with room
    needed for up to two copies (one in the WAL, one in the temp dir). If that fails
    (disk full), trimmed pages are still reused, the file just does not shrink, and the
    next open tries again.
    """
    if db.execute("PRAGMA auto_vacuum").fetchone()[0] == _INCREMENTAL:
        return
    existing = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0
    if existing:
        log.info("registry: rebuilding once, so that trimmed space is given back", path=str(path))
    started = time.monotonic()
    try:
        db.execute(f"PRAGMA auto_vacuum={_INCREMENTAL}")
        db.execute("VACUUM")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the WAL held a copy of it all
    except sqlite3.OperationalError as exc:
        with contextlib.suppress(sqlite3.OperationalError):  # leave no WAL of its size
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        log.warning(
            "registry: could not rebuild; trimmed space is reused but not given back",
            path=str(path),
            error=str(exc),
        )
        return
    if existing:
        log.info("registry: rebuilt", path=str(path), seconds=round(time.monotonic() - started, 3))


def _last_seq(db: sqlite3.Connection) -> int:
    """The highest seq ever handed out. AUTOINCREMENT records it (sqlite_sequence) so that
    no seq is used twice, even once trimming has emptied the journal."""
    (journaled,) = db.execute("SELECT max(seq) FROM events").fetchone()
    recorded = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    return max(journaled or 0, 0 if recorded is None else recorded[0])


_ROWS_PER_STATEMENT = 150
"""Rows bound into one statement (5 values a row: under SQLite's oldest limit of 999)."""
_UPDATE_FROM = sqlite3.sqlite_version_info >= (3, 33, 0)
"""UPDATE ... FROM, for many rows in one statement, came in SQLite 3.33."""


# The statements below join constant SQL with "?" placeholders only, never with values.


@functools.cache
def _values(columns: int, rows: int) -> str:
    row = "(" + ", ".join("?" * columns) + ")"
    return ", ".join([row] * rows)


@functools.cache
def _insert_sessions(rows: int) -> str:
    columns = "session_id, status, created, updated, info"
    return f"INSERT INTO sessions ({columns}) VALUES {_values(5, rows)}"  # noqa: S608


@functools.cache
def _update_sessions(rows: int) -> str:
    if rows == 1:  # ?N is the Nth value of the row
        return "UPDATE sessions SET status = ?2, updated = ?4, info = ?5 WHERE session_id = ?1"
    return (
        "WITH new (session_id, status, created, updated, info) "  # noqa: S608
        f"AS (VALUES {_values(5, rows)}) "
        "UPDATE sessions SET status = new.status, updated = new.updated, info = new.info "
        "FROM new WHERE sessions.session_id = new.session_id"
    )


@functools.cache
def _delete_sessions(rows: int) -> str:
    return f"DELETE FROM sessions WHERE session_id IN ({', '.join('?' * rows)})"  # noqa: S608


@functools.cache
def _insert_events(rows: int) -> str:
    return f"INSERT INTO events (session_id, type, body) VALUES {_values(3, rows)}"  # noqa: S608


_UPSERT_SESSION = (
    "INSERT INTO sessions (session_id, status, created, updated, info) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (session_id) DO UPDATE SET "
    "status = excluded.status, updated = excluded.updated, info = excluded.info"
)

_STATEMENTS: dict[str, Callable[[int], str]] = {
    "insert": _insert_sessions,
    "update": _update_sessions,
    "delete": _delete_sessions,
}


def _chunks(rows: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _flat(rows: Sequence[tuple[str, ...]]) -> list[str]:
    return [value for row in rows for value in row]


def _distinct_sessions(batch: list[_Write]) -> bool:
    """True if no session's row is changed by two writes of the batch (their order counts)."""
    changed = [write.row[0] for write in batch if write.kind is not None]
    return len(changed) == len(set(changed))


class _Write:
    """One change waiting for (or done by) a group commit, serialized before it queues."""

    __slots__ = (
        "committed",
        "done",
        "error",
        "event_rows",
        "events",
        "kind",
        "row",
        "stamped",
        "wake",
    )

    def __init__(
        self,
        kind: str | None,
        row: tuple[str, ...],
        events: Sequence[EventBase],
        committed: Hook,
    ) -> None:
        self.kind = kind
        self.row = row
        self.events = events
        self.event_rows: list[tuple[str, ...]] = [_event_row(event) for event in events]
        self.committed = committed
        self.done = False
        self.wake = threading.Lock()
        """Held until a leader releases it: this write is done, or it is to lead."""
        self.wake.acquire()
        self.stamped: list[Any] = []
        self.error: BaseException | None = None

    def stamp(self, seqs: list[int]) -> list[Any]:
        return [
            event.model_copy(update={"seq": seq})
            for event, seq in zip(self.events, seqs, strict=True)
        ]

    def outcome(self) -> list[Any]:
        if self.error is not None:
            raise self.error
        return self.stamped


def _row(info: SessionInfo) -> tuple[str, ...]:
    return (
        info.session_id,
        str(info.status),
        info.created.isoformat(),
        info.updated.isoformat(),
        info.model_dump_json(),
    )


def _event_row(event: EventBase) -> tuple[str, str, str]:
    body = event.model_dump_json(by_alias=True, exclude=_NO_SEQ)  # the journal's seq column
    # A host's event (a cluster's journal) belongs to no session: its topic is the global one.
    return (event.session_id or "", event.type, body)  # type: ignore[attr-defined]  # every subclass has it


_NO_SEQ = {"seq"}
