"""Feast store operations for one workspace: apply, materialise, point-in-time retrieval, push.

Why a module and not just the CLI: the pipeline and the tests drive Feast in-process with a
workspace chosen at run time. The configuration is the repository's own ``feature_store.yaml``
with ``${CXPREDICT_HOME}`` replaced by the workspace (so the CLI and this API see the same
store), plus :class:`RepoSettings` overrides (project, TTL, Redis online store).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import numpy as np
import pandas as pd
import yaml
from feast import FeatureStore, FeatureView, RepoConfig
from feast.data_source import PushMode
from pydantic import BaseModel, ConfigDict

from cxpredict.workspace import Workspace, exclusive
from features.catalog import ingest_lock
from features.decision_log import OFFER_WINDOW, DecisionLog, offer_counts
from features.event_log import EventLog, RealtimeEvent, counters
from features.feast_internals import DUMMY_ENTITY, Project, RepoContents, extract_objects_for_apply_delete
from features.feature_repo.definitions import (
    OFFER_FEATURES,
    OFFERS_PUSH_SOURCE,
    PUSHED_VIEWS,
    REALTIME_FEATURES,
    REALTIME_VIEW,
    REQUEST_TIME,
    RepoObjects,
    RepoSettings,
    build_repo,
    ensure_push_logs,
    load_manifest,
)

REPO_DIR = Path(__file__).resolve().parent / "feature_repo"
HOME_PLACEHOLDER = "${CXPREDICT_HOME}"


def _substitute(node, root: str):
    """Replace the workspace placeholder in every string of the parsed YAML (what Feast's expandvars does)."""
    if isinstance(node, dict):
        return {key: _substitute(value, root) for key, value in node.items()}
    if isinstance(node, list):
        return [_substitute(value, root) for value in node]
    return node.replace(HOME_PLACEHOLDER, root) if isinstance(node, str) else node


def repo_config(ws: Workspace, settings: RepoSettings | None = None) -> RepoConfig:
    """The repository's ``feature_store.yaml`` for this workspace, with the settings' overrides."""
    workspace = ws
    settings = settings or RepoSettings()
    raw = _substitute(yaml.safe_load((REPO_DIR / "feature_store.yaml").read_text()), str(workspace.root))
    raw["project"] = settings.project
    if settings.online_store == "redis":
        raw["online_store"] = {"type": "redis", "connection_string": settings.redis_connection_string}
    config = RepoConfig(**raw)
    config.repo_path = workspace.feast_dir
    return config


def open_store(ws: Workspace, settings: RepoSettings | None = None) -> FeatureStore:
    """A FeatureStore on the workspace (registry and online store under ``<ws>/feast``)."""
    workspace = ws
    workspace.feast_dir.mkdir(parents=True, exist_ok=True)
    return FeatureStore(repo_path=str(workspace.feast_dir), config=repo_config(workspace, settings))


def apply_repo(ws: Workspace, settings: RepoSettings | None = None) -> RepoObjects:
    """Register the objects generated from the manifest, as ``feast apply`` would.

    Objects that are no longer generated (e.g. a family whose source went away) are deleted
    from the registry and their online tables dropped.
    """
    workspace = ws
    settings = settings or RepoSettings()
    manifest = load_manifest(workspace.features_dir)
    ensure_push_logs(workspace.feast_dir, manifest.join_key)
    objects = build_repo(workspace.root, manifest, settings)
    apply_objects(open_store(workspace, settings), objects, settings.project)
    return objects


def apply_objects(store: FeatureStore, objects: RepoObjects, project: str) -> None:
    """Make ``store``'s registry hold exactly ``objects`` (``feast apply`` semantics: objects no
    longer generated are deleted)."""
    sources = list(objects.sources.values())
    sources += [s.batch_source for s in sources if getattr(s, "batch_source", None) is not None]
    contents = RepoContents(
        projects=[Project(name=project)],
        data_sources=sources,
        feature_views=list(objects.feature_views.values()),
        on_demand_feature_views=list(objects.on_demand_views.values()),
        stream_feature_views=[],
        label_views=[],
        entities=[objects.entity, DUMMY_ENTITY],
        feature_services=list(objects.services.values()),
        permissions=[],
    )
    to_apply, to_delete, _, _ = extract_objects_for_apply_delete(project, store.registry, contents)
    store.apply(to_apply, objects_to_delete=to_delete, partial=False)


class MaterializeReport(BaseModel):
    """What one materialisation wrote."""

    model_config = ConfigDict(frozen=True)

    method: Literal["fast", "feast"]
    """``fast``: this project's atomic writer (SQLite: one transaction; Redis: staged keys swapped in
    one ``MULTI``/``EXEC``); ``feast``: Feast's own materialisation, view by view."""
    views: list[str]
    customers: int | None
    """Largest number of customers written for one view (None: Feast's writer does not say)."""
    values: int | None
    seconds: float
    start: datetime
    end: datetime


def snapshot_views(store: FeatureStore) -> list:
    """The materialisable family views (the pushed views are fed by pushes, not by snapshots)."""
    return [fv for fv in store.list_feature_views() if fv.name not in PUSHED_VIEWS and fv.online]


def materialize_latest(
    ws: Workspace,
    end: datetime | None = None,
    *,
    fast: bool = True,
    settings: RepoSettings | None = None,
    views: list[str] | None = None,
) -> MaterializeReport:
    """Write each customer's latest snapshot values to the online store.

    Rows with event time in ``[min(end, as_of) - TTL, end]`` are eligible (``end`` defaults to
    now, ``as_of`` is the manifest's): the latest snapshot is written even when it is older than
    the TTL relative to now, e.g. a demo world built on past dates. ``fast`` uses :mod:`features.materialize` (same table format, batched) on SQLite and falls
    back to Feast's own writer for other online stores. On Redis, ``fast`` with every snapshot view
    writes staging keys and swaps them in at once (:mod:`features.redis_online`); a subset of views,
    or ``fast=False``, goes through Feast's writer, view by view. The registry records the
    materialised interval either way, so ``feast materialize-incremental`` continues from here.
    """
    workspace = ws
    settings = settings or RepoSettings()
    store = open_store(workspace, settings)
    end = (end or datetime.now(UTC)).astimezone(UTC)
    chosen = [fv for fv in snapshot_views(store) if views is None or fv.name in views]
    as_of = load_manifest(workspace.features_dir).as_of.astimezone(UTC)
    start = min(end, as_of) - settings.ttl
    began = time.perf_counter()
    state = {"snapshot_as_of": as_of.isoformat()}
    whole_redis = settings.online_store == "redis" and views is None
    use_fast = fast and (settings.online_store == "sqlite" or whole_redis)
    if use_fast and settings.online_store == "redis":
        from features.redis_online import write_snapshot

        customers, values = write_snapshot(store, chosen, start, end, state=state)
    elif use_fast:
        from features.materialize import write_latest

        customers, values = write_latest(store, chosen, start, end, state=state)
    else:
        store.materialize(start_date=start, end_date=end, feature_views=[fv.name for fv in chosen])
        customers = values = None
    return MaterializeReport(
        method="fast" if use_fast else "feast",
        views=[fv.name for fv in chosen],
        customers=customers,
        values=values,
        seconds=time.perf_counter() - began,
        start=start,
        end=end,
    )


def refresh_features(
    ws: Workspace,
    as_of: datetime,
    progress=None,
    custom_dir: Path | None = None,
    engine: str | None = None,
) -> tuple[object, MaterializeReport]:
    """``cxpredict features``: build the missing snapshots up to ``as_of`` (with the custom SQL
    views of ``custom_dir``, default ``<ws>/features.d``; on ``engine``, default DuckDB), apply the
    Feast repository and materialise the latest snapshot online. Returns the build summary and the
    materialisation.

    Holds the workspace's writer lock (``features.catalog.ingest_lock``) throughout, as ingestion and
    erasure do: a refresh that read a customer's rows before an erasure would otherwise write them
    back into the snapshots and the online store after it."""
    from features.snapshots import build_features

    with ingest_lock(ws):
        build = build_features(ws, as_of, progress=progress, custom_dir=custom_dir, engine=engine)
        apply_repo(ws)
        report = materialize_latest(ws, end=as_of)
        remirror(ws)
    return build, report


def remirror(ws: Workspace, now: datetime | None = None) -> int:
    """Rewrite Feast's ``realtime`` view for every customer with logged events since the online
    snapshot (after a refresh, counters restart from the new snapshot) and the ``offer_outcomes``
    view at ``now`` (default: now) for every customer with an outcome in the 60 days before it (so
    counts that aged out since a refresh up to 30 days earlier drop too); returns how many customers
    had realtime counters."""
    store = open_store(ws)
    log = EventLog.of(ws)
    decisions = DecisionLog.of(ws)
    try:
        window = snapshot_as_of(ws, store)
        customers = log.customers(window)
        if customers:
            mirror_counters(ws, store, log, customers, window)
        now = now or datetime.now(UTC)
        offered = decisions.customers_with_outcomes(now - 2 * OFFER_WINDOW)
        if offered:
            mirror_offers(ws, store, decisions, offered, now)
    finally:
        log.close()
        decisions.close()
    return len(customers)


def utc_micros(values: pd.Series) -> pd.Series:
    """UTC timestamps at microsecond precision (the feature tables' unit; Feast's join casts to it)."""
    return pd.to_datetime(values, utc=True).dt.floor("us").astype("datetime64[us, UTC]")


def _needs_request_time(store: FeatureStore, service_name: str) -> bool:
    service = store.get_feature_service(service_name)
    odfv_names = {p.name for p in service.feature_view_projections}
    return any(
        REQUEST_TIME in {f.name for source in odfv.source_request_sources.values() for f in source.schema}
        for odfv in store.list_on_demand_feature_views()
        if odfv.name in odfv_names
    )


def get_training_features(
    ws: Workspace,
    entity_df: pd.DataFrame,
    feature_service: str,
    settings: RepoSettings | None = None,
) -> pd.DataFrame:
    """Point-in-time correct features for ``entity_df[customer_id, event_timestamp]`` (Feast's join).

    Each row gets, per view, the latest snapshot at or before its ``event_timestamp`` and not
    older than the view's TTL (else nulls). ``request_time`` defaults to ``event_timestamp`` for
    the request-time on-demand features. Rows come back in the input order; extra input columns
    (e.g. labels) are kept.
    """
    missing = [c for c in ("customer_id", "event_timestamp") if c not in entity_df.columns]
    if missing:
        raise ValueError(f"entity_df lacks column(s) {missing}")
    store = open_store(ws, settings)
    frame = entity_df.copy()
    frame["event_timestamp"] = utc_micros(frame["event_timestamp"])
    if REQUEST_TIME in frame.columns:
        frame[REQUEST_TIME] = utc_micros(frame[REQUEST_TIME])
    elif _needs_request_time(store, feature_service):
        frame[REQUEST_TIME] = frame["event_timestamp"]
    frame["__row"] = range(len(frame))
    job = store.get_historical_features(entity_df=frame, features=store.get_feature_service(feature_service))
    result = job.to_df().sort_values("__row", kind="stable").drop(columns="__row").reset_index(drop=True)
    if REQUEST_TIME not in entity_df.columns and REQUEST_TIME in result.columns:
        result = result.drop(columns=REQUEST_TIME)
    return result


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def point_in_time_sql(view: FeatureView, names: list[str], join_key: str) -> str:
    """DuckDB query for one view: ``__row`` and the view's features for every entity row, in row order.

    Same rule as Feast's offline join: the feature row with the latest event time at or before
    the entity time and not older than the TTL, ties broken by the latest ``created_timestamp``.
    The choice is made on the narrow key columns only; the wide feature row is then fetched by
    an equality join (Feast ranks the wide joined rows instead).
    """
    key = _quoted(join_key)
    source = view.batch_source
    path = _sql_literal(source.path)
    ts = _quoted(source.timestamp_field)
    created = _quoted(source.created_timestamp_column) if source.created_timestamp_column else None
    ttl = int(view.ttl.total_seconds()) if view.ttl else 0
    window = f" AND f.__ts >= e.event_timestamp - INTERVAL {ttl} SECOND" if ttl else ""
    created_pick = f", {created} AS __cr" if created else ""
    created_order = ", f.__cr DESC" if created else ""
    created_match = f" AND w.{created} = p.__cr" if created else ""
    columns = ", ".join(f"w.{_quoted(n)}" for n in names)
    return (
        f"WITH f AS (SELECT {key}, {ts} AS __ts{created_pick} FROM read_parquet({path})), "
        f"p AS (SELECT e.__row, f.* FROM entities AS e JOIN f ON e.{key} = f.{key} "
        f"AND f.__ts <= e.event_timestamp{window} "
        f"QUALIFY row_number() OVER (PARTITION BY e.__row ORDER BY f.__ts DESC{created_order}) = 1) "
        f"SELECT e.__row, {columns} FROM entities AS e LEFT JOIN p ON p.__row = e.__row "
        f"LEFT JOIN read_parquet({path}) AS w ON w.{key} = p.{key} AND w.{ts} = p.__ts{created_match} "
        "ORDER BY e.__row"
    )


def _service_inputs(store: FeatureStore, service) -> tuple[dict[str, list[str]], dict]:
    """Stored features to read per view (requested ones and on-demand inputs), and the service's ODFVs."""
    odfvs = {o.name: o for o in store.list_on_demand_feature_views()}
    wanted: dict[str, list[str]] = {}
    for projection in service.feature_view_projections:
        sources = (
            odfvs[projection.name].source_feature_view_projections.values()
            if projection.name in odfvs
            else [projection]
        )
        for source in sources:
            names = wanted.setdefault(source.name, [])
            names += [f.name for f in source.features if f.name not in names]
    return wanted, odfvs


def point_in_time_join(
    store: FeatureStore, wanted: dict[str, list[str]], entity_df: pd.DataFrame
) -> tuple[pd.Series, pd.DataFrame]:
    """The stored features ``wanted`` (view name → feature names) for each entity row, as of its time.

    One narrow DuckDB query per view (:func:`point_in_time_sql`); returns the rows' UTC microsecond
    timestamps and the feature columns, both in the input's row order.
    """
    import duckdb
    import pyarrow as pa

    views = [(store.get_feature_view(name), names) for name, names in wanted.items()]
    join_key = store.get_entity(views[0][0].entities[0]).join_key
    stamps = utc_micros(entity_df["event_timestamp"]).reset_index(drop=True)
    rows = pd.DataFrame(
        {
            join_key: entity_df[join_key].reset_index(drop=True),
            "event_timestamp": stamps,
            "__row": np.arange(len(entity_df)),
        }  # fmt: skip
    )
    columns: dict[str, pa.ChunkedArray] = {}
    with duckdb.connect() as connection:
        connection.register("entities", rows)
        for view, names in views:
            table = connection.sql(point_in_time_sql(view, names, join_key)).to_arrow_table()
            columns.update({name: table.column(name) for name in names})
    return stamps, pa.table(columns).to_pandas()


def get_training_features_fast(
    ws: Workspace,
    entity_df: pd.DataFrame,
    feature_service: str,
    settings: RepoSettings | None = None,
) -> pd.DataFrame:
    """Same result as :func:`get_training_features`, with one narrow DuckDB query per view.

    Why: Feast's DuckDB offline store joins every entity row with every earlier snapshot row,
    carrying all feature columns, and then ranks them; here the ranking runs on the key columns
    and the feature row is fetched once (see :func:`point_in_time_sql`). The registered on-demand
    views' own functions compute the derived features. Reads the FileSources the registry
    holds, so it needs Parquet file sources (the only kind this repository defines).
    """
    return service_features(ws, entity_df, [feature_service], settings)[feature_service]


def service_features(
    ws: Workspace,
    entity_df: pd.DataFrame,
    feature_services: list[str],
    settings: RepoSettings | None = None,
) -> dict[str, pd.DataFrame]:
    """Point-in-time features of several FeatureServices for the same entity rows:
    ``{service: entity columns + that service's features}``.

    Each feature view (and each on-demand view) is computed once for all services, which share
    most views: scoring a million customers with three services joins 7 views instead of ~20.
    """
    missing = [c for c in ("customer_id", "event_timestamp") if c not in entity_df.columns]
    if missing:
        raise ValueError(f"entity_df lacks column(s) {missing}")
    store = open_store(ws, settings)
    services = {name: store.get_feature_service(name) for name in feature_services}
    wanted: dict[str, list[str]] = {}
    odfvs: dict = {}
    for service in services.values():
        inputs, found = _service_inputs(store, service)
        odfvs.update(found)
        for view, names in inputs.items():
            known = wanted.setdefault(view, [])
            known += [name for name in names if name not in known]
    stamps, stored = point_in_time_join(store, wanted, entity_df)
    base = entity_df.reset_index(drop=True).assign(event_timestamp=stamps)
    request_time = utc_micros(base[REQUEST_TIME]) if REQUEST_TIME in base else base["event_timestamp"]
    derived: dict[str, pd.DataFrame] = {}
    out = {}
    for name, service in services.items():
        values: dict[str, np.ndarray] = {}
        for projection in service.feature_view_projections:
            frame = stored
            if projection.name in odfvs:
                if projection.name not in derived:
                    odfv = odfvs[projection.name]
                    needed = [
                        f.name for s in odfv.source_feature_view_projections.values() for f in s.features
                    ]
                    derived[projection.name] = odfv.feature_transformation.udf(
                        stored[needed].assign(**{REQUEST_TIME: request_time})
                    )
                frame = derived[projection.name]
            values.update({f.name: frame[f.name].to_numpy() for f in projection.features})
        new = {column: array for column, array in values.items() if column not in base.columns}
        out[name] = pd.concat([base, pd.DataFrame(new, index=base.index)], axis=1)
    return out


def online_as_of(store: FeatureStore) -> datetime | None:
    """The snapshot time the online store holds, committed with its rows (SQLite: in the same
    transaction; Redis: in the swap's); None when the store does not record one."""
    if store.config.online_store.type == "redis":
        from features.redis_online import read_state

        state = read_state(store)
        if "snapshot_as_of" in state:
            return datetime.fromisoformat(state["snapshot_as_of"].replace("Z", "+00:00"))
        return None
    if store.config.online_store.type == "sqlite":
        from features.feast_internals import SqliteOnlineStore
        from features.materialize import read_online_state

        path = SqliteOnlineStore._get_db_path(store.config)
        if Path(path).exists():
            connection = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
            try:
                state = read_online_state(connection)
            finally:
                connection.close()
            if "snapshot_as_of" in state:
                return datetime.fromisoformat(state["snapshot_as_of"].replace("Z", "+00:00"))
    return None


def push_event(
    ws: Workspace,
    event: RealtimeEvent | dict,
    *,
    store: FeatureStore | None = None,
    settings: RepoSettings | None = None,
    log: EventLog | None = None,
    event_id: str | None = None,
) -> PushResult:
    """Log one event durably (once per idempotency key), then mirror the customer's counters,
    recomputed from the log, into Feast's ``realtime`` view through the ``realtime_push`` source.

    The mirror is written under a workspace lock, each time from the whole log, so concurrent
    pushes from several processes leave it equal to the log (the last writer saw every committed
    event). ``mirror=False`` in the result: the event is logged but the mirror could not be written
    (the next push or ``cxpredict features`` rewrites it); readers that need exact counters read the
    log (``features.event_log.counters``).
    """
    event = event if isinstance(event, RealtimeEvent) else RealtimeEvent.model_validate(event)
    store = store or open_store(ws, settings)
    log = log or EventLog.of(ws)
    key, new = log.append(event, event_id)
    window = snapshot_as_of(ws, store)
    counts = mirror_counters(ws, store, log, [event.customer_id], window)
    return PushResult(event_id=key, duplicate=not new, counters=counts.get(event.customer_id) or {})


class PushResult(BaseModel):
    """What one push did: the event's idempotency key, whether it had been logged before, and the
    customer's counters since the snapshot after it."""

    event_id: str
    duplicate: bool
    counters: dict[str, float | None]


def _chunks(rows: list[dict], columns: list[str] | None = None, size: int = 10_000) -> Iterator[pd.DataFrame]:
    """Rows as frames of at most ``size`` (one online-store write each, bounded in memory)."""
    for offset in range(0, len(rows), size):
        yield pd.DataFrame(rows[offset : offset + size], columns=columns)


def mirror_offers(
    ws: Workspace, store: FeatureStore, log: DecisionLog, customer_ids: list[str], now: datetime | None = None
) -> dict[str, dict]:
    """Push these customers' offer features at ``now`` (default: when the lock is held), computed
    from the decision log (the source of truth), through Feast's ``offer_outcomes_push`` source into
    the online store; returns them.

    Written under a workspace lock, each time from the whole log, so concurrent writers leave the
    view equal to the log, as for the realtime counters."""
    with exclusive(ws.root / "decisions" / "offers.lock"):
        now = now or datetime.now(UTC)
        stamp = pd.Timestamp(now.astimezone(UTC))
        found = log.outcomes_of(customer_ids)
        counts = {c: offer_counts(found.get(c, []), now) for c in customer_ids}
        rows = [{"customer_id": c, "event_timestamp": stamp} | values for c, values in counts.items()]
        for frame in _chunks(rows, ["customer_id", "event_timestamp", *OFFER_FEATURES]):
            frame = frame.astype(dict.fromkeys(OFFER_FEATURES, "float64"))
            store.push(OFFERS_PUSH_SOURCE, frame, allow_registry_cache=True, to=PushMode.ONLINE)
    return counts


def snapshot_as_of(ws: Workspace, store: FeatureStore) -> datetime:
    """The online store's snapshot time (see :func:`online_as_of`), else the manifest's as-of."""
    return online_as_of(store) or load_manifest(ws.features_dir).as_of.astimezone(UTC)


def mirror_counters(
    ws: Workspace, store: FeatureStore, log: EventLog, customer_ids: list[str], window: datetime
) -> dict[str, dict]:
    """Write these customers' counters since ``window``, computed from the log, to Feast's
    ``realtime`` view (a customer with no event since then gets empty counters); returns them."""
    window_s = window.timestamp()
    with exclusive(ws.root / "events" / "mirror.lock"):
        found = log.events(customer_ids, since=window)
        counts = {c: counters(found.get(c, ()), window_s) for c in customer_ids}
        rows = [
            {"customer_id": c, "event_timestamp": pd.Timestamp(datetime.now(UTC))}
            | (values or dict.fromkeys(REALTIME_FEATURES, None) | {"realtime_window_start_ts": window_s})
            for c, values in counts.items()
        ]
        for frame in _chunks(rows):
            store.write_to_online_store(REALTIME_VIEW, frame)
    return counts
