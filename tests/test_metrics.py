"""Prometheus metrics: the exposition after real sessions ran, in-process and on /metrics."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from hive_actors import Hive

from .conftest import Daemon, Hives, Recorder


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as (name, sorted labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_the_exposition_counts_states_transitions_errors_and_durations(
    hives: Hives, recorder: Recorder
) -> None:
    hive = hives.open(max_running=1)
    hive.subscribe_to_all_sessions(recorder)
    done = hive.create_session("completes")
    broken = hive.create_session("cannot spawn", command=["/nonexistent/agent"])
    holder = hive.create_session("holds the slot", args=["--sleep", "inf"])
    waiting = hive.create_session("waits", args=["--sleep", "inf"])
    hive.start_session(done)
    recorder.wait_for(lambda events: _reached(events, done, "completed"))
    assert hive.start_session(broken) == "failed"
    assert hive.start_session(holder) == "running"
    assert hive.start_session(waiting) == "queued"
    # A subscriber is called after the metrics counted the event: once it saw the last
    # one, the exposition includes everything.
    recorder.wait_for(lambda events: _reached(events, waiting, "queued"))

    found = samples(hive.metrics().decode())
    assert value(found, "hive_sessions", state="completed") == 1
    assert value(found, "hive_sessions", state="failed") == 1
    assert value(found, "hive_sessions", state="running") == 1
    assert value(found, "hive_sessions", state="queued") == 1
    assert value(found, "hive_sessions", state="terminated") == 0  # every state is listed
    assert ("hive_sessions", (("state", "terminated"),)) in found
    assert value(found, "hive_queue_length") == 1
    assert value(found, "hive_live_agents") == 1
    assert value(found, "hive_event_subscribers") == 1
    assert value(found, "hive_spawn_errors_total") == 1
    assert value(found, "hive_transitions_total", from_state="running", to_state="completed") == 1
    assert value(found, "hive_transitions_total", from_state="created", to_state="queued") == 1
    assert value(found, "hive_events_total", type="session.created") == 4
    # Durations: each state left once is one observation; lifetimes only for ended sessions.
    assert value(found, "hive_state_duration_seconds_count", state="running") == 1
    assert value(found, "hive_state_duration_seconds_count", state="starting") == 3
    assert value(found, "hive_session_lifetime_seconds_count", outcome="completed") == 1
    assert value(found, "hive_session_lifetime_seconds_count", outcome="failed") == 1
    assert value(found, "hive_session_lifetime_seconds_count", outcome="terminated") == 0

    hive.terminate_session(holder, grace=0)
    recorder.wait_for(lambda events: _reached(events, waiting, "running"))
    found = samples(hive.metrics().decode())
    assert value(found, "hive_session_lifetime_seconds_count", outcome="terminated") == 1
    assert value(found, "hive_state_duration_seconds_count", state="queued") == 1
    assert value(found, "hive_queue_length") == 0
    hive.terminate_session(waiting, grace=0)
    assert hive.wait(waiting, timeout=10) == "terminated"


def _reached(events: list, session_id: str, status: str) -> bool:
    return any(e.session_id == session_id and getattr(e, "to", None) == status for e in events)


def test_agent_restarts_count_by_kind(hives: Hives, recorder: Recorder) -> None:
    hive: Hive = hives.open()
    hive.subscribe_to_all_sessions(recorder)
    session_id = hive.create_session(
        "fails twice",
        args=["--exit", "3"],
        restart="on-failure",
        restart_limit=2,
        restart_backoff=0,
    )
    hive.start_session(session_id)
    recorder.wait_for(lambda events: _reached(events, session_id, "failed"), timeout=20)
    found = samples(hive.metrics().decode())
    assert value(found, "hive_restarts_total", kind="agent") == 2
    assert value(found, "hive_restarts_total", kind="actor") == 0


def test_the_daemon_serves_metrics_in_the_prometheus_text_format(daemon: Daemon) -> None:
    daemon.start()
    session_id = daemon.cli("create", "metrics").stdout.strip()
    assert daemon.cli("start", session_id).returncode == 0
    assert daemon.cli("wait", session_id).returncode == 0
    with daemon.http() as http:
        reply = http.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    found = samples(reply.text)
    assert value(found, "hive_sessions", state="completed") == 1
    assert value(found, "hive_transitions_total", from_state="running", to_state="completed") == 1
