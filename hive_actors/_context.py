"""A session's context: conversation history, active files and file index.

It lives in the session's own SQLite file (``.swarm/memory.db``, tables prefixed ``hive_``),
so it survives restarts of the ContextManager and of the whole hive. The ContextManager
actor holds the loaded state of a live session and is the only writer while the session
lives; an ended session's context is read straight from the file.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from hive_actors._clock import Clock, isoformat
from hive_actors._config import HiveConfig
from hive_actors._models import ContextMessageEvent
from hive_actors._registry import Registry, connect_wal
from hive_actors._runtime import ActorPool
from hive_actors._supervision import Call, Child, answer
from hive_actors._validate import json_object
from hive_actors.errors import InvalidContext

Role = Literal["user", "assistant", "system", "tool"]
ROLES: tuple[str, ...] = get_args(Role)
MAX_PATH_CHARS = 4096
MAX_INDEX_INFO_BYTES = 64 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS hive_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT, role TEXT NOT NULL, content TEXT NOT NULL,
    at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS hive_active_files (
    path TEXT PRIMARY KEY, added INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS hive_file_index (
    path TEXT PRIMARY KEY, info TEXT NOT NULL);
"""


@dataclass
class ContextState:
    """What a ContextManager knows; plain data, loaded from and mirrored to the session DB."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    """Active files, oldest first."""
    index: dict[str, dict[str, Any]] = field(default_factory=dict)

    def history(self, limit: int | None = None) -> list[dict[str, Any]]:
        if limit is not None and limit < 0:
            raise InvalidContext(f"limit must be zero or more, not {limit}")
        chosen = self.messages if limit is None else self.messages[-limit:] if limit else []
        return [dict(message) for message in chosen]

    def build(self, session_id: str, task: str, budget: int) -> dict[str, Any]:
        """History + files + index as one dict whose JSON fits in ``budget`` characters.

        The task and the active files come first; then the index entries of active files;
        then as many of the newest messages as fit, kept in conversation order; then the
        rest of the index. ``truncated`` says whether anything was left out.
        """
        if budget < 1:
            raise InvalidContext(f"budget must be a positive number of characters, not {budget}")
        context: dict[str, Any] = {
            "session_id": session_id,
            "task": task,
            "active_files": list(self.files),
            "file_index": {},
            "history": [],
            "truncated": False,
        }
        used = _size(context)
        if used > budget:
            raise InvalidContext(
                f"budget of {budget} characters is too small for the task and active files "
                f"({used} characters); give at least {used}"
            )

        def fits(item: Any, extra: int = 2) -> bool:
            nonlocal used
            cost = _size(item) + extra
            if used + cost > budget:
                context["truncated"] = True
                return False
            used += cost
            return True

        active = [path for path in self.files if path in self.index]
        others = [path for path in self.index if path not in set(self.files)]
        for path in active:
            if fits({path: self.index[path]}):
                context["file_index"][path] = self.index[path]
        kept: list[dict[str, Any]] = []
        for message in reversed(self.messages):
            if not fits(message):
                break
            kept.append(message)
        context["history"] = kept[::-1]
        for path in others:
            if fits({path: self.index[path]}):
                context["file_index"][path] = self.index[path]
        return context


def _size(item: Any) -> int:
    return len(json.dumps(item, ensure_ascii=False))


def check_role(role: object) -> str:
    if role not in ROLES:
        raise InvalidContext(f"role {role!r} is not one of {', '.join(ROLES)}")
    return str(role)


def check_content(content: object, limit: int) -> str:
    if not isinstance(content, str):
        raise InvalidContext(f"message content must be a string, not {type(content).__name__}")
    try:
        size = len(content.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidContext(f"message content is not valid UTF-8 text ({exc.reason})") from None
    if size > limit:
        raise InvalidContext(f"message is {size} bytes; at most {limit} bytes are accepted")
    if not content.strip():
        raise InvalidContext("message content is empty; give the message's text")
    return content


def check_path(path: object) -> str:
    """A file path relative to the session's working dir, normalised; never leaves it."""
    if not isinstance(path, str) or not path or "\x00" in path or len(path) > MAX_PATH_CHARS:
        raise InvalidContext(
            f"file path must be a non-empty string of at most {MAX_PATH_CHARS} characters "
            f"without NUL, not {path!r}"
        )
    normal = posixpath.normpath(path)
    if normal.startswith("/") or normal == ".." or normal.startswith("../"):
        raise InvalidContext(
            f"file path {path!r} leaves the session's working directory; "
            "give a path relative to it, such as 'src/main.rs'"
        )
    return normal


def check_index_info(info: object) -> dict[str, Any]:
    return json_object(info, "file index info", MAX_INDEX_INFO_BYTES, InvalidContext)


class ContextStore:
    """The SQLite side of a context. Opens the file per operation: no fd held while idle."""

    def __init__(self, database: Path, max_history: int, max_files: int) -> None:
        self._database = database
        self._max_history = max_history
        self._max_files = max_files

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = connect_wal(self._database)
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        finally:
            if db.in_transaction:
                db.execute("ROLLBACK")
            db.close()

    def load(self) -> ContextState:
        """Read the context, making its tables first if this is the DB's first use."""
        db = connect_wal(self._database)
        try:
            db.executescript(_SCHEMA)
            db.execute("BEGIN")
            rows = db.execute(
                "SELECT role, content, at FROM hive_messages ORDER BY id DESC LIMIT ?",
                (self._max_history,),
            ).fetchall()
            files = db.execute(
                "SELECT path FROM hive_active_files ORDER BY added DESC LIMIT ?",
                (self._max_files,),
            ).fetchall()
            index = db.execute("SELECT path, info FROM hive_file_index ORDER BY path").fetchall()
            db.execute("COMMIT")
        finally:
            db.close()
        return ContextState(
            messages=[{"role": r, "content": c, "at": at} for r, c, at in reversed(rows)],
            files=[path for (path,) in reversed(files)],
            index={path: json.loads(info) for path, info in index},
        )

    def add_message(self, state: ContextState, message: dict[str, Any]) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO hive_messages (role, content, at) VALUES (?, ?, ?)",
                (message["role"], message["content"], message["at"]),
            )
            db.execute(
                "DELETE FROM hive_messages WHERE id <= "
                "(SELECT id FROM hive_messages ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (self._max_history,),
            )
        state.messages.append(message)
        del state.messages[: -self._max_history]

    def clear_history(self, state: ContextState) -> int:
        with self._transaction() as db:
            db.execute("DELETE FROM hive_messages")
        cleared = len(state.messages)
        state.messages.clear()
        return cleared

    def add_file(self, state: ContextState, path: str) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO hive_active_files (path, added) VALUES (?, "
                "(SELECT coalesce(max(added), 0) + 1 FROM hive_active_files)) "
                "ON CONFLICT (path) DO UPDATE SET added = excluded.added",
                (path,),
            )
            db.execute(
                "DELETE FROM hive_active_files WHERE added <= "
                "(SELECT added FROM hive_active_files ORDER BY added DESC LIMIT 1 OFFSET ?)",
                (self._max_files,),
            )
        if path in state.files:
            state.files.remove(path)
        state.files.append(path)
        del state.files[: -self._max_files]

    def remove_file(self, state: ContextState, path: str) -> bool:
        with self._transaction() as db:
            db.execute("DELETE FROM hive_active_files WHERE path = ?", (path,))
        if path in state.files:
            state.files.remove(path)
            return True
        return False

    def update_file_index(self, state: ContextState, path: str, info: dict[str, Any]) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO hive_file_index (path, info) VALUES (?, ?) "
                "ON CONFLICT (path) DO UPDATE SET info = excluded.info",
                (path, json.dumps(info, ensure_ascii=False)),
            )
        state.index[path] = info


class Context:
    """The ContextManager's calls on one session's loaded context.

    The actor owns one for a live session; for an ended session the Hive loads one per
    call. Every change is written to the session DB before the in-memory state changes.
    """

    def __init__(
        self,
        session_id: str,
        task: str,
        database: Path,
        config: HiveConfig,
        registry: Registry,
        clock: Clock,
    ) -> None:
        self._session_id = session_id
        self._task = task
        self._config = config
        self._registry = registry
        self._clock = clock
        self._store = ContextStore(database, config.max_history, config.max_files)
        self._loaded: ContextState | None = None

    def load(self) -> Context:
        """Read the context from the session DB (again, if it was read before)."""
        self._loaded = self._store.load()
        return self

    @property
    def _state(self) -> ContextState:
        # Read on first use: most sessions never touch their context, and opening the
        # DB for each new session would cost every start.
        if self._loaded is None:
            self.load()
        assert self._loaded is not None
        return self._loaded

    def add_message(self, role: str, content: str) -> int:
        message = {
            "role": check_role(role),
            "content": check_content(content, self._config.max_message_bytes),
            "at": isoformat(self._clock.now()),
        }
        self._store.add_message(self._state, message)
        (event,) = self._registry.append(
            [
                ContextMessageEvent(
                    session_id=self._session_id,
                    at=self._clock.now(),
                    role=message["role"],
                    content=message["content"],
                )
            ]
        )
        return event.seq

    def history(self, limit: int | None = None) -> list[dict[str, Any]]:
        return self._state.history(limit)

    def clear_history(self) -> int:
        return self._store.clear_history(self._state)

    def add_file(self, path: str) -> list[str]:
        self._store.add_file(self._state, check_path(path))
        return list(self._state.files)

    def remove_file(self, path: str) -> bool:
        return self._store.remove_file(self._state, check_path(path))

    def active_files(self) -> list[str]:
        return list(self._state.files)

    def update_file_index(self, path: str, info: dict[str, Any]) -> None:
        self._store.update_file_index(self._state, check_path(path), check_index_info(info))

    def file_index(self) -> dict[str, dict[str, Any]]:
        return {path: dict(info) for path, info in self._state.index.items()}

    def build_context(self, budget: int | None = None) -> dict[str, Any]:
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int)):
            raise InvalidContext(f"budget must be a whole number of characters, not {budget!r}")
        return self._state.build(
            self._session_id, self._task, budget or self._config.context_budget
        )


CONTEXT_CALLS = frozenset(
    {
        "add_message",
        "history",
        "clear_history",
        "add_file",
        "remove_file",
        "active_files",
        "update_file_index",
        "file_index",
        "build_context",
    }
)


class ContextManager(Child):
    """The actor holding one live session's context. Its supervisor gives each (re)start a
    new Context, read from the session DB on first use: a restart reloads the state."""

    child_name = "context"

    def __init__(self, pool: ActorPool, parent: Any, context: Context) -> None:
        super().__init__(pool, parent)
        self._context = context

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Call):
            answer(message, self._context, CONTEXT_CALLS)
            return None
        return super().on_receive(message)
