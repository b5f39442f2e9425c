"""Feast objects generated from the feature manifest (``<ws>/features/manifest.json``).

Why generated: the families and features present depend on which sources a workspace has, and
the manifest is the builder's statement of what exists. One builder function serves both the
``feast`` CLI (through ``repo.py``) and :mod:`features.store`, so the two always agree.

Contract: one entity ``customer`` (join key from the manifest); per family present a FileSource
over ``<ws>/features/<path>/snapshot_date=*/data.parquet`` (a glob: DuckDB's ``read_parquet``,
which Feast's DuckDB offline store uses, expands it) and a FeatureView with the manifest's
schema (double → Float64, string → String); on-demand views for ratios and request-time values,
created only over features that exist; ``realtime`` and ``offer_outcomes`` views fed by PushSources; one
FeatureService per model task. A custom SQL view (manifest entry with a ``custom`` block, see
:mod:`features.custom`) is a FeatureView with its own TTL in the services of the tasks it names;
no derived view is built over its features, so it reaches no other task. This module does no I/O except :func:`load_manifest` and
:func:`ensure_push_logs`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, RequestSource, ValueType
from feast.base_feature_view import BaseFeatureView
from feast.data_format import ParquetFormat
from feast.data_source import DataSource
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.transformation.pandas_transformation import PandasTransformation
from feast.types import Float64, String, UnixTimestamp
from pydantic import BaseModel, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cxpredict import tasks
from features.event_log import REALTIME_FEATURES

MANIFEST_FILE = "manifest.json"
SNAPSHOT_GLOB = "snapshot_date=*/data.parquet"
REALTIME_VIEW = "realtime"
REALTIME_PUSH_SOURCE = "realtime_push"
OFFERS_VIEW = "offer_outcomes"
OFFERS_PUSH_SOURCE = "offer_outcomes_push"
RATIOS_VIEW = "ratios"
RECENCY_NOW_VIEW = "recency_now"
REQUEST_SOURCE = "request"
REQUEST_TIME = "request_time"
DERIVED_TAG = "cxpredict.derived"
SNAPSHOTS_TAG = "cxpredict.snapshots"
_SNAKE_CASE = re.compile(r"^[a-z][a-z0-9_]*$")

OFFER_FEATURES: tuple[str, ...] = (
    "offers_received_30d",
    "offers_accepted_30d",
    "offers_rejected_30d",
    "offers_last_outcome_ts",
    "offers_counted_at_ts",
)
"""From the decision log's outcomes (``features.decision_log.offer_counts``): decided actions with an
outcome reported in the 30 days before ``offers_counted_at_ts`` (epoch seconds) — any outcome
(received), accepted or converted (accepted), rejected or unsubscribed (rejected) — and the time of
the customer's last reported outcome (null when none)."""


@dataclass(frozen=True)
class PushedView:
    """A view fed by pushes through its push source, never materialised from snapshots."""

    name: str
    push_source: str
    features: tuple[str, ...]
    source_description: str
    description: str


PUSHED_VIEWS: dict[str, PushedView] = {
    view.name: view
    for view in (
        PushedView(
            REALTIME_VIEW,
            REALTIME_PUSH_SOURCE,
            REALTIME_FEATURES,
            "Engagement and service events pushed as they happen.",
            "Counters of events since the last feature snapshot (pushed, not materialised).",
        ),
        PushedView(
            OFFERS_VIEW,
            OFFERS_PUSH_SOURCE,
            OFFER_FEATURES,
            "Outcomes of decided actions, pushed as they are reported.",
            "Offers received, accepted and rejected in the last 30 days (pushed, not materialised).",
        ),
    )
}
"""The pushed views by name."""

DEFAULT_RATIOS: tuple[tuple[str, str, str], ...] = tuple(
    spec
    for window in (7, 30, 90, 365)
    for spec in (
        (f"purchase_spend_per_order_{window}d", f"purchase_amount_{window}d", f"purchase_count_{window}d"),
        (
            f"engagement_cart_abandonment_ratio_{window}d",
            f"engagement_cart_abandons_{window}d",
            f"engagement_cart_adds_{window}d",
        ),
        (
            f"engagement_views_per_session_{window}d",
            f"engagement_views_{window}d",
            f"engagement_sessions_{window}d",
        ),
    )
)
"""(output, numerator, denominator) candidates; each becomes a feature only when both inputs exist."""


class RepoSettings(BaseSettings):
    """Choices that are configuration, not code: read from ``CXPREDICT_FEAST_*`` variables.

    ``project`` and ``online_store`` apply to the Python API (:mod:`features.store`); the ``feast``
    CLI takes them from the YAML file it is given (``feature_store.yaml`` or
    ``feature_store.redis.yaml``).
    """

    model_config = SettingsConfigDict(env_prefix="CXPREDICT_FEAST_", frozen=True)

    project: str = "cxpredict"
    ttl_days: float = 62.0
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_connection_string: str = "127.0.0.1:6379"

    @field_validator("ttl_days")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("ttl_days must be positive")
        return value

    @property
    def ttl(self) -> timedelta:
        return timedelta(days=self.ttl_days)


class FeatureSpec(BaseModel):
    name: str
    dtype: Literal["double", "string"]
    description: str = ""

    @field_validator("name")
    @classmethod
    def _snake_case(cls, value: str) -> str:
        if not _SNAKE_CASE.match(value):
            raise ValueError(f"feature name {value!r} is not snake_case")
        return value


class CustomViewSpec(BaseModel):
    """A view built from a custom SQL file (``features.custom``): the tasks whose feature services
    hold it, and its own TTL (None: the repository's)."""

    file: str
    tasks: list[str]
    ttl_days: float | None = None
    fingerprint: str = ""


class FamilySpec(BaseModel):
    path: str
    sources: list[str] = []
    features: list[FeatureSpec]
    custom: CustomViewSpec | None = None


class FeatureManifest(BaseModel):
    """The builder's manifest (format: features-manifest brief); validated on read."""

    version: int
    entity: str = "customer"
    join_key: str = "customer_id"
    timestamp_field: str = "event_timestamp"
    created_timestamp_field: str = "created_timestamp"
    as_of: datetime
    built_at: datetime | None = None
    categories: list[str] = []
    snapshots: list[datetime]
    families: dict[str, FamilySpec]

    @model_validator(mode="after")
    def _unique_features(self) -> FeatureManifest:
        names = [f.name for family in self.families.values() for f in family.features]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"feature names must be globally unique: {duplicates}")
        return self

    def feature_family(self) -> dict[str, str]:
        return {f.name: name for name, family in self.families.items() for f in family.features}


def load_manifest(features_dir: Path) -> FeatureManifest:
    """Read and validate ``<features_dir>/manifest.json``."""
    path = Path(features_dir) / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no feature manifest at {path}: build the features first")
    return FeatureManifest.model_validate(json.loads(path.read_text()))


@dataclass(frozen=True)
class RepoObjects:
    """Every Feast object of the repository, by kind."""

    entity: Entity
    sources: dict[str, DataSource]
    feature_views: dict[str, FeatureView]
    on_demand_views: dict[str, OnDemandFeatureView]
    services: dict[str, FeatureService]

    def by_name(self) -> dict[str, object]:
        """Module-level names for ``repo.py`` (Feast's parser finds objects among module attributes)."""
        named: dict[str, object] = {"customer": self.entity}
        named.update({f"source_{k}": v for k, v in self.sources.items()})
        named.update({f"view_{k}": v for k, v in self.feature_views.items()})
        named.update({f"odfv_{k}": v for k, v in self.on_demand_views.items()})
        named.update({f"service_{k}": v for k, v in self.services.items()})
        return named


def push_log_path(feast_dir: Path, view: str = REALTIME_VIEW) -> Path:
    """Batch source behind a push source: the offline copy of pushed rows (empty unless pushed offline)."""
    return Path(feast_dir) / view / "data.parquet"


def push_schema(view: str = REALTIME_VIEW, join_key: str = "customer_id") -> pa.Schema:
    return pa.schema(
        [(join_key, pa.string()), ("event_timestamp", pa.timestamp("us", tz="UTC"))]
        + [(name, pa.float64()) for name in PUSHED_VIEWS[view].features]
    )


def ensure_push_logs(feast_dir: Path, join_key: str = "customer_id") -> list[Path]:
    """Create each pushed view's empty Parquet file if missing (or empty with an older schema), so
    materialisation and PIT joins can read it."""
    paths = []
    for view in PUSHED_VIEWS:
        path = push_log_path(feast_dir, view)
        schema = push_schema(view, join_key)
        outdated = path.exists() and pq.read_metadata(path).num_rows == 0 and pq.read_schema(path) != schema
        if not path.exists() or outdated:
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(schema.empty_table(), path)
        paths.append(path)
    return paths


def ratio_specs(available: set[str], candidates=DEFAULT_RATIOS) -> list[tuple[str, str, str]]:
    return [spec for spec in candidates if spec[1] in available and spec[2] in available]


def recency_specs(double_features: list[str]) -> list[tuple[str, str]]:
    """Age-like features (days since an event, tenure in days) that keep growing after the snapshot."""
    return [
        (f"{name}_now", name)
        for name in double_features
        if name.startswith("days_since_") or "_days_since_" in name or name.endswith("tenure_days")
    ]


def ratio_values(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator where the denominator is positive, else null (NaN): never a fake 0."""
    num = np.asarray(numerator, dtype=float)
    den = np.asarray(denominator, dtype=float)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def days_now_values(value: np.ndarray, request_s: np.ndarray, snapshots_s: np.ndarray) -> np.ndarray:
    """Value at the snapshot plus the days from that snapshot to the request time.

    The snapshot behind a value is the latest one at or before the request time (what both a
    point-in-time join and the latest materialisation return); before the first snapshot: null.
    """
    value = np.asarray(value, dtype=float)
    request_s = np.asarray(request_s, dtype=float)
    grid = np.asarray(snapshots_s, dtype=float)
    position = np.searchsorted(grid, request_s, side="right") - 1
    known = (position >= 0) & ~np.isnan(request_s)
    snapshot = (
        grid[np.clip(position, 0, max(len(grid) - 1, 0))] if len(grid) else np.full_like(request_s, np.nan)
    )
    return np.where(known, value + (request_s - snapshot) / 86400.0, np.nan)


def as_float(values) -> np.ndarray:
    """A numeric column (pandas nullable, object with None, or NumPy) as float64 with NaN for nulls."""
    if isinstance(values, np.ndarray) and values.dtype == object:
        return np.where(values == None, np.nan, values).astype(float)  # noqa: E711 (elementwise)
    return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def epoch_seconds(values) -> np.ndarray:
    """Epoch seconds (float) of timestamps given as a pandas/NumPy/list-like of datetimes; NaT → NaN."""
    stamps = pd.to_datetime(pd.Series(values), utc=True)
    nanoseconds = stamps.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]").astype("int64")
    return np.where(stamps.isna().to_numpy(), np.nan, nanoseconds / 1e9)


def _make_ratios_udf(specs: tuple[tuple[str, str, str], ...]):
    def ratios(inputs: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(
            {name: ratio_values(as_float(inputs[num]), as_float(inputs[den])) for name, num, den in specs},
            index=inputs.index,
        )

    ratios.__module__ = "__main__"
    return ratios


def _make_recency_udf(specs: tuple[tuple[str, str], ...], snapshots_s: tuple[float, ...]):
    def recency_now(inputs: pd.DataFrame) -> pd.DataFrame:
        request_s = epoch_seconds(inputs[REQUEST_TIME])
        return pd.DataFrame(
            {
                name: days_now_values(as_float(inputs[source]), request_s, snapshots_s)
                for name, source in specs
            },
            index=inputs.index,
        )

    recency_now.__module__ = "__main__"
    return recency_now


def _udf_source(kind: str, specs: object) -> str:
    return f"# cxpredict {kind}: generated from the feature manifest\n# specs = {specs!r}\n"


def _projections(views: dict[str, FeatureView], family_of: dict[str, str], needed: list[str]) -> list:
    by_view: dict[str, list[str]] = {}
    for name in needed:
        by_view.setdefault(family_of[name], [])
        if name not in by_view[family_of[name]]:
            by_view[family_of[name]].append(name)
    return [views[view][names] for view, names in by_view.items()]


def build_repo(
    workspace_root: Path,
    manifest: FeatureManifest,
    settings: RepoSettings | None = None,
    ratios: tuple[tuple[str, str, str], ...] = DEFAULT_RATIOS,
) -> RepoObjects:
    """All Feast objects for one workspace and manifest (pure: builds objects, touches no file)."""
    settings = settings or RepoSettings()
    root = Path(workspace_root).absolute()
    features_dir = root / "features"
    entity = Entity(
        name=manifest.entity,
        join_keys=[manifest.join_key],
        value_type=ValueType.STRING,
        description="A customer after identity stitching.",
    )
    key_field = Field(name=manifest.join_key, dtype=String)
    sources: dict[str, DataSource] = {}
    views: dict[str, FeatureView] = {}
    for family, spec in sorted(manifest.families.items()):
        source = FileSource(
            name=f"{family}_source",
            path=str(features_dir / spec.path / SNAPSHOT_GLOB),
            file_format=ParquetFormat(),
            timestamp_field=manifest.timestamp_field,
            created_timestamp_column=manifest.created_timestamp_field,
            description=f"{family} feature snapshots (one Parquet file per snapshot)",
        )
        sources[source.name] = source
        custom = spec.custom
        views[family] = FeatureView(
            name=family,
            entities=[entity],
            ttl=timedelta(days=custom.ttl_days) if custom and custom.ttl_days else settings.ttl,
            schema=[key_field]
            + [
                Field(
                    name=f.name, dtype=Float64 if f.dtype == "double" else String, description=f.description
                )
                for f in spec.features
            ],
            source=source,
            online=True,
            description=f"{family} features; sources: {', '.join(spec.sources) or 'n/a'}",
            tags={"family": family} | ({"custom": custom.file} if custom else {}),
        )
    family_views = tuple(views)

    for pushed in PUSHED_VIEWS.values():
        push = PushSource(
            name=pushed.push_source,
            batch_source=FileSource(
                name=f"{pushed.name}_log",
                path=str(push_log_path(root / "feast", pushed.name)),
                file_format=ParquetFormat(),
                timestamp_field="event_timestamp",
            ),
            description=pushed.source_description,
        )
        sources[push.name] = push
        views[pushed.name] = FeatureView(
            name=pushed.name,
            entities=[entity],
            ttl=settings.ttl,
            schema=[key_field] + [Field(name=name, dtype=Float64) for name in pushed.features],
            source=push,
            online=True,
            description=pushed.description,
        )

    family_of = manifest.feature_family()
    doubles = [
        f.name
        for spec in manifest.families.values()
        if spec.custom is None
        for f in spec.features
        if f.dtype == "double"
    ]
    odfvs: dict[str, OnDemandFeatureView] = {}
    chosen_ratios = tuple(ratio_specs(set(doubles), ratios))
    if chosen_ratios:
        needed = [name for spec in chosen_ratios for name in spec[1:]]
        odfvs[RATIOS_VIEW] = OnDemandFeatureView(
            name=RATIOS_VIEW,
            sources=_projections(views, family_of, needed),
            schema=[Field(name=spec[0], dtype=Float64) for spec in chosen_ratios],
            feature_transformation=PandasTransformation(
                udf=_make_ratios_udf(chosen_ratios), udf_string=_udf_source("ratios", chosen_ratios)
            ),
            mode="pandas",
            description="Ratios of snapshot features (null where the denominator is not positive).",
            tags={DERIVED_TAG: json.dumps(chosen_ratios)},
        )
    chosen_recency = tuple(recency_specs(doubles))
    if chosen_recency:
        grid = tuple(sorted(ts.astimezone(UTC).timestamp() for ts in manifest.snapshots))
        request = RequestSource(name=REQUEST_SOURCE, schema=[Field(name=REQUEST_TIME, dtype=UnixTimestamp)])
        odfvs[RECENCY_NOW_VIEW] = OnDemandFeatureView(
            name=RECENCY_NOW_VIEW,
            sources=_projections(views, family_of, [spec[1] for spec in chosen_recency]) + [request],
            schema=[Field(name=spec[0], dtype=Float64) for spec in chosen_recency],
            feature_transformation=PandasTransformation(
                udf=_make_recency_udf(chosen_recency, grid),
                udf_string=_udf_source("recency_now", (chosen_recency, grid)),
            ),
            mode="pandas",
            description="Age-like features advanced from their snapshot to the request time.",
            tags={DERIVED_TAG: json.dumps(chosen_recency), SNAPSHOTS_TAG: json.dumps(grid)},
        )

    services: dict[str, FeatureService] = {}
    for spec in tasks.known_tasks():
        task, families = spec.feature_service, spec.families
        members: list[BaseFeatureView] = [views[f] for f in families if f in family_views]
        members += [
            views[name]
            for name, family in sorted(manifest.families.items())
            if family.custom is not None and spec.name in family.custom.tasks
        ]
        if not members:
            continue
        services[task] = FeatureService(
            name=task,
            features=members + list(odfvs.values()),
            description=f"Features of the {task} model",
            tags={"task": task},
        )
    services["realtime_signals"] = FeatureService(
        name="realtime_signals",
        features=[views[REALTIME_VIEW]],
        description="Pushed event counters since the last snapshot (serving only: zero at training cutoffs).",
    )
    services[OFFERS_VIEW] = FeatureService(
        name=OFFERS_VIEW,
        features=[views[OFFERS_VIEW]],
        description="Offer outcomes of the last 30 days, pushed from /outcomes (serving only: no model reads them).",
    )
    return RepoObjects(
        entity=entity,
        sources=sources,
        feature_views=views,
        on_demand_views=odfvs,
        services=services,
    )
