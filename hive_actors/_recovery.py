"""What a Hive does on start with the sessions an earlier Hive on the same root left.

Every session that was not settled is reconciled, and what a subscriber would have seen
is announced with ``recovered`` set:

* created, queued, idle: picked up as they were;
* starting, running, stopping with an exit status the shim recorded: that outcome, and
  whatever the run left (its group's members, its escapees) is killed: the group was
  not killed when its shim ended, with no hive to reap it;
* with its agent still alive (same pid *and* start time): re-adopted, its exit recorded
  when it comes (a stop that had begun goes on);
* otherwise: failed, reason ``lost``. Whatever of the run still runs is killed, so
  nothing runs twice, or on unwatched: the processes of a start that was never
  confirmed, an agent whose shim was killed (by a container tool, the OOM killer) and
  what it started.

What a run left is found by its cgroup (``_cgroups``); without cgroups, by its session
marker, and by its process group where a member with the marker proves the group is
still the run's (see ``orphan_processes``).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from hive_actors import _workspace
from hive_actors._cgroups import run_name, session_of
from hive_actors._core import HiveCore
from hive_actors._models import SessionInfo
from hive_actors._process import (
    describe_exit,
    describe_lost,
    killed_by_signal,
    orphan_processes,
    process_start_time,
    read_status,
    signal_each,
)
from hive_actors._reaper import DRAIN_LIMIT
from hive_actors._runner import status_file
from hive_actors._states import TERMINAL, Status, stop_outcome
from hive_actors.errors import CorruptState

log = structlog.get_logger(__name__)

RESUMABLE = frozenset({Status.CREATED, Status.QUEUED, Status.IDLE})

StartChild = Callable[[SessionInfo, bool], None]


def recover(core: HiveCore, start_child: StartChild) -> None:
    """Load every session from the registry and reconcile the unsettled ones."""
    moved = False
    for row in core.registry.sessions():
        info = _move_env_values(core, row) if row.legacy_env else row
        moved = moved or info is not row
        core.table.put(info)
        _check_mirror(info)
    if moved:
        core.registry.scrub()
    _report_unregistered(core)
    unsettled = [info for info in core.table.all() if info.status not in TERMINAL]
    settling = [info for info in unsettled if info.status not in RESUMABLE]
    outcomes = {
        info.session_id: None
        if info.setting_up
        else read_status(status_file(Path(info.working_dir), info.runs))
        for info in settling
    }
    alive = {  # the shim lives on: its agent is re-adopted
        info.session_id
        for info in settling
        if outcomes[info.session_id] is None
        and info.pid is not None
        # A setup step is re-adopted whatever became of it: how it ended (recorded,
        # or lost) decides whether the agent's first run starts, as if watched.
        and (info.setting_up or process_start_time(info.pid) == info.pid_start)
    }
    # Every other run is over, or watched by no shim: what it left would run on unwatched,
    # or run twice once the session starts again. A shim that wrote its status between
    # the first read and the look at its pid ended like any other: read it once more.
    for info in settling:
        if outcomes[info.session_id] is None and info.session_id not in alive:
            outcomes[info.session_id] = read_status(status_file(Path(info.working_dir), info.runs))
    # Before any session can run again:
    strays = _kill_leftovers(core, settling, alive)
    for info in unsettled:
        if info.status in RESUMABLE:
            start_child(info, False)
            continue
        code = outcomes[info.session_id]
        leftovers = strays.get(info.session_id, [])
        if code is not None:
            _record_outcome(core, info, code, start_child)
        elif info.session_id in alive:
            log.info("re-adopting agent", session_id=info.session_id, pid=info.pid)
            start_child(info, True)
        elif info.status is Status.STOPPING and core.cgroups.enabled:
            # The stop's SIGKILL takes the shim too, with a cgroup: no status is its mark.
            cause = "its stop was under way when its Hive ended, and no exit status was left"
            core.commit(
                info,
                stop_outcome(info.reason),
                reason=info.reason or "requested",
                detail=describe_lost(cause, leftovers),
                exit_code=None,
                pid=None,
                recovered=True,
            )
        else:
            detail = _describe_lost(info, leftovers)
            log.warning("session lost", session_id=info.session_id, detail=detail)
            core.commit(
                info,
                Status.FAILED,
                reason="lost",
                detail=detail,
                exit_code=None,
                pid=None,
                recovered=True,
            )


def _kill_leftovers(
    core: HiveCore, settling: list[SessionInfo], alive: set[str]
) -> dict[str, list[int]]:
    """Kill every process of a run that is not re-adopted; their pids by session.

    With cgroups, those are the members of every run cgroup of a known session but the
    re-adopted runs' (of sessions settling or settled: a crash may come anywhere), and
    every such cgroup is removed once empty. Without cgroups, and for a run started
    without one (by a Hive with cgroups off), they are found by a pass over /proc."""
    cgroups = core.cgroups
    existing = set(cgroups.runs()) if cgroups.enabled else set()
    over = {
        info.session_id: info.pid
        for info in settling
        if info.session_id not in alive
        and run_name(info.session_id, info.runs, info.setting_up) not in existing
    }
    found = orphan_processes(over) if over else {}
    for pids in found.values():
        signal_each(pids, signal.SIGKILL)
    if not cgroups.enabled:
        return found
    keep = {
        run_name(info.session_id, info.runs, info.setting_up)
        for info in settling
        if info.session_id in alive
    }
    doomed = []
    for name in existing - keep:
        if core.table.get(session_of(name)) is None:  # not this root's: not ours to kill
            log.warning("a run cgroup of no known session left alone", cgroup=name)
            continue
        doomed.append(cgroups.existing(name))
    for cgroup in doomed:
        members = cgroup.members()
        if cgroup.populated():
            cgroup.kill()
            found.setdefault(session_of(cgroup.name), []).extend(members)
    deadline = time.monotonic() + DRAIN_LIMIT  # one for all: they were all killed at once
    for cgroup in doomed:
        cgroup.wait_empty(deadline)
        if not cgroup.remove():
            log.warning("a run's cgroup is still busy; left for the next start", cgroup=cgroup.name)
    return found


def _move_env_values(core: HiveCore, info: SessionInfo) -> SessionInfo:
    """A row an older hive_actors wrote holds the session's env values: keep them apart,
    owner-only, and rewrite the row and session.json with their names only."""
    core.secrets.put(info.session_id, info.legacy_env)
    info = SessionInfo.model_validate(info.model_dump())  # without the values
    if Path(info.working_dir).is_dir():
        _workspace.write_info(info.working_dir, info)
    core.registry.update(info, [])
    log.info("session env values moved out of its row", session_id=info.session_id)
    return info


def _describe_lost(info: SessionInfo, killed: list[int]) -> str:
    if not killed:
        return describe_exit(None)
    if info.pid is None:
        return describe_lost("its start was never confirmed", killed)
    cause = "its shim ended while no hive ran, without recording the agent's exit status"
    return describe_lost(cause, killed)


def _report_unregistered(core: HiveCore) -> None:
    """Session directories with no registry row: creates interrupted before they were
    acknowledged. Reported, not removed: another host sharing the root may be creating.
    Their env values are removed: ``secrets/`` is this root's alone, and values kept for
    no session are credentials kept for nothing."""
    known = {info.session_id for info in core.table.all()}
    for stray in core.secrets.strays(known):
        log.warning("env values of no session removed", session=stray)
    strays = [
        entry.name
        for entry in core.config.sessions_dir.iterdir()
        if entry.is_dir() and entry.name not in known
    ]
    if strays:
        log.warning("session directories with no registry row", count=len(strays), ids=strays[:10])


def _check_mirror(info: SessionInfo) -> None:
    """session.json mirrors the registry; a damaged one is reported and rewritten from it."""
    working_dir = Path(info.working_dir)
    if not working_dir.is_dir():
        return
    try:
        _workspace.read_info(working_dir)
    except CorruptState as exc:
        log.warning("session.json damaged; rewritten from the registry", detail=str(exc))
        _workspace.write_info(working_dir, info)
    except FileNotFoundError:
        log.warning("session.json missing; rewritten from the registry", session=info.session_id)
        _workspace.write_info(working_dir, info)


def _record_outcome(core: HiveCore, info: SessionInfo, code: int, start_child: StartChild) -> None:
    """The run ended while no hive watched; its shim left ``code``."""
    detail = describe_exit(code)
    if info.status is Status.STARTING:  # spawned, but the spawn was never recorded
        info = core.commit(info, Status.RUNNING, reason="spawned", recovered=True)
    if info.status is Status.STOPPING:
        outcome = stop_outcome(info.reason)
        reason = info.reason or "requested"
    elif code == 0:
        outcome = Status.IDLE if info.persistent else Status.COMPLETED
        reason = "exited"
    else:
        outcome = Status.FAILED
        reason = "signal" if killed_by_signal(code) else "exit_code"
    info = core.commit(
        info, outcome, reason=reason, detail=detail, exit_code=code, pid=None, recovered=True
    )
    if outcome is Status.IDLE:
        start_child(info, False)
