"""The durable registry: every session and the journal of every event, in one SQLite file.

Each change updates the session row and appends its events atomically; changes arriving
together share one transaction (group commit). The events are handed to ``publish`` only
after the commit, and under the same lock, so the order subscribers see is the journal's
``seq`` order and nothing is announced that a crash could take back. WAL with
``synchronous=NORMAL`` survives a crash of this process (the case that matters: the
daemon dying); only a power loss can drop the last commits.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from hive_actors._models import Event, EventBase, SessionInfo, parse_event
from hive_actors.errors import CorruptState

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
"""

E = TypeVar("E", bound=EventBase)
Hook = Callable[[], None] | None
T = TypeVar("T")


def connect_wal(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) an SQLite file in WAL mode, shared by the threads that lock it."""
    connection = sqlite3.connect(
        path, check_same_thread=False, isolation_level=None, timeout=_BUSY_TIMEOUT_MS / 1000
    )
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
    return connection


def create_wal(path: Path) -> None:
    """Create an empty SQLite file in WAL mode, and nothing beside it.

    Switching a new file to WAL writes its header, which SQLite would do through a
    rollback journal created and deleted for that one write. With the journal in memory,
    no file but the database itself is made (a crash meanwhile leaves a new, empty file).
    """
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=MEMORY")
        connection.execute("PRAGMA journal_mode=WAL")
    finally:
        connection.close()


class Registry:
    """Sessions and the event journal; thread-safe; every write is one transaction."""

    def __init__(self, path: Path, publish: Callable[[EventBase], None], created: str = "") -> None:
        self._path = path
        self._publish = publish
        self._lock = threading.Lock()
        """Held for every use of the connection; ``attach`` runs between two commits."""
        self._queue = threading.Condition(threading.Lock())
        self._pending: list[_Write] = []
        self._leading = False
        try:
            self._db = connect_wal(path)
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise CorruptState(
                    f"{path} has schema version {version}; this hive_actors reads up to "
                    f"{SCHEMA_VERSION}: upgrade hive_actors to open it"
                )
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('created', ?)", (created,)
            )
            (created_at,) = self._db.execute(
                "SELECT value FROM meta WHERE key = 'created'"
            ).fetchone()
            row = self._db.execute("SELECT max(seq) FROM events").fetchone()
        except sqlite3.DatabaseError as exc:
            raise CorruptState(
                f"{path} is not a readable hive registry ({exc}); restore it from a backup "
                "or move it aside to start with an empty registry"
            ) from exc
        self._last_seq: int = row[0] or 0
        self.created: str = created_at
        """When this registry was first opened (ISO 8601)."""

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def insert(self, info: SessionInfo, events: Sequence[E], committed: Hook = None) -> list[E]:
        """Add a new session with its first events; return the events with their seq.

        ``committed`` runs after the commit and before the events are published.
        """
        return self._write(
            "INSERT INTO sessions (session_id, status, created, updated, info) "
            "VALUES (:session_id, :status, :created, :updated, :info)",
            _row(info),
            events,
            committed,
        )

    def update(self, info: SessionInfo, events: Sequence[E], committed: Hook = None) -> list[E]:
        """Replace a session's row and append the events that explain the change."""
        return self._write(
            "UPDATE sessions SET status=:status, updated=:updated, info=:info "
            "WHERE session_id=:session_id",
            _row(info),
            events,
            committed,
        )

    def delete(self, session_id: str, events: Sequence[E], committed: Hook = None) -> list[E]:
        """Forget a session (its journal stays); append the events that say so."""
        return self._write(
            "DELETE FROM sessions WHERE session_id=:session_id",
            {"session_id": session_id},
            events,
            committed,
        )

    def append(self, events: Sequence[E]) -> list[E]:
        """Journal events that change no session row (context messages)."""
        return self._write(None, {}, events)

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
        """Journaled events with ``since < seq <= until``, oldest first, read page by page."""
        until = self._last_seq if until is None else until
        cursor = since
        while cursor < until:
            query = "SELECT seq, body FROM events WHERE seq > ? AND seq <= ?"
            params: list[Any] = [cursor, until]
            if session_id is not None:
                query += " AND session_id = ?"
                params.append(session_id)
            query += f" ORDER BY seq LIMIT {_PAGE}"
            with self._lock:
                rows = self._db.execute(query, params).fetchall()
            if not rows:
                return
            for seq, body in rows:
                yield parse_event({**json.loads(body), "seq": seq})
            cursor = rows[-1][0]

    def _write(
        self,
        statement: str | None,
        params: dict[str, Any],
        events: Sequence[E],
        committed: Hook = None,
    ) -> list[E]:
        """Commit one change and publish its events; returns them stamped with their seq.

        Group commit: writers that arrive while a transaction is in progress queue up, and
        the next one to lead commits all of them in one transaction (each in its own
        savepoint, so one failing statement fails only its own write). Their ``committed``
        hooks and events then run in queue order, which is seq order.
        """
        write = _Write(statement, params, events, committed)
        with self._queue:
            self._pending.append(write)
            while not write.done and self._leading:
                self._queue.wait()
            if write.done:
                return write.outcome()
            self._leading = True
            batch, self._pending = self._pending, []  # ours among them: it is not done
        try:
            self._commit(batch)
        finally:
            with self._queue:
                for each in batch:
                    each.done = True
                self._leading = False  # whoever queued meanwhile leads the next commit
                self._queue.notify_all()
        return write.outcome()

    def _commit(self, batch: list[_Write]) -> None:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for write in batch:
                    self._db.execute("SAVEPOINT write")
                    try:
                        write.stamped = self._apply(write)
                    except (sqlite3.Error, ValueError, TypeError) as exc:  # this write alone
                        self._db.execute("ROLLBACK TO write")
                        write.error = exc
                    self._db.execute("RELEASE write")
                self._db.execute("COMMIT")
            except BaseException as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
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

    def _apply(self, write: _Write) -> list[Any]:
        if write.statement is not None:
            self._db.execute(write.statement, write.params)
        stamped = []
        for event in write.events:
            body = event.to_json_dict()
            body.pop("seq")
            seq = self._db.execute(
                "INSERT INTO events (session_id, type, body) VALUES (?, ?, ?)",
                (event.session_id, body["type"], json.dumps(body, ensure_ascii=False)),
            ).lastrowid
            assert seq is not None
            stamped.append(event.model_copy(update={"seq": seq}))
        return stamped


class _Write:
    """One change waiting for (or done by) a group commit."""

    __slots__ = ("committed", "done", "error", "events", "params", "stamped", "statement")

    def __init__(
        self,
        statement: str | None,
        params: dict[str, Any],
        events: Sequence[EventBase],
        committed: Hook,
    ) -> None:
        self.statement = statement
        self.params = params
        self.events = events
        self.committed = committed
        self.done = False
        self.stamped: list[Any] = []
        self.error: BaseException | None = None

    def outcome(self) -> list[Any]:
        if self.error is not None:
            raise self.error
        return self.stamped


def _row(info: SessionInfo) -> dict[str, Any]:
    return {
        "session_id": info.session_id,
        "status": str(info.status),
        "created": info.created.isoformat(),
        "updated": info.updated.isoformat(),
        "info": info.model_dump_json(),
    }
