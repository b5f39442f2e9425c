"""The same repository on the real Redis server (127.0.0.1:6379), selected by configuration only."""

from __future__ import annotations

import math
import threading
import time
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


def every_key(client: redis.Redis, project: str) -> list[bytes]:
    """The project's customer hashes, its snapshot state and any staging key."""
    return project_keys(client, project) + list(client.scan_iter(match=b"*" + project.encode() + b":*"))


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
    leftover = every_key(client, project)
    if leftover:
        client.delete(*leftover)
    client.close()


def test_given_the_redis_setting_when_materialised_then_feast_reads_the_latest_values_back(redis_store):
    ws, settings, frames, client = redis_store

    report = feature_store.materialize_latest(ws, end=END, settings=settings)

    store = feature_store.open_store(ws, settings)
    assert store.config.online_store.type == "redis" and report.method == "fast"
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


SERVICES = ("churn", "next_purchase", "realtime_signals")


def test_given_a_redis_snapshot_the_serving_read_equals_feasts_sdk_and_the_sqlite_store(redis_store):
    # given the same world materialised into Redis and into SQLite
    ws, settings, _, client = redis_store
    feature_store.materialize_latest(ws, end=END, settings=settings)
    sqlite = RepoSettings(project=settings.project)
    feature_store.apply_repo(ws, sqlite)  # the same registry, with the SQLite tables
    feature_store.materialize_latest(ws, end=END, settings=sqlite)
    redis_store_ = feature_store.open_store(ws, settings)
    ids = ["C000000", "C000007", "C000007", "C000024", "nobody"]
    moment = END + timedelta(days=3)

    # when the serving reader reads every service from both, and Feast's SDK reads Redis
    from features.online import EVENT_TIME

    on_redis = OnlineReader(redis_store_).read(ids, SERVICES, moment, event_times=True)
    on_sqlite = OnlineReader(feature_store.open_store(ws, sqlite)).read(
        ids, SERVICES, moment, event_times=True
    )

    # then the answers are equal, value for value, with the snapshot time of the latest snapshot
    assert on_redis == on_sqlite
    assert on_redis[EVENT_TIME] == [int(SNAPSHOTS[-1].timestamp())] * 4 + [None]
    for service in SERVICES:
        rows = [{"customer_id": c, "request_time": moment} for c in ids]
        sdk = redis_store_.get_online_features(
            features=redis_store_.get_feature_service(service), entity_rows=rows
        ).to_dict()
        assert {name: on_redis[name] for name in sdk} == sdk, service
    assert feature_store.online_as_of(redis_store_) == SNAPSHOTS[-1]


def _whole(reader: OnlineReader, ids: list[str]) -> tuple:
    columns = reader.read(ids, SERVICES, END + timedelta(days=3), event_times=True)
    return tuple(tuple(values) for name, values in sorted(columns.items()))


def test_given_readers_during_redis_refreshes_then_every_answer_is_one_snapshot_whole(redis_store):
    # given the answers for 25 customers on the October and on the November snapshot
    ws, settings, _, _ = redis_store
    ids = [f"C{i:06d}" for i in range(25)]
    reader = OnlineReader(feature_store.open_store(ws, settings))
    feature_store.materialize_latest(ws, end=SNAPSHOTS[1], settings=settings)
    october = _whole(reader, ids)
    feature_store.materialize_latest(ws, end=SNAPSHOTS[2], settings=settings)
    november = _whole(reader, ids)
    answers, stop = [], threading.Event()

    def load() -> None:
        while not stop.is_set():
            answers.append(_whole(reader, ids))

    # when a reader keeps reading while the store is refreshed back and forth six times
    worker = threading.Thread(target=load)
    worker.start()
    try:
        for end in SNAPSHOTS[1:] * 3:
            feature_store.materialize_latest(ws, end=end, settings=settings)
        settled = len(answers)
        while len(answers) <= settled:  # one read after the last swap
            time.sleep(0.01)
    finally:
        stop.set()
        worker.join()

    # then every answer is the whole October or the whole November answer, never a mix
    assert october != november and len(answers) > 6
    assert {answer == october or answer == november for answer in answers} == {True}
    assert answers[-1] == november


def test_given_a_dead_refresh_and_a_customer_the_snapshot_lacks_then_a_refresh_leaves_neither(redis_store):
    # given a snapshot, staging keys a killed refresh left, and a customer written outside the snapshot
    import pandas as pd

    from features import redis_online

    ws, settings, _, client = redis_store
    feature_store.materialize_latest(ws, end=END, settings=settings)
    store = feature_store.open_store(ws, settings)
    reader = OnlineReader(store)
    before = reader.read(["C000005"], "churn", END)
    dead = redis_online.staging_prefix(settings.project) + b"deadrun:"
    for key in client.scan_iter(match=b"*" + settings.project.encode()):
        client.hset(dead + key[: -len(settings.project)], mapping={b"junk": b"x"})
    store.write_to_online_store(
        "purchase",
        pd.DataFrame({"customer_id": ["C999999"], "event_timestamp": [pd.Timestamp(END)],
                      "created_timestamp": [pd.Timestamp(END)], "purchase_count_30d": [7.0],
                      "purchase_amount_30d": [1.0], "days_since_last_purchase": [2.0],
                      "purchase_top_category": ["x"]}),
    )  # fmt: skip
    assert reader.read(["C999999"], "churn", END)["purchase_count_30d"] == [7.0]

    # when the store is refreshed
    report = feature_store.materialize_latest(ws, end=END, settings=settings)

    # then the staging keys are gone, the stray customer too, and the customers' answers are unchanged
    assert report.method == "fast" and report.customers == 25
    assert list(client.scan_iter(match=redis_online.staging_prefix(settings.project) + b"*")) == []
    assert len(project_keys(client, settings.project)) == 25
    assert reader.read(["C999999"], "churn", END)["purchase_count_30d"] == [None]
    assert reader.read(["C000005"], "churn", END) == before


def test_the_hash_fields_are_feasts():
    from feast.infra.online_stores.helpers import _mmh3

    from features.redis_online import field_of

    for view, feature in [("purchase", "purchase_count_30d"), ("realtime", "realtime_sessions"), ("é", "ü")]:
        assert field_of(view, feature) == _mmh3(f"{view}:{feature}")
