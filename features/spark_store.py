"""Point-in-time training retrieval on Feast's Spark offline store.

Why: with the Spark engine the snapshots may be too large for one machine's DuckDB join; Feast's
Spark offline store runs ``get_historical_features`` as Spark SQL. That store reads only
``SparkSource``s, so this module keeps a registry of its own (``feature_store.spark.yaml``:
``<ws>/feast/registry.spark.db``) holding the objects :func:`build_repo` generates from the
manifest, with each Parquet ``FileSource`` swapped for a ``SparkSource`` over the same path. The
main registry, materialisation and serving are untouched.

Contract: :func:`get_training_features_spark` takes and returns what
:func:`features.store.get_training_features_fast` does, the training path of the DuckDB engine:
the entity columns (times as UTC) and exactly the service's features, rows in input order.
The SparkSession is the feature engine's (:func:`features.spark_engine.spark_session`), which
Feast reuses; ``spark_conf`` in the YAML applies only where Feast starts the session itself.
"""

from __future__ import annotations

import pandas as pd
import yaml
from feast import FeatureStore, FileSource, PushSource, RepoConfig

from cxpredict.workspace import Workspace
from features.feast_internals import SparkSource
from features.feature_repo.definitions import (
    REQUEST_TIME,
    RepoObjects,
    RepoSettings,
    build_repo,
    ensure_push_logs,
    load_manifest,
)
from features.store import REPO_DIR, _needs_request_time, apply_objects, _substitute, utc_micros

SPARK_CONFIG = "feature_store.spark.yaml"


def spark_repo_config(ws: Workspace, settings: RepoSettings | None = None) -> RepoConfig:
    """``feature_store.spark.yaml`` for this workspace (its registry and scratch online store)."""
    settings = settings or RepoSettings()
    raw = _substitute(yaml.safe_load((REPO_DIR / SPARK_CONFIG).read_text()), str(ws.root))
    raw["project"] = settings.project
    config = RepoConfig(**raw)
    config.repo_path = ws.feast_dir
    return config


def open_spark_store(ws: Workspace, settings: RepoSettings | None = None) -> FeatureStore:
    """A FeatureStore on the workspace's Spark registry, its session being the feature engine's."""
    from features.spark_engine import spark_session

    spark_session()
    ws.feast_dir.mkdir(parents=True, exist_ok=True)
    return FeatureStore(repo_path=str(ws.feast_dir), config=spark_repo_config(ws, settings))


def as_spark_source(source: FileSource) -> SparkSource:
    """The same Parquet files, columns and timestamps as a SparkSource."""
    return SparkSource(
        name=source.name,
        path=source.path,
        file_format="parquet",
        timestamp_field=source.timestamp_field,
        created_timestamp_column=source.created_timestamp_column or None,
        field_mapping=dict(source.field_mapping or {}),
        description=source.description,
    )


def spark_objects(objects: RepoObjects) -> RepoObjects:
    """``objects`` with every FileSource (views' batch sources, the push source's) as a SparkSource."""
    swapped: dict[str, SparkSource] = {}

    def swap(source):
        if isinstance(source, FileSource):
            return swapped.setdefault(source.name, as_spark_source(source))
        if isinstance(source, PushSource) and isinstance(source.batch_source, FileSource):
            source.batch_source = swap(source.batch_source)
        return source

    for view in objects.feature_views.values():
        view.batch_source = swap(view.batch_source)
        if view.stream_source is not None:
            view.stream_source = swap(view.stream_source)
    for name, source in list(objects.sources.items()):
        objects.sources[name] = swap(source)
    return objects


def apply_spark_repo(ws: Workspace, settings: RepoSettings | None = None) -> RepoObjects:
    """Register the manifest's objects (SparkSources) in the Spark registry, as ``feast apply`` would."""
    settings = settings or RepoSettings()
    manifest = load_manifest(ws.features_dir)
    ensure_push_logs(ws.feast_dir, manifest.join_key)
    objects = spark_objects(build_repo(ws.root, manifest, settings))
    apply_objects(open_spark_store(ws, settings), objects, settings.project)
    return objects


def get_training_features_spark(
    ws: Workspace,
    entity_df: pd.DataFrame,
    feature_service: str,
    settings: RepoSettings | None = None,
) -> pd.DataFrame:
    """Feast's ``get_historical_features`` on Spark: each row gets, per view, the latest snapshot at
    or before its ``event_timestamp`` within the view's TTL. Applies the Spark registry first
    (idempotent), so it follows the current manifest. Returns the entity columns and the service's
    features only (Feast adds the inputs of on-demand views), like the DuckDB training path."""
    missing = [c for c in ("customer_id", "event_timestamp") if c not in entity_df.columns]
    if missing:
        raise ValueError(f"entity_df lacks column(s) {missing}")
    apply_spark_repo(ws, settings)
    store = open_spark_store(ws, settings)
    frame = entity_df.copy()
    frame["event_timestamp"] = utc_micros(frame["event_timestamp"])
    if REQUEST_TIME in frame.columns:
        frame[REQUEST_TIME] = utc_micros(frame[REQUEST_TIME])
    elif _needs_request_time(store, feature_service):
        frame[REQUEST_TIME] = frame["event_timestamp"]
    frame["__row"] = range(len(frame))
    service = store.get_feature_service(feature_service)
    job = store.get_historical_features(entity_df=frame, features=service)
    result = job.to_df().sort_values("__row", kind="stable").reset_index(drop=True)
    for column in entity_df.columns:
        if isinstance(frame[column].dtype, pd.DatetimeTZDtype) and not isinstance(
            result[column].dtype, pd.DatetimeTZDtype
        ):
            result[column] = pd.to_datetime(result[column]).dt.tz_localize("UTC").astype(frame[column].dtype)
    names = [f.name for p in service.feature_view_projections for f in p.features]
    return result[[*entity_df.columns, *(n for n in names if n not in entity_df.columns)]]
