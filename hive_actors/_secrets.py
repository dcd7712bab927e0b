"""Sessions' environment values, kept apart from everything that is shown.

A session's ``env`` can hold credentials (the agent's API keys). Only their names go into
session.json, the registry, answers, events and the dashboard; the values live in one
owner-only file per session under ``<root>/secrets/`` (a directory only the owner may
enter), written before the session is announced, read again by a restarted Hive, and
deleted with the session.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path

from hive_actors._permissions import open_private, private_dir
from hive_actors.errors import CorruptState, WorkspaceError


class Secrets:
    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._lock = threading.Lock()
        self._cache: dict[str, dict[str, str]] = {}

    def _path(self, session_id: str) -> Path:
        return self._directory / f"{session_id}.json"

    def put(self, session_id: str, values: Mapping[str, str]) -> None:
        """Keep ``values`` for ``session_id`` (durably, owner-only); none: nothing kept."""
        if not values:
            return
        path = self._path(session_id)
        temp = path.with_suffix(".tmp")
        try:
            private_dir(self._directory)
            fd = open_private(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            with os.fdopen(fd, "wb") as file:
                file.write(json.dumps(dict(values)).encode())
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise WorkspaceError(path, exc, action="write") from exc
        with self._lock:
            self._cache[session_id] = dict(values)

    def get(self, session_id: str) -> dict[str, str]:
        """The values kept for ``session_id`` ({} if none); the kept mapping itself, to
        read."""
        with self._lock:
            cached = self._cache.get(session_id)
        if cached is not None:
            return cached
        path = self._path(session_id)
        try:
            values: dict[str, str] = json.loads(path.read_bytes())
        except FileNotFoundError:
            values = {}
        except (OSError, ValueError) as exc:
            raise CorruptState(f"{path}: a session's environment cannot be read ({exc})") from exc
        with self._lock:
            self._cache[session_id] = values
        return values

    def strays(self, known: set[str]) -> list[str]:
        """Remove the values kept for sessions not in ``known`` (a create cut short
        between keeping them and recording the session); their ids."""
        try:
            files = list(self._directory.iterdir())
        except FileNotFoundError:
            return []
        removed = []
        for path in files:
            if path.stem not in known:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                removed.append(path.stem)
        return removed

    def drop(self, session_id: str) -> None:
        with self._lock:
            self._cache.pop(session_id, None)
        with contextlib.suppress(FileNotFoundError):
            self._path(session_id).unlink()
