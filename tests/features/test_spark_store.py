"""Training retrieval on Feast's Spark offline store: with ``CXPREDICT_ENGINE=spark`` training's
point-in-time rows come from ``get_historical_features`` on Spark, and equal the DuckDB path's."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest
from feast import FileSource
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feature_fixtures import utc

from cxpredict import tasks
from cxpredict.workspace import Workspace, resolve_workspace
from features.feature_repo.definitions import build_repo, load_manifest
from features.snapshots import FeatureBuildConfig, build_features
from features.spark_store import spark_objects
from features.store import apply_repo, get_training_features_fast

pytestmark = pytest.mark.slow  # a local[1] SparkSession and one Feast retrieval on it


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Workspace:
    """A small generated world with two monthly snapshots (2026-10-01, 2026-11-01), applied in Feast."""
    from features.ingest import ingest
    from features.spark_engine import spark_session
    from features.synthetic import WorldConfig, generate

    spark_session("local[1]", {"spark.sql.shuffle.partitions": "1", "spark.driver.memory": "1g"})
    ws = resolve_workspace(tmp_path_factory.mktemp("spark-store") / "ws").ensure()
    generate(ws, WorldConfig(customers=200, seed=3, days=400, end=date(2026, 11, 1)))
    ingest(ws)
    build_features(ws, utc("2026-11-01"), FeatureBuildConfig(lookback_months=1))
    apply_repo(ws)
    return ws


def test_given_the_manifest_objects_when_made_for_spark_then_every_batch_source_is_a_spark_source(world):
    objects = spark_objects(build_repo(world.root, load_manifest(world.features_dir)))
    batch = [view.batch_source for view in objects.feature_views.values()]
    assert batch and all(isinstance(source, SparkSource) for source in batch)
    assert not any(isinstance(source, FileSource) for source in objects.sources.values())
    assert all(source.path.endswith(".parquet") for source in batch)


def test_given_the_spark_engine_when_training_retrieves_features_then_the_rows_equal_the_duckdb_paths(
    world, monkeypatch
):
    from training.data import feast_features_for

    # given customers at a snapshot time, between snapshots, and before any snapshot, with a label
    ids = sorted(pd.read_parquet(world.features_dir / "purchase").customer_id.unique())[:30]
    moments = [utc("2026-11-01"), utc("2026-10-15 08:00"), utc("2026-09-01")]
    entity_df = pd.DataFrame(
        {
            "customer_id": [c for _ in moments for c in ids],
            "event_timestamp": [m for m in moments for _ in ids],
            "label": range(len(ids) * len(moments)),
        }
    )
    service = tasks.get("churn").feature_service

    # when training retrieves them with the Spark engine, and with the DuckDB engine
    monkeypatch.setenv("CXPREDICT_ENGINE", "spark")
    on_spark = feast_features_for(world)(entity_df, "churn")
    monkeypatch.setenv("CXPREDICT_ENGINE", "duckdb")
    on_duckdb = get_training_features_fast(world, entity_df, service)

    # then the same rows, columns, dtypes and values come back (nulls before the first snapshot)
    assert list(on_spark.columns) == list(on_duckdb.columns)
    pd.testing.assert_frame_equal(on_spark, on_duckdb, check_exact=False, rtol=1e-9)
    early = on_duckdb[on_duckdb.event_timestamp == utc("2026-09-01")]
    assert early["purchase_count_30d"].isna().all()
    assert on_duckdb["purchase_count_30d"].notna().any()
