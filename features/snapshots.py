"""Snapshot calendar and incremental build of the behavioural feature tables.

``build_features`` reads the canonical Parquet tables with DuckDB (or, with ``engine="spark"``, Spark
SQL transpiled from the same statements: :mod:`features.spark_engine`), stages them once per build
into a scratch database under ``<ws>/features/.staging/``, then writes one Parquet file per family and
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
import re
import shutil
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

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
EngineName = Literal["duckdb", "spark"]
ENGINES: tuple[EngineName, ...] = ("duckdb", "spark")
ENGINE_ENV = "CXPREDICT_ENGINE"
_DUCKDB_NUMBER = re.compile(
    r'^(BOOLEAN|U?TINYINT|U?SMALLINT|U?INTEGER|U?BIGINT|U?HUGEINT|FLOAT|DOUBLE|DECIMAL\(\d+,\s*\d+\)|"?NULL"?)$'
)


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


class SqlEngine(Protocol):
    """What a build needs of a SQL engine. Every statement it is given is DuckDB SQL (the feature
    definitions' dialect); an engine for another dialect transpiles it."""

    name: EngineName
    label: str
    """The engine's name as users know it, for messages."""
    query_errors: tuple[type[BaseException], ...]
    """What a failing statement raises (a custom view that raises one is refused, not the build)."""

    def fetchall(self, sql: str) -> list[tuple[Any, ...]]: ...

    def columns(self, view: str) -> list[str]: ...

    def describe(self, select: str) -> dict[str, str]:
        """The output columns of ``select`` and their types in the engine's names, without running it."""
        ...

    def numeric(self, type_name: str) -> bool:
        """Whether a type of :meth:`describe` is a number or a boolean (or the type of NULL)."""
        ...

    def reason(self, error: BaseException) -> str:
        """One line about a failure of ``query_errors``, without data values."""
        ...

    def stage(self, statements: list[str]) -> None:
        """Run ``CREATE TABLE ... AS`` statements, in order (a later one may read an earlier table)."""
        ...

    def write_parquet(self, select: str, target: Path) -> None:
        """Write the rows of ``select`` to the single Parquet file ``target`` (zstd)."""
        ...

    def close(self) -> None: ...


def resolve_engine(engine: str | None = None) -> EngineName:
    """The engine asked for, else ``CXPREDICT_ENGINE``, else DuckDB; refuses an unknown name."""
    chosen = (engine or os.environ.get(ENGINE_ENV) or "duckdb").strip().lower()
    if chosen not in ENGINES:
        raise ValueError(f"unknown feature engine {chosen!r}: choose one of {', '.join(ENGINES)}")
    return chosen  # type: ignore[return-value]


def supplied_columns(
    engine: SqlEngine, sources: Mapping[str, CanonicalSource], manifest: dict[str, Any] | None
) -> dict[str, frozenset[str]]:
    """Columns each source supplied: from the canonical manifest, else every column with a non-null value."""
    listed = (manifest or {}).get("sources", {})
    out = {}
    for name, source in sources.items():
        if name in listed and "columns_supplied" in listed[name]:
            out[name] = frozenset(listed[name]["columns_supplied"])
            continue
        columns = engine.columns(f"raw_{name}")
        counts = engine.fetchall(
            "SELECT " + ", ".join(f'count("{c}")' for c in columns) + f" FROM raw_{name}"
        )[0]
        out[name] = frozenset(c for c, n in zip(columns, counts or (), strict=True) if n)
    return out


def top_categories(engine: SqlEngine, supplied: Mapping[str, frozenset[str]], limit: int) -> tuple[str, ...]:
    """Top categories by event volume, else by transaction volume, else none."""
    if limit == 0:
        return ()
    for source in ("events", "transactions"):
        if "category" in supplied.get(source, frozenset()):
            ranked = [r[0] for r in engine.fetchall(top_categories_sql(source, limit * 3))]
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


class DuckDBEngine:
    """The default engine: one DuckDB database file in the build's scratch folder, with a
    ``raw_<source>`` view per canonical source."""

    name: EngineName = "duckdb"
    label = "DuckDB"
    query_errors = (duckdb.Error,)

    def __init__(
        self,
        scratch: Path,
        config: FeatureBuildConfig,
        sources: Mapping[str, CanonicalSource],
        folded: Mapping[str, Path] | None = None,
    ) -> None:
        self.con = con = duckdb.connect(
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
            con.execute(f"CREATE VIEW canon_{name} AS SELECT * FROM read_parquet('{source.scan}')")
            logged = (folded or {}).get(name)
            if logged is None:
                con.execute(f"CREATE VIEW raw_{name} AS SELECT * FROM canon_{name}")
                continue
            con.execute(f"CREATE VIEW logged_{name} AS SELECT * FROM read_parquet('{_quote(logged)}')")
            fold = logged_fold_sql(name, self.columns(f"canon_{name}"), self.columns(f"logged_{name}"))
            con.execute(f"CREATE VIEW raw_{name} AS {fold}")

    def fetchall(self, sql: str) -> list[tuple[Any, ...]]:
        return self.con.execute(sql).fetchall()

    def columns(self, view: str) -> list[str]:
        return [r[0] for r in self.con.execute(f"DESCRIBE SELECT * FROM {view}").fetchall()]

    def describe(self, select: str) -> dict[str, str]:
        return {row[0]: str(row[1]) for row in self.con.execute(f"DESCRIBE {select}").fetchall()}

    def numeric(self, type_name: str) -> bool:
        return bool(_DUCKDB_NUMBER.match(type_name.upper()))

    def reason(self, error: BaseException) -> str:
        return custom.masked_reason(error)

    def stage(self, statements: list[str]) -> None:
        """Staging tables keep the order their statements ask for (sorted by key, for zone maps)."""
        self.con.execute("SET preserve_insertion_order = true")
        for statement in statements:
            self.con.execute(statement)
        self.con.execute("SET preserve_insertion_order = false")

    def write_parquet(self, select: str, target: Path) -> None:
        self.con.execute(f"COPY ({select}) TO '{_quote(target)}' (FORMAT parquet, COMPRESSION zstd)")

    def close(self) -> None:
        self.con.close()


def _quote(path: Path | str) -> str:
    return str(path).replace("'", "''")


_LOGGED_KEYS = {"events": ("timestamp", "event_type"), "surveys": ("timestamp", "kind")}


def logged_fold_sql(name: str, columns: list[str], logged_columns: list[str]) -> str:
    """A canonical source (view ``canon_<name>``) plus the pushed events of the durable log
    (``logged_<name>``) that it does not hold already (the same customer, time and type), so a
    snapshot holds every acknowledged event. A logged ``ticket_resolved`` closes the customer's
    oldest open ticket opened before it. Columns are named one by one (a column only one side has
    is null on the other), so the SQL reads the same in every engine."""
    names = list(dict.fromkeys([*columns, *logged_columns]))

    def pick(alias: str, have: list[str], replace: Mapping[str, str] | None = None) -> str:
        return ", ".join(
            (replace or {}).get(c) or (f'{alias}."{c}"' if c in have else f'NULL AS "{c}"') for c in names
        )

    canon, log = f"canon_{name}", f"logged_{name}"
    if name in _LOGGED_KEYS:
        same = " AND ".join(f'c."{key}" = l."{key}"' for key in ("customer_id", *_LOGGED_KEYS[name]))
        return (
            f"SELECT {pick('c', columns)} FROM {canon} AS c UNION ALL "
            f"SELECT {pick('l', logged_columns)} FROM {log} AS l "
            f"WHERE NOT EXISTS (SELECT 1 FROM {canon} AS c WHERE {same})"
        )
    resolved = {
        "resolved_at": 'CASE WHEN r.resolved_at >= o.opened_at THEN r.resolved_at END AS "resolved_at"'
    }
    return (
        f"WITH opened AS (SELECT {pick('l', logged_columns)} FROM {log} AS l WHERE l.opened_at IS NOT NULL "
        f"AND NOT EXISTS (SELECT 1 FROM {canon} AS c WHERE c.customer_id = l.customer_id AND c.opened_at = l.opened_at)), "
        f"closing AS (SELECT customer_id, resolved_at, "
        f"row_number() OVER (PARTITION BY customer_id ORDER BY resolved_at) AS k FROM {log} WHERE opened_at IS NULL), "
        f"tickets AS (SELECT {pick('c', columns)} FROM {canon} AS c UNION ALL SELECT {pick('p', names)} FROM opened AS p), "
        f"still_open AS (SELECT {pick('t', names)}, row_number() OVER (PARTITION BY customer_id ORDER BY opened_at) AS k "
        f"FROM tickets AS t WHERE resolved_at IS NULL) "
        f"SELECT {pick('t', names)} FROM tickets AS t WHERE resolved_at IS NOT NULL UNION ALL "
        f"SELECT {pick('o', names, resolved)} "
        f"FROM still_open AS o LEFT JOIN closing AS r ON r.customer_id = o.customer_id AND r.k = o.k"
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


def snapshot_select(family: Family, ctx: FamilyContext, t_us: int, created_us: int) -> str:
    """One snapshot file's rows: key, snapshot and creation times (UTC), the active features."""
    features = "".join(f", {d.name}" for d in family.active_features(ctx))
    return (
        f"SELECT customer_id, make_timestamp({t_us}::BIGINT)::TIMESTAMPTZ AS event_timestamp, "
        f"make_timestamp({created_us}::BIGINT)::TIMESTAMPTZ AS created_timestamp{features} "
        f"FROM ({family.snapshot_sql(ctx, t_us)}) AS snapshot"
    )


def _write_snapshot(
    engine: SqlEngine,
    family: Family,
    ctx: FamilyContext,
    moment: datetime,
    created_us: int,
    features_dir: Path,
    scratch: Path,
) -> None:
    tmp = scratch / f"{family.name}-{moment:%Y%m%d}-{uuid.uuid4().hex}.parquet"
    engine.write_parquet(snapshot_select(family, ctx, epoch_us(moment), created_us), tmp)
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
    engine: str | None = None,
) -> BuildSummary:
    """Build every missing feature snapshot as of ``as_of`` and rewrite the manifest.

    ``engine`` (``duckdb`` or ``spark``; default ``CXPREDICT_ENGINE``, else DuckDB) runs the same
    family SQL: Spark gets it transpiled (:mod:`features.spark_engine`) and writes the same files
    and manifest. Custom SQL views are DuckDB-only: a Spark build refuses each with the reason.

    ``progress`` gets one step per (snapshot, family) written. Raises ``FileNotFoundError`` when the canonical transactions are missing.
    Custom SQL views come from ``custom_dir`` (default ``<ws>/features.d``; a given folder must
    exist); a refused file is listed in the summary and the manifest, and the rest still builds.
    """
    started = time.perf_counter()
    workspace = ws
    engine_name = resolve_engine(engine)
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
    folded = _logged_events(workspace, as_of, scratch, sources)
    if engine_name == "spark":
        from features.spark_engine import SparkEngine

        con: SqlEngine = SparkEngine(scratch, sources, folded)
    else:
        con = DuckDBEngine(scratch, config, sources, folded)
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
            con.stage(base_stage_sql(ctx) + [s for f in families for s in f.stage(ctx)])
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
            known_staged=bool(todo),
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
    from features.feature_repo.definitions import PUSHED_VIEWS, RATIOS_VIEW, RECENCY_NOW_VIEW

    return {f.name for f in all_families()} | set(PUSHED_VIEWS) | {RATIOS_VIEW, RECENCY_NOW_VIEW}


def _taken_features(ctx: FamilyContext, families: list[Family]) -> set[str]:
    """Feature names a custom view may not take: every family feature (supplied or not), the
    pushed features and the derived features generated over them."""
    from features.feature_repo.definitions import DEFAULT_RATIOS, PUSHED_VIEWS, recency_specs

    names = {d.name for f in families for d in f.features(ctx)} | {
        n for view in PUSHED_VIEWS.values() for n in view.features
    }
    names |= {spec[0] for spec in DEFAULT_RATIOS}
    return names | {spec[0] for spec in recency_specs(sorted(names))}


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass
