"""The public surface is what the docs say it is, and the README example runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import hive_actors
from hive_actors import errors

ROOT = Path(__file__).resolve().parent.parent


def test_all_is_sorted_and_matches_the_documented_names() -> None:
    assert hive_actors.__all__ == sorted(hive_actors.__all__)
    documented = re.findall(
        r"^- `([^`]+)`$", (ROOT / "docs" / "python-api.md").read_text(), re.MULTILINE
    )
    assert sorted(documented) == hive_actors.__all__
    for name in hive_actors.__all__:
        assert hasattr(hive_actors, name), name


def test_errors_module_exports_one_hierarchy() -> None:
    assert errors.__all__ == sorted(errors.__all__)
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.HiveError)
        assert cls.__doc__, f"{name} needs a docstring saying how it differs"
        assert getattr(hive_actors, name) is cls


def test_the_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- readme-example -->", 1)[1]
    code = re.search(r"```python\n(.*?)```", block, re.DOTALL)
    assert code is not None
    source = code.group(1).replace('"/tmp/hive-readme"', repr(str(tmp_path / "readme")))
    assert len(source.strip().splitlines()) <= 12
    exec(compile(source, "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert "completed" in out
    assert any(line.endswith("/output") for line in out)
    assert "result reviewed" in out[-1]
