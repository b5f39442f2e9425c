"""Acknowledged events: counted once across workers and retries, durable through kill -9 and folded
into the next snapshot."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import pandas as pd
import pytest

from features.event_log import EventLog, counters
from features.store import refresh_features, snapshot_as_of
from tests.serving.server_fixtures import start_server

pytestmark = pytest.mark.slow
SNAPSHOT = datetime(2026, 11, 1, tzinfo=UTC)
LATER = datetime(2026, 11, 20, tzinfo=UTC)


def _customers(ws, n: int) -> list[str]:
    return (
        pd.read_parquet(ws.features_dir / "engagement")
        .sort_values("customer_id")
        .customer_id.unique()[-n:]
        .tolist()
    )


def _post(server, body: dict) -> httpx.Response:
    with server.client() as client:
        return client.post("/events", json=body)


def test_given_two_workers_when_four_clients_push_at_once_then_every_event_counts_exactly_once(
    private_workspace, tmp_path
):
    # given a server with two workers
    target = _customers(private_workspace, 1)[0]
    server = start_server(private_workspace, tmp_path / "server.log", workers=2)
    try:
        # when 4 clients push 50 sessions each (no id, no timestamp) and 3 clients retry the same 10 ids
        with ThreadPoolExecutor(max_workers=4) as pool:
            fresh = list(
                pool.map(
                    lambda _: _post(server, {"customer_id": target, "event_type": "session_start"}),
                    range(200),
                )
            )
            retried = list(
                pool.map(
                    lambda i: _post(
                        server,
                        {"customer_id": target, "event_type": "page_view", "event_id": f"retry-{i % 10}"},
                    ),
                    range(30),
                )
            )
        last = _post(server, {"customer_id": target, "event_type": "search"}).json()
        unknown = _post(server, {"customer_id": "NEVER-SEEN-1", "event_type": "search"})
        half_point = _post(
            server, {"customer_id": target, "event_type": "survey_answered", "kind": "csat", "score": 4.5}
        )
    finally:
        server.stop()
    # and an unknown customer's event is logged with a flag but adds nothing to the online store,
    # and a survey score off the scale's whole numbers is refused naming the field
    assert unknown.status_code == 200 and unknown.json()["known_customer"] is False
    assert _store(private_workspace).get_online_features(
        features=["realtime:realtime_events"], entity_rows=[{"customer_id": "NEVER-SEEN-1"}]
    ).to_dict()["realtime_events"] == [None]
    assert half_point.status_code == 400 and half_point.json()["field"] == "score"
    # then every answer is 200, the log holds each event once and the counters equal the log
    assert [a.status_code for a in fresh + retried] == [200] * 230
    assert sum(not a.json()["duplicate"] for a in retried) == 10
    log = EventLog.of(private_workspace)
    assert log.count() == 212
    assert last["realtime"]["realtime_sessions"] == 200
    assert last["realtime"]["realtime_events"] == 211 and last["known_customer"] is True
    assert counters(log.events([target])[target], SNAPSHOT.timestamp())["realtime_events"] == 211


def test_given_acknowledged_events_when_the_server_is_killed_and_features_refresh_then_the_snapshot_holds_them(
    private_workspace, tmp_path, copy_workspace
):
    # given a twin workspace that gets no events, and a server that acknowledges 12 sessions then dies
    twin = copy_workspace(private_workspace, tmp_path / "twin")
    target, bystander = _customers(private_workspace, 2)
    server = start_server(private_workspace, tmp_path / "server.log", workers=2)
    moments = [SNAPSHOT + timedelta(days=5, minutes=i) for i in range(12)]
    answers = [
        _post(server, {"customer_id": target, "event_type": "session_start", "timestamp": m.isoformat()})
        for m in moments
    ]
    duplicate = _post(
        server, {"customer_id": target, "event_type": "session_start", "timestamp": moments[0].isoformat()}
    )
    server.kill()
    assert [a.status_code for a in answers] == [200] * 12 and duplicate.json()["duplicate"] is True

    # when both workspaces build features as of a later date
    for ws in (private_workspace, twin):
        refresh_features(ws, LATER)

    # then the snapshot of the workspace with events counts them once; the bystander is untouched
    def sessions(ws) -> dict[str, float]:
        frame = pd.read_parquet(ws.features_dir / "engagement")
        latest = frame[frame.event_timestamp == frame.event_timestamp.max()].set_index("customer_id")
        return latest["engagement_sessions_30d"].to_dict()

    with_events, without = sessions(private_workspace), sessions(twin)
    assert with_events[target] == without[target] + 12
    assert with_events[bystander] == without[bystander]
    assert snapshot_as_of(private_workspace, _store(private_workspace)) == LATER


def _store(ws):
    from features.store import open_store

    return open_store(ws)


def test_given_two_servers_on_two_workspaces_then_each_reports_only_its_own_metrics(
    private_workspace, tmp_path, copy_workspace
):
    # given two servers started on two copies of the world
    other = copy_workspace(private_workspace, tmp_path / "other")
    first = start_server(private_workspace, tmp_path / "first.log", workers=1)
    second = start_server(other, tmp_path / "second.log", workers=1)
    try:
        # when only the first takes events
        target = _customers(private_workspace, 1)[0]
        for _ in range(3):
            assert _post(first, {"customer_id": target, "event_type": "search"}).status_code == 200
        with first.client() as client:
            mine = client.get("/metrics").text
        with second.client() as client:
            theirs = client.get("/metrics").text
    finally:
        first.stop()
        second.stop()

    # then the first counts them and the second does not
    def events_counted(text: str) -> float:
        lines = [
            line
            for line in text.splitlines()
            if line.startswith('cxpredict_events_total{event_type="search"}')
        ]
        return sum(float(line.split()[-1]) for line in lines)

    assert events_counted(mine) == 3.0
    assert events_counted(theirs) == 0.0
