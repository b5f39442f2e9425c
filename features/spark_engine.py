"""Spark engine for the feature build: the families' DuckDB SQL, transpiled with sqlglot, on Spark SQL.

Why: one machine's DuckDB is the default and fastest below a few million customers; a cluster is for
data that outgrows it. The feature definitions stay single-sourced: every statement the build runs
is the DuckDB SQL of ``features.families`` and ``features.snapshots``, transpiled by
``sqlglot`` (read ``duckdb``, write ``spark``). Definitions avoid DuckDB constructs that have no
faithful Spark form (arg-n-max, ``* EXCLUDE``, as-of joins, ``UNION ALL BY NAME``); two DuckDB
functions that sqlglot leaves as they are get their Spark equivalent here, in :data:`FUNCTIONS`:
``epoch_us`` (``unix_micros``) and ``hash`` (``xxhash64``: a 64-bit hash too, only ever compared
for equality, never written out). One function sqlglot maps by name but not by meaning is rewritten:
DuckDB's ``date_diff`` counts unit boundaries, Spark's whole units (:func:`_boundaries`). Custom
SQL views (``features.custom``) are user-written DuckDB SQL and go through the same translation.

Contract (:class:`SparkEngine`, the ``SqlEngine`` of ``features.snapshots``): canonical sources are
``canon_<source>`` / ``raw_<source>`` temporary views; a ``CREATE TABLE x AS q`` statement writes
``q`` as Parquet under the build's scratch folder and registers it as view ``x``; a snapshot is one
Parquet file (zstd, timestamps as UTC microseconds, the same column names and types as DuckDB's).

One SparkSession per process (:func:`spark_session`): master ``CXPREDICT_SPARK_MASTER`` (default
``local[2]``), driver memory ``CXPREDICT_SPARK_DRIVER_MEMORY`` (default ``2g``), shuffle partitions
``CXPREDICT_SPARK_SHUFFLE_PARTITIONS`` (default 8), session time zone UTC; a ``local`` master binds
the driver to the loopback address. Any other ``spark.*``
setting comes from Spark's own ``spark-defaults.conf`` or ``PYSPARK_SUBMIT_ARGS``.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlglot
from sqlglot import exp

from features.custom import masked_reason
from features.snapshots import CanonicalSource, EngineName, logged_fold_sql

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

MASTER_ENV = "CXPREDICT_SPARK_MASTER"
DRIVER_MEMORY_ENV = "CXPREDICT_SPARK_DRIVER_MEMORY"
SHUFFLE_PARTITIONS_ENV = "CXPREDICT_SPARK_SHUFFLE_PARTITIONS"
DEFAULT_MASTER = "local[2]"
DEFAULT_DRIVER_MEMORY = "2g"
DEFAULT_SHUFFLE_PARTITIONS = 8

FUNCTIONS: Mapping[str, Callable[[list[exp.Expression]], exp.Expression]] = {
    "epoch_us": lambda args: exp.UnixMicros(this=args[0]),
    "hash": lambda args: exp.Anonymous(this="xxhash64", expressions=args),
}
"""DuckDB functions sqlglot does not map to Spark, with their Spark form (same meaning)."""

_SPARK_NUMBER = re.compile(r"^(boolean|tinyint|smallint|int|bigint|float|double|decimal\(\d+,\d+\)|void)$")

_session: SparkSession | None = None


class SparkUnavailable(RuntimeError):
    """The Spark engine was asked for on a machine without PySpark."""


def spark_session(master: str | None = None, conf: Mapping[str, str] | None = None) -> SparkSession:
    """The process's SparkSession, created on first use with ``master`` and the ``conf`` overrides
    (later calls return it as it is, whatever they pass)."""
    global _session
    if _session is not None and _session.sparkContext._jsc is not None:
        return _session
    try:
        from pyspark.sql import SparkSession
    except ImportError as missing:
        raise SparkUnavailable(
            "the Spark engine needs PySpark (and Java 17+): install the project's `spark` "
            "dependency group (`uv sync --group spark`) or `pip install pyspark`"
        ) from missing
    master = master or os.environ.get(MASTER_ENV) or DEFAULT_MASTER
    builder = (
        SparkSession.builder.appName("cxpredict-features")
        .master(master)
        .config("spark.driver.memory", os.environ.get(DRIVER_MEMORY_ENV) or DEFAULT_DRIVER_MEMORY)
        .config(
            "spark.sql.shuffle.partitions",
            os.environ.get(SHUFFLE_PARTITIONS_ENV) or str(DEFAULT_SHUFFLE_PARTITIONS),
        )
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.sql.parquet.compression.codec", "zstd")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.ui.enabled", "false")
    )
    if master.startswith("local"):
        builder = builder.config("spark.driver.bindAddress", "127.0.0.1").config(
            "spark.driver.host", "127.0.0.1"
        )
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    _session = builder.getOrCreate()
    _session.sparkContext.setLogLevel("ERROR")
    return _session


def query_errors() -> tuple[type[BaseException], ...]:
    """What a statement that cannot run raises: sqlglot (no Spark form), Spark's analysis and
    runtime errors, and a Java error that PySpark did not convert."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    return (sqlglot.errors.SqlglotError, PySparkException, Py4JJavaError)


BOUNDARY_UNITS = frozenset({"YEAR", "QUARTER", "MONTH", "DAY", "HOUR", "MINUTE", "SECOND"})
"""Units of DuckDB's ``date_diff`` written for Spark as a difference of truncated times."""


def _boundaries(node: exp.DateDiff) -> exp.Expression:
    """DuckDB's ``date_diff(unit, a, b)`` counts unit boundaries crossed (23:00 to 01:00 is one day);
    Spark's ``datediff(unit, a, b)`` counts whole units elapsed (zero days). Truncating both times
    to the unit first makes Spark count boundaries too."""
    unit = node.args.get("unit")
    if not (node.args.get("date_part_boundary") and unit is not None and unit.name.upper() in BOUNDARY_UNITS):
        return node
    return exp.DateDiff(
        this=exp.TimestampTrunc(this=node.this, unit=unit.copy()),
        expression=exp.TimestampTrunc(this=node.expression, unit=unit.copy()),
        unit=unit.copy(),
    )


def _spark_functions(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.DateDiff):
        return _boundaries(node)
    if isinstance(node, exp.Anonymous):
        make = FUNCTIONS.get(str(node.this).lower())
        if make is not None:
            return make(list(node.expressions))
    return node


def to_spark(sql: str) -> str:
    """One DuckDB statement as Spark SQL (sqlglot, plus :data:`FUNCTIONS`); raises on a construct
    sqlglot cannot express in Spark."""
    tree = sqlglot.parse_one(sql, read="duckdb").transform(_spark_functions)
    return tree.sql(dialect="spark", unsupported_level=sqlglot.ErrorLevel.RAISE)


def created_table(sql: str) -> tuple[str, str] | None:
    """``(name, query)`` of a ``CREATE [OR REPLACE] TABLE name AS query`` statement (query in
    DuckDB SQL), else None. The query's outer ``ORDER BY`` is dropped: it lays a DuckDB table out
    for zone maps, and a table's row order means nothing to the SQL that reads it."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    if not (isinstance(tree, exp.Create) and tree.kind == "TABLE" and tree.expression is not None):
        return None
    query = tree.expression.copy()
    if isinstance(query, exp.Query) and query.args.get("limit") is None:
        query.set("order", None)
    return tree.this.name, query.sql(dialect="duckdb")


def _reader(spark: SparkSession, path: Path):
    if path.is_dir():
        return spark.read.option("recursiveFileLookup", "true").option("pathGlobFilter", "*.parquet")
    return spark.read


class SparkEngine:
    """The build's statements on Spark SQL; staging tables and snapshots under ``scratch``."""

    name: EngineName = "spark"
    label = "Spark"

    def __init__(
        self,
        scratch: Path,
        sources: Mapping[str, CanonicalSource],
        folded: Mapping[str, Path] | None = None,
        spark: SparkSession | None = None,
    ) -> None:
        self.spark = spark or spark_session()
        self.query_errors = query_errors()
        self.scratch = scratch / "spark"
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.views: list[str] = []
        for name, source in sources.items():
            self._register(f"canon_{name}", _reader(self.spark, source.path).parquet(str(source.path)))
            logged = (folded or {}).get(name)
            if logged is None:
                self._register(f"raw_{name}", self.spark.table(f"canon_{name}"))
                continue
            self._register(f"logged_{name}", self.spark.read.parquet(str(logged)))
            fold = logged_fold_sql(name, self.columns(f"canon_{name}"), self.columns(f"logged_{name}"))
            self._register(f"raw_{name}", self.spark.sql(to_spark(fold)))

    def _register(self, name: str, frame) -> None:
        frame.createOrReplaceTempView(name)
        self.views.append(name)

    def fetchall(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self.spark.sql(to_spark(sql)).collect()]

    def columns(self, view: str) -> list[str]:
        return list(self.spark.table(view).columns)

    def describe(self, select: str) -> dict[str, str]:
        return {f.name: f.dataType.simpleString() for f in self.spark.sql(to_spark(select)).schema.fields}

    def numeric(self, type_name: str) -> bool:
        return bool(_SPARK_NUMBER.match(type_name.lower()))

    def reason(self, error: BaseException) -> str:
        java = getattr(error, "java_exception", None)
        if java is not None and not hasattr(error, "getErrorClass"):
            return masked_reason(java.toString())
        return masked_reason(error)

    def stage(self, statements: list[str]) -> None:
        """Each ``CREATE TABLE x AS q`` becomes Parquet under the scratch folder, read back as view ``x``
        (so every snapshot reads the staged table, not its lineage)."""
        for statement in statements:
            created = created_table(statement)
            if created is None:
                raise ValueError(
                    f"the Spark engine stages CREATE TABLE ... AS statements only: {statement[:80]!r}"
                )
            name, query = created
            target = self.scratch / f"table-{name}"
            shutil.rmtree(target, ignore_errors=True)
            self.spark.sql(to_spark(query)).write.parquet(str(target))
            self._register(name, self.spark.read.parquet(str(target)))

    def write_parquet(self, select: str, target: Path) -> None:
        """One part file (Spark writes a folder), moved to ``target``."""
        folder = self.scratch / f"out-{uuid.uuid4().hex}"
        try:
            self.spark.sql(to_spark(select)).coalesce(1).write.parquet(str(folder))
            parts = sorted(folder.glob("part-*.parquet"))
            if len(parts) != 1:
                raise RuntimeError(f"Spark wrote {len(parts)} part files for one snapshot, expected 1")
            os.replace(parts[0], target)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        """Drop the build's views and cached data; the session stays for the next build."""
        for name in reversed(self.views):
            self.spark.catalog.dropTempView(name)
        self.views.clear()
        self.spark.catalog.clearCache()
