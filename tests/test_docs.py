"""The docs check: every example in docs/ fenced as ``sh runnable`` or ``python runnable``
runs, against a temporary root with the fake agent, and must succeed. Also: the docs
cover every setting and every page links where it says."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hive_actors import HiveConfig
from hive_actors._lockfile import DaemonLock
from hive_actors.testing import fake_agent_command

from .conftest import kill_leftovers

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```(sh|python) runnable\n(.*?)^```", re.MULTILINE | re.DOTALL)
BIN = Path(sys.executable).parent


def examples() -> list[tuple[str, str, str]]:
    found = []
    for page in sorted(DOCS.glob("*.md")):
        for index, match in enumerate(FENCE.finditer(page.read_text())):
            found.append((f"{page.name}#{index + 1}", match.group(1), match.group(2)))
    return found


EXAMPLES = examples()


def test_there_are_runnable_examples_in_the_pages_that_teach() -> None:
    pages = {name.split("#")[0] for name, _, _ in EXAMPLES}
    assert {"quickstart.md", "events.md", "configuration.md", "dashboard.md"} <= pages


@pytest.mark.parametrize(("name", "language", "code"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_a_runnable_example_succeeds(name: str, language: str, code: str, tmp_path: Path) -> None:
    root = tmp_path / "root"
    env = {key: value for key, value in os.environ.items() if not key.startswith("HIVE_")}
    env |= {
        "HIVE_ROOT": str(root),
        "HIVE_COMMAND": json.dumps(fake_agent_command()),
        "HIVE_GRACE_PERIOD": "5",
        "PATH": f"{BIN}:{env.get('PATH', '')}",
    }
    argv = ["bash", "-euo", "pipefail", "-c", code] if language == "sh" else [sys.executable]
    done = _run(argv, None if language == "sh" else code, tmp_path, env, root)
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"


def _run(
    argv: list[str], stdin: str | None, cwd: Path, env: dict[str, str], root: Path
) -> subprocess.CompletedProcess[str]:
    """Run an example; whatever it leaves running on ``root`` is stopped, pass or fail."""
    try:
        return subprocess.run(
            argv,
            input=stdin,
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        _clean(root)


def _clean(root: Path) -> None:
    """A daemon an example started and did not shut down, and any agent left: gone."""
    holder = DaemonLock(root).holder()
    if holder is not None:
        os.kill(holder, signal.SIGTERM)
        DaemonLock(root).wait_released(30)
    kill_leftovers([root / "sessions"])


def test_every_setting_is_documented() -> None:
    page = (DOCS / "configuration.md").read_text()
    for name in HiveConfig.model_fields:
        assert f"| `{name}` | `HIVE_{name.upper()}`" in page, name


def test_every_page_the_index_promises_exists_and_is_linked_from_the_readme() -> None:
    index = (DOCS / "index.md").read_text()
    readme = (ROOT / "README.md").read_text()
    for page in sorted(DOCS.glob("*.md")):
        if page.name != "index.md":
            assert f"]({page.name})" in index, f"index.md does not link {page.name}"
        assert f"](docs/{page.name})" in readme, f"README.md does not link {page.name}"
    for link in re.findall(r"\]\(([a-z-]+\.md)\)", index):
        assert (DOCS / link).exists(), link


def test_the_readme_shell_block_runs_as_pasted(tmp_path: Path) -> None:
    """From the checkout, with no HIVE_* set and hivectl not on PATH, as a new user is."""
    venv = ROOT / ".venv" / "bin"
    if not (venv / "hivectl").exists():
        pytest.skip("the README's block uses the .venv that make test creates")
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"<!-- readme-shell -->\n```sh\n(.*?)```", readme, re.DOTALL)
    assert code is not None
    root = tmp_path / "root"
    script = code.group(1).replace("HIVE_ROOT=/tmp/hive\n", f"HIVE_ROOT={root}\n")
    assert str(root) in script
    env = {key: value for key, value in os.environ.items() if not key.startswith("HIVE_")}
    path = [part for part in env.get("PATH", "").split(os.pathsep) if Path(part) != venv]
    env["PATH"] = os.pathsep.join(path)
    done = _run(["bash", "-euo", "pipefail", "-c", script], None, ROOT, env, root)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    lines = done.stdout.splitlines()
    assert lines[:2] == ["running", "completed"]
    output = Path(lines[2])
    assert (output.parent.parent, output.name) == (root / "sessions", "output")
    events = [json.loads(line) for line in lines[3:] if line.startswith("{")]
    assert {event["session_id"] for event in events} == {output.parent.name}
    assert [event["to"] for event in events if event["type"] == "session.status"] == [
        "created",
        "starting",
        "running",
        "completed",
    ]
