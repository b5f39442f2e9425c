"""Snapshot calendar and incremental build of the behavioural feature tables.

``build_features`` reads the canonical Parquet tables with DuckDB, stages them once per build into a
scratch database under ``<ws>/features/.staging/``, then writes one Parquet file per family and
snapshot (``<ws>/features/<family>/snapshot_date=YYYY-MM-DD/data.parquet``) and the manifest
``<ws>/features/manifest.json`` (format: the feature-manifest contract). Every file is written to a
scratch path first and renamed into place, so readers never see a partial file.

Incremental: a snapshot already listed in the previous manifest, with the same exact time and with
every family file present, is kept as it is — unless the fingerprint (canonical manifest and files,
feature definitions) changed, in which case every family folder is cleared and rebuilt. Snapshots
of earlier builds outside the current calendar stay (they are still correct as of their time) and
remain listed. One build at a time per workspace: scratch left by an interrupted build is removed.

Custom SQL views (``<ws>/features.d/*.sql``, :mod:`features.custom`) are built after the families,
in the same layout, over the same point-in-time cut; each keeps its snapshots while its own
fingerprint (this build's plus the file's text) is unchanged.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import duckdb
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, field_validator

from cxpredict.progress import Progress, Steps
from cxpredict.workspace import Workspace
from features import custom
from features.families import (
    DAY_US,
    DEFINITIONS_VERSION,
    SOURCE_TIME_COLUMN,
    Family,
    FamilyContext,
    all_families,
)
from features.families.base import base_stage_sql
from features.families.needs import distinct_slugs, top_categories_sql

MANIFEST_VERSION = 1
SOURCES = tuple(SOURCE_TIME_COLUMN)
STAGING_DIR = ".staging"
TREND_OFFSETS = (0, 30, 90, 120)
PERFECT_HT_BITS = 22
"""Customer keys are dense integers: up to 2^22 customers aggregate in a perfect (array) hash table."""


class FeatureBuildConfig(BaseModel):
    """How snapshots are laid out and how much of the machine the build may use."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    frequency: Literal["monthly", "weekly"] = "monthly"
    lookback_months: int = Field(default=12, ge=0, le=120)
    windows: tuple[int, ...] = (7, 30, 90, 365)
    max_categories: int = Field(default=10, ge=0, le=10)
    threads: int = Field(default=2, ge=1, le=64)
    memory_limit: str = "5GB"

    @field_validator("windows")
    @classmethod
    def _positive_sorted(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(w <= 0 for w in value):
            raise ValueError("windows must be positive numbers of days")
        return tuple(sorted(set(value)))


class BuildSummary(BaseModel):
    """What a build did: counts per family, snapshots built and kept, time taken."""

    as_of: datetime
    customers: int
    features: dict[str, int]
    snapshots_built: int
    snapshots_skipped: int
    snapshots: list[datetime]
    categories: list[str]
    rebuilt: bool
    seconds: float
    custom_views: list[str] = []
    """Custom SQL views built (``features.custom``); their counts are in ``features`` too."""
    refused: list[custom.Refusal] = []
    """Custom SQL files not built, each with its file and reason."""


@dataclass(frozen=True)
class CanonicalSource:
    name: str
    path: Path

    @property
    def scan(self) -> str:
        """Argument for DuckDB ``read_parquet`` (a file, or every Parquet file in a folder)."""
        target = self.path / "**" / "*.parquet" if self.path.is_dir() else self.path
        return str(target).replace("'", "''")


def to_utc(moment: datetime) -> datetime:
    """Aware UTC datetime; naive input is taken as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S") + (
        f".{moment.microsecond:06d}Z" if moment.microsecond else "Z"
    )


def epoch_us(moment: datetime) -> int:
    delta = to_utc(moment) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def snapshot_calendar(as_of: datetime, config: FeatureBuildConfig | None = None) -> list[datetime]:
    """Snapshot times: each period start (first of the month, or Monday when weekly; 00:00 UTC) in
    [as_of − lookback_months, as_of), plus as_of itself; a period start on as_of's date gives way
    to as_of (one snapshot per date)."""
    config = config or FeatureBuildConfig()
    as_of = to_utc(as_of)
    start = _add_months(as_of.date(), -config.lookback_months)
    start_dt = as_of.replace(year=start.year, month=start.month, day=start.day)
    if config.frequency == "monthly":
        first = date(start.year, start.month, 1)
        days = [_add_months(first, i) for i in range(config.lookback_months + 2)]
    else:
        monday = start - timedelta(days=start.weekday())
        days = [monday + timedelta(weeks=i) for i in range((as_of.date() - monday).days // 7 + 2)]
    points = [datetime(d.year, d.month, d.day, tzinfo=UTC) for d in days]
    chosen = [p for p in points if start_dt <= p < as_of and p.date() != as_of.date()]
    return sorted({*chosen, as_of})


def discover_sources(canonical_dir: Path) -> dict[str, CanonicalSource]:
    """Canonical sources present as ``<source>.parquet`` (file or folder)."""
    return {
        s: CanonicalSource(s, canonical_dir / f"{s}.parquet")
        for s in SOURCES
        if (canonical_dir / f"{s}.parquet").exists()
    }


def _canonical_manifest(canonical_dir: Path) -> dict[str, Any] | None:
    path = canonical_dir / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else None


def fingerprint(
    canonical_dir: Path, sources: Mapping[str, CanonicalSource], config: FeatureBuildConfig
) -> str:
    """Changes whenever the canonical manifest, a canonical file, or a feature definition changes."""
    digest = hashlib.sha256()
    manifest = canonical_dir / "manifest.json"
    if manifest.exists():
        digest.update(manifest.read_bytes())
    for name, source in sorted(sources.items()):
        files = sorted(source.path.rglob("*.parquet")) if source.path.is_dir() else [source.path]
        for f in files:
            stat = f.stat()
            digest.update(f"{name}:{f.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    digest.update(
        json.dumps(
            {"v": DEFINITIONS_VERSION, "windows": config.windows, "max_categories": config.max_categories}
        ).encode()
    )
    return "sha256:" + digest.hexdigest()


def supplied_columns(
    con: duckdb.DuckDBPyConnection, sources: Mapping[str, CanonicalSource], manifest: dict[str, Any] | None
) -> dict[str, frozenset[str]]:
    """Columns each source supplied: from the canonical manifest, else every column with a non-null value."""
    listed = (manifest or {}).get("sources", {})
    out = {}
    for name, source in sources.items():
        if name in listed and "columns_supplied" in listed[name]:
            out[name] = frozenset(listed[name]["columns_supplied"])
            continue
        columns = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM raw_{name}").fetchall()]
        counts = con.execute(
            "SELECT " + ", ".join(f'count("{c}")' for c in columns) + f" FROM raw_{name}"
        ).fetchone()
        out[name] = frozenset(c for c, n in zip(columns, counts or (), strict=True) if n)
    return out


def top_categories(
    con: duckdb.DuckDBPyConnection, supplied: Mapping[str, frozenset[str]], limit: int
) -> tuple[str, ...]:
    """Top categories by event volume, else by transaction volume, else none."""
    if limit == 0:
        return ()
    for source in ("events", "transactions"):
        if "category" in supplied.get(source, frozenset()):
            ranked = [r[0] for r in con.execute(top_categories_sql(source, limit * 3)).fetchall()]
            return distinct_slugs(ranked)[:limit]
    return ()


def snapshot_path(features_dir: Path, family: str, moment: datetime) -> Path:
    return features_dir / family / f"snapshot_date={moment:%Y-%m-%d}" / "data.parquet"


def _boundaries(snapshots: list[datetime], windows: tuple[int, ...]) -> tuple[int, ...]:
    offsets = sorted({*TREND_OFFSETS, *windows})
    return tuple(epoch_us(t) - d * DAY_US for t in snapshots if epoch_us(t) % DAY_US for d in offsets)


def _read_previous(features_dir: Path) -> dict[str, Any] | None:
    path = features_dir / "manifest.json"
    try:
        return json.loads(path.read_text()) if path.exists() else None
    except json.JSONDecodeError:
        return None


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _parse_iso(value: str) -> datetime:
    return to_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))


def _connect(
    scratch: Path,
    config: FeatureBuildConfig,
    sources: Mapping[str, CanonicalSource],
    folded: Mapping[str, Path] | None = None,
) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(
        str(scratch / "stage.duckdb"),
        config={
            "threads": config.threads,
            "memory_limit": config.memory_limit,
            "temp_directory": str(scratch / "spill"),
            "preserve_insertion_order": False,
        },
    )
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET perfect_ht_threshold = {PERFECT_HT_BITS}")
    for name, source in sources.items():
        scan = f"read_parquet('{source.scan}')"
        logged = (folded or {}).get(name)
        body = _with_logged(name, scan, logged) if logged else f"SELECT * FROM {scan}"
        con.execute(f"CREATE VIEW raw_{name} AS {body}")
    return con


_LOGGED_KEYS = {"events": ("timestamp", "event_type"), "surveys": ("timestamp", "kind")}


def _with_logged(name: str, scan: str, logged: Path) -> str:
    """A canonical source plus the pushed events of the durable log that it does not hold already
    (the same customer, time and type), so a snapshot holds every acknowledged event. A logged
    ``ticket_resolved`` closes the customer's oldest open ticket opened before it."""
    log = f"read_parquet('{str(logged).replace(chr(39), chr(39) * 2)}')"
    if name in _LOGGED_KEYS:
        same = " AND ".join(f"c.{key} = l.{key}" for key in ("customer_id", *_LOGGED_KEYS[name]))
        return (
            f"SELECT * FROM {scan} UNION ALL BY NAME "
            f"SELECT * FROM {log} AS l WHERE NOT EXISTS (SELECT 1 FROM {scan} AS c WHERE {same})"
        )
    return (
        f"WITH opened AS (SELECT * FROM {log} AS l WHERE opened_at IS NOT NULL AND NOT EXISTS "
        f"(SELECT 1 FROM {scan} AS c WHERE c.customer_id = l.customer_id AND c.opened_at = l.opened_at)), "
        f"closing AS (SELECT customer_id, resolved_at, "
        f"row_number() OVER (PARTITION BY customer_id ORDER BY resolved_at) AS k FROM {log} WHERE opened_at IS NULL), "
        f"tickets AS (SELECT * FROM {scan} UNION ALL BY NAME SELECT * FROM opened), "
        f"still_open AS (SELECT *, row_number() OVER (PARTITION BY customer_id ORDER BY opened_at) AS k "
        f"FROM tickets WHERE resolved_at IS NULL) "
        f"SELECT * FROM tickets WHERE resolved_at IS NOT NULL UNION ALL BY NAME "
        f"SELECT o.* EXCLUDE (k) REPLACE (CASE WHEN r.resolved_at >= o.opened_at THEN r.resolved_at END AS resolved_at) "
        f"FROM still_open AS o LEFT JOIN closing AS r USING (customer_id, k)"
    )


def _logged_events(
    ws: Workspace, as_of: datetime, scratch: Path, sources: Mapping[str, CanonicalSource]
) -> dict[str, Path]:
    """The durable event log's events dated before ``as_of``, as Parquet per canonical source present."""
    from features.event_log import EventLog, canonical_rows, log_url

    url = log_url(ws)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return {}
    log = EventLog(url)
    try:
        tables = canonical_rows(log.before(as_of))
    finally:
        log.close()
    written = {}
    for name, table in tables.items():
        if name in sources:
            path = scratch / f"logged-{name}.parquet"
            pq.write_table(table, path)
            written[name] = path
    return written


def _write_snapshot(
    con: duckdb.DuckDBPyConnection,
    family: Family,
    ctx: FamilyContext,
    moment: datetime,
    created_us: int,
    features_dir: Path,
    scratch: Path,
) -> None:
    t = epoch_us(moment)
    tmp = scratch / f"{family.name}-{moment:%Y%m%d}-{uuid.uuid4().hex}.parquet"
    select = (
        f"SELECT customer_id, make_timestamp({t}::BIGINT)::TIMESTAMPTZ AS event_timestamp, "
        f"make_timestamp({created_us}::BIGINT)::TIMESTAMPTZ AS created_timestamp, * EXCLUDE (customer_id) "
        f"FROM ({family.snapshot_sql(ctx, t)})"
    )
    con.execute(
        f"COPY ({select}) TO '{str(tmp).replace(chr(39), chr(39) * 2)}' (FORMAT parquet, COMPRESSION zstd)"
    )
    final = snapshot_path(features_dir, family.name, moment)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)


def _manifest(
    as_of: datetime,
    built_at: datetime,
    fp: str,
    ctx: FamilyContext,
    families: list[Family],
    snapshots: list[datetime],
    views: list[custom.BuiltView] = (),
    refused: list[custom.Refusal] = (),
) -> dict[str, Any]:
    return {
        "version": MANIFEST_VERSION,
        "entity": "customer",
        "join_key": "customer_id",
        "timestamp_field": "event_timestamp",
        "created_timestamp_field": "created_timestamp",
        "as_of": iso(as_of),
        "built_at": iso(built_at),
        "fingerprint": fp,
        "categories": list(ctx.categories),
        "snapshots": [iso(s) for s in snapshots],
        "families": {
            f.name: {
                "sources": f.used_sources(ctx),
                "path": f.name,
                "features": [
                    {"name": d.name, "dtype": d.dtype, "description": d.description}
                    for d in f.active_features(ctx)
                ],
            }
            for f in families
        }
        | {built.view.name: built.manifest_entry() for built in views},
        "custom_refused": [r.model_dump() for r in refused],
    }


class FutureAsOf(ValueError):
    """A feature snapshot asked for a moment that has not happened yet."""


def build_features(
    ws: Workspace,
    as_of: datetime,
    config: FeatureBuildConfig | None = None,
    progress: Progress | None = None,
    custom_dir: Path | None = None,
) -> BuildSummary:
    """Build every missing feature snapshot as of ``as_of`` and rewrite the manifest.

    ``progress`` gets one step per (snapshot, family) written. Raises ``FileNotFoundError`` when the canonical transactions are missing.
    Custom SQL views come from ``custom_dir`` (default ``<ws>/features.d``; a given folder must
    exist); a refused file is listed in the summary and the manifest, and the rest still builds.
    """
    started = time.perf_counter()
    workspace = ws
    config = config or FeatureBuildConfig()
    as_of = to_utc(as_of)
    if as_of > datetime.now(UTC):
        raise FutureAsOf(
            f"--as-of {as_of:%Y-%m-%d} is in the future: a snapshot describes facts already known, "
            "and a future one would make the service refuse every current event"
        )
    built_at = datetime.now(UTC).replace(microsecond=0)
    features_dir = workspace.features_dir
    canonical_dir = workspace.canonical_dir
    sources = discover_sources(canonical_dir)
    if "transactions" not in sources:
        raise FileNotFoundError(f"no canonical transactions in {canonical_dir}; run ingest first")
    if custom_dir is not None and not Path(custom_dir).is_dir():
        raise FileNotFoundError(f"no custom features folder {custom_dir}")
    views, refused = custom.load_views(Path(custom_dir or custom.default_dir(workspace.root)), sources)

    features_dir.mkdir(parents=True, exist_ok=True)
    fp = fingerprint(canonical_dir, sources, config)
    previous = _read_previous(features_dir)
    reuse = previous is not None and previous.get("fingerprint") == fp
    wanted = snapshot_calendar(as_of, config)

    shutil.rmtree(features_dir / STAGING_DIR, ignore_errors=True)
    scratch = features_dir / STAGING_DIR / uuid.uuid4().hex
    (scratch / "spill").mkdir(parents=True)
    con = _connect(scratch, config, sources, _logged_events(workspace, as_of, scratch, sources))
    try:
        supplied = supplied_columns(con, sources, _canonical_manifest(canonical_dir))
        categories = (
            tuple(previous.get("categories", ()))
            if reuse and previous is not None
            else top_categories(con, supplied, config.max_categories)
        )
        ctx = FamilyContext(supplied=supplied, windows=config.windows, categories=categories)
        families = [f for f in all_families() if f.available(ctx)]
        views, clashes = custom.check_names(views, _taken_views(), _taken_features(ctx, families))
        refused += clashes
        if not reuse:
            for family in all_families():
                shutil.rmtree(features_dir / family.name, ignore_errors=True)

        def complete(moment: datetime) -> bool:
            return all(snapshot_path(features_dir, f.name, moment).exists() for f in families)

        kept = [_parse_iso(s) for s in (previous or {}).get("snapshots", [])] if reuse else []
        kept = [k for k in kept if complete(k)]
        kept_times = set(kept)
        todo = [t for t in wanted if t not in kept_times]
        todo_dates = {t.date() for t in todo}

        if todo:
            ctx = ctx.with_boundaries(_boundaries(todo, config.windows))
            step = Steps(progress, "feature snapshots", len(todo) * len(families))
            con.execute("SET preserve_insertion_order = true")
            for statement in base_stage_sql(ctx) + [s for f in families for s in f.stage(ctx)]:
                con.execute(statement)
            con.execute("SET preserve_insertion_order = false")
            created_us = epoch_us(built_at)
            for moment in todo:
                for family in families:
                    _write_snapshot(con, family, ctx, moment, created_us, features_dir, scratch)
                    step(f"features {moment:%Y-%m-%d} {family.name}")
        snapshots = sorted({*(k for k in kept if k.date() not in todo_dates), *todo})
        built_views, failed = custom.build_views(
            con,
            views,
            ctx,
            snapshots=snapshots,
            rebuild=set(todo),
            previous=previous,
            data_fingerprint=fp,
            created_us=epoch_us(built_at),
            features_dir=features_dir,
            scratch=scratch,
            step=Steps(progress, "custom features", len(views) * len(snapshots)) if views else None,
        )
        refused += failed
        custom.remove_stale(features_dir, previous, [b.view.name for b in built_views])
    finally:
        con.close()
        shutil.rmtree(scratch, ignore_errors=True)
        _remove_if_empty(features_dir / STAGING_DIR)

    _atomic_write_text(
        features_dir / "manifest.json",
        json.dumps(_manifest(as_of, built_at, fp, ctx, families, snapshots, built_views, refused), indent=2),
    )
    first = snapshot_path(features_dir, families[0].name, as_of)
    return BuildSummary(
        as_of=as_of,
        customers=pq.read_metadata(first).num_rows,
        features={f.name: len(f.active_features(ctx)) for f in families}
        | {b.view.name: len(b.view.features) for b in built_views},
        snapshots_built=len(todo),
        snapshots_skipped=len(wanted) - len(todo),
        snapshots=snapshots,
        categories=list(ctx.categories),
        rebuilt=not reuse,
        seconds=round(time.perf_counter() - started, 3),
        custom_views=[b.view.name for b in built_views],
        refused=refused,
    )


def _taken_views() -> set[str]:
    """Names a custom view may not take: every family and the Feast views generated beside them."""
    from features.feature_repo.definitions import RATIOS_VIEW, REALTIME_VIEW, RECENCY_NOW_VIEW

    return {f.name for f in all_families()} | {REALTIME_VIEW, RATIOS_VIEW, RECENCY_NOW_VIEW}


def _taken_features(ctx: FamilyContext, families: list[Family]) -> set[str]:
    """Feature names a custom view may not take: every family feature (supplied or not), the
    realtime counters and the derived features generated over them."""
    from features.feature_repo.definitions import DEFAULT_RATIOS, REALTIME_FEATURES, recency_specs

    names = {d.name for f in families for d in f.features(ctx)} | set(REALTIME_FEATURES)
    names |= {spec[0] for spec in DEFAULT_RATIOS}
    return names | {spec[0] for spec in recency_specs(sorted(names))}


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass
