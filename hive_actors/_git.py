"""Sessions made from a git repository: a worktree per session, its branch, its changes.

Everything here runs the ``git`` program (argv lists, never a shell) with an environment
cleared of the ``GIT_*`` variables that would point it at another repository. Our calls
that change a repository (worktrees, branches, its config) go one at a time per
repository, across threads and processes alike (a lock file in its git dir), so that no
git of ours reads another's half-made worktree; a lock another program's git holds
(``index.lock``, ``config.lock``, a ref's lock) is waited out briefly. Many sessions made
from one repository at once all succeed.

hive_actors' files in a worktree (``.swarm/``, ``.hive/``, ``session.json``, ``output``)
are kept out of ``git status``, diffs and commits by an excludes file of the worktree's
own (``core.excludesFile`` in its ``config.worktree``, which needs the repository's
``extensions.worktreeConfig``, enabled as git itself does for sparse checkouts): nothing
of ours lands in the repository outside its ``.git`` dir, and its other worktrees see no
change. That excludes file starts with the user's own global one, which it stands in for.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from hive_actors.errors import HiveError, InvalidRepository

log = structlog.get_logger(__name__)

OURS = ("/.swarm/", "/.hive/", "/session.json", "/.session.json.tmp", "/output")
"""hive_actors' own files at the top of a session's worktree, as exclude patterns."""

LOCK_WAIT = 10.0
"""How long a lock another process holds on the repository is waited out."""

_GIT_LOCKED = re.compile(
    r"Unable to create '[^']*\.lock': File exists|could not lock config file [^:]*: File exists|"
    r"failed to read .*worktrees/.*/commondir|cannot open '.*worktrees/.*/locked'"
)
"""git's words for a lock another git holds, or for another git's worktree half made."""

LOCK_FILE = "hive-actors.lock"
"""In a repository's git dir: held by whichever of our calls is changing the repository."""

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()
_worktree_config: set[str] = set()
"""Repositories (their common dirs) known to have extensions.worktreeConfig set."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a session's worktree comes from: a repository, and the commit it starts at."""

    repo: str
    """The repository as the caller named it, made absolute."""
    common_dir: str
    """Its git dir (shared by all its worktrees)."""
    base: str
    """The full sha of the commit the session starts from."""


@dataclass(frozen=True, slots=True)
class FileChange:
    path: str
    insertions: int
    deletions: int
    binary: bool = False

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "insertions": self.insertions,
            "deletions": self.deletions,
            "binary": self.binary,
        }


@dataclass(frozen=True, slots=True)
class Commit:
    sha: str
    subject: str

    def to_json_dict(self) -> dict[str, Any]:
        return {"sha": self.sha, "subject": self.subject}


@dataclass(frozen=True, slots=True)
class Changes:
    """What a session did to its branch: ``Hive.changes(session_id)``."""

    session_id: str
    branch: str
    base: str
    commits: tuple[Commit, ...]
    """Every commit on the branch since ``base``, oldest first."""
    files: tuple[FileChange, ...]
    """Every file that differs from ``base``, committed or not (untracked ones too)."""
    diff: str
    """git's unified diff against ``base``, uncommitted changes included."""
    truncated: bool
    """True when ``diff`` was cut at ``max_diff_bytes`` (at a line's end)."""

    @property
    def insertions(self) -> int:
        return sum(change.insertions for change in self.files)

    @property
    def deletions(self) -> int:
        return sum(change.deletions for change in self.files)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "branch": self.branch,
            "base": self.base,
            "commits": [commit.to_json_dict() for commit in self.commits],
            "files": [change.to_json_dict() for change in self.files],
            "insertions": self.insertions,
            "deletions": self.deletions,
            "diff": self.diff,
            "truncated": self.truncated,
        }

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> Changes:
        return cls(
            session_id=data["session_id"],
            branch=data["branch"],
            base=data["base"],
            commits=tuple(Commit(c["sha"], c["subject"]) for c in data["commits"]),
            files=tuple(
                FileChange(f["path"], f["insertions"], f["deletions"], f.get("binary", False))
                for f in data["files"]
            ),
            diff=data["diff"],
            truncated=data["truncated"],
        )


class GitFailed(HiveError):
    """A git command failed; its stderr says why."""

    def __init__(self, argv: Sequence[str], code: int, stderr: str) -> None:
        self.code = code
        self.stderr = stderr.strip()
        super().__init__(f"git {' '.join(argv)} failed ({code}): {self.stderr}")


def git_program() -> str:
    found = shutil.which("git")
    if found is None:
        raise InvalidRepository(
            "a session from a repository needs git, and no git program is on PATH"
        )
    return found


def _environment() -> dict[str, str]:
    """Ours, without what would make git look at another repository, prompt, or
    translate its messages (they are matched and shown as they are)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("GIT_")}
    env.update(LC_ALL="C", GIT_TERMINAL_PROMPT="0")
    return env


def run(
    cwd: str | Path,
    *argv: str,
    env: Mapping[str, str] | None = None,
    locked_retry: bool = False,
) -> str:
    """``git -C cwd argv...``'s stdout; GitFailed with its stderr if it fails.

    With ``locked_retry``, a failure because another process holds one of the repository's
    locks is tried again (for up to ``LOCK_WAIT`` s): git never waits for its own locks.
    """
    deadline = time.monotonic() + LOCK_WAIT
    pause = 0.005
    while True:
        done = subprocess.run(
            [git_program(), "-C", str(cwd), *argv],
            capture_output=True,
            env=dict(env) if env is not None else _environment(),
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if done.returncode == 0:
            return done.stdout.decode(errors="replace")
        stderr = done.stderr.decode(errors="replace")
        if locked_retry and _GIT_LOCKED.search(stderr) and time.monotonic() < deadline:
            time.sleep(pause)  # another process's git holds the lock: it lets go in ms
            pause = min(pause * 2, 0.2)
            continue
        raise GitFailed(argv, done.returncode, stderr)


@contextlib.contextmanager
def repository_lock(common_dir: str) -> Iterator[None]:
    """Held while one of our calls changes the repository of ``common_dir``: by one
    thread of this process (a lock per repository), and by one process (``flock`` on
    ``LOCK_FILE`` in its git dir, which the kernel lets go if the process dies)."""
    with _locks_guard:
        in_process = _locks.setdefault(common_dir, threading.Lock())
    with in_process:
        try:
            fd = os.open(os.path.join(common_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:  # a git dir we may not write: git will say so, more usefully
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # and with it the flock


def resolve(repo: str, ref: str | None) -> Origin:
    """The repository at ``repo`` and the commit ``ref`` names (default its HEAD).

    InvalidRepository naming what is wrong: a path that is not there or not readable, not
    a git repository, an unknown ref, a ref that names no commit.
    """
    path = Path(repo)
    if not path.exists():
        raise InvalidRepository(f"repository {repo} does not exist")
    if not path.is_dir():
        raise InvalidRepository(f"repository {repo} is not a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise InvalidRepository(f"repository {repo} cannot be read by this process")
    try:
        common_dir = run(path, "rev-parse", "--path-format=absolute", "--git-common-dir").strip()
    except GitFailed as exc:
        if "not a git repository" in exc.stderr:
            raise InvalidRepository(f"{repo} is not a git repository") from None
        raise InvalidRepository(f"repository {repo} cannot be used: {exc.stderr}") from None
    target = "HEAD" if ref is None else ref
    try:
        base = run(path, "rev-parse", "--verify", "--quiet", f"{target}^{{commit}}").strip()
    except GitFailed:
        raise InvalidRepository(_why_no_commit(path, repo, target)) from None
    return Origin(repo=str(path), common_dir=str(Path(common_dir).resolve()), base=base)


def _why_no_commit(path: Path, repo: str, ref: str) -> str:
    try:
        kind = run(path, "cat-file", "-t", ref).strip()
    except GitFailed:
        if ref == "HEAD":
            return f"repository {repo} has no commit yet: its HEAD names none"
        return f"ref {ref!r} is not a branch, tag or commit of repository {repo}"
    return f"ref {ref!r} of repository {repo} names a {kind}, not a commit"


def add_worktree(origin: Origin, worktree: Path, branch: str) -> None:
    """Make ``worktree`` a new worktree of ``origin.repo`` on a new ``branch`` at its base,
    with hive_actors' own files kept out of git's sight; InvalidRepository (and nothing
    left: no worktree registered, no branch, no directory) if git refuses.
    """
    with repository_lock(origin.common_dir):
        _enable_worktree_config(origin)
        if _branch_at(origin.repo, branch) is not None:
            raise InvalidRepository(
                f"cannot make branch {branch!r} in repository {origin.repo}: it exists already"
            )
        try:
            run(
                origin.repo,
                "worktree",
                "add",
                "--quiet",
                "-b",
                branch,
                str(worktree),
                origin.base,
                locked_retry=True,
            )
        except GitFailed as exc:
            _undo(origin, worktree, branch)  # whatever of it git made before it failed
            raise InvalidRepository(
                f"cannot make branch {branch!r} and its worktree in repository "
                f"{origin.repo}: {exc.stderr}"
            ) from None
        try:
            clash = [name.strip("/") for name in OURS if (worktree / name.strip("/")).exists()]
            if clash:
                raise InvalidRepository(
                    f"repository {origin.repo} has {', '.join(clash)} at its top level at "
                    f"{origin.base[:12]}, where hive_actors keeps a session's own files; "
                    "start from a commit without them"
                )
            _exclude_ours(worktree)
        except BaseException:
            _undo(origin, worktree, branch)
            raise


def untouched(origin: Origin, branch: str) -> bool:
    """``branch`` exists and is still at the commit the session started from: nothing was
    done on it (the debris of a create cut short, which may be taken back)."""
    return _branch_at(origin.repo, branch) == origin.base


def _branch_at(repo: str, branch: str) -> str | None:
    """The commit ``branch`` points at; None if there is no such branch."""
    try:
        return run(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}").strip()
    except GitFailed:
        return None


def _enable_worktree_config(origin: Origin) -> None:
    """Let each worktree have config of its own (``config.worktree``): set once per
    repository, in its own config (git reads it in repositories of either format).

    As ``git sparse-checkout`` does when it enables it: ``core.bare`` (if true) and
    ``core.worktree`` move from the shared config to the main worktree's own, since
    with the extension every worktree would read them from the shared one."""
    if origin.common_dir in _worktree_config:
        return
    common = Path(origin.common_dir)
    try:
        if _config_get(common / "config", "extensions.worktreeConfig") != "true":
            for key in ("core.bare", "core.worktree"):
                value = _config_get(common / "config", key)
                if value is not None and (key != "core.bare" or value == "true"):
                    _config(origin, "--file", str(common / "config.worktree"), key, value)
                    _config(origin, "--file", str(common / "config"), "--unset", key)
            _config(origin, "--file", str(common / "config"), "extensions.worktreeConfig", "true")
    except GitFailed as exc:
        raise InvalidRepository(
            f"cannot set extensions.worktreeConfig in repository {origin.repo}: {exc.stderr}"
        ) from None
    _worktree_config.add(origin.common_dir)


def _config_get(file: Path, key: str) -> str | None:
    try:
        return run(file.parent, "config", "--file", str(file), "--get", key).strip()
    except GitFailed:
        return None


def _config(origin: Origin, *argv: str) -> None:
    run(origin.common_dir, "config", *argv, locked_retry=True)


def worktree_git_dir(worktree: Path) -> Path:
    """A linked worktree's own git dir (``<common dir>/worktrees/<name>``)."""
    text = (worktree / ".git").read_text()
    if not text.startswith("gitdir: "):
        raise OSError(f"{worktree / '.git'} is not a linked worktree's .git file")
    return Path(text[len("gitdir: ") :].strip())


def _exclude_ours(worktree: Path) -> None:
    """Write the worktree's excludes file (in its ``.hive/``, itself excluded) and point
    its own config at it. The file starts with what the user's own excludes file holds
    now (``core.excludesFile``, else ``$XDG_CONFIG_HOME/git/ignore``), which it replaces
    in this worktree: what the user ignores everywhere (``.env``, say) stays ignored."""
    hive_dir = worktree / ".hive"
    hive_dir.mkdir(mode=0o700)
    exclude = hive_dir / "exclude"
    ours = "".join(pattern + "\n" for pattern in OURS)
    exclude.write_text(f"{_users_excludes(worktree)}\n# hive_actors' own files\n{ours}")
    config = worktree_git_dir(worktree) / "config.worktree"
    config.write_text(f'[core]\n\texcludesFile = "{_quoted(str(exclude))}"\n')


def _users_excludes(worktree: Path) -> str:
    try:
        named = run(worktree, "config", "--path", "--get", "core.excludesFile").strip()
    except GitFailed:
        config_home = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
        named = os.path.join(config_home, "git", "ignore")
    try:
        return Path(named).read_text(errors="replace")
    except OSError:  # none, or not readable: nothing to carry over
        return ""


def _quoted(text: str) -> str:
    """A value for a git config file, inside double quotes."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _undo(origin: Origin, worktree: Path, branch: str | None) -> None:
    """Take back what a worktree add made, as far as it got (the caller holds the lock)."""
    _remove(origin.common_dir, worktree)
    if branch is not None:
        with contextlib.suppress(GitFailed):
            run(origin.common_dir, "branch", "-D", "--quiet", branch, locked_retry=True)


def _remove(common_dir: str, worktree: Path) -> None:
    """Remove ``worktree`` and git's record of it, and no other worktree's record (no
    ``prune``: it would drop those of the user's worktrees that are away for now)."""
    try:
        run(common_dir, "worktree", "remove", "--force", "--force", str(worktree))
    except GitFailed:  # its dir is gone or broken: its record is dropped by hand
        shutil.rmtree(worktree, ignore_errors=True)
        records = Path(common_dir) / "worktrees"
        with contextlib.suppress(OSError):
            for record in records.iterdir():
                with contextlib.suppress(OSError):
                    if Path((record / "gitdir").read_text().strip()) == worktree / ".git":
                        shutil.rmtree(record)


def remove_worktree(repo: str, worktree: Path, branch: str | None, delete_branch: bool) -> None:
    """Remove a session's worktree (its branch stays unless ``delete_branch``).

    The repository is found from the worktree itself (its ``.git`` file), else at
    ``repo``. Never raises: a repository that was moved or deleted, or a branch git will
    not delete, is logged; the session's directory goes anyway (the caller removes it).
    """
    try:
        common_dir = str(worktree_git_dir(worktree).parent.parent)
        run(common_dir, "rev-parse", "--git-dir")
    except (GitFailed, OSError):
        try:
            common_dir = run(repo, "rev-parse", "--path-format=absolute", "--git-common-dir")
        except (GitFailed, InvalidRepository, OSError) as exc:
            log.warning("repository gone; worktree removed without it", repo=repo, why=str(exc))
            return
    common_dir = str(Path(common_dir.strip()).resolve())
    with repository_lock(common_dir):
        _remove(common_dir, worktree)
        if delete_branch and branch is not None:
            try:
                run(common_dir, "branch", "-D", "--quiet", branch, locked_retry=True)
            except GitFailed as exc:
                log.warning("branch not deleted", branch=branch, why=exc.stderr)


def changes(session_id: str, worktree: Path, base: str, branch: str, max_bytes: int) -> Changes:
    """What the session's worktree holds that ``base`` does not: commits, files, diff.

    The working tree is diffed against ``base``, with a copy of the worktree's index in
    which untracked files are marked as to be added (``add --intent-to-add``): so they
    count too, no file's content is written into the repository, and the worktree's own
    index is left as it is. The diff is git's plain one whatever the user's config says
    (no colour, no external or text-converting diff, ``a/`` and ``b/`` prefixes). Rename
    detection is off: a moved file is a deletion and an addition.
    """
    git_dir = worktree_git_dir(worktree)
    index = worktree / ".hive" / f"changes-{threading.get_ident()}.index"
    env = _environment()
    env["GIT_INDEX_FILE"] = str(index)
    try:
        with contextlib.suppress(FileNotFoundError):
            shutil.copyfile(git_dir / "index", index)
        run(worktree, "add", "--all", "--intent-to-add", env=env)
        log_text = run(worktree, "log", "--reverse", "--format=%H%x1f%s", f"{base}..HEAD")
        numstat = run(worktree, "diff", *_PLAIN_DIFF, "--numstat", "-z", base, env=env)
        diff, truncated = _bounded_output(worktree, ["diff", *_PLAIN_DIFF, base], env, max_bytes)
    finally:
        with contextlib.suppress(FileNotFoundError):
            index.unlink()
    commits = tuple(
        Commit(*line.split("\x1f", 1)) for line in log_text.splitlines() if "\x1f" in line
    )
    return Changes(
        session_id=session_id,
        branch=branch,
        base=base,
        commits=commits,
        files=_parse_numstat(numstat),
        diff=diff,
        truncated=truncated,
    )


_PLAIN_DIFF = (
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--no-renames",
    "--src-prefix=a/",
    "--dst-prefix=b/",
)


def _parse_numstat(text: str) -> tuple[FileChange, ...]:
    """``git diff --numstat -z`` (no renames): ``added\\tdeleted\\tpath\\0`` per file,
    ``-`` for both counts of a binary file."""
    files = []
    for record in text.split("\0"):
        if not record:
            continue
        added, deleted, path = record.split("\t", 2)
        binary = added == "-"
        files.append(
            FileChange(path, 0 if binary else int(added), 0 if binary else int(deleted), binary)
        )
    return tuple(files)


def _bounded_output(
    cwd: Path, argv: list[str], env: Mapping[str, str], max_bytes: int
) -> tuple[str, bool]:
    """A git command's stdout, cut at the last line end within ``max_bytes``; whether it
    was cut. Reading stops there: a huge diff costs no more than ``max_bytes``."""
    with subprocess.Popen(
        [git_program(), "-C", str(cwd), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=dict(env),
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        data = process.stdout.read(max_bytes + 1)
        truncated = len(data) > max_bytes
        if truncated:
            process.kill()
            data = data[:max_bytes]
            data = data[: data.rfind(b"\n") + 1]
            process.wait()
            return data.decode(errors="replace"), True
        stderr = process.stderr.read()
        if process.wait() != 0:
            raise GitFailed(argv, process.returncode, stderr.decode(errors="replace"))
    return data.decode(errors="replace"), False
