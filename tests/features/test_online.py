"""Fast materialisation and fast online reads against Feast's own writer and reader; pushed events."""

from __future__ import annotations

import math
import sqlite3
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pydantic
import pytest
from store_fixtures import SNAPSHOTS, write_snapshot, write_world

from cxpredict.workspace import Workspace
from features import store as feature_store
from features.feature_repo.definitions import REALTIME_FEATURES
from features.online import EntityKeyEncoder, OnlineReader
from features.event_log import RealtimeEvent, next_counters

END = datetime(2026, 11, 20, tzinfo=UTC)
REQUEST_TIME = END + timedelta(days=4)
TABLES = ("purchase", "engagement", "profile")


def with_edge_values(frames: dict) -> dict:
    """The latest purchase snapshot with values whose encoding is easy to get wrong."""
    frame = frames[("purchase", SNAPSHOTS[-1])].copy()
    frame.loc[0, "purchase_top_category"] = ""
    frame.loc[1, "purchase_top_category"] = "é" * 100
    frame.loc[2, "purchase_count_30d"] = 0.0
    frame.loc[3, "purchase_count_30d"] = -0.0
    frame.loc[4, "purchase_count_30d"] = 1e16
    frame.loc[5, "purchase_count_30d"] = 0.1 + 0.2
    frame.loc[6, ["purchase_count_30d", "purchase_amount_30d", "days_since_last_purchase"]] = np.nan
    frame.loc[6, "purchase_top_category"] = None
    return frame


def build(root, fast: bool) -> Workspace:
    ws = Workspace(root=root)
    frames = write_world(ws.root, n_customers=45)
    write_snapshot(ws.root, "purchase", with_edge_values(frames))
    feature_store.apply_repo(ws)
    feature_store.materialize_latest(ws, end=END, fast=fast)
    return ws


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Workspace]:
    root = tmp_path_factory.mktemp("online")
    return {"feast": build(root / "feast", fast=False), "fast": build(root / "fast", fast=True)}


def dump(ws: Workspace, table: str) -> list[tuple]:
    with sqlite3.connect(ws.feast_dir / "online_store.db") as connection:
        return sorted(
            connection.execute(
                "SELECT entity_key, feature_name, value, value_text, vector_value, "
                f"event_ts, created_ts, typeof(event_ts), typeof(value) FROM cxpredict_{table}"
            ).fetchall()
        )


def as_optional(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def same(left: dict, right: dict) -> bool:
    """Equal response dicts (key order aside); floats equal to the last bit or both null/NaN."""

    def equal(a, b) -> bool:
        if isinstance(a, float) and isinstance(b, float):
            return (math.isnan(a) and math.isnan(b)) or a == b
        return a == b and type(a) is type(b)

    return left.keys() == right.keys() and all(
        len(left[k]) == len(right[k]) and all(map(equal, left[k], right[k])) for k in left
    )


@pytest.mark.parametrize("table", TABLES)
def test_given_the_same_snapshots_when_materialised_fast_then_the_rows_equal_feasts_own(stores, table):
    fast_rows = dump(stores["fast"], table)

    assert fast_rows == dump(stores["feast"], table)
    assert len(fast_rows) == 45 * {"purchase": 4, "engagement": 3, "profile": 3}[table]
    assert any(row[2] == b"" and row[3] is None for row in fast_rows)


def test_given_a_materialised_store_when_the_fast_path_runs_again_then_the_upsert_changes_nothing(
    stores, tmp_path
):
    ws = stores["fast"]
    before = {table: dump(ws, table) for table in TABLES}

    feature_store.materialize_latest(ws, end=END, fast=True)

    assert {table: dump(ws, table) for table in TABLES} == before


def test_given_fast_materialisation_when_feast_reads_online_then_it_sees_the_latest_snapshot(stores):
    ws = stores["fast"]
    store = feature_store.open_store(ws)
    ids = [f"C{i:06d}" for i in range(8)]

    response = store.get_online_features(
        features=["purchase:purchase_count_30d", "purchase:purchase_top_category", "profile:profile_region"],
        entity_rows=[{"customer_id": c} for c in ids],
    ).to_dict()

    latest = pd.read_parquet(
        ws.features_dir / "purchase" / f"snapshot_date={SNAPSHOTS[-1]:%Y-%m-%d}" / "data.parquet"
    )
    assert response["purchase_top_category"][:2] == ["", "é" * 100]
    assert response["purchase_count_30d"][2:7] == [0.0, -0.0, 1e16, 0.1 + 0.2, None]
    assert math.copysign(1.0, response["purchase_count_30d"][3]) == -1.0
    assert response["purchase_count_30d"][7] == as_optional(latest.loc[7, "purchase_count_30d"])


@pytest.mark.parametrize("service", ["churn", "next_purchase", "unmet_needs", "realtime_signals"])
def test_given_known_unknown_and_repeated_ids_when_read_fast_then_equal_to_feasts_online_features(
    stores, service
):
    store = feature_store.open_store(stores["fast"])
    reader = OnlineReader(store)
    ids = ["C000001", "C000044", "nobody", "C000006", "C000001", "C000000"]
    rows = [{"customer_id": c, "request_time": REQUEST_TIME} for c in ids]
    if service == "realtime_signals":
        rows = [{"customer_id": c} for c in ids]

    fast = reader.read(ids, service, request_time=REQUEST_TIME)
    sdk = store.get_online_features(features=store.get_feature_service(service), entity_rows=rows).to_dict()

    assert same(fast, sdk)
    assert fast["customer_id"] == ids


def test_given_one_customer_when_read_fast_then_the_full_vector_equals_feasts(stores):
    store = feature_store.open_store(stores["fast"])

    fast = OnlineReader(store).read(["C000005"], "churn", request_time=REQUEST_TIME)
    sdk = store.get_online_features(
        features=store.get_feature_service("churn"),
        entity_rows=[{"customer_id": "C000005", "request_time": REQUEST_TIME}],
    ).to_dict()

    assert same(fast, sdk)
    assert fast["days_since_last_purchase_now"][0] is None or fast["days_since_last_purchase_now"][0] > 0
    assert len(fast) == 1 + 10 + 4


def test_given_a_request_time_service_when_read_without_request_time_then_rejected(stores):
    reader = OnlineReader(feature_store.open_store(stores["fast"]))

    with pytest.raises(ValueError, match="request_time"):
        reader.read(["C000001"], "churn")


@pytest.mark.parametrize("customer_id", ["C000001", "", "é-ü-ß", "🙂 x", "x" * 300])
def test_given_any_id_when_the_key_is_built_by_concatenation_then_it_equals_feasts_serialisation(customer_id):
    encoder = EntityKeyEncoder("customer_id", 3)

    assert encoder(customer_id) == encoder.feast_key(customer_id)


def test_given_a_ticket_opened_event_when_pushed_then_online_features_show_it_without_a_batch_run(stores):
    ws = stores["fast"]
    store = feature_store.open_store(ws)
    opened_at = END + timedelta(days=1, hours=3)

    def read() -> dict:
        return store.get_online_features(
            features=[f"realtime:{n}" for n in REALTIME_FEATURES], entity_rows=[{"customer_id": "C000010"}]
        ).to_dict()

    assert read()["realtime_tickets_opened"] == [None]
    feature_store.push_event(
        ws, {"customer_id": "C000010", "event_type": "ticket_opened", "timestamp": opened_at}
    )
    after_one = read()
    feature_store.push_event(
        ws, RealtimeEvent(customer_id="C000010", event_type="session_start", timestamp=opened_at), store=store
    )
    after_two = read()

    assert after_one["realtime_tickets_opened"] == [1.0]
    assert after_one["realtime_events"] == [0.0]
    assert after_two["realtime_tickets_opened"] == [1.0]
    assert after_two["realtime_sessions"] == [1.0] and after_two["realtime_events"] == [1.0]
    assert after_two["realtime_last_event_ts"] == [opened_at.timestamp()]
    assert after_two["realtime_window_start_ts"] == [SNAPSHOTS[-1].timestamp()]
    fast = OnlineReader(store).read(["C000010"], "realtime_signals")
    assert fast["realtime_tickets_opened"] == [1.0]


def test_given_counters_from_before_the_current_snapshot_when_an_event_arrives_then_they_restart():
    event = RealtimeEvent(
        customer_id="C1", event_type="ticket_resolved", timestamp=datetime(2026, 12, 2, tzinfo=UTC)
    )
    old = {name: 5.0 for name in REALTIME_FEATURES} | {"realtime_window_start_ts": 100.0}

    stale = next_counters(old, event, window_start_s=200.0)
    current = next_counters(old | {"realtime_window_start_ts": 200.0}, event, window_start_s=200.0)

    assert stale["realtime_tickets_resolved"] == 1.0 and stale["realtime_tickets_opened"] == 0.0
    assert current["realtime_tickets_resolved"] == 6.0 and current["realtime_tickets_opened"] == 5.0
    assert stale["realtime_window_start_ts"] == 200.0


def test_given_an_unknown_event_type_when_pushed_then_rejected_before_touching_the_store(tmp_path):
    with pytest.raises(pydantic.ValidationError, match="event_type"):
        feature_store.push_event(tmp_path, {"customer_id": "C1", "event_type": "refund", "timestamp": END})


def test_given_survey_answers_then_the_last_score_is_kept_and_a_zero_is_an_answer_not_a_gap():
    moment = datetime(2026, 12, 2, tzinfo=UTC)
    nothing = {name: None for name in REALTIME_FEATURES}

    first = next_counters(nothing, RealtimeEvent(customer_id="C1", event_type="survey_answered", timestamp=moment,
                                                 kind="nps", score=0), window_start_s=100.0)  # fmt: skip
    second = next_counters(first, RealtimeEvent(customer_id="C1", event_type="survey_answered", timestamp=moment,
                                                kind="csat", score=5), window_start_s=100.0)  # fmt: skip
    session = next_counters(second, RealtimeEvent(customer_id="C1", event_type="session_start", timestamp=moment),
                            window_start_s=100.0)  # fmt: skip

    assert (
        first["realtime_last_nps"] == 0.0
        and first["realtime_last_csat"] is None
        and first["realtime_surveys"] == 1
    )
    assert (
        second["realtime_last_nps"] == 0.0
        and second["realtime_last_csat"] == 5.0
        and second["realtime_surveys"] == 2
    )
    assert session["realtime_last_nps"] == 0.0 and session["realtime_last_survey_ts"] == moment.timestamp()
    stale = next_counters(second | {"realtime_window_start_ts": 50.0}, RealtimeEvent(
        customer_id="C1", event_type="search", timestamp=moment), window_start_s=100.0)  # fmt: skip
    assert stale["realtime_last_nps"] is None and stale["realtime_surveys"] == 0.0


@pytest.mark.parametrize(
    "fields",
    [
        {"event_type": "survey_answered"},
        {"event_type": "survey_answered", "kind": "nps"},
        {"event_type": "survey_answered", "kind": "nps", "score": 11},
        {"event_type": "survey_answered", "kind": "csat", "score": 0},
        {"event_type": "survey_answered", "kind": "ces", "score": 3},
        {"event_type": "search", "score": 3},
    ],
)
def test_given_a_malformed_survey_event_then_it_is_refused(fields):
    with pytest.raises(ValueError):
        RealtimeEvent(customer_id="C1", timestamp=datetime(2026, 12, 2, tzinfo=UTC), **fields)


def test_given_an_empty_push_log_with_an_older_schema_then_it_is_rewritten_but_pushed_rows_are_kept(
    tmp_path,
):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from features.feature_repo.definitions import OFFERS_VIEW, ensure_push_logs, push_log_path, push_schema

    path = push_log_path(tmp_path)
    path.parent.mkdir(parents=True)
    old = pa.schema([("customer_id", pa.string()), ("realtime_sessions", pa.float64())])
    pq.write_table(old.empty_table(), path)
    ensure_push_logs(tmp_path)
    assert pq.read_schema(path) == push_schema()
    assert pq.read_schema(push_log_path(tmp_path, OFFERS_VIEW)) == push_schema(OFFERS_VIEW)
    pq.write_table(pa.table({"customer_id": ["C1"], "realtime_sessions": [1.0]}, schema=old), path)
    ensure_push_logs(tmp_path)
    assert pq.read_table(path).num_rows == 1
