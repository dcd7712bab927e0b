"""The concurrency cap: starts beyond max_running wait, highest priority first, then oldest."""

from __future__ import annotations

from hive_actors import Hive

from .conftest import Hives, Recorder


def _running(hive: Hive) -> set[str]:
    """Sessions holding a slot: starting or running."""
    return {i.session_id for i in hive.list_sessions() if i.status in ("starting", "running")}


def test_starts_beyond_the_cap_queue_by_priority_then_age(hives: Hives, recorder: Recorder) -> None:
    hive = hives.open(max_running=2)
    hive.subscribe_to_all_sessions(recorder)
    first, second = (hive.create_session(f"slot {i}", args=["--sleep", "inf"]) for i in range(2))
    low = hive.create_session("low", "low", args=["--sleep", "inf"])
    medium_old = hive.create_session("medium old", "medium", args=["--sleep", "inf"])
    high = hive.create_session("high", "high", args=["--sleep", "inf"])
    medium_new = hive.create_session("medium new", "medium", args=["--sleep", "inf"])
    assert [hive.start_session(s) for s in (first, second)] == ["running", "running"]
    assert [hive.start_session(s) for s in (low, medium_old, high, medium_new)] == ["queued"] * 4
    assert hive.stats().by_status == {"running": 2, "queued": 4}
    positions = {
        s: hive.get_session_info(s).queue_position for s in (high, medium_old, medium_new, low)
    }
    assert positions == {high: 1, medium_old: 2, medium_new: 3, low: 4}

    hive.terminate_session(medium_old)  # a queued start withdrawn: nothing runs for it
    assert hive.status(medium_old) == "terminated"
    assert hive.get_session_info(low).queue_position == 3

    # Each freed slot goes to the head of the queue: high, then medium (older first), then low.
    order: list[str] = []
    for slot_holder in (first, second, high):
        hive.terminate_session(slot_holder, grace=0)
        assert hive.wait(slot_holder, timeout=10) == "terminated"
        recorder.wait_for(lambda events: len(_started(events)) == len(order) + 1)
        order.append(_started(recorder.events)[-1])
        assert len(_running(hive)) <= 2
    assert order == [high, medium_new, low]
    assert _running(hive) == {medium_new, low}
    for session_id in (medium_new, low):
        hive.terminate_session(session_id, grace=0)
        assert hive.wait(session_id, timeout=10) == "terminated"


def _started(events: list) -> list[str]:
    """Sessions that went queued -> starting, in order."""
    return [
        e.session_id
        for e in events
        if e.type == "session.status" and e.from_ == "queued" and e.to == "starting"
    ]


def test_a_queued_session_stays_queued_across_a_restart(hives: Hives) -> None:
    first = hives.open(max_running=1, shutdown="leave")
    holder = first.create_session("holder", args=["--sleep", "inf"])
    waiting = first.create_session("waiting")
    first.start_session(holder)
    assert first.start_session(waiting) == "queued"
    first.close()  # the holder's agent is left running for the next hive

    second = hives.open(max_running=1)
    assert second.status(holder) == "running"  # re-adopted: it still holds the slot
    assert second.status(waiting) == "queued"
    assert second.get_session_info(waiting).queue_position == 1
    second.terminate_session(holder, grace=0)
    assert second.wait(waiting, timeout=30) == "completed"
    assert second.get_session_info(waiting).runs == 1
