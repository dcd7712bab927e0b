"""A control group per run: what "this run's processes" means, and what limits them.

The Hive keeps one cgroup of its own in each hierarchy it uses, ``hive-<hash of its
root>``, under the cgroup it was started in, and one child of it per run: ``<uuid>.<run>``
(``<uuid>.setup`` for the setup step). The shim writes its own pid into the run's
``cgroup.procs`` files before it starts the agent, so no process of the run ever exists
outside them and every descendant inherits them, whatever it does to its process group,
session or environment.

Which hierarchy does what (``mode``):

* ``v2``: the unified hierarchy holds membership, kill (``cgroup.kill``) and the limits;
* ``hybrid``: the unified hierarchy holds membership and kill, the v1 ``memory``, ``pids``
  and ``cpu`` hierarchies the limits (a v2 mount without those controllers);
* ``v1``: no writable unified hierarchy: the v1 ``freezer`` holds membership and a kill is
  freeze, SIGKILL each member, thaw, until it is empty;
* ``none``: nothing writable: process groups and the session marker, as before cgroups.

Every file is read and written with one ``os.open``/``read``/``write``: these are hot
paths (a few calls per run), and cgroupfs files take each write as one command.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import posixpath
import re
import signal
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import structlog

from hive_actors._models import Limits, Usage
from hive_actors._process import read_small
from hive_actors.errors import InvalidLimits

log = structlog.get_logger(__name__)

MODES = ("v2", "hybrid", "v1", "none")
_RUN_NAME = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}\.(\d+|setup)$")
"""A run's cgroup (``<uuid>.<run>``, ``<uuid>.setup``): nothing else under the Hive's
is one of its runs."""
EMPTY_POLL = 0.01
"""How often a cgroup being waited on to empty is looked at (v1 tells no one)."""
CPU_PERIOD = 100_000
"""The quota period of a ``cpus`` limit, in microseconds (the kernel's default)."""
_CONTROLLER = {"memory": "memory", "pids": "pids", "cpus": "cpu"}
"""The controller each limit needs."""
_V1_NEEDED = ("memory", "pids", "cpu", "cpuacct", "freezer")


def _read(path: Path) -> str:
    """The whole file: a kernel list (``cgroup.procs``, mountinfo) comes a page a read."""
    return read_small(path).decode()


def _write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _keyed(path: Path) -> dict[str, int]:
    """A flat-keyed cgroup file (``memory.events``, ``cpu.stat``...) as a dict; empty if
    it cannot be read."""
    try:
        text = _read(path)
    except OSError:
        return {}
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            values[name] = int(value)
    return values


def _number(path: Path) -> int | None:
    try:
        return int(_read(path))
    except (OSError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class RunCgroup:
    """One run's cgroup, in every hierarchy the Hive uses (the same name in each)."""

    name: str
    membership: Path
    """Where its members are listed and killed: the unified hierarchy, or v1's freezer."""
    unified: bool
    memory: Path | None = None
    pids: Path | None = None
    cpu: Path | None = None
    """Where its limits and counters are (the membership dir itself under ``v2``)."""
    cpuacct: Path | None = None
    """v1's CPU time, where the membership is not a unified cgroup."""
    memory_limited: bool = False
    """It has a memory limit (its kills are worth counting)."""

    def is_v2(self, path: Path | None) -> bool:
        """``path`` is this run's unified cgroup (v2 files), not a v1 one."""
        return self.unified and path == self.membership

    @property
    def dirs(self) -> list[Path]:
        """Each of its directories, membership first."""
        found = [self.membership]
        for path in (self.memory, self.pids, self.cpu, self.cpuacct):
            if path is not None and path not in found:
                found.append(path)
        return found

    @property
    def procs_files(self) -> list[str]:
        """What the shim joins: the ``cgroup.procs`` of each directory."""
        return [str(path / "cgroup.procs") for path in self.dirs]

    @property
    def events_file(self) -> Path | None:
        """The unified ``cgroup.events``: ``populated`` changes wake a poll (EPOLLPRI)."""
        return self.membership / "cgroup.events" if self.unified else None

    def members(self) -> list[int]:
        """The pids in it now (none if it is gone)."""
        try:
            return [int(pid) for pid in _read(self.membership / "cgroup.procs").split()]
        except OSError:
            return []

    def populated(self) -> bool:
        if self.unified:
            return _keyed(self.membership / "cgroup.events").get("populated", 0) == 1
        return bool(self.members())

    def wait_empty(self, deadline: float) -> bool:
        """Wait until no process is left in it, or ``deadline`` (monotonic) passes;
        True if it is empty."""
        while self.populated():
            if time.monotonic() >= deadline:
                return False
            time.sleep(EMPTY_POLL)
        return True

    def kill(self) -> None:
        """SIGKILL every member, the ones it forks meanwhile included; returns once the
        kills are sent (``populated`` turns 0 when the kernel has carried them out)."""
        if not self.unified:
            self._freeze_and_kill(self.membership / "freezer.state", "FROZEN", "THAWED")
            return
        try:
            _write(self.membership / "cgroup.kill", "1")
        except FileNotFoundError:
            if self.membership.is_dir():  # a kernel before 5.14: no cgroup.kill yet
                self._freeze_and_kill(self.membership / "cgroup.freeze", "1", "0")

    def _freeze_and_kill(self, state: Path, frozen: str, thawed: str, rounds: int = 100) -> None:
        """Freeze it (no member can fork or exit), SIGKILL each member, thaw; again while
        members remain that were not signalled (a fork caught mid-way)."""
        signalled: set[int] = set()
        for _ in range(rounds):
            try:
                _write(state, frozen)
                for _wait in range(100):  # freezing takes until every task stopped; a
                    # task stuck on its way out holds it FREEZING: kill after 0.1 s anyway
                    if self._frozen(state, frozen):
                        break
                    time.sleep(0.001)
                pids = self.members()
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                signalled.update(pids)
            except FileNotFoundError:
                return
            finally:
                with contextlib.suppress(OSError):
                    _write(state, thawed)
            if not set(self.members()) - signalled:
                return

    def _frozen(self, state: Path, frozen: str) -> bool:
        if self.unified:
            return _keyed(self.membership / "cgroup.events").get("frozen") == 1
        return _read(state).strip() == frozen

    def remove(self) -> bool:
        """Delete its directories, and any cgroups made in them (an agent may make its
        own); False if one still has a member (left for later)."""
        removed = True
        for path in reversed(self.dirs):
            for below, subdirs, _files in os.walk(path, topdown=False):
                for name in subdirs:
                    with contextlib.suppress(OSError):
                        os.rmdir(os.path.join(below, name))
            try:
                path.rmdir()
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                    log.warning("cannot remove a run's cgroup", path=str(path), error=str(exc))
                removed = False
        return removed

    def usage(self, over: bool = False) -> Usage:
        """What the run uses now, or used (``over``: it has no process left)."""
        memory = peak = None
        if self.memory is not None:
            if self.is_v2(self.memory):
                memory = _number(self.memory / "memory.current")
                peak = _number(self.memory / "memory.peak")
            else:
                memory = _number(self.memory / "memory.usage_in_bytes")
                peak = _number(self.memory / "memory.max_usage_in_bytes")
        cpu_seconds = None
        if self.unified:  # cpu.stat exists in every unified cgroup, controller or not
            usec = _keyed(self.membership / "cpu.stat").get("usage_usec")
            cpu_seconds = None if usec is None else usec / 1e6
        elif self.cpuacct is not None:
            nsec = _number(self.cpuacct / "cpuacct.usage")
            cpu_seconds = None if nsec is None else nsec / 1e9
        return Usage(
            memory_bytes=memory,
            memory_peak_bytes=peak,
            cpu_seconds=None if cpu_seconds is None else round(cpu_seconds, 6),
            processes=0 if over else len(self.members()),
        )

    def memory_kills(self) -> int:
        """How many of its processes the kernel killed for its memory limit."""
        if self.memory is None or not self.memory_limited:
            return 0
        if self.is_v2(self.memory):
            return _keyed(self.memory / "memory.events").get("oom_kill", 0)
        control = _keyed(self.memory / "memory.oom_control")  # v1
        if "oom_kill" in control:  # Linux 4.13 and later
            return control["oom_kill"]
        return control.get("under_oom", 0)

    def forks_refused(self) -> int:
        """How many forks its process limit refused."""
        if self.pids is None:
            return 0
        return _keyed(self.pids / "pids.events").get("max", 0)


@dataclass(frozen=True, slots=True)
class _Hierarchy:
    mount: Path
    own: str
    """The cgroup this process was started in, relative to the mount."""

    @property
    def parent(self) -> Path:
        return self.mount / self.own.lstrip("/")


@dataclass
class Cgroups:
    """The Hive's cgroups: where run cgroups go, and which limits they can have."""

    mode: str
    membership: Path | None = None
    """The Hive's own cgroup in the membership hierarchy."""
    unified: bool = False
    limit_dirs: dict[str, Path] = field(default_factory=dict)
    """The Hive's own cgroup in the hierarchy of each limit it can set."""
    cpuacct: Path | None = None
    missing: dict[str, str] = field(default_factory=dict)
    """Why each limit it cannot set is missing."""

    @classmethod
    def unavailable(cls, why: str) -> Cgroups:
        """No cgroups (mode ``none``), each limit missing for ``why``."""
        return cls("none", missing=dict.fromkeys(_CONTROLLER, why))

    @property
    def enabled(self) -> bool:
        return self.membership is not None

    def check(self, limits: Limits) -> None:
        """InvalidLimits naming what is missing for the first limit that cannot be set."""
        for name in limits.given():
            if name not in self.limit_dirs:
                raise InvalidLimits(
                    f"the {name} limit needs the cgroup {_CONTROLLER[name]} controller, "
                    f"which this Hive cannot use: {self.missing.get(name, 'no cgroups')}"
                )
        if limits.cpus is not None and "cpus" in self.limit_dirs:
            cap = _v1_cpu_cap(self.limit_dirs["cpus"])
            if cap is not None and limits.cpus > cap:
                raise InvalidLimits(
                    f"the cpus limit of {limits.cpus:g} is more than the {cap:g} cores the "
                    "Hive's own cgroup may use (a v1 quota may not exceed its parent's)"
                )

    def open(self, name: str, limits: Limits | None = None) -> RunCgroup:
        """The run cgroup ``name`` (its directories need not exist)."""
        assert self.membership is not None
        given = set(limits.given()) if limits is not None else set()
        memory = self.limit_dirs.get("memory")
        pids = self.limit_dirs.get("pids") if "pids" in given else None
        cpu = self.limit_dirs.get("cpus") if "cpus" in given else None
        return RunCgroup(
            name=name,
            membership=self.membership / name,
            unified=self.unified,
            memory=None if memory is None else memory / name,
            pids=None if pids is None else pids / name,
            cpu=None if cpu is None else cpu / name,
            cpuacct=None if self.cpuacct is None else self.cpuacct / name,
            memory_limited=limits is not None and limits.memory is not None,
        )

    def existing(self, name: str) -> RunCgroup:
        """The run cgroup ``name`` as an earlier Hive made it: every directory that exists."""
        every = self.open(name, Limits(pids=1, cpus=1.0))
        memory = _if_dir(every.memory)
        return replace(
            every,
            memory=memory,
            pids=_if_dir(every.pids),
            cpu=_if_dir(every.cpu),
            cpuacct=_if_dir(every.cpuacct),
            memory_limited=memory is not None,
        )

    def create(self, name: str, limits: Limits) -> RunCgroup:
        """Make the run cgroup ``name`` with ``limits`` set (OSError if it cannot be)."""
        cgroup = self.open(name, limits)
        try:
            for path in cgroup.dirs:
                with contextlib.suppress(FileExistsError):
                    path.mkdir()
            _set_limits(cgroup, limits)
        except OSError:
            cgroup.remove()
            raise
        return cgroup

    def runs(self) -> list[str]:
        """The names of the run cgroups that exist (made by this Hive or an earlier one)."""
        found: set[str] = set()
        for parent in self.dirs():
            with contextlib.suppress(OSError):
                found.update(
                    entry.name
                    for entry in os.scandir(parent)
                    if entry.is_dir() and _RUN_NAME.match(entry.name)
                )
        return sorted(found)

    def close(self) -> None:
        """Remove the Hive's own cgroups if nothing is left in them."""
        for parent in self.dirs():
            with contextlib.suppress(OSError):
                parent.rmdir()

    def dirs(self) -> Iterator[Path]:
        """The Hive's own cgroups, one in each hierarchy it uses."""
        seen: set[Path] = set()
        for path in (self.membership, *self.limit_dirs.values(), self.cpuacct):
            if path is not None and path not in seen:
                seen.add(path)
                yield path


def _v1_cpu_cap(path: Path) -> float | None:
    """The cores a v1 cpu cgroup's quota, or its nearest ancestor's, allows (None: no
    quota). The kernel refuses a child a quota above it, where v2 lets it be and caps."""
    cap = None
    while (path / "cpu.cfs_quota_us").exists():
        quota = _number(path / "cpu.cfs_quota_us")
        period = _number(path / "cpu.cfs_period_us")
        if quota is not None and period and quota > 0:
            cap = min(cap, quota / period) if cap is not None else quota / period
        path = path.parent
    return cap


def _if_dir(path: Path | None) -> Path | None:
    return path if path is not None and path.is_dir() else None


def _set_limits(cgroup: RunCgroup, limits: Limits) -> None:
    if limits.memory is not None and cgroup.memory is not None:
        if cgroup.is_v2(cgroup.memory):
            _write(cgroup.memory / "memory.max", str(limits.memory))
            with contextlib.suppress(FileNotFoundError):  # no swap accounting
                _write(cgroup.memory / "memory.swap.max", "0")
        else:  # v1: memsw may not go below the memory limit, so it is set after it
            _write(cgroup.memory / "memory.limit_in_bytes", str(limits.memory))
            with contextlib.suppress(FileNotFoundError):
                _write(cgroup.memory / "memory.memsw.limit_in_bytes", str(limits.memory))
    if limits.pids is not None and cgroup.pids is not None:
        _write(cgroup.pids / "pids.max", str(limits.pids))
    if limits.cpus is not None and cgroup.cpu is not None:
        quota = max(1000, round(limits.cpus * CPU_PERIOD))
        if cgroup.is_v2(cgroup.cpu):
            _write(cgroup.cpu / "cpu.max", f"{quota} {CPU_PERIOD}")
        else:
            _write(cgroup.cpu / "cpu.cfs_period_us", str(CPU_PERIOD))
            _write(cgroup.cpu / "cpu.cfs_quota_us", str(quota))


def format_bytes(size: int) -> str:
    """``67108864`` as ``64 MiB``: binary units, as the limits are given."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.3g} {unit}" if unit != "B" else f"{size} B"
        size /= 1024  # type: ignore[assignment]
    return f"{size:.3g} TiB"


def describe_hits(
    detail: str,
    limits: Limits,
    usage: Usage | None,
    memory_kills: int,
    forks_refused: int,
) -> str:
    """A failed run's ``detail``, with the limits that cut it short said first."""
    if memory_kills and limits.memory is not None:
        peak = usage.memory_peak_bytes if usage is not None else None
        seen = f", peak {format_bytes(peak)}" if peak is not None else ""
        what = "a process" if memory_kills == 1 else f"{memory_kills} processes"
        detail = (
            f"{what} killed for reaching the memory limit of "
            f"{format_bytes(limits.memory)}{seen}; the agent {detail}"
        )
    if forks_refused and limits.pids is not None:
        forks = "fork" if forks_refused == 1 else "forks"
        detail += f"; {forks_refused} {forks} refused by the process limit of {limits.pids}"
    return detail


def weakest_mode(modes: Iterable[str]) -> str:
    """The mode of a cluster: its least capable host's (``none`` for no host)."""
    present = set(modes)
    return next((mode for mode in reversed(MODES) if mode in present), "none")


def run_name(session_id: str, run: int, setup: bool = False) -> str:
    """The name of a run's cgroup (the setup step's, which comes before run 1)."""
    return f"{session_id}.setup" if setup else f"{session_id}.{run}"


def session_of(name: str) -> str:
    """The session a run cgroup named ``name`` belongs to (``run_name`` undone)."""
    return name.rsplit(".", 1)[0]


def hive_dir_name(root: Path) -> str:
    """The name of a Hive's own cgroups: one per root (its real path, however it is
    spelled), so two Hives never share one; one Hive lock guards both."""
    return "hive-" + hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]


def detect(root: Path, mountinfo: str | None = None, own: str | None = None) -> Cgroups:
    """The cgroups a Hive on ``root`` can use, its own cgroup made in each of them.

    ``mountinfo`` and ``own`` (the text of /proc/self/mountinfo and /proc/self/cgroup)
    are read from /proc when not given."""
    try:
        mountinfo = _read(Path("/proc/self/mountinfo")) if mountinfo is None else mountinfo
        own = _read(Path("/proc/self/cgroup")) if own is None else own
    except OSError as exc:
        return Cgroups.unavailable(f"cannot read /proc: {exc.strerror}")
    unified, v1 = _hierarchies(mountinfo, own)
    maker = _Maker(hive_dir_name(root))
    membership, in_v2 = (None, set()) if unified is None else _in_unified(unified, maker)
    limit_dirs = dict.fromkeys(in_v2, membership) if membership is not None else {}
    cpuacct = None
    if membership is None and "freezer" in v1:  # v1 alone: the freezer kills
        membership = maker.make(v1["freezer"], "freezer")
        if membership is not None and "cpuacct" in v1:
            cpuacct = maker.make(v1["cpuacct"], "cpuacct")
        unified_membership = False
    else:
        unified_membership = membership is not None
    if membership is not None:
        for limit, controller in _CONTROLLER.items():
            if limit not in limit_dirs and controller in v1:
                path = maker.make(v1[controller], controller)
                if path is not None:
                    limit_dirs[limit] = path
    if membership is None:
        mode = "none"
    elif not unified_membership:
        mode = "v1"
    else:
        mode = "v2" if set(limit_dirs) == in_v2 else "hybrid"
    missing = {
        limit: _why_missing(controller, v1, maker.why, membership)
        for limit, controller in _CONTROLLER.items()
        if limit not in limit_dirs
    }
    return Cgroups(
        mode,
        membership=membership,
        unified=unified_membership,
        limit_dirs=limit_dirs,
        cpuacct=cpuacct,
        missing=missing,
    )


@dataclass
class _Maker:
    """Makes the Hive's own cgroup in a hierarchy, noting why where it cannot."""

    name: str
    why: dict[str, str] = field(default_factory=dict)

    def make(self, hierarchy: _Hierarchy, what: str) -> Path | None:
        path = hierarchy.parent / self.name
        try:
            path.mkdir(exist_ok=True)
        except OSError as exc:
            self.why[what] = f"{path}: {exc.strerror}"
            return None
        if not os.access(path / "cgroup.procs", os.W_OK):
            self.why[what] = f"{path / 'cgroup.procs'}: not writable"
            path.rmdir()
            return None
        return path


def _why_missing(
    controller: str, v1: Mapping[str, _Hierarchy], why: Mapping[str, str], membership: Path | None
) -> str:
    if membership is None:
        reasons = [f"{what}: {text}" for what, text in why.items()]
        if not reasons:
            return "no cgroup hierarchy is mounted"
        return "no writable cgroup hierarchy (" + "; ".join(reasons) + ")"
    if controller in why:
        return f"its v1 hierarchy is not writable ({why[controller]})"
    if f"v2 {controller}" in why and controller not in v1:
        return why[f"v2 {controller}"] + ", and no v1 hierarchy has it"
    return "neither the unified hierarchy nor a v1 hierarchy offers it"


def _in_unified(unified: _Hierarchy, maker: _Maker) -> tuple[Path | None, set[str]]:
    """The Hive's cgroup in the unified hierarchy, and the limits it can set there.

    It goes under our own cgroup; or beside it, if ours holds processes (the kernel lets
    no cgroup but the root both hold processes and give controllers to children) and the
    parent is ours to write: a daemon started in a leaf of a delegated subtree (systemd's
    ``DelegateSubgroup=``) keeps its runs in a sibling of that leaf."""
    membership = maker.make(unified, "v2")
    if membership is None:
        return None, set()
    limits = {
        limit
        for limit, controller in _CONTROLLER.items()
        if _enable(unified.parent, membership, controller, maker.why)
    }
    busy = any("holds processes" in text for text in maker.why.values())
    if len(limits) == len(_CONTROLLER) or not busy or unified.own.strip("/") == "":
        return membership, limits
    beside = _Hierarchy(unified.mount, posixpath.dirname(unified.own.rstrip("/")))
    if beside.own not in ("", "/") and not _delegated(beside.parent):
        return membership, limits  # not ours to write in, however writable
    why = dict(maker.why)
    other = maker.make(beside, "v2 beside")
    if other is None:
        maker.why = why
        return membership, limits
    other_limits = {
        limit
        for limit, controller in _CONTROLLER.items()
        if _enable(beside.parent, other, controller, maker.why)
    }
    if len(other_limits) <= len(limits):
        with contextlib.suppress(OSError):
            other.rmdir()
        maker.why = why
        return membership, limits
    with contextlib.suppress(OSError):
        membership.rmdir()
    return other, other_limits


def _delegated(path: Path) -> bool:
    """``path`` was handed to us to manage: systemd marks a cgroup it delegates with the
    ``trusted.delegate`` (or, for a user's manager, ``user.delegate``) attribute."""
    for name in ("trusted.delegate", "user.delegate"):
        with contextlib.suppress(OSError):
            if os.getxattr(path, name) == b"1":
                return True
    return False


def _enable(parent: Path, hive: Path, controller: str, why: dict[str, str]) -> bool:
    """Make ``controller`` available to the run cgroups under ``hive`` (v2), by
    enabling it in the subtree of our own cgroup and of the Hive's."""
    try:
        available = _read(parent / "cgroup.controllers").split()
    except OSError:
        available = []
    if controller not in available:
        why[f"v2 {controller}"] = "the unified hierarchy does not delegate it to this cgroup"
        return False
    try:
        for path in (parent, hive):
            if controller not in _read(path / "cgroup.subtree_control").split():
                _write(path / "cgroup.subtree_control", f"+{controller}")
    except OSError as exc:
        detail = exc.strerror or str(exc)
        if exc.errno == errno.EBUSY:
            detail = "this process's own cgroup holds processes (see docs/limits.md)"
        why[f"v2 {controller}"] = f"cannot enable it in {path}: {detail}"
        return False
    return True


def _hierarchies(mountinfo: str, own: str) -> tuple[_Hierarchy | None, dict[str, _Hierarchy]]:
    """The unified hierarchy and the v1 ones we care about, each with our own cgroup."""
    own_v2 = None
    own_v1: dict[str, str] = {}
    for line in own.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _id, controllers, path = parts
        if controllers == "":
            own_v2 = path
        for controller in controllers.split(","):
            own_v1[controller] = path
    unified = None
    v1: dict[str, _Hierarchy] = {}
    for line in mountinfo.splitlines():
        before, sep, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        mount_root, mount_point = fields[3], Path(fields[4].replace("\\040", " "))
        if tail[0] == "cgroup2" and own_v2 is not None and unified is None:
            unified = _Hierarchy(mount_point, _relative(own_v2, mount_root))
        elif tail[0] == "cgroup":
            for option in tail[2].split(","):
                if option in _V1_NEEDED and option in own_v1 and option not in v1:
                    v1[option] = _Hierarchy(mount_point, _relative(own_v1[option], mount_root))
    return unified, v1


def _relative(path: str, mount_root: str) -> str:
    """Our cgroup's path inside a mount of the hierarchy whose root is ``mount_root``."""
    if mount_root != "/" and (path == mount_root or path.startswith(mount_root + "/")):
        return path[len(mount_root) :] or "/"
    return path
