"""A session's files on disk: session.json written whole, the WAL database made alone."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path

import pytest

from hive_actors import Hive, _workspace
from hive_actors._models import SessionInfo


def _info(hive: Hive, **changes: object) -> SessionInfo:
    session_id = hive.create_session("write me")
    return hive.get_session_info(session_id).model_copy(update=changes)


def test_session_json_holds_the_last_write_even_when_it_is_shorter(hive: Hive) -> None:
    long = _info(hive, metadata={"notes": "x" * 5000})
    working_dir = Path(long.working_dir)
    _workspace.write_info(working_dir, long)
    short = long.model_copy(update={"metadata": {}, "reason": "shorter"})
    _workspace.write_info(working_dir, short)
    assert _workspace.read_info(working_dir) == short


def test_a_reader_never_sees_half_a_session_json(hive: Hive) -> None:
    info = _info(hive, metadata={"pad": "y" * 20_000})
    working_dir = Path(info.working_dir)
    done = threading.Event()
    seen: list[int] = []

    def read() -> None:
        while not done.is_set():
            seen.append(_workspace.read_info(working_dir).runs)  # CorruptState if torn

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for runs in range(300):
            padding = "y" * (20_000 if runs % 2 else 10)  # long and short texts in turn
            _workspace.write_info(
                working_dir, info.model_copy(update={"runs": runs, "metadata": {"pad": padding}})
            )
    finally:
        done.set()
        reader.join(10)
    assert seen
    assert seen == sorted(seen)


def test_the_database_is_made_in_wal_mode_with_nothing_beside_it(hive: Hive) -> None:
    database = Path(_info(hive).database)
    assert [p.name for p in database.parent.iterdir()] == ["memory.db"]
    with contextlib.closing(sqlite3.connect(database)) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_every_session_database_is_a_working_wal_file_made_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_workspace, "_empty_wal", None)  # as in a new process
    first, copied = tmp_path / "first" / "memory.db", tmp_path / "copied" / "memory.db"
    for path in (first, copied):
        path.parent.mkdir()
        _workspace.create_wal(path)  # the first by SQLite, the next a copy of it
        assert [p.name for p in path.parent.iterdir()] == ["memory.db"]
    assert copied.read_bytes() == first.read_bytes()
    with contextlib.closing(sqlite3.connect(copied)) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        connection.execute("CREATE TABLE notes (body TEXT)")
        connection.execute("INSERT INTO notes VALUES ('kept')")
        connection.commit()
        assert connection.execute("SELECT body FROM notes").fetchall() == [("kept",)]
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_session_database_is_never_made_over_an_existing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    existing = tmp_path / "memory.db"
    existing.write_bytes(b"an agent's data")
    for template in (None, b"SQLite format 3\0"):  # SQLite's way, then the copy's
        monkeypatch.setattr(_workspace, "_empty_wal", template)
        with pytest.raises(FileExistsError):
            _workspace.create_wal(existing)
        assert existing.read_bytes() == b"an agent's data"
