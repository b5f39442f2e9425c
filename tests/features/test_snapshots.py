"""Snapshot calendar, incremental builds, the Parquet layout and the manifest."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feature_fixtures import read_snapshot, rich_world, utc, write_canonical
from rich.progress import Progress

from cxpredict.render import RichProgress

from cxpredict.workspace import Workspace, resolve_workspace
from features.snapshots import FeatureBuildConfig, build_features, snapshot_calendar

TWO_MONTHS = FeatureBuildConfig(lookback_months=2)


@pytest.fixture
def ws(tmp_path) -> Workspace:
    w = resolve_workspace(tmp_path / "ws")
    write_canonical(w, rich_world())
    return w


def files(ws: Workspace) -> dict[str, int]:
    return {
        str(p.relative_to(ws.features_dir)): p.stat().st_mtime_ns for p in ws.features_dir.rglob("*.parquet")
    }


def manifest(ws: Workspace) -> dict:
    return json.loads((ws.features_dir / "manifest.json").read_text())


def test_given_an_as_of_mid_month_then_the_calendar_is_the_firsts_of_the_last_12_months_plus_as_of():
    days = [t.isoformat() for t in snapshot_calendar(utc("2026-11-20"))]
    assert days[0] == "2025-12-01T00:00:00+00:00"
    assert days[-2:] == ["2026-11-01T00:00:00+00:00", "2026-11-20T00:00:00+00:00"]
    assert len(days) == 13


def test_given_an_as_of_during_the_first_of_a_month_then_it_replaces_that_months_snapshot():
    days = snapshot_calendar(utc("2026-11-01 12:00"), FeatureBuildConfig(lookback_months=2))
    # [Sep 1 12:00, Nov 1 12:00) holds Oct 1 and Nov 1 00:00; as_of takes Nov 1's place
    assert [t.isoformat() for t in days] == ["2026-10-01T00:00:00+00:00", "2026-11-01T12:00:00+00:00"]


def test_given_weekly_frequency_then_snapshots_are_mondays():
    days = snapshot_calendar(utc("2026-03-04"), FeatureBuildConfig(frequency="weekly", lookback_months=1))
    assert all(t.weekday() == 0 for t in days[:-1]) and days[-1] == utc("2026-03-04")
    assert days[0] == utc("2026-02-09") and len(days) == 5


def test_given_a_build_then_the_manifest_matches_the_files_column_by_column(ws):
    # when
    summary = build_features(ws, utc("2026-03-01"), TWO_MONTHS)
    m = manifest(ws)
    # then
    assert m["snapshots"] == ["2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"]
    assert (m["entity"], m["join_key"], m["timestamp_field"]) == (
        "customer",
        "customer_id",
        "event_timestamp",
    )
    assert m["as_of"] == "2026-03-01T00:00:00Z" and m["created_timestamp_field"] == "created_timestamp"
    names = [f["name"] for fam in m["families"].values() for f in fam["features"]]
    assert len(names) == len(set(names))
    assert summary.features == {k: len(v["features"]) for k, v in m["families"].items()}
    expected_type = {"double": pa.float64(), "string": pa.string()}
    for family, entry in m["families"].items():
        assert entry["path"] == family
        for day in ("2026-01-01", "2026-02-01", "2026-03-01"):
            schema = pq.read_schema(ws.features_dir / family / f"snapshot_date={day}" / "data.parquet")
            assert schema.names == ["customer_id", "event_timestamp", "created_timestamp"] + [
                f["name"] for f in entry["features"]
            ]
            assert schema.field("customer_id").type == pa.string()
            assert schema.field("event_timestamp").type == pa.timestamp("us", tz="UTC")
            assert schema.field("created_timestamp").type == pa.timestamp("us", tz="UTC")
            for feature in entry["features"]:
                assert schema.field(feature["name"]).type == expected_type[feature["dtype"]], feature["name"]
    snapshot = read_snapshot(ws, "purchase", "2026-02-01")
    assert (snapshot["event_timestamp"] == utc("2026-02-01")).all()
    assert not (ws.features_dir / ".staging").exists()
    assert sorted(p.name for p in ws.features_dir.iterdir()) == sorted([*m["families"], "manifest.json"])


def test_given_a_second_build_with_the_same_data_then_every_snapshot_is_skipped_and_no_file_is_rewritten(ws):
    first = build_features(ws, utc("2026-03-01"), TWO_MONTHS)
    before = files(ws)
    # when
    second = build_features(ws, utc("2026-03-01"), TWO_MONTHS)
    # then
    assert (first.snapshots_built, first.snapshots_skipped) == (3, 0)
    assert (second.snapshots_built, second.snapshots_skipped, second.rebuilt) == (0, 3, False)
    assert files(ws) == before
    assert second.customers == first.customers == 2
    assert manifest(ws)["snapshots"] == [
        "2026-01-01T00:00:00Z",
        "2026-02-01T00:00:00Z",
        "2026-03-01T00:00:00Z",
    ]


def test_given_a_later_as_of_then_only_the_new_snapshots_are_built(ws):
    build_features(ws, utc("2026-03-01"), TWO_MONTHS)
    before = files(ws)
    # when
    summary = build_features(ws, utc("2026-04-01"), TWO_MONTHS)
    # then
    after = files(ws)
    assert (summary.snapshots_built, summary.snapshots_skipped) == (1, 2)
    new = set(after) - set(before)
    assert new and all("snapshot_date=2026-04-01" in p for p in new)
    assert {p: after[p] for p in before} == before
    assert manifest(ws)["snapshots"][-2:] == ["2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"]
    assert manifest(ws)["snapshots"][0] == "2026-01-01T00:00:00Z"


def test_given_changed_canonical_data_then_every_snapshot_is_rebuilt_with_the_new_facts(ws):
    build_features(ws, utc("2026-03-01"), TWO_MONTHS)
    before = files(ws)
    world = rich_world()
    world["transactions"].append(
        {
            "customer_id": "C2",
            "timestamp": "2026-02-10",
            "amount": 40.0,
            "order_id": "O5",
            "channel": "store",
            "category": "home",
            "quantity": 1,
            "discount": 0.0,
            "returned": False,
        }
    )
    write_canonical(ws, world)
    # when
    summary = build_features(ws, utc("2026-03-01"), TWO_MONTHS)
    # then
    assert (summary.snapshots_built, summary.snapshots_skipped, summary.rebuilt) == (3, 0, True)
    after = files(ws)
    assert set(after) == set(before) and all(after[p] != before[p] for p in before)
    assert read_snapshot(ws, "purchase", "2026-03-01").loc["C2", "purchase_amount_30d"] == 40


def test_given_a_changed_source_set_then_families_of_removed_sources_disappear(ws):
    build_features(ws, utc("2026-03-01"), TWO_MONTHS)
    write_canonical(ws, {k: v for k, v in rich_world().items() if k != "surveys"})
    build_features(ws, utc("2026-03-01"), TWO_MONTHS)
    assert "voice" not in manifest(ws)["families"]
    assert not (ws.features_dir / "voice").exists()


def test_given_a_rich_progress_then_it_advances_once_per_snapshot_and_family(ws):
    with Progress(disable=True) as progress:
        summary = build_features(ws, utc("2026-03-01"), TWO_MONTHS, progress=RichProgress(progress))
    (task,) = progress.tasks
    assert task.total == task.completed == 3 * len(summary.features)


def test_given_no_canonical_transactions_then_the_build_fails_clearly(tmp_path):
    empty = resolve_workspace(tmp_path / "empty")
    write_canonical(empty, {"events": rich_world()["events"]})
    with pytest.raises(FileNotFoundError, match="transactions"):
        build_features(empty, utc("2026-03-01"), TWO_MONTHS)


def test_given_an_as_of_in_the_future_when_building_then_it_is_refused_and_nothing_is_written(ws):
    from datetime import UTC, datetime, timedelta

    from features.snapshots import FutureAsOf

    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)

    with pytest.raises(FutureAsOf, match="in the future"):
        build_features(ws, tomorrow, TWO_MONTHS)

    assert not ws.features_dir.exists() or not any(ws.features_dir.iterdir())
