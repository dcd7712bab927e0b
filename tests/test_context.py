"""Each session's ContextManager: history, active files, file index, build_context."""

from __future__ import annotations

import json
import sqlite3

import pytest

from hive_actors import Hive, InvalidContext

from .conftest import Hives


def test_history_is_kept_in_order_and_bounded(hives: Hives) -> None:
    hive = hives.open(max_history=3)
    context = hive.context(hive.create_session("chat"))
    for index in range(5):
        context.add_message("user" if index % 2 == 0 else "assistant", f"m{index}")
    assert [m["content"] for m in context.history()] == ["m2", "m3", "m4"]
    assert [m["content"] for m in context.history(limit=2)] == ["m3", "m4"]
    assert context.history(limit=0) == []
    assert context.clear_history() == 3
    assert context.history() == []


def test_active_files_drop_the_oldest_and_move_re_added_to_newest(hives: Hives) -> None:
    hive = hives.open(max_files=3)
    context = hive.context(hive.create_session("files"))
    for name in ("a.py", "b.py", "c.py"):
        context.add_file(name)
    context.add_file("a.py")  # touched again: now the newest
    assert context.add_file("d.py") == ["c.py", "a.py", "d.py"]
    assert context.remove_file("c.py") is True
    assert context.remove_file("c.py") is False
    assert context.active_files() == ["a.py", "d.py"]
    context.add_file("./src//lib.rs")
    assert context.active_files()[-1] == "src/lib.rs"


def test_file_index_and_build_context_within_budget(hive: Hive) -> None:
    session_id = hive.create_session("Refactor the parser")
    context = hive.context(session_id)
    context.add_file("src/parser.rs")
    context.update_file_index("src/parser.rs", {"lines": 420, "lang": "rust"})
    context.update_file_index("README.md", {"lines": 10})
    for index in range(50):
        context.add_message("user", f"message {index} " + "x" * 100)
    assert context.file_index()["src/parser.rs"] == {"lines": 420, "lang": "rust"}

    built = context.build_context(budget=2000)
    assert len(json.dumps(built, ensure_ascii=False)) <= 2000
    assert built["task"] == "Refactor the parser"
    assert built["active_files"] == ["src/parser.rs"]
    assert built["file_index"]["src/parser.rs"] == {"lines": 420, "lang": "rust"}
    assert built["truncated"] is True
    kept = [m["content"] for m in built["history"]]
    assert kept
    assert kept[-1].startswith("message 49 ")
    assert kept == sorted(kept, key=lambda c: int(c.split()[1]))

    everything = context.build_context(budget=100_000)
    assert everything["truncated"] is False
    assert len(everything["history"]) == 50
    assert set(everything["file_index"]) == {"src/parser.rs", "README.md"}
    with pytest.raises(InvalidContext, match="too small"):
        context.build_context(budget=10)


def test_context_is_isolated_per_session_and_stored_in_its_own_db(hive: Hive) -> None:
    first, second = hive.create_session("one"), hive.create_session("two")
    hive.send_message(first, "user", "for one")
    hive.send_message(second, "user", "for two")
    assert [m["content"] for m in hive.context(first).history()] == ["for one"]
    db = sqlite3.connect(hive.get_session_info(second).database)
    assert db.execute("SELECT content FROM hive_messages").fetchall() == [("for two",)]
    db.close()


def test_context_survives_a_new_hive_and_ended_sessions_stay_usable(hives: Hives) -> None:
    first = hives.open()
    session_id = first.create_session("t")
    first.send_message(session_id, "system", "be brief")
    first.start_session(session_id)
    first.wait(session_id, timeout=30)
    first.send_message(session_id, "assistant", "result noted after the run")
    first.close()

    second = hives.open()
    context = second.context(session_id)
    assert [m["role"] for m in context.history()] == ["system", "assistant"]
    context.add_file("out/report.md")
    assert context.active_files() == ["out/report.md"]


@pytest.mark.parametrize(
    ("call", "args", "message"),
    [
        ("add_message", ("wizard", "hi"), "role 'wizard' is not one of"),
        ("add_message", ("user", 42), "must be a string"),
        ("add_message", ("user", "x" * 300_000), "at most 262144 bytes"),
        ("add_file", ("../../etc/passwd",), "leaves the session's working directory"),
        ("add_file", ("/etc/passwd",), "leaves the session's working directory"),
        ("add_file", ("",), "non-empty string"),
        ("update_file_index", ("a.py", ["not", "a", "dict"]), "must be a JSON object"),
        ("history", (-1,), "zero or more"),
    ],
)
def test_bad_context_calls_are_refused(hive: Hive, call: str, args: tuple, message: str) -> None:
    context = hive.context(hive.create_session("t"))
    with pytest.raises(InvalidContext, match=message):
        getattr(context, call)(*args)
    assert context.history() == []
    assert context.active_files() == []
