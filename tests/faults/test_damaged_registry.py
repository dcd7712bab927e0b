"""A registry that is empty, damaged or not writable is reported as what it is, and left
byte for byte as it was: never written to, never replaced, nothing made beside it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hive_actors import CorruptState

from ..conftest import HIVECTL, Daemon, Hives

UNREADABLE = "not a readable hive registry"
NOBODY = 65534
MOUNT_FAILED = 77
"""The exit code of a child that could not make its read-only mount."""


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


def _open_in_child(root: Path, *prefix: str) -> subprocess.CompletedProcess[str]:
    """Open a Hive on ``root`` in a child process run through ``prefix``; it prints the
    ReadOnlyState it met (any other outcome fails it)."""
    script = (
        "import sys\n"
        "from hive_actors import Hive, ReadOnlyState\n"
        "try:\n"
        "    Hive(root=sys.argv[1], command=['true']).close()\n"
        "except ReadOnlyState as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    sys.exit('the Hive opened')\n"
    )
    return subprocess.run(
        [*prefix, sys.executable, "-c", script, str(root)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def _read_only_mount(path: Path) -> tuple[str, ...]:
    """A prefix that runs its command in a mount namespace where ``path`` is read-only."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) for a read-only mount")
    mount = (
        'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" '
        f'|| exit {MOUNT_FAILED}; shift; exec "$@"'
    )
    return ("unshare", "--mount", "sh", "-c", mount, str(path), "--")


def _without_root_privileges() -> tuple[str, ...]:
    """A prefix under which file permissions bind this process as they bind any user's:
    root loses the capabilities that override them; anyone else needs no prefix."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv(1) to run as root without the override of permissions")
    return ("setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner")


def _skip_if_no_mount(done: subprocess.CompletedProcess[str]) -> None:
    if done.returncode == MOUNT_FAILED or "unshare failed" in done.stderr:
        pytest.skip(f"this machine allows no read-only mount here: {done.stderr.strip()}")


@pytest.mark.parametrize("cause", ["read-only file system", "permissions", "owner"])
def test_a_registry_that_cannot_be_written_is_reported_as_such_and_left_alone(
    hives: Hives, tmp_path: Path, cause: str
) -> None:
    root = tmp_path / "root"
    registry = _registry_with_sessions(hives, root, 3)
    if cause == "read-only file system":
        prefix = _read_only_mount(registry)
        why = "it is on a read-only file system; remount it read-write, or use a root on a "
        why += "writable file system"
    elif cause == "permissions":
        prefix = _without_root_privileges()
        registry.chmod(0o444)
        why = "its permissions (0444) do not let its owner write it; make it writable by "
        why += "its owner (chmod u+w)"
    else:
        if os.geteuid() != 0:
            pytest.skip("giving a file to another owner needs root")
        prefix = _without_root_privileges()
        os.chown(registry, NOBODY, NOBODY)
        why = f"it belongs to uid {NOBODY} and this process runs as uid 0; run hive_actors "
        why += f"as uid {NOBODY}, or give it to uid 0 (chown)"
    before, mode = registry.read_bytes(), registry.stat().st_mode
    done = _open_in_child(root, *prefix)
    _skip_if_no_mount(done)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"cannot write {registry}: {why}. It was left as it was\n"
    assert registry.read_bytes() == before
    assert registry.stat().st_mode == mode  # not even made owner-only
    assert _beside(registry) == []


def test_a_root_on_a_read_only_file_system_is_reported_as_such(
    hives: Hives, tmp_path: Path
) -> None:
    """The whole root read-only: its lock files are the first it cannot write, or, for
    one not made yet, the root they would be made in."""
    root = tmp_path / "root"
    _registry_with_sessions(hives, root, 1)
    read_only = _read_only_mount(root)
    why = "it is on a read-only file system; remount it read-write, or use a root on a "
    why += "writable file system. It was left as it was"
    opened = _open_in_child(root, *read_only)
    _skip_if_no_mount(opened)
    assert opened.stdout == f"cannot write {root / 'hive.lock'}: {why}\n", opened.stderr
    served = subprocess.run(
        [*read_only, HIVECTL, "--root", str(root), "serve"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert served.returncode == 7
    assert served.stderr == f"hivectl: cannot write {root}: {why}\n"  # no daemon.lock yet


@pytest.mark.parametrize("suffix", ["-wal", "-shm"])
def test_a_registry_file_beside_it_of_another_owner_is_named_not_called_corrupt(
    hives: Hives, tmp_path: Path, suffix: str
) -> None:
    """As `sudo sqlite3 registry.db` leaves them: the registry itself is sound and ours."""
    if os.geteuid() != 0:
        pytest.skip("giving a file to another owner needs root")
    root = tmp_path / "root"
    registry = _registry_with_sessions(hives, root, 1)
    beside = Path(f"{registry}{suffix}")
    beside.write_bytes(b"")
    beside.chmod(0o600)
    os.chown(beside, NOBODY, NOBODY)
    done = _open_in_child(root, *_without_root_privileges())
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"cannot write {beside}: it belongs to uid {NOBODY}"), done.stdout
