"""The Feast repository and store operations: apply (API and real CLI), point-in-time retrieval."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from store_fixtures import SNAPSHOTS, write_world

from cxpredict import tasks as registry
from cxpredict.workspace import HOME_VARIABLE, Workspace
from features import store as feature_store
from features.feature_repo.definitions import RepoSettings, build_repo, load_manifest

REPO = Path(feature_store.__file__).parent / "feature_repo"
FEAST = Path(sys.executable).parent / "feast"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Workspace, dict]:
    ws = Workspace(root=tmp_path_factory.mktemp("store") / "ws")
    frames = write_world(ws.root, n_customers=30)
    feature_store.apply_repo(ws)
    return ws, frames


def as_values(series: pd.Series) -> list:
    """Column values with every null (None/NaN/NA) as None, for exact comparison."""
    return series.astype(object).where(series.notna(), None).tolist()


def test_given_a_manifest_when_applied_then_one_view_per_family_derived_views_and_one_service_per_task(world):
    ws, _ = world
    store = feature_store.open_store(ws)

    views = {fv.name: fv for fv in store.list_feature_views()}
    assert set(views) == {"purchase", "engagement", "profile", "realtime", "offer_outcomes"}
    assert {f.name: str(f.dtype) for f in views["profile"].features} == {
        "profile_tenure_days": "Float64",
        "profile_region": "String",
        "profile_loyalty_tier": "String",
    }
    assert views["purchase"].ttl == timedelta(days=62)
    assert views["purchase"].batch_source.path == str(
        ws.features_dir / "purchase" / "snapshot_date=*" / "data.parquet"
    )
    assert store.get_entity("customer").join_key == "customer_id"
    odfvs = {o.name: sorted(f.name for f in o.features) for o in store.list_on_demand_feature_views()}
    assert odfvs == {
        "ratios": ["engagement_cart_abandonment_ratio_30d", "purchase_spend_per_order_30d"],
        "recency_now": ["days_since_last_purchase_now", "profile_tenure_days_now"],
    }
    services = {s.name: {p.name for p in s.feature_view_projections} for s in store.list_feature_services()}
    assert services["churn"] == {"purchase", "engagement", "profile", "ratios", "recency_now"}
    assert set(services) == {
        *(spec.name for spec in registry.known_tasks()),
        "realtime_signals",
        "offer_outcomes",
    }


def test_given_a_family_missing_when_built_then_no_view_and_no_ratio_over_its_features(tmp_path):
    write_world(tmp_path, n_customers=3, families=("purchase",))

    objects = build_repo(tmp_path, load_manifest(tmp_path / "features"), RepoSettings(ttl_days=90))

    assert set(objects.feature_views) == {"purchase", "realtime", "offer_outcomes"}
    assert objects.feature_views["purchase"].ttl == timedelta(days=90)
    ratios = [f.name for f in objects.on_demand_views["ratios"].features]
    assert ratios == ["purchase_spend_per_order_30d"]
    assert [p.name for p in objects.services["unmet_needs"].feature_view_projections][0] == "purchase"


CLI_SCRIPT = """
import sys
from feast.cli.cli import cli
for command in sys.argv[2:]:
    print("$ feast", command, flush=True)
    cli.main(["-c", sys.argv[1], *command.split()], standalone_mode=False)
"""


@pytest.mark.slow
def test_given_the_repo_folder_when_the_feast_cli_applies_lists_and_materialises_then_feast_serves_the_values(
    tmp_path,
):
    ws = Workspace(root=tmp_path / "ws")
    frames = write_world(ws.root, n_customers=5, families=("purchase", "profile"))
    env = {**os.environ, HOME_VARIABLE: str(ws.root)}
    commands = ["apply", "feature-views list", "materialize-incremental 2026-11-20T00:00:00"]

    run = subprocess.run(
        [sys.executable, "-c", CLI_SCRIPT, str(REPO), *commands],
        env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path,
    )  # fmt: skip

    assert run.returncode == 0, run.stderr[-3000:]
    listing = run.stdout.split("$ feast feature-views list")[1].split("$ feast materialize-incremental")[0]
    names = {line.split()[0] for line in listing.splitlines()[1:] if line.strip()}
    assert {"purchase", "profile", "realtime", "offer_outcomes", "ratios", "recency_now"} <= names
    assert (ws.feast_dir / "registry.db").is_file()
    store = feature_store.open_store(ws)
    online = store.get_online_features(
        features=["profile:profile_region"], entity_rows=[{"customer_id": "C000002"}]
    )
    expected = frames[("profile", SNAPSHOTS[-1])].set_index("customer_id").loc["C000002", "profile_region"]
    assert online.to_dict()["profile_region"] == [expected]


def test_given_cxpredict_home_unset_when_feast_imports_the_repo_then_it_fails_clearly(monkeypatch):
    monkeypatch.delenv(HOME_VARIABLE, raising=False)

    with pytest.raises(RuntimeError, match=HOME_VARIABLE):
        runpy.run_path(str(REPO / "repo.py"))


def test_given_an_entity_row_between_two_snapshots_when_retrieved_then_the_earlier_snapshot_values(world):
    ws, frames = world
    between = SNAPSHOTS[1] + timedelta(days=10)
    entity_df = pd.DataFrame({"customer_id": ["C000003", "C000007"], "event_timestamp": [between, between]})

    result = feature_store.get_training_features(ws, entity_df, "churn")

    earlier = frames[("purchase", SNAPSHOTS[1])].set_index("customer_id").loc[["C000003", "C000007"]]
    later = frames[("purchase", SNAPSHOTS[2])].set_index("customer_id").loc[["C000003", "C000007"]]
    for name in ("purchase_count_30d", "days_since_last_purchase", "purchase_top_category"):
        assert as_values(result[name]) == as_values(earlier[name])
    assert as_values(result["purchase_count_30d"]) != as_values(later["purchase_count_30d"])
    expected_now = earlier["days_since_last_purchase"].to_numpy() + 10.0
    np.testing.assert_allclose(result["days_since_last_purchase_now"].to_numpy(dtype=float), expected_now)
    assert list(result["customer_id"]) == ["C000003", "C000007"]


def test_given_an_entity_row_on_a_snapshot_when_retrieved_then_that_snapshot_is_visible(world):
    ws, frames = world
    entity_df = pd.DataFrame({"customer_id": ["C000004"], "event_timestamp": [SNAPSHOTS[2]]})

    result = feature_store.get_training_features(ws, entity_df, "churn")

    expected = frames[("profile", SNAPSHOTS[2])].set_index("customer_id").loc["C000004"]
    assert result["profile_region"].iloc[0] == expected["profile_region"]


def test_given_an_entity_row_beyond_the_ttl_when_retrieved_then_nulls(world):
    ws, _ = world
    late = SNAPSHOTS[-1] + timedelta(days=63)
    entity_df = pd.DataFrame({"customer_id": ["C000001", "C000002"], "event_timestamp": [late, late]})

    result = feature_store.get_training_features(ws, entity_df, "churn")

    features = [c for c in result.columns if c not in ("customer_id", "event_timestamp")]
    assert result[features].isna().all().all()


def test_given_entity_rows_when_the_narrow_pick_path_retrieves_then_it_equals_feasts_join(world):
    ws, _ = world
    rng = np.random.default_rng(3)
    start = SNAPSHOTS[0] - timedelta(days=5)
    entity_df = pd.DataFrame(
        {
            "customer_id": [f"C{i:06d}" for i in rng.integers(0, 35, 60)],
            "event_timestamp": [start + timedelta(days=float(d)) for d in rng.random(60) * 140],
            "label": rng.integers(0, 2, 60),
        }
    )

    feast_result = feature_store.get_training_features(ws, entity_df, "next_purchase")
    fast_result = feature_store.get_training_features_fast(ws, entity_df, "next_purchase")

    assert list(fast_result.columns) == list(feast_result.columns)
    assert feast_result.drop(columns=["customer_id", "event_timestamp", "label"]).notna().any().all()
    for column in feast_result.columns:
        if feast_result[column].dtype.kind == "f":
            np.testing.assert_allclose(
                fast_result[column].to_numpy(dtype=float),
                feast_result[column].to_numpy(dtype=float),
                rtol=1e-12,
            )
        else:
            assert as_values(fast_result[column]) == as_values(feast_result[column]), column


def test_given_an_entity_frame_without_timestamps_when_retrieved_then_the_missing_field_is_named(world):
    ws, _ = world
    with pytest.raises(ValueError, match="event_timestamp"):
        feature_store.get_training_features(ws, pd.DataFrame({"customer_id": ["C000001"]}), "churn")


def test_given_the_redis_setting_when_configured_then_only_the_online_store_changes(tmp_path):
    settings = RepoSettings(online_store="redis", redis_connection_string="127.0.0.1:6390", project="p_x")

    config = feature_store.repo_config(Workspace(root=tmp_path), settings)

    assert config.online_store.type == "redis"
    assert config.online_store.connection_string == "127.0.0.1:6390"
    assert config.project == "p_x"
    assert config.registry.path == str(tmp_path / "feast" / "registry.db")
    assert config.offline_store.type == "duckdb"


def test_given_a_materialised_view_when_registry_read_then_the_interval_is_recorded(world):
    ws, _ = world
    end = datetime(2026, 11, 20, tzinfo=UTC)

    report = feature_store.materialize_latest(ws, end=end, views=["profile"])

    view = feature_store.open_store(ws).get_feature_view("profile")
    assert report.views == ["profile"] and report.customers == 30
    assert view.most_recent_end_time.astimezone(UTC) == end


def test_given_features_older_than_the_ttl_when_materialised_now_then_the_latest_snapshot_is_still_written(
    world,
):
    ws, frames = world
    much_later = SNAPSHOTS[-1] + timedelta(days=400)

    report = feature_store.materialize_latest(ws, end=much_later, views=["profile"])

    online = (
        feature_store.open_store(ws)
        .get_online_features(
            features=["profile:profile_loyalty_tier"], entity_rows=[{"customer_id": "C000008"}]
        )
        .to_dict()
    )
    expected = (
        frames[("profile", SNAPSHOTS[-1])].set_index("customer_id").loc["C000008", "profile_loyalty_tier"]
    )
    assert report.start == SNAPSHOTS[-1] - timedelta(days=62)
    assert online["profile_loyalty_tier"] == [expected]


def test_given_a_reader_while_the_registry_is_rewritten_then_it_always_parses_a_whole_registry(world):
    import threading

    from features.feast_internals import FileRegistryStore

    # given the applied registry and a reader parsing the file in a loop, as a serving worker does
    ws, _ = world
    store = feature_store.open_store(ws)
    writer = store.registry._registry_store
    proto = writer.get_registry_proto()
    services = len(proto.feature_services)
    reader = FileRegistryStore(store.config.registry, ws.feast_dir)
    seen: list[int] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.append(len(reader.get_registry_proto().feature_services))

    thread = threading.Thread(target=read)
    thread.start()
    try:
        # when the registry is written again and again (as `cxpredict features` applies it)
        for _ in range(300):
            writer.update_registry_proto(proto)
    finally:
        stop.set()
        thread.join()
    # then every read saw all the services: never an empty or half-written file
    assert services > 0 and seen and set(seen) == {services}
    assert not list(ws.feast_dir.glob(".*registry*"))  # no temporary file left behind
