"""Custom feature views written in SQL: ``<workspace>/features.d/*.sql``, one Feast view per file.

Why: the built-in families are fixed code; a data scientist who wants "loyalty points balance" or
"days since the last return" writes one SELECT over the canonical tables instead of a module.

A file opens with comment lines ``-- name: <view>``, ``-- tasks: <task>, <task>`` and
optionally ``-- ttl_days: N`` and ``-- description: ...``, then holds a single SELECT giving
``customer_id`` plus numeric feature columns, reading the canonical tables by name
(``transactions``, ``events``, ``support_tickets``, ``surveys``, ``marketing``, ``consents``,
``customers``). ``$as_of`` stands for the snapshot time (a UTC ``TIMESTAMPTZ``).

Point in time, the same guarantee as the families: per snapshot ``t`` each name the query reads
is bound to that table restricted to facts dated before ``t`` (its contract time column ``< t``);
a ticket's resolution and satisfaction are null unless resolved before ``t``; ``customers`` holds
the customers known before ``t`` (attributes as they are now, sign-up time null if not yet
reached). Contact identifiers (email, phone, loyalty card, device id) are not exposed. The query's
rows are joined onto every customer known at ``t``, so a snapshot has one row per known customer,
like a family's, and null where the query gives nothing.

The SQL is DuckDB's dialect whatever the engine: a Spark build runs the same wrapped statements
transpiled by sqlglot (``features.spark_engine``), so a view gives the same values on both as far
as sqlglot translates its functions faithfully; a query that does not translate, or fails on
Spark, is refused there.

Validation (sqlglot, then the build's engine): one SELECT (no DDL/DML, no second statement),
only canonical tables present in the workspace and the query's own CTEs, no table functions
(``read_parquet``), no wall clock (``now()``: use ``$as_of``), every output column named,
``customer_id`` among them, feature names snake_case and unique across every family and view,
numeric types only (integers, decimals, floats and booleans become float64 features), at most one
row per customer, tasks that the registry knows. A file that fails is a :class:`Refusal` naming
the file and the reason; the other views and the families still build. Error texts never repeat
data values (quoted literals of engine messages are masked), since those may be customer
identifiers.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlglot
from pydantic import BaseModel, ConfigDict
from sqlglot import exp

from cxpredict import tasks as registry
from features.contract import IDENTIFIER_KINDS, TIME_COLUMNS
from features.families import FamilyContext
from features.families.base import known_customers_sql

if TYPE_CHECKING:
    from features.snapshots import SqlEngine

CUSTOM_DIR = "features.d"
CUSTOM_VERSION = 1
"""Bump when the point-in-time binding of the tables changes, so every custom view is rebuilt."""
TABLES: Mapping[str, str] = TIME_COLUMNS
"""Tables a query may read, with the column that dates their facts."""
HIDDEN_COLUMNS = frozenset(IDENTIFIER_KINDS)
RESERVED_COLUMNS = frozenset({"event_timestamp", "created_timestamp", "created", "request_time"})
MAX_TTL_DAYS = 3650
PARAMETER = "as_of"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_HEADER = re.compile(r"^--\s*(name|tasks|ttl_days|description)\s*:\s*(.*?)\s*$", re.IGNORECASE)
_QUOTED = re.compile(r"'(?:[^']|'')*'")
_WALL_CLOCK = (exp.CurrentDate, exp.CurrentTimestamp, exp.CurrentTime, exp.CurrentDatetime)
_WALL_CLOCK_NAMES = frozenset(
    {
        "now",
        "today",
        "get_current_time",
        "get_current_timestamp",
        "transaction_timestamp",
        "current_localtimestamp",
    }
)


class Refusal(BaseModel):
    """A custom feature file that was not built, and why (the file path and a reason, no data)."""

    model_config = ConfigDict(frozen=True)

    file: str
    reason: str
    view: str | None = None

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


@dataclass(frozen=True)
class CustomView:
    """A validated custom feature file: its header, the tables it reads and its output columns."""

    name: str
    file: Path
    text: str
    tasks: tuple[str, ...]
    ttl_days: float | None
    description: str
    tables: tuple[str, ...]
    features: tuple[str, ...]
    tree: exp.Query = field(repr=False, compare=False)

    def fingerprint(self, data_fingerprint: str) -> str:
        """Changes with the data, the file's text or the binding rules: then the view is rebuilt."""
        digest = hashlib.sha256(f"{data_fingerprint}\n{CUSTOM_VERSION}\n{self.text}".encode())
        return "sha256:" + digest.hexdigest()

    def refuse(self, reason: str) -> Refusal:
        return Refusal(file=str(self.file), reason=reason, view=self.name)


class ViewRefused(Exception):
    """A custom view cannot be built; the message is the reason."""


def default_dir(root: Path) -> Path:
    """Where a workspace keeps its custom feature files."""
    return Path(root) / CUSTOM_DIR


def _header(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("--"):
            break
        match = _HEADER.match(stripped)
        if match:
            key = match.group(1).lower()
            if key in found:
                raise ViewRefused(f"the header gives '-- {key}:' twice")
            found[key] = match.group(2)
    return found


def _tasks(value: str | None) -> tuple[str, ...]:
    if value is None or not value.strip():
        raise ViewRefused("the header lacks '-- tasks: <task>, ...' (the tasks whose models read the view)")
    names = []
    for item in (part.strip() for part in value.split(",")):
        try:
            name = registry.get(item).name if item else None
        except registry.UnknownTask:
            known = ", ".join(spec.name for spec in registry.all_tasks())
            raise ViewRefused(f"unknown task {item!r} in '-- tasks:' (known: {known})") from None
        if name and name not in names:
            names.append(name)
    if not names:
        raise ViewRefused("'-- tasks:' names no task")
    return tuple(names)


def _ttl(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        days = float(value)
    except ValueError:
        raise ViewRefused(f"'-- ttl_days: {value}' is not a number of days") from None
    if not 0 < days <= MAX_TTL_DAYS:
        raise ViewRefused(f"'-- ttl_days:' must lie in (0, {MAX_TTL_DAYS}]")
    return days


def _parse(text: str) -> exp.Query:
    try:
        statements = [s for s in sqlglot.parse(text, read="duckdb") if s is not None]
    except sqlglot.errors.ParseError as error:
        first = error.errors[0] if error.errors else {}
        where = f" at line {first.get('line')}, column {first.get('col')}" if first else ""
        what = first.get("description") or str(error).splitlines()[0]
        raise ViewRefused(f"the SQL does not parse{where}: {what}") from None
    except sqlglot.errors.TokenError as error:
        raise ViewRefused(f"the SQL does not parse: {str(error).splitlines()[0]}") from None
    if not statements:
        raise ViewRefused("the file holds no SQL statement")
    if len(statements) > 1:
        raise ViewRefused(f"the file holds {len(statements)} statements: write a single SELECT")
    query = statements[0]
    if not isinstance(query, exp.Query):
        raise ViewRefused(f"the statement is a {query.key.upper()}, not a SELECT (no DDL or DML)")
    return query


def _check_tree(query: exp.Query, present: Iterable[str]) -> tuple[str, ...]:
    """The canonical tables the query reads; refuses what could see past the snapshot or the data."""
    for node in query.walk():
        if isinstance(node, (exp.DDL, exp.DML, exp.Command, exp.Pragma, exp.Copy)):
            raise ViewRefused(f"the query contains a {node.key.upper()} statement: only a SELECT is allowed")
        if isinstance(node, _WALL_CLOCK) or (
            isinstance(node, exp.Anonymous) and node.name.lower() in _WALL_CLOCK_NAMES
        ):
            raise ViewRefused("the query reads the wall clock (now, current_date, ...): use $as_of instead")
        if isinstance(node, (exp.Placeholder, exp.Parameter)) and node.name != PARAMETER:
            shown = f"${node.name}" if node.name else "?"
            raise ViewRefused(f"unknown parameter {shown}: only $as_of (the snapshot time) is defined")
    ctes = {cte.alias_or_name.lower() for cte in query.find_all(exp.CTE)}
    shadowing = sorted(ctes & set(TABLES))
    if shadowing:
        raise ViewRefused(f"the CTE {shadowing[0]!r} shadows a canonical table: give it another name")
    read: list[str] = []
    available = set(present)
    for table in query.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            raise ViewRefused(
                f"the query calls the table function {table.this.sql('duckdb')[:40]!r}: "
                "read the canonical tables by name"
            )
        name = table.name.lower()
        if table.db or table.catalog:
            raise ViewRefused(f"the table {table.sql('duckdb')!r} is qualified: name canonical tables alone")
        if name in ctes:
            continue
        if name not in TABLES:
            raise ViewRefused(f"unknown table {table.name!r}: read only {', '.join(TABLES)}")
        if name not in available:
            raise ViewRefused(f"the table {name!r} is not in this workspace's canonical data")
        if name not in read:
            read.append(name)
    if not read:
        raise ViewRefused("the query reads no canonical table")
    return tuple(read)


def _outputs(query: exp.Query) -> tuple[str, ...]:
    names: list[str] = []
    for position, column in enumerate(query.selects, start=1):
        if isinstance(column, exp.Star) or (isinstance(column, exp.Column) and column.is_star):
            raise ViewRefused("the query selects *: name each output column")
        name = column.alias_or_name if isinstance(column, (exp.Alias, exp.Column)) else ""
        if not name:
            shown = column.sql("duckdb")[:40]
            raise ViewRefused(f"output column {position} ({shown}) has no name: add AS <feature_name>")
        if name in names:
            raise ViewRefused(f"the output column {name!r} appears twice")
        names.append(name)
    if "customer_id" not in names:
        raise ViewRefused("the query gives no customer_id column (one row per customer)")
    features = [n for n in names if n != "customer_id"]
    if not features:
        raise ViewRefused("the query gives no feature column besides customer_id")
    for name in features:
        if not _NAME.match(name):
            raise ViewRefused(f"the feature name {name!r} is not snake_case (a-z, 0-9, _)")
        if name in RESERVED_COLUMNS:
            raise ViewRefused(f"the feature name {name!r} is reserved for the snapshot tables")
    return tuple(features)


def parse_view(file: Path, text: str, present: Iterable[str]) -> CustomView | Refusal:
    """Validate one file's text (pure: reads no file, runs no query). ``present``: the canonical
    tables the workspace holds."""
    name = None
    try:
        header = _header(text)
        name = header.get("name")
        if not name:
            raise ViewRefused("the header lacks '-- name: <view_name>'")
        if not _NAME.match(name):
            raise ViewRefused(f"the view name {name!r} is not snake_case (a-z, 0-9, _)")
        tasks = _tasks(header.get("tasks"))
        ttl_days = _ttl(header.get("ttl_days"))
        tree = _parse(text)
        tables = _check_tree(tree, present)
        features = _outputs(tree)
    except ViewRefused as refused:
        return Refusal(file=str(file), reason=str(refused), view=name)
    description = header.get("description") or f"custom feature view defined in {file.name}"
    return CustomView(name, file, text, tasks, ttl_days, description, tables, features, tree)


def load_views(folder: Path, present: Iterable[str]) -> tuple[list[CustomView], list[Refusal]]:
    """Every ``*.sql`` file of ``folder`` (sorted by name), validated; a missing folder holds none."""
    views: list[CustomView] = []
    refused: list[Refusal] = []
    if not folder.is_dir():
        return views, refused
    present = tuple(present)
    for path in sorted(folder.glob("*.sql")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            refused.append(
                Refusal(file=str(path), reason=f"the file cannot be read ({type(error).__name__})")
            )
            continue
        found = parse_view(path, text, present)
        (refused if isinstance(found, Refusal) else views).append(found)
    return views, refused


def check_names(
    views: list[CustomView], taken_views: Iterable[str], taken_features: Iterable[str]
) -> tuple[list[CustomView], list[Refusal]]:
    """Drop views whose name or a feature name is already taken (by a family, a Feast object or an
    earlier file); the first file in name order keeps a contested name."""
    views_seen = {name: "a built-in feature view" for name in taken_views}
    features_seen = {name: "a built-in feature" for name in taken_features}
    kept: list[CustomView] = []
    refused: list[Refusal] = []
    for view in views:
        if view.name in views_seen:
            refused.append(view.refuse(f"the view name {view.name!r} is already {views_seen[view.name]}"))
            continue
        clash = next((f for f in view.features if f in features_seen or f in views_seen), None)
        if clash is not None:
            owner = features_seen.get(clash) or views_seen[clash]
            refused.append(view.refuse(f"the feature name {clash!r} is already {owner}"))
            continue
        kept.append(view)
        views_seen[view.name] = f"defined by {view.file.name}"
        features_seen.update(dict.fromkeys(view.features, f"defined by {view.file.name}"))
    return kept, refused


def staged_columns(engine: SqlEngine, tables: Iterable[str]) -> dict[str, list[str]]:
    """The columns a query may see of each table (``raw_<table>`` less contact identifiers)."""
    return {
        table: [c for c in engine.columns(f"raw_{table}") if c not in HIDDEN_COLUMNS]
        for table in sorted(set(tables))
    }


def stage_sql(columns: Mapping[str, Sequence[str]]) -> list[str]:
    """Statements copying each table the views read once into the build (``cv_<table>``), with the
    columns of :func:`staged_columns` named one by one (portable SQL: no ``* EXCLUDE``)."""
    return [
        f"CREATE OR REPLACE TABLE cv_{table} AS SELECT {_select(names)} FROM raw_{table}"
        for table, names in sorted(columns.items())
    ]


def _select(columns: Sequence[str], replaced: Mapping[str, str] | None = None) -> str:
    replaced = replaced or {}
    return ", ".join(f'{replaced[c]} AS "{c}"' if c in replaced else f'"{c}"' for c in columns)


def _moment(t_us: int) -> str:
    return f"make_timestamp({t_us}::BIGINT)::TIMESTAMPTZ"


def table_as_of(table: str, t_us: int, columns: Sequence[str]) -> str:
    """The SELECT a query sees under ``table``'s name at snapshot ``t_us``: facts dated before it
    (``columns``: the staged table's columns, so every engine reads the same explicit list)."""
    t = _moment(t_us)
    if table == "customers":
        signup = {"signup_at": f"CASE WHEN signup_at < {t} THEN signup_at END"}
        return (
            f"SELECT {_select(columns, signup)} FROM cv_customers "
            f"WHERE customer_id IN (SELECT customer_id FROM customers_known WHERE known_us < {t_us})"
        )
    where = f"WHERE {TABLES[table]} < {t}"
    if table == "support_tickets":
        resolved = f"resolved_at < {t}"
        later = {c: f"CASE WHEN {resolved} THEN {c} END" for c in ("resolved_at", "satisfaction")}
        return f"SELECT {_select(columns, later)} FROM cv_support_tickets {where}"
    return f"SELECT {_select(columns)} FROM cv_{table} {where}"


def query_sql(view: CustomView, t_us: int, columns: Mapping[str, Sequence[str]]) -> str:
    """The view's query at snapshot ``t_us``: ``$as_of`` bound, every table bound as of ``t_us``."""
    literal = exp.cast(exp.Literal.string(f"{t_us}"), exp.DataType.build("BIGINT"))
    bound = view.tree.copy().transform(
        lambda node: (
            exp.cast(exp.func("make_timestamp", literal.copy()), exp.DataType.build("TIMESTAMPTZ"))
            if isinstance(node, (exp.Placeholder, exp.Parameter)) and node.name == PARAMETER
            else node
        )
    )
    tables = ",\n".join(f"{table} AS ({table_as_of(table, t_us, columns[table])})" for table in view.tables)
    return f"WITH {tables},\n__query AS (\n{bound.sql('duckdb')}\n)\nSELECT * FROM __query"


def snapshot_sql(view: CustomView, t_us: int, created_us: int, columns: Mapping[str, Sequence[str]]) -> str:
    """One row per customer known at ``t_us``: key, snapshot times, the features as DOUBLE."""
    features = ",\n  ".join(f'CAST(q."{name}" AS DOUBLE) AS "{name}"' for name in view.features)
    return (
        f"WITH q AS ({query_sql(view, t_us, columns)}),\n"
        f"known AS (SELECT customer_id FROM customers_known WHERE known_us < {t_us})\n"
        f"SELECT known.customer_id, {_moment(t_us)} AS event_timestamp, "
        f"{_moment(created_us)} AS created_timestamp,\n  {features}\n"
        "FROM known LEFT JOIN q ON CAST(q.customer_id AS VARCHAR) = known.customer_id"
    )


def masked_reason(error: BaseException) -> str:
    """An engine's message, first line, with quoted literals masked (they may be data values)."""
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return _QUOTED.sub("'…'", first)


def _fails(engine: SqlEngine, error: BaseException) -> ViewRefused:
    return ViewRefused(f"the query fails in {engine.label}: {engine.reason(error)}")


def check_types(engine: SqlEngine, view: CustomView, t_us: int, columns: Mapping[str, Sequence[str]]) -> None:
    """Bind the query in the engine at one snapshot and check its columns; raises :class:`ViewRefused`."""
    try:
        types = engine.describe(query_sql(view, t_us, columns))
    except engine.query_errors as error:
        raise _fails(engine, error) from None
    expected = ["customer_id", *view.features]
    if sorted(types) != sorted(expected):
        raise ViewRefused(
            f"{engine.label} gives the columns {sorted(types)}, the SQL names {sorted(expected)}"
        )
    for name in view.features:
        if not engine.numeric(types[name]):
            raise ViewRefused(
                f"the column {name!r} is {types[name]}: features must be numbers or booleans "
                "(e.g. date_diff('day', <time>, $as_of) for a time, a 0/1 flag for a category)"
            )


def write_snapshot(
    engine: SqlEngine,
    view: CustomView,
    t_us: int,
    created_us: int,
    tmp: Path,
    columns: Mapping[str, Sequence[str]],
) -> None:
    """Run the view at one snapshot into ``tmp`` (Parquet); raises :class:`ViewRefused` when the
    engine fails or the query gives several rows for one customer."""
    try:
        engine.stage([f"CREATE OR REPLACE TABLE cv_out AS {snapshot_sql(view, t_us, created_us, columns)}"])
        extra = engine.fetchall("SELECT count(*) - count(DISTINCT customer_id) FROM cv_out")
        if extra and extra[0][0]:
            raise ViewRefused(f"the query gives several rows for one customer ({extra[0][0]} extra rows)")
        engine.write_parquet("SELECT * FROM cv_out", tmp)
    except engine.query_errors as error:
        raise _fails(engine, error) from None


@dataclass(frozen=True)
class BuiltView:
    """A custom view whose snapshots are all in place, with the fingerprint they were built under."""

    view: CustomView
    fingerprint: str

    def manifest_entry(self) -> dict[str, Any]:
        """The view's entry among the manifest's families (``custom`` marks it and holds its header)."""
        view = self.view
        return {
            "sources": list(view.tables),
            "path": view.name,
            "features": [
                {"name": f, "dtype": "double", "description": view.description} for f in view.features
            ],
            "custom": {
                "file": str(view.file),
                "tasks": list(view.tasks),
                "ttl_days": view.ttl_days,
                "fingerprint": self.fingerprint,
            },
        }


def build_views(
    engine: SqlEngine,
    views: list[CustomView],
    ctx: FamilyContext,
    *,
    known_staged: bool,
    snapshots: list[datetime],
    rebuild: set[datetime],
    previous: Mapping[str, Any] | None,
    data_fingerprint: str,
    created_us: int,
    features_dir: Path,
    scratch: Path,
    step: Callable[[str], None] | None = None,
) -> tuple[list[BuiltView], list[Refusal]]:
    """Write every snapshot of ``snapshots`` each view lacks, in the families' layout.

    A view whose fingerprint (data, file text) matches the previous manifest keeps its files and
    writes only the snapshots in ``rebuild`` or missing; any other view is rebuilt from scratch.
    A view that fails in the engine at any snapshot is refused and its folder removed.
    ``known_staged``: the build has staged ``customers_known`` already (the families did).
    """
    from features.snapshots import epoch_us, snapshot_path

    built: list[BuiltView] = []
    refused: list[Refusal] = []
    if not views:
        return built, refused
    if not known_staged:
        engine.stage([known_customers_sql(ctx)])
    columns = staged_columns(engine, {table for view in views for table in view.tables})
    engine.stage(stage_sql(columns))
    before = (previous or {}).get("families", {})
    for view in views:
        fingerprint = view.fingerprint(data_fingerprint)
        same = (before.get(view.name, {}).get("custom") or {}).get("fingerprint") == fingerprint
        folder = features_dir / view.name
        if not same:
            shutil.rmtree(folder, ignore_errors=True)
        todo = [
            moment
            for moment in snapshots
            if not same or moment in rebuild or not snapshot_path(features_dir, view.name, moment).exists()
        ]
        try:
            check_types(engine, view, epoch_us(snapshots[-1]), columns)
            for moment in todo:
                tmp = scratch / f"{view.name}-{moment:%Y%m%d}-{uuid.uuid4().hex}.parquet"
                write_snapshot(engine, view, epoch_us(moment), created_us, tmp, columns)
                final = snapshot_path(features_dir, view.name, moment)
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)
                if step is not None:
                    step(f"features {moment:%Y-%m-%d} {view.name}")
        except ViewRefused as refusal:
            shutil.rmtree(folder, ignore_errors=True)
            refused.append(view.refuse(str(refusal)))
            continue
        built.append(BuiltView(view, fingerprint))
    return built, refused


def remove_stale(features_dir: Path, previous: Mapping[str, Any] | None, keep: Iterable[str]) -> None:
    """Remove the folders of custom views the previous manifest listed and this build does not."""
    kept = set(keep)
    for name, entry in ((previous or {}).get("families") or {}).items():
        if entry.get("custom") and name not in kept and _NAME.match(name):
            shutil.rmtree(features_dir / name, ignore_errors=True)
