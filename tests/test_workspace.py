"""A session's files on disk: session.json written whole, the WAL database made alone."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

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
    connection = sqlite3.connect(database)
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        connection.close()
