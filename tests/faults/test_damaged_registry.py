"""A registry that is empty or damaged is reported as what it is, and left byte for byte
as it was: never written to, never replaced, nothing made beside it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hive_actors import CorruptState

from ..conftest import Daemon, Hives

UNREADABLE = "not a readable hive registry"


def _beside(registry: Path) -> list[str]:
    """The files SQLite would make beside the registry, of those that exist."""
    return [p.name for p in (Path(f"{registry}-wal"), Path(f"{registry}-shm")) if p.exists()]


def _registry_with_sessions(hives: Hives, root: Path, count: int) -> Path:
    hive = hives.open(root=root, command=["true"])
    for index in range(count):
        hive.create_session(f"t{index}", metadata={"pad": "x" * 500})
    hive.close()
    registry = root / "registry.db"
    assert _beside(registry) == []  # a clean close: the WAL is checkpointed and gone
    return registry


def test_an_empty_registry_beside_sessions_is_refused_not_replaced(
    daemon: Daemon, hives: Hives
) -> None:
    assert daemon.cli("create", "a").returncode == 0  # starts a daemon for the root
    assert daemon.cli("shutdown").returncode == 0
    registry = daemon.root / "registry.db"
    os.truncate(registry, 0)
    listed = daemon.cli("list")
    assert listed.returncode == 5
    assert listed.stdout == ""
    assert listed.stderr == (
        f"hivectl: could not start a daemon for {daemon.root}: {registry} is empty (0 bytes), "
        "not a hive registry; restore it from a backup or move it aside to start with an "
        "empty registry\n"
    )
    with pytest.raises(CorruptState, match=r"is empty \(0 bytes\), not a hive registry"):
        hives.open(root=daemon.root)
    assert registry.stat().st_size == 0
    assert _beside(registry) == []


def test_a_registry_left_half_made_by_a_crash_is_made_again_whole(hives: Hives) -> None:
    """A new registry is made under a temporary name and renamed into place: a crash
    leaves that name, never an empty registry.db, and the next Hive starts over."""
    root = hives.root / "new"
    root.mkdir()
    (root / "registry.db.new").write_bytes(b"")  # where a crash left it
    hive = hives.open(root=root)
    assert hive.list_sessions() == []
    assert hive.create_session("kept")
    hive.close()
    assert sorted(p.name for p in root.glob("registry.db*")) == ["registry.db"]


def test_a_registry_with_damaged_pages_is_refused_without_a_write(
    hives: Hives, daemon: Daemon
) -> None:
    registry = _registry_with_sessions(hives, daemon.root, 200)
    data = bytearray(registry.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    for start in range(2 * page, len(data), 2 * page):  # page 1, the schema, stays intact
        data[start : start + page] = b"\xff" * page
    registry.write_bytes(data)
    with pytest.raises(CorruptState, match=UNREADABLE):
        hives.open(root=daemon.root)
    served = daemon.cli("serve")  # in the foreground
    assert served.returncode == 7
    assert served.stderr.startswith(f"hivectl: {registry} is {UNREADABLE} ("), served.stderr
    assert served.stderr.count("\n") == 1  # one line, no traceback
    assert registry.read_bytes() == data
    assert _beside(registry) == []
