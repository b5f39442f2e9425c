"""The same repository on the real Redis server (127.0.0.1:6379), selected by configuration only."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis
from store_fixtures import SNAPSHOTS, write_world

from cxpredict.workspace import Workspace
from features import store as feature_store
from features.feature_repo.definitions import RepoSettings
from features.online import OnlineReader

pytestmark = pytest.mark.services

REDIS = "127.0.0.1:6379"
END = datetime(2026, 11, 20, tzinfo=UTC)


def project_keys(client: redis.Redis, project: str) -> list[bytes]:
    return list(client.scan_iter(match=b"*" + project.encode()))


@pytest.fixture
def redis_store(tmp_path):
    client = redis.Redis(host="127.0.0.1", port=6379)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail("Redis is not running on 127.0.0.1:6379 (see the store brief for the start command)")
    project = f"cxp_test_{uuid.uuid4().hex[:12]}"
    settings = RepoSettings(online_store="redis", redis_connection_string=REDIS, project=project)
    ws = Workspace(root=tmp_path / "ws")
    frames = write_world(ws.root, n_customers=25)
    feature_store.apply_repo(ws, settings)
    yield ws, settings, frames, client
    feature_store.open_store(ws, settings).teardown()
    leftover = project_keys(client, project)
    if leftover:
        client.delete(*leftover)
    client.close()


def test_given_the_redis_setting_when_materialised_then_feast_reads_the_latest_values_back(redis_store):
    ws, settings, frames, client = redis_store

    report = feature_store.materialize_latest(ws, end=END, settings=settings)

    store = feature_store.open_store(ws, settings)
    assert store.config.online_store.type == "redis" and report.method == "feast"
    assert len(project_keys(client, settings.project)) == 25
    ids = ["C000000", "C000011", "C000024", "nobody"]
    online = store.get_online_features(
        features=store.get_feature_service("churn"),
        entity_rows=[{"customer_id": c, "request_time": END + timedelta(days=1)} for c in ids],
    ).to_dict()
    for family, name in [("purchase", "purchase_count_30d"), ("purchase", "purchase_top_category"),
                         ("profile", "profile_region"), ("engagement", "engagement_sessions_30d")]:  # fmt: skip
        latest = frames[(family, SNAPSHOTS[-1])].set_index("customer_id")[name]
        expected = [
            None if (v is None or (isinstance(v, float) and math.isnan(v))) else v
            for v in latest.loc[ids[:3]]
        ]
        assert online[name] == expected + [None], name
    reader = OnlineReader(store).read(ids, "churn", request_time=END + timedelta(days=1))
    assert reader["profile_region"] == online["profile_region"]


def test_given_redis_when_an_event_is_pushed_then_the_online_counter_moves(redis_store):
    ws, settings, _, client = redis_store
    store = feature_store.open_store(ws, settings)

    feature_store.push_event(
        ws, {"customer_id": "C000003", "event_type": "ticket_opened", "timestamp": END + timedelta(hours=5)},
        store=store,
    )  # fmt: skip

    online = store.get_online_features(
        features=["realtime:realtime_tickets_opened"], entity_rows=[{"customer_id": "C000003"}]
    ).to_dict()
    assert online["realtime_tickets_opened"] == [1.0]
    assert len(project_keys(client, settings.project)) == 1


def test_given_redis_the_serving_read_gives_snapshot_times_that_pushes_do_not_move(redis_store):
    from features.online import EVENT_TIME

    ws, settings, _, _ = redis_store
    feature_store.materialize_latest(ws, end=END, settings=settings)
    store = feature_store.open_store(ws, settings)
    feature_store.push_event(
        ws, {"customer_id": "C000003", "event_type": "session_start", "timestamp": END + timedelta(hours=5)},
        store=store,
    )  # fmt: skip
    ids = ["C000003", "C000004", "nobody"]
    reader = OnlineReader(store)

    union = reader.read(ids, ("churn", "realtime_signals"), END + timedelta(days=1), event_times=True)

    assert union[EVENT_TIME][:2] == [int(SNAPSHOTS[-1].timestamp())] * 2 and union[EVENT_TIME][2] is None
    assert union["realtime_sessions"] == [1.0, None, None]
    alone = reader.read(ids, "churn", END + timedelta(days=1))
    assert {name: union[name] for name in alone} == alone
