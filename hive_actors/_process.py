"""An agent's OS process: how it is spawned, signalled and reaped.

The agent runs in a new session, so it leads its own process group and one ``killpg``
reaches everything it started (a descendant that calls setsid itself escapes the group).
Signals and the final reap share a lock, so a signal never lands on a recycled pid: the
group is signalled only while its leader is alive or an unreaped zombie, which keeps the
pgid reserved. Escapees are not our children and nothing reserves their pids: they are
signalled by pid from a /proc snapshot a few ms old, as any tool that kills by pid does.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hive_actors._permissions import open_private

if TYPE_CHECKING:
    from hive_actors._cgroups import RunCgroup
    from hive_actors._models import Usage
    from hive_actors._timers import Timers


SHIM = """trap 'stop=1' TERM INT HUP
status=$1; joins=$2; shift 2
while [ "$joins" -gt 0 ]; do echo $$ > "$1" || exit 125; joins=$((joins - 1)); shift; done
if [ -z "$stop" ]; then "$@"; code=$?; else code=143; fi
umask 077
printf '%s\\n' "$code" > "$status"
exit "$code"
"""
"""The group leader of every agent run: ``sh -c SHIM hive-shim STATUS_FILE N CGROUP.PROCS...
ARGV...``.

It first joins the run's N cgroups (``_cgroups``), so that the agent and all it starts
are born in them; one it cannot join fails the run (exit 125) before the agent exists.

It runs the agent in the foreground (so the agent keeps default signal dispositions),
survives the stop signal itself (a trap, which the agent does not inherit; a stop that
arrives before the agent was launched means it never is), and writes the
agent's exit status when it ends: the outcome is on disk even if no hive was alive to see
it. The file is owner-only: the umask is set for that write, once the agent has ended
(the agent's umask is the agent's business). The status is one short line written by one
``write``; a reader takes it only with its newline (``read_status``), so a shim killed
between creating the file and writing it leaves "unknown", as one killed a moment
earlier would. No temp file and rename: that would cost an exec of ``mv`` per run, as
much as the shim itself. The agent's argv is passed as ``"$@"``, never parsed by the
shell. dash costs ~1.7 MB RSS and ~1 ms to start, against ~10 MB and ~5 ms for a Python
interpreter.
"""
SHELL = "/bin/sh"


def describe_exit(code: int | None) -> str:
    """Shell convention: 128+N means killed by signal N."""
    if code is None:
        return "exit status unknown: the agent ended while no hive watched it"
    if 128 < code <= 128 + 64:
        try:
            return f"killed by {signal.Signals(code - 128).name}"
        except ValueError:
            pass
    return f"exited with code {code}"


def killed_by_signal(code: int) -> bool:
    return describe_exit(code).startswith("killed by")


def describe_lost(cause: str, killed: Sequence[int]) -> str:
    """Why a run's exit status is unknown (``cause``), and what of it was still running
    and killed for it: with its outcome unknown, nothing of the run may run on unwatched."""
    if not killed:
        return f"{cause}; nothing of the run was still running"
    shown = ", ".join(str(pid) for pid in sorted(killed)[:10])
    if len(killed) > 10:
        shown += ", ..."
    what = "the process" if len(killed) == 1 else f"the {len(killed)} processes"
    pids = "pid" if len(killed) == 1 else "pids"
    return f"{cause}; killed {what} of the run still running ({pids} {shown})"


def read_small(path: str | Path) -> bytes:
    """A small file's bytes, read without the file object machinery (a hot path: /proc
    files and exit status files are read for every run)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _live_stat(pid: int | str) -> list[bytes] | None:
    """The fields of /proc/<pid>/stat after the command name (the first is the state);
    None for a process that is gone, or a zombie (it has ended; only its pid remains)."""
    try:
        fields = read_small(f"/proc/{pid}/stat").rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in (b"Z", b"X") else fields


def process_start_time(pid: int) -> int | None:
    """When a live process started (clock ticks since boot): with the pid, its identity."""
    fields = _live_stat(pid)
    return None if fields is None else int(fields[19])


def read_status(path: Path) -> int | None:
    """The exit status the shim recorded, or None if there is none (yet) or only a part."""
    try:
        text = read_small(path)
    except OSError:
        return None
    if not text.endswith(b"\n"):
        return None
    try:
        return int(text)
    except ValueError:
        return None


class LogUnavailable(OSError):
    """The session's log cannot be opened: the agent is not started."""

    def __init__(self, path: Path, cause: OSError) -> None:
        super().__init__(cause.errno, f"cannot open the log {path}: {cause.strerror}")


def resolve_program(program: str, env: Mapping[str, str]) -> str:
    """Fail as exec would (FileNotFoundError, PermissionError) before the shim runs it."""
    if "/" in program:
        found = program if os.path.isfile(program) else None
        if found is not None and not os.access(found, os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)
    else:
        found = shutil.which(program, path=env.get("PATH", os.defpath))
    if found is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
    return found


def build_argv(
    template: Sequence[str],
    task: str,
    args: Sequence[str],
    fields: Mapping[str, str] | None = None,
) -> list[str]:
    """The command template with every ``{task}`` filled in, then the start arguments.

    ``fields`` (``{"{run}": "2"}``, say) are filled in first: the task, which is the
    caller's text, is never searched for them."""
    parts = list(template)
    for name, value in (fields or {}).items():
        parts = [part.replace(name, value) for part in parts]
    return [part.replace("{task}", task) for part in parts] + list(args)


@dataclass(eq=False)
class AgentProcess:
    """One run of a session's agent: the shim's process group, spawned or re-adopted."""

    session_id: str
    run: int
    pid: int
    start_time: int | None
    status_file: Path
    popen: subprocess.Popen[bytes] | None = None
    """None for an agent re-adopted from an earlier hive: not our child, not ours to reap."""
    exit_code: int | None = None
    lost_detail: str | None = None
    """Set when the shim ended without recording the agent's exit (a signal it does not
    trap, from outside): how, and what of the run was killed for it."""
    _reaped: bool = False
    _reaped_at: float = 0.0
    """When the run was reaped (monotonic time): its escapees were all born before."""
    _killed: bool = False
    _signalled: bool = False
    """We sent the group a signal: a shim that then ended unrecorded was ended by us (a
    stop that came before its trap was set), not from outside."""
    _sweep_when_reaped: bool = False
    """A SIGKILL went out while the run lasted: look for escapees once more when it is over."""
    cgroup: RunCgroup | None = None
    """The run's cgroup: every process of the run, wherever it went (None: no cgroups,
    so the process group and the session marker in the environment stand for it)."""
    usage: Usage | None = None
    """What the run used, read from its cgroup once it was over."""
    memory_kills: int = 0
    """Processes of the run the kernel killed for its memory limit."""
    forks_refused: int = 0
    """Forks of the run its process limit refused."""
    _timers: Timers | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def spawn(
        cls,
        session_id: str,
        run: int,
        argv: Sequence[str],
        cwd: Path,
        env: Mapping[str, str],
        log_file: Path,
        status_file: Path,
        header: str | None = None,
        cgroup: RunCgroup | None = None,
    ) -> AgentProcess:
        """Start the agent under the shim, in ``cgroup`` if given; OSError if it cannot be
        started.

        ``header`` is written to the log first (a line saying what runs: the setup step)."""
        resolve_program(argv[0], env)
        try:  # owner-only, if it has to be made again
            log = open(log_file, "ab", opener=open_private)  # noqa: SIM115 - closed below
        except OSError as exc:
            raise LogUnavailable(log_file, exc) from exc
        if header is not None:
            try:
                log.write(header.encode(errors="replace"))
                log.flush()
            except OSError as exc:
                log.close()
                raise LogUnavailable(log_file, exc) from exc
        _live_runs[session_id] = run  # before the fork: see Sweeper
        try:
            with log:
                popen = subprocess.Popen(
                    [SHELL, "-c", SHIM, "hive-shim", str(status_file), *_joins(cgroup), *argv],
                    cwd=cwd,
                    env=dict(env),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
        except BaseException:
            _forget_run(session_id, run)
            raise
        process = cls(
            session_id=session_id,
            run=run,
            pid=popen.pid,
            start_time=process_start_time(popen.pid),
            status_file=status_file,
            popen=popen,
            cgroup=cgroup,
        )
        _our_groups[process.pid] = process
        return process

    @classmethod
    def adopt(
        cls,
        session_id: str,
        run: int,
        pid: int,
        start_time: int | None,
        status_file: Path,
        cgroup: RunCgroup | None = None,
    ) -> AgentProcess | None:
        """The agent an earlier hive started, if that very process still runs.

        A pid alone proves nothing (pids are reused); pid and start time together do.
        """
        if start_time is None or process_start_time(pid) != start_time:
            return None
        _live_runs[session_id] = run
        return cls(session_id, run, pid, start_time, status_file, cgroup=cgroup)

    @property
    def stop_asked(self) -> bool:
        """``stop`` was called: the stop hunts this run's escapees itself."""
        return self._timers is not None

    @property
    def reaped_at(self) -> float:
        """When the run was reaped (monotonic time; 0 while it lasts)."""
        return self._reaped_at

    def signal_group(self, signum: int) -> bool:
        """Send ``signum`` to the agent's whole process group; False if it has already exited."""
        with self._lock:
            if self._reaped:
                return False
            try:
                os.killpg(self.pid, signum)
            except ProcessLookupError:
                return False
            self._killed = self._killed or signum == signal.SIGKILL
            self._signalled = True
            return True

    def stop(self, grace: float, timers: Timers) -> None:
        """SIGTERM to every process of the run now, SIGKILL when ``grace`` s have passed.

        "Every process" is the process group plus escapees: descendants that left the
        group (setsid) but carry the session's HIVE_SESSION_ID. The group is signalled
        here; the escapees a moment later from the timer thread, because finding them
        takes a pass over /proc (tens of ms with thousands of processes) that must not
        hold up the caller. The SIGKILL needs no actor either: it fires from the timer
        thread even if the runner that asked for it has died meanwhile. Escapees are
        signalled even if the agent has ended meanwhile: they are not ended with it.
        """
        self._timers = timers
        if grace <= 0:
            self.kill_tree()
        elif self.cgroup is not None:
            # Every member hears the stop signal, the ones outside the group too (once:
            # the group's have had theirs); the SIGKILL, from the timer thread, is the
            # cgroup's own: none can dodge it.
            if self.signal_group(signal.SIGTERM):
                timers.call_later(grace, self.kill_tree)
                signal_each(self._outside_group(self.cgroup.members()), signal.SIGTERM)
        elif self.signal_group(signal.SIGTERM):
            signalled = time.monotonic()
            timers.call_later(0, lambda: self._signal_escapees(signal.SIGTERM, signalled))
            timers.call_later(grace, self.kill_tree, at_close=self._kill_escapees_if_over)

    def kill_tree(self) -> None:
        """SIGKILL every process of the run except the shim.

        The shim survives to wait for its agent and record how it ended, so the run is
        reported over only once the agent is really gone (a SIGKILL is delivered, not
        done, when kill() returns). The agent (the shim's child) is found afresh; the rest
        of the group is killed when the shim is reaped. While the run lasts, escapees come
        from a /proc snapshot shared with other stops (see SCAN_REUSE); once it is over,
        from a pass begun after its reap (see ``_kill_escapees``), which also finds any
        born after the stop signal's pass or after that snapshot.
        """
        if self.cgroup is not None:
            # The shim dies too, so the run ends SIGKILLed (``reap``'s fallback). Its
            # group as well: a shim that has not joined the cgroup yet is in no cgroup
            # of ours, and everything born after it joined is in the cgroup.
            with self._lock:
                if not self._reaped:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.pid, signal.SIGKILL)
                    self._killed = True
                self.cgroup.kill()
            return
        if not self._reaped and self._kill_while_it_lasts():
            return  # the reap asks for the pass below (_sweep_when_reaped)
        # Over: usually since SIGTERM; or since the snapshot, which may miss what it left.
        self._kill_escapees()

    def kill_now(self) -> None:
        """SIGKILL the run at once, nothing waited for: its whole cgroup where it has one,
        else its process group."""
        if self.cgroup is not None:
            self.kill_tree()
        else:
            self.signal_group(signal.SIGKILL)

    def _kill_while_it_lasts(self) -> bool:
        """SIGKILL the run's processes (escapees from a shared snapshot) if it still
        lasts; False if it turned out to be over."""
        # The /proc pass comes before the lock: it can take tens of ms, and the reaper
        # takes this lock to reap, so holding it would hold up every session's exit.
        group, escapees = run_processes(self.session_id, self.pid, time.monotonic() - SCAN_REUSE)
        with self._lock:  # the group only while its leader's pid is still ours
            lasts = not self._reaped
            if lasts:
                children = self._children()
                if not children:
                    # The shim has not launched the agent yet (or it has ended): kill
                    # the shim too. A fork racing a pending SIGKILL fails: none escapes.
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.pid, signal.SIGKILL)
                    self._killed = True
                signal_each([pid for pid in children + group if pid != self.pid], signal.SIGKILL)
                self._sweep_when_reaped = True
        signal_each(escapees, signal.SIGKILL)
        return lasts

    def _kill_escapees(self) -> None:
        """SIGKILL what a run that is over left behind: every process carrying the
        session's marker, seen by a pass over /proc begun after the reap.

        The reap killed the group, so every escapee was born before it and such a pass
        sees each one still alive, however late in the stop it was born. A session never
        runs again once stopped, so the marker is this run's alone. The group id is not:
        without the zombie shim holding it, it may belong to anyone by now.
        """
        _group, escapees = run_processes(self.session_id, None, self._reaped_at)
        signal_each(escapees, signal.SIGKILL)

    def _kill_escapees_if_over(self) -> None:
        """The hive closes before the grace period ends, so no SIGKILL will come: a run
        that is over has its escapees killed now. One still running is the shutdown's
        (terminated with it, or left for the next hive to finish the stop)."""
        if self._reaped:
            self._kill_escapees()

    def _outside_group(self, pids: list[int]) -> list[int]:
        outside = []
        for pid in pids:
            with contextlib.suppress(OSError):  # gone meanwhile: nothing to signal
                if os.getpgid(pid) != self.pid:
                    outside.append(pid)
        return outside

    def _children(self) -> list[int]:
        try:
            text = read_small(f"/proc/{self.pid}/task/{self.pid}/children")
        except OSError:  # no such file (kernel without it, or the shim is gone)
            return []
        return [int(pid) for pid in text.split()]

    def _signal_escapees(self, signum: int, signalled: float) -> None:
        """Signal the run's escapees: seen by a pass over /proc begun after the group's
        signal went out at ``signalled``, so that none born before it is missed."""
        _group, escapees = run_processes(self.session_id, self.pid, signalled)
        signal_each(escapees, signum)

    def reap(self) -> int | None:
        """The exit code of an agent known to have exited (None if nobody knows it).

        Whatever the agent left running in its group is killed first, while the zombie
        shim still holds the group id: an agent's leftovers never outlive its run. The
        shim's status file is the truth. Without it, after a signal of ours (a SIGKILL, or
        a stop signal that came before the shim's trap was set), that is how the run
        ended; otherwise the shim was killed from outside, by a signal it does not
        trap, while the agent may run on: the agent's exit is then unknown (None, with
        ``lost_detail``), and every process of the run is killed now, escapees included.
        """
        with self._lock:
            if not self._reaped:
                recorded = read_status(self.status_file)
                # Over before this reap, with neither a status nor a SIGKILL of ours: the
                # shim was killed from outside (by a signal it does not trap), and the
                # agent may run on, watched by nobody. (A zombie has no start time.)
                orphaned = (
                    recorded is None
                    and not self._killed
                    and not self._signalled
                    and process_start_time(self.pid) != self.start_time
                )
                killed = self._kill_orphans() if orphaned else []
                # The shim traps every stop signal but SIGKILL: no status file after
                # our SIGKILL means that is how it ended.
                fallback = 128 + signal.SIGKILL if self._killed else None
                if self.popen is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.pid, signal.SIGKILL)
                    _our_groups.pop(self.pid, None)  # before the wait frees the group id
                    returncode = self.popen.wait()
                    fallback = 128 - returncode if returncode < 0 else returncode
                    orphaned = orphaned and returncode < 0  # one that exited gave the code
                self.exit_code = fallback if recorded is None else recorded
                if orphaned:
                    self.lost_detail = describe_lost(self._shim_end(fallback), killed)
                    self.exit_code = None
                self._reaped_at = time.monotonic()
                self._reaped = True
                _forget_run(self.session_id, self.run)
                # With a cgroup, what the run left is the reaper's to kill (see its drain).
                if self.cgroup is None and self._sweep_when_reaped and self._timers is not None:
                    # Not here: the reaper reaps every session and a pass takes tens of ms.
                    self._timers.call_later(0, self._kill_escapees, at_close=self._kill_escapees)
            return self.exit_code

    def _kill_orphans(self) -> list[int]:
        """SIGKILL every process of the run; their pids. Without cgroups, its one pass
        over /proc holds up the reaper, but only for a shim killed from outside: rare."""
        if self.cgroup is not None:
            found = self.cgroup.members()
            self.cgroup.kill()
            return found
        found = orphan_processes({self.session_id: self.pid}).get(self.session_id, [])
        signal_each(found, signal.SIGKILL)
        return found

    def cgroup_populated(self) -> bool:
        """Some process of the run is still in its cgroup (False without one)."""
        return self.cgroup is not None and self.cgroup.populated()

    def settle_cgroup(self) -> bool:
        """Once the run's cgroup is empty: keep what it counted, then remove it.
        False if it cannot be removed yet (a member still dying)."""
        if self.cgroup is None:
            return True
        self.usage = self.cgroup.usage(over=True)
        self.memory_kills = self.cgroup.memory_kills()
        self.forks_refused = self.cgroup.forks_refused()
        return self.cgroup.remove()

    def _shim_end(self, code: int | None) -> str:
        if self.popen is None:  # not our child: how it ended is not ours to learn
            return "its shim ended without recording the agent's exit status"
        return f"its shim was {describe_exit(code)}, so the agent's exit status is unknown"


def _joins(cgroup: RunCgroup | None) -> list[str]:
    """The shim's arguments that say which cgroups it joins."""
    files = [] if cgroup is None else cgroup.procs_files
    return [str(len(files)), *files]


def session_processes(session_ids: set[str] | None = None) -> dict[str, list[int]]:
    """Live (not zombie) processes by session: the members of the process group of a run
    this process spawned, and every process with the session's HIVE_SESSION_ID in its
    environment.

    Every process an agent starts inherits the marker unless it clears its environment,
    so this finds a session's processes wherever they went (another process group,
    another session). One pass over /proc serves any number of sessions.
    """
    found: dict[str, list[int]] = {}
    for pid, _pgrp, session_id in _read_proc():
        if session_id is not None and (session_ids is None or session_id in session_ids):
            found.setdefault(session_id, []).append(pid)
    return found


def orphan_processes(runs: Mapping[str, int | None]) -> dict[str, list[int]]:
    """Live processes of runs whose shim has ended unreaped by us, by session: every
    process with the session's marker, and every member of the run's process group
    (``runs[session]``: its shim's pid, None if never known) once a member with the
    marker proves the group is still the run's.

    With its leader gone, a group's id is held by its members alone: it cannot pass to
    another group while one of them lives, but once they are all gone a new process may
    take the id and lead a group of its own. A proven group yields the members that
    cleared their environment too. One pass over /proc serves any number of runs.
    """
    snapshot = _read_proc()
    run_of = {pgid: session_id for session_id, pgid in runs.items() if pgid is not None}
    proven = {pgrp for _pid, pgrp, marker in snapshot if marker and run_of.get(pgrp) == marker}
    found: dict[str, list[int]] = {}
    for pid, pgrp, marker in snapshot:
        if pgrp in proven:
            found.setdefault(run_of[pgrp], []).append(pid)
        elif marker is not None and marker in runs:
            found.setdefault(marker, []).append(pid)
    return found


def run_processes(session_id: str, pgid: int | None, since: float) -> tuple[list[int], list[int]]:
    """Live processes of one run, as a pass over /proc begun after ``since`` (monotonic
    time) saw them: the members of its process group (marker or not), and its escapees
    (the session's marker, in another process group). With ``pgid`` None (a run whose
    group id is no longer its own), every process with the marker is an escapee."""
    group, escapees = [], []
    for pid, pgrp, marker in _scan_proc(since):
        if pgrp == pgid:
            group.append(pid)
        elif marker == session_id:
            escapees.append(pid)
    return group, escapees


def signal_each(pids: list[int], signum: int) -> None:
    """Send ``signum`` to each of ``pids``; one that is gone meanwhile, or that we may not
    signal (an agent's ``sudo``), is skipped."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


SCAN_REUSE = 0.05
"""How old a /proc snapshot may be for the SIGKILL at the end of a grace period, so that
the ends of a mass stop's grace periods share a few passes. (The stop signal's own pass
shares differently: one begun after a signal serves it, however many came before.)"""

_our_groups: weakref.WeakValueDictionary[int, AgentProcess] = weakref.WeakValueDictionary()
"""The runs this process spawned and has not reaped, by process group. Each group's id is
reserved by its unreaped leader, and every member of it is the run's: a /proc pass need
not read their environments (half of its cost) to know whose they are. A run dropped
unreaped leaves on its own, before its handle could let the group id go."""

_live_runs: dict[str, int] = {}
"""Sessions with a run that lasts or is being started (set before its fork), and that
run's number; a run leaves at its reap. A session is here whenever a process of its
current run may exist."""


def _forget_run(session_id: str, run: int) -> None:
    if _live_runs.get(session_id) == run:
        _live_runs.pop(session_id, None)


class Sweeper:
    """Kills what runs that ended on their own left outside their process group.

    A run's reap kills its group; an escapee (a descendant that left it with setsid)
    outlives that. Runs that were stopped have theirs hunted by the stop; for the others
    one pass over /proc, begun after their reaps, serves every run that ended since the
    last pass, at most once every ``interval`` s (and never more often than keeps the
    passes under 5 % of a core): with hundreds of runs ending a second, a pass for each
    would cost a core. So an escapee outlives its run's end by about ``interval``.

    A session that started another run meanwhile is left out: its marker is now also
    the new run's, and the new run's escapees are not to be killed. What its earlier run
    left is then killed when the session's last run ends or is stopped.
    """

    COST_SHARE = 0.05

    def __init__(self, timers: Timers, interval: float = 1.0) -> None:
        self._timers = timers
        self._interval = interval
        self._lock = threading.Lock()
        self._ended: dict[str, float] = {}
        """Session -> when its last run that ended on its own was reaped."""
        self._due = False
        self._spacing = interval

    def run_ended(self, process: AgentProcess) -> None:
        """Note a reaped run (not stopped) whose escapees are to be killed."""
        with self._lock:
            self._ended[process.session_id] = process.reaped_at
            if self._due:
                return
            self._due = True
        self._timers.call_later(self._spacing, self.sweep, at_close=self.sweep)

    def sweep(self) -> None:
        """One pass for every run noted so far; run by the timers (or at their close)."""
        with self._lock:
            ended, self._ended, self._due = self._ended, {}, False
        if not ended:
            return
        began = time.monotonic()
        snapshot = _scan_proc(max(ended.values()))
        # Only now: a run started before the pass ended is in _live_runs by then.
        doomed = [
            pid
            for pid, _group, session_id in snapshot
            if session_id in ended and session_id not in _live_runs
        ]
        signal_each(doomed, signal.SIGKILL)
        self._spacing = max(self._interval, (time.monotonic() - began) / self.COST_SHARE)


_scan_lock = threading.Lock()
_last_scan: tuple[float, list[tuple[int, int, str | None]]] = (-1.0, [])


def _scan_proc(since: float) -> list[tuple[int, int, str | None]]:
    """A snapshot of every live process, from a pass begun after ``since``: the last one
    if it qualifies, else a new one. A mass stop thus shares a few passes, not one each."""
    global _last_scan  # noqa: PLW0603 - one cache for the whole process, like /proc itself
    with _scan_lock:
        began, snapshot = _last_scan
        if began <= since:
            began = time.monotonic()
            snapshot = _read_proc()
            _last_scan = (began, snapshot)
        return snapshot


def _read_proc() -> list[tuple[int, int, str | None]]:
    """(pid, process group, session or None) of every live process we can read: the
    session of one of our runs' groups, or else the HIVE_SESSION_ID in its environment."""
    found: list[tuple[int, int, str | None]] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _live_stat(entry.name)
        if fields is None:
            continue
        group = int(fields[2])
        run = _our_groups.get(group)
        if run is not None:
            found.append((int(entry.name), group, run.session_id))
            continue
        try:
            environ = read_small(f"/proc/{entry.name}/environ")
        except OSError:
            continue
        marker = environ.find(b"HIVE_SESSION_ID=")
        session_id = None
        if marker >= 0:
            end = environ.find(b"\0", marker)
            session_id = environ[marker + 16 : end if end >= 0 else None].decode(errors="replace")
        found.append((int(entry.name), group, session_id))
    return found
