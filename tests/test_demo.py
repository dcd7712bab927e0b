"""`make demo`, the README's first command: a few sessions of the fake agent, end to end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from hive_actors import Hive

from .conftest import kill_leftovers


def _demo(*args: str, temp: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the demo; with ``temp``, the temp dirs it makes go there (TMPDIR)."""
    env = dict(os.environ) if temp is None else {**os.environ, "TMPDIR": str(temp)}
    return subprocess.run(
        [sys.executable, "-m", "hive_actors.demo", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def test_the_demo_runs_its_sessions_and_says_where_their_outputs_are(tmp_path: Path) -> None:
    try:
        done = _demo("--root", str(tmp_path))
    finally:
        kill_leftovers([tmp_path / "sessions"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"hive root: {tmp_path}\n")
    assert done.stdout.endswith("3 completed, 1 failed (one on purpose)\n")  # and kept
    assert (tmp_path / "registry.db").exists()
    rows = re.findall(r"^([0-9a-f-]{36})  (\w+) +(\S+) +(\S+)$", done.stdout, re.MULTILINE)
    assert sorted((status, code) for _id, status, code, _out in rows) == [
        ("completed", "0"),
        ("completed", "0"),
        ("completed", "0"),
        ("failed", "3"),
    ]
    for session_id, _status, _code, output in rows:
        assert output == str(tmp_path / "sessions" / session_id / "output")
        assert f" {session_id[:8]} running -> completed" in done.stdout or (
            f" {session_id[:8]} running -> failed (exited with code 3)" in done.stdout
        )


def test_the_demo_on_a_root_another_hive_manages_says_so_and_does_nothing(
    tmp_path: Path,
) -> None:
    with Hive(root=tmp_path, command=["true"]) as hive:
        done = _demo("--root", str(tmp_path))
        assert hive.list_sessions() == []
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("demo: a Hive in process ")
    assert done.stderr.endswith("for the demo, give --root DIR or unset HIVE_ROOT\n")


def test_the_demo_removes_the_temp_root_it_made_and_says_so(tmp_path: Path) -> None:
    try:
        done = _demo(temp=tmp_path)
    finally:
        kill_leftovers(tmp_path.glob("hive-demo-*/sessions"))
    assert done.returncode == 0, done.stderr
    root = tmp_path / done.stdout.splitlines()[0].removeprefix(f"hive root: {tmp_path}/")
    assert root.name.startswith("hive-demo-")
    assert done.stdout.endswith(
        "3 completed, 1 failed (one on purpose)\n"
        f"removed the demo's temp root {root} (give --keep to keep it)\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_the_demo_keeps_its_temp_root_when_asked(tmp_path: Path) -> None:
    try:
        done = _demo("--keep", temp=tmp_path)
    finally:
        kill_leftovers(tmp_path.glob("hive-demo-*/sessions"))
    assert done.returncode == 0, done.stderr
    (root,) = tmp_path.glob("hive-demo-*")
    assert done.stdout.startswith(f"hive root: {root}\n")
    assert done.stdout.endswith(f"kept the demo's temp root {root}\n")
    assert (root / "registry.db").exists()
