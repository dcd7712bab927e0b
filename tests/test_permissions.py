"""A session's private data is private: hive_actors makes its dirs 0700 and its files
0600 whatever the umask, and tightens a root an older version left open. The output dir
under ``output_root``, and what the agent makes, follow the umask."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from hive_actors.testing import FakeClock

from .conftest import Daemon, Hives, chatty_after_a_pass

AGENT = ["sh", "-c", 'umask; echo made > by-the-agent; echo done > "$HIVE_OUTPUT_DIR/result"']


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _loose(root: Path, *theirs: Path) -> dict[str, str]:
    """What under ``root`` (itself included) is not owner-only, but ``theirs``."""
    found = {}
    for path in [root, *root.rglob("*")]:
        if path.is_symlink() or path in theirs:
            continue
        private = 0o700 if path.is_dir() else 0o600
        if _mode(path) != private:
            found[str(path.relative_to(root.parent))] = oct(_mode(path))
    return found


@pytest.mark.parametrize("mask", [0o000, 0o022], ids=["umask 000", "umask 022"])
def test_what_hive_actors_writes_for_a_session_is_owner_only_whatever_the_umask(
    hives: Hives, mask: int
) -> None:
    output_root = hives.root / "exchange"
    with _umask(mask):
        hive = hives.open(output_root=output_root, command=AGENT)
        session_id = hive.create_session("private work", metadata={"client": "acme"})
        info = hive.get_session_info(session_id)
        Path(info.log_file).unlink()  # made again at the start
        Path(info.database).unlink()  # made again by the first context call
        hive.send_message(session_id, "user", "a private conversation")
        hive.start_session(session_id)
        assert hive.wait(session_id, timeout=30) == "completed"
        by_the_agent = Path(info.working_dir, "by-the-agent")
        assert _loose(hive.root, by_the_agent) == {}  # registry.db-wal and -shm included
        assert Path(info.working_dir, ".hive", "run-1.exit").exists()
        hive.close()
    assert _loose(hive.root, by_the_agent) == {}
    assert Path(info.log_file).read_text() == f"{mask:04o}\n"  # the agent's umask: its own
    assert _mode(by_the_agent) == 0o666 & ~mask
    output = Path(info.output_dir)
    assert output.parent == output_root  # the user's exchange point follows the umask
    assert (_mode(output), _mode(output / "result")) == (0o777 & ~mask, 0o666 & ~mask)


def test_a_rotated_log_is_owner_only_whatever_the_umask(hives: Hives, clock: FakeClock) -> None:
    with _umask(0):
        hive = hives.open(clock=clock, log_max_bytes=1024, log_keep=2, maintenance_interval=5)
        _session_id, log = chatty_after_a_pass(hive, clock)
    assert "line 99" in Path(f"{log}.1").read_text()
    assert _mode(Path(f"{log}.1")) == _mode(log) == 0o600


def test_the_daemons_files_are_owner_only_whatever_the_umask(daemon: Daemon, hives: Hives) -> None:
    hive = hives.open(root=daemon.root)
    with _umask(0):
        refused = daemon.cli("serve")  # its log is made before it finds the root taken
    assert refused.returncode == 6
    assert _mode(daemon.root / "daemon.log") == 0o600  # not left to a Hive to tighten
    hive.close()
    with _umask(0):
        daemon.start("--tcp", "127.0.0.1:0")  # the daemon inherits the umask
    assert daemon.cli("create", "t").returncode == 0
    token, log = daemon.root / "token", daemon.root / "daemon.log"
    assert token.read_text().strip()
    assert '"event": "daemon ready"' in log.read_text()
    assert _loose(daemon.root) == {}  # token, daemon.log, hive.sock, the registry's files


def test_an_existing_root_is_tightened_when_a_hive_opens_it(hives: Hives) -> None:
    root = hives.root / "old"
    hive = hives.open(root=root)
    hive.create_session("made by an older version")
    hive.close()
    for path, mode in [
        (root, 0o755),
        (root / "sessions", 0o777),
        (root / "logs", 0o755),
        (root / "registry.db", 0o644),
        (root / "daemon.log", 0o666),
        (root / "token", 0o644),
    ]:
        path.touch()
        path.chmod(mode)
    hives.open(root=root).close()
    assert {p.name: _mode(p) for p in [root, *root.iterdir()]} == {
        "old": 0o700,
        "sessions": 0o700,
        "logs": 0o700,
        "registry.db": 0o600,
        "daemon.log": 0o600,
        "token": 0o600,
        "hive.lock": 0o600,
    }


def test_a_shared_sticky_directory_as_root_is_left_shared(
    hives: Hives, caplog: pytest.LogCaptureFixture
) -> None:
    """A root like /tmp is shared by design: hive_actors keeps its own dirs private in it,
    says that the rest is not, and leaves the directory's mode alone."""
    shared = hives.root / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    with caplog.at_level(logging.WARNING):
        hives.open(root=shared).close()
    assert _mode(shared) == 0o1777
    assert (_mode(shared / "sessions"), _mode(shared / "logs")) == (0o700, 0o700)
    assert "not owner-only" in caplog.text
    assert "a shared directory (sticky, like /tmp): left as it is" in caplog.text
