"""The durable event log: idempotent appends, counts exact across processes, rows for the snapshot."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime, timedelta

import pytest

from features.event_log import EventLog, RealtimeEvent, canonical_rows, counters, event_key

START = datetime(2026, 11, 1, tzinfo=UTC)


def _event(
    event_type: str = "session_start", minutes: int = 0, customer: str = "C1", **more
) -> RealtimeEvent:
    return RealtimeEvent(
        customer_id=customer, event_type=event_type, timestamp=START + timedelta(minutes=minutes), **more
    )


def _append_many(url: str, worker: int) -> None:
    log = EventLog(url)
    for i in range(50):
        log.append(_event(minutes=worker * 100 + i))
    log.close()


def test_given_the_same_event_twice_then_it_is_logged_once_and_an_id_wins_over_the_digest(tmp_path):
    log = EventLog(f"sqlite:///{tmp_path / 'events.db'}")

    first = log.append(_event())
    again = log.append(_event())
    with_id = log.append(_event(), event_id="client-1")
    retried = log.append(_event(minutes=5), event_id="client-1")

    assert first == (event_key(_event()), True) and again == (first[0], False)
    assert with_id == ("client-1", True) and retried == ("client-1", False)
    assert log.count() == 2


@pytest.mark.slow
def test_given_four_processes_appending_at_once_then_every_event_is_logged(tmp_path):
    url = f"sqlite:///{tmp_path / 'events.db'}"
    EventLog(url).close()

    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.starmap(_append_many, [(url, worker) for worker in range(4)])

    log = EventLog(url)
    assert log.count() == 200
    assert counters(log.events(["C1"])["C1"], START.timestamp())["realtime_sessions"] == 200


def test_given_events_around_a_snapshot_then_counters_take_only_those_at_or_after_it():
    events = [_event(minutes=-10), _event(minutes=0), _event("ticket_opened", minutes=3),
              _event("survey_answered", minutes=4, kind="nps", score=0)]  # fmt: skip

    state = counters(events, START.timestamp())

    assert state["realtime_sessions"] == 1 and state["realtime_tickets_opened"] == 1
    assert state["realtime_last_nps"] == 0.0 and state["realtime_window_start_ts"] == START.timestamp()
    assert counters(events[:1], START.timestamp()) is None


@pytest.mark.parametrize("score", [7.5, 11, -1])
def test_given_a_survey_score_off_the_scales_whole_numbers_then_the_event_is_refused(score):
    with pytest.raises(ValueError, match="whole number"):
        _event("survey_answered", kind="nps", score=score)


def test_given_logged_events_then_they_become_rows_of_the_sources_they_belong_to():
    pairs = [("k1", _event()), ("k2", _event("page_view", 1)), ("k3", _event("ticket_opened", 2)),
             ("k4", _event("ticket_resolved", 3)), ("k5", _event("survey_answered", 4, kind="csat", score=5))]  # fmt: skip

    rows = canonical_rows(pairs)

    events = rows["events"].to_pylist()
    assert [(e["event_type"], e["session_id"]) for e in events] == [
        ("session_start", "logged:k1"),
        ("page_view", None),
    ]
    tickets = rows["support_tickets"].to_pylist()
    assert [(t["opened_at"] is None, t["resolved_at"] is None) for t in tickets] == [
        (False, True),
        (True, False),
    ]
    assert rows["surveys"].to_pylist()[0]["score"] == 5


@pytest.mark.services
@pytest.mark.slow
def test_given_a_postgresql_log_when_processes_append_and_retry_then_each_event_is_logged_once():
    from tests.postgres import fresh_database

    # given a fresh database on the PostgreSQL server on loopback (.ci/run starts it)
    with fresh_database("cxp_events") as url:
        EventLog(url).close()
        # when four processes append 50 events each, and one event is retried
        with multiprocessing.get_context("spawn").Pool(4) as pool:
            pool.starmap(_append_many, [(url, worker) for worker in range(4)])
        log = EventLog(url)
        retried = log.append(_event(minutes=0))
        # then every event is there once
        assert retried[1] is False and log.count() == 200
        assert counters(log.events(["C1"], since=START)["C1"], START.timestamp())["realtime_sessions"] == 200
        log.close()
