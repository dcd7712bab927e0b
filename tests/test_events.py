"""Events: order on both topics, isolation of bad subscribers, replay from the journal."""

from __future__ import annotations

import asyncio
import gc
import threading

import pytest

from hive_actors import Event, Hive, JournalTrimmedEvent, SessionStatusEvent, _registry, parse_event
from hive_actors.testing import FakeClock, wait_maintenance

from .conftest import Recorder


def _run(hive: Hive, task: str, *args: str) -> str:
    session_id = hive.create_session(task, args=args)
    hive.start_session(session_id)
    hive.wait(session_id, timeout=30)
    return session_id


def _finished(session_ids: list[str]):
    def check(events: list[Event]) -> bool:
        ended = {
            e.session_id
            for e in events
            if e.type == "session.status" and e.to in ("completed", "failed")
        }
        return ended >= set(session_ids)

    return check


def test_events_arrive_in_order_on_global_and_session_topics(hive: Hive) -> None:
    everything, first_only = Recorder(), Recorder()
    hive.subscribe_to_all_sessions(everything)
    first = hive.create_session("first")
    hive.subscribe_to_session(first, first_only)
    second = hive.create_session("second", args=["--exit", "2"])
    for session_id in (first, second):
        hive.start_session(session_id)
    for session_id in (first, second):
        hive.wait(session_id, timeout=30)
    everything.wait_for(_finished([first, second]))
    first_only.wait_for(_finished([first]))

    seqs = [e.seq for e in everything.events]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    assert {e.session_id for e in first_only.events} == {first}
    assert first_only.statuses(first) == ["starting", "running", "completed"]
    assert everything.statuses(second) == ["created", "starting", "running", "failed"]
    # Each status event's "from" is the previous status: transition order.
    chain = [
        e for e in everything.events if isinstance(e, SessionStatusEvent) and e.session_id == second
    ]
    assert [e.from_ for e in chain][1:] == [e.to for e in chain][:-1]
    types = {e.type for e in everything.events}
    assert {"session.created", "session.status"} <= types


def test_a_raising_subscriber_harms_nobody(hive: Hive, recorder: Recorder) -> None:
    calls = []

    def explode(event: Event) -> None:
        calls.append(event.seq)
        raise RuntimeError("subscriber bug")

    hive.subscribe_to_all_sessions(explode)
    hive.subscribe_to_all_sessions(recorder)
    session_id = _run(hive, "t")
    assert hive.status(session_id) == "completed"
    recorder.wait_for(_finished([session_id]))
    assert len(calls) >= len(recorder.events) - 1  # it was called for each event, raising each time


def test_a_blocking_subscriber_delays_neither_lifecycle_nor_others(
    hive: Hive, recorder: Recorder
) -> None:
    release = threading.Event()
    blocked = Recorder()

    def stuck(event: Event) -> None:
        release.wait(30)
        blocked(event)

    hive.subscribe_to_all_sessions(stuck)
    hive.subscribe_to_all_sessions(recorder)
    ids = [_run(hive, f"t{i}") for i in range(3)]
    recorder.wait_for(_finished(ids))  # all delivered while `stuck` is still blocked
    assert blocked.events == []
    release.set()
    blocked.wait_for(lambda events: len(events) == len(recorder.events))
    assert [e.seq for e in blocked.events] == [e.seq for e in recorder.events]


def test_replay_from_seq_then_live_without_gap_or_duplicate(hive: Hive) -> None:
    first = _run(hive, "before")
    journal = list(hive.events())
    assert [e.seq for e in journal] == list(range(1, hive.last_seq + 1))
    middle = journal[len(journal) // 2].seq
    assert [e.seq for e in hive.events(since=middle)] == [e.seq for e in journal if e.seq > middle]
    assert {e.session_id for e in hive.events(first)} == {first}

    late = Recorder()
    hive.subscribe_to_all_sessions(late, since=middle)
    second = _run(hive, "after")
    late.wait_for(_finished([first, second]))
    seqs = [e.seq for e in late.events]
    assert seqs == list(range(middle + 1, hive.last_seq + 1))


def test_follow_streams_live_events_until_closed(hive: Hive) -> None:
    session_id = hive.create_session("followed")
    with hive.events(session_id, since=0, follow=True, timeout=10) as stream:
        first = next(stream)
        assert first.type == "session.created"
        hive.start_session(session_id)
        seen = []
        for event in stream:
            seen.append(event)
            if event.type == "session.status" and event.to == "completed":
                break
    assert [e.to for e in seen if e.type == "session.status"] == [
        "created",
        "starting",
        "running",
        "completed",
    ]


def test_async_events_replay_and_follow(hive: Hive) -> None:
    session_id = hive.create_session("async")

    async def consume() -> list[str]:
        statuses = []
        async for event in hive.aevents(session_id, since=0, follow=True):
            if event.type == "session.status":
                statuses.append(str(event.to))
                if event.to == "created":
                    await asyncio.to_thread(hive.start_session, session_id)
                if event.to == "completed":
                    return statuses
        return statuses

    assert asyncio.run(asyncio.wait_for(consume(), 30)) == [
        "created",
        "starting",
        "running",
        "completed",
    ]


def test_unsubscribe_stops_delivery(hive: Hive, recorder: Recorder) -> None:
    subscription = hive.subscribe_to_all_sessions(recorder)
    hive.create_session("seen")
    recorder.wait_for(lambda events: len(events) == 2)
    hive.unsubscribe(subscription)
    assert not subscription.active
    hive.create_session("unseen")
    assert len(list(hive.events())) == 4
    assert len(recorder.events) == 2


def test_context_messages_are_events(hive: Hive, recorder: Recorder) -> None:
    session_id = hive.create_session("chat")
    hive.subscribe_to_session(session_id, recorder)
    seq = hive.send_message(session_id, "user", "hello")
    recorder.wait_for(lambda events: any(e.type == "context.message" for e in events))
    (message,) = [e for e in recorder.events if e.type == "context.message"]
    assert (message.seq, message.role, message.content) == (seq, "user", "hello")


def test_events_round_trip_through_json_with_from_alias(hive: Hive, clock: FakeClock) -> None:
    _run(hive, "json")
    for event in hive.events():
        data = event.to_json_dict()
        if event.type == "session.status":
            assert "from" in data
            assert "from_" not in data
        assert parse_event(data) == event
        assert data["at"].endswith("+00:00")


def test_a_closed_or_dropped_event_stream_releases_its_subscription(hive: Hive) -> None:
    session_id = hive.create_session("quiet")  # nothing happens to it after this
    baseline = hive.stats().subscribers
    with hive.events(session_id, since=0, follow=True) as stream:
        assert next(stream).type == "session.created"
        assert hive.stats().subscribers == baseline + 1
    assert hive.stats().subscribers == baseline
    for topic in (None, session_id):  # dropped half-read, never closed
        stream = hive.events(topic, since=0, follow=True)
        assert next(stream).type == "session.created"
        assert hive.stats().subscribers == baseline + 1
        del stream
        gc.collect()
        assert hive.stats().subscribers == baseline
    stream = hive.events(session_id, since=0, follow=True, timeout=0.01)  # kept, not closed
    assert [event.type for event in stream] == ["session.created", "session.status"]
    assert hive.stats().subscribers == baseline  # ended by its timeout: released


def test_a_closed_async_event_stream_releases_its_subscription(hive: Hive) -> None:
    session_id = hive.create_session("quiet")
    baseline = hive.stats().subscribers

    async def read_one_and_leave() -> int:
        stream = hive.aevents(session_id, since=0, follow=True)
        assert (await anext(stream)).type == "session.created"
        during = hive.stats().subscribers
        await stream.aclose()  # type: ignore[attr-defined]
        return during

    assert asyncio.run(asyncio.wait_for(read_one_and_leave(), 30)) == baseline + 1
    assert hive.stats().subscribers == baseline


def _trim_removed(hive: Hive, clock: FakeClock, passes: int) -> None:
    """Let the next housekeeping pass trim the journal (of removed sessions' events)."""
    clock.advance(hive.config.maintenance_interval)
    wait_maintenance(hive, passes)


def test_a_replay_of_trimmed_events_is_told_so_then_goes_on(
    hive: Hive, clock: FakeClock, recorder: Recorder
) -> None:
    gone = hive.create_session("removed")  # seqs 1, 2: the head of the journal
    kept = hive.create_session("kept")
    hive.terminate_session(gone)
    hive.remove_session(gone)
    _trim_removed(hive, clock, 1)
    first_kept = min(e.seq for e in hive.events(since=2) if e.type != "journal.trimmed")

    replay = list(hive.events(since=0))
    assert replay[0] == JournalTrimmedEvent(seq=first_kept - 1, first_seq=first_kept)
    seqs = [e.seq for e in replay]
    assert seqs == sorted(set(seqs))  # strictly increasing, the signal included
    assert seqs[1] == first_kept
    assert parse_event(replay[0].to_json_dict()) == replay[0]
    # Resuming where it left off (after the signal's seq), a consumer is not told again.
    assert [e.seq for e in hive.events(since=replay[0].seq)] == seqs[1:]
    # The same for every way of replaying.
    hive.subscribe_to_all_sessions(recorder, since=0)
    recorder.wait_for(lambda events: len(events) == len(replay))
    assert recorder.events == replay

    async def replay_async() -> list[Event]:
        return [event async for event in hive.aevents(since=0)]

    assert asyncio.run(asyncio.wait_for(replay_async(), 30)) == replay
    # One session's topic: told only if that session's own history was trimmed.
    assert [e.type for e in hive.events(kept, since=0)][:1] == ["session.created"]
    assert [e.type for e in hive.events(gone, since=0)] == ["journal.trimmed", "session.removed"]


def test_a_trim_while_a_replay_is_read_is_told_where_it_happened(
    hive: Hive, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_registry, "_PAGE", 5)  # the journal is read 5 events at a time
    gone = hive.create_session("long")
    for index in range(12):
        hive.send_message(gone, "user", f"m{index}")
    later = hive.create_session("later")
    stream = hive.events(since=0)
    assert next(stream).type == "session.created"  # the first page has been read
    hive.terminate_session(gone)
    hive.remove_session(gone)
    _trim_removed(hive, clock, 1)

    rest = list(stream)
    assert [e.seq for e in rest[:4]] == [2, 3, 4, 5]  # the rest of the page read before
    signal = rest[4]
    assert isinstance(signal, JournalTrimmedEvent)
    after = rest[5:]
    assert after[0].seq == signal.first_seq == signal.seq + 1
    assert after[0].session_id == later  # the rest of gone's history was trimmed
    assert [e.seq for e in after] == sorted(e.seq for e in after)
