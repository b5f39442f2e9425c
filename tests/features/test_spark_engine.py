"""The Spark engine of the feature build: the same family SQL (transpiled by sqlglot) gives the same
snapshot files and manifest as DuckDB, value for value, on a generated world with logged events,
over two as-of dates and the incremental path; custom SQL views are refused on Spark."""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from feature_fixtures import CONTRACT, utc
from typer.testing import CliRunner

from cxpredict.workspace import Workspace, resolve_workspace
from features.families import FamilyContext, all_families
from features.families.base import base_stage_sql
from features.snapshots import SPARK_CUSTOM_REFUSAL, FeatureBuildConfig, build_features, resolve_engine

pytestmark = pytest.mark.slow  # one local[1] SparkSession and four feature builds

CONFIG = FeatureBuildConfig(lookback_months=1)
FIRST_AS_OF = utc("2026-10-15 12:00")
LATER_AS_OF = utc("2026-11-01")
CUSTOM_SQL = """-- name: spend_total
-- tasks: churn
SELECT customer_id, sum(amount) AS spend_total FROM transactions GROUP BY customer_id
"""


@pytest.fixture(scope="module")
def spark():
    from features.spark_engine import spark_session

    return spark_session("local[1]", {"spark.sql.shuffle.partitions": "1", "spark.driver.memory": "1g"})


def _logged_customers(ws: Workspace) -> list[str]:
    known = pq.read_table(ws.canonical_dir / "customers.parquet", columns=["customer_id"])
    return sorted(known.column("customer_id").to_pylist())[:8]


def _log_events(ws: Workspace) -> None:
    """Pushed events the canonical data lacks: sessions, a search, tickets opened and resolved, NPS
    answers (customer i answers i % 11), for a handful of customers, dated before the first as-of
    date and between the two."""
    from features.event_log import EventLog, RealtimeEvent

    customers = _logged_customers(ws)
    log = EventLog.of(ws)
    try:
        for i, customer in enumerate(customers):
            for start in (datetime(2026, 10, 3, tzinfo=UTC), datetime(2026, 10, 20, tzinfo=UTC)):
                at = start + timedelta(hours=5 * i)

                def push(event_type: str, minutes: int, **survey) -> None:
                    moment = at + timedelta(minutes=minutes)
                    log.append(
                        RealtimeEvent(customer_id=customer, event_type=event_type, timestamp=moment, **survey)
                    )

                push("session_start", 0)
                push("search", 1)
                push("ticket_opened", 2)
                push("ticket_resolved", 600)
                push("survey_answered", 3, kind="nps", score=float(i % 11))
    finally:
        log.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A small generated, ingested world with logged events and one custom SQL view (not built yet),
    without the canonical manifest, so each engine finds the supplied columns in the data itself."""
    from features.ingest import ingest
    from features.synthetic import WorldConfig, generate

    ws = resolve_workspace(tmp_path_factory.mktemp("spark-world") / "ws").ensure()
    generate(ws, WorldConfig(customers=300, seed=7, days=420, end=date(2026, 11, 1)))
    ingest(ws)
    (ws.canonical_dir / "manifest.json").unlink()
    _log_events(ws)
    custom = ws.root / "features.d"
    custom.mkdir(exist_ok=True)
    (custom / "spend.sql").write_text(CUSTOM_SQL)
    return ws.root


def _copy(root: Path, target: Path) -> Workspace:
    shutil.copytree(root, target, symlinks=True)
    return resolve_workspace(target)


def _manifest(ws: Workspace) -> dict:
    found = json.loads((ws.features_dir / "manifest.json").read_text())
    found.pop("built_at")
    return found


def _family_files(ws: Workspace) -> dict[str, Path]:
    families = {f.name for f in all_families()}
    return {
        str(p.relative_to(ws.features_dir)): p
        for p in sorted(ws.features_dir.rglob("data.parquet"))
        if p.relative_to(ws.features_dir).parts[0] in families
    }


def assert_same_snapshots(duck: Workspace, spark: Workspace) -> None:
    """Every family file of both builds: same names, columns and types, and every value equal (or
    both null; floats within 1e-9 relative), row by row after sorting by customer."""
    left, right = _family_files(duck), _family_files(spark)
    assert left and sorted(left) == sorted(right)
    for name, path in left.items():
        a, b = pq.read_table(path), pq.read_table(right[name])
        assert [(f.name, f.type) for f in a.schema] == [(f.name, f.type) for f in b.schema], name
        a, b = a.sort_by("customer_id").to_pydict(), b.sort_by("customer_id").to_pydict()
        assert a["customer_id"] == b["customer_id"], name
        for column, values in a.items():
            if column == "created_timestamp":
                continue
            other = b[column]
            if pq.read_schema(path).field(column).type == "double":
                x = np.array([np.nan if v is None else v for v in values], dtype=float)
                y = np.array([np.nan if v is None else v for v in other], dtype=float)
                same = np.isclose(x, y, rtol=1e-9, atol=0.0, equal_nan=True)
                assert same.all(), f"{name} {column}: {int((~same).sum())} values differ"
            else:
                assert values == other, f"{name} {column}"


def _mtimes(ws: Workspace) -> dict[str, int]:
    return {name: path.stat().st_mtime_ns for name, path in _family_files(ws).items()}


def test_given_one_world_when_built_by_duckdb_and_spark_then_every_snapshot_and_the_manifest_are_equal(
    spark, world, tmp_path
):
    # given two copies of one world, with logged events and a custom SQL view
    duck, other = _copy(world, tmp_path / "duck"), _copy(world, tmp_path / "spark")

    # when each engine builds features as of a mid-month noon (a non-midnight cut-off splits buckets)
    first_duck = build_features(duck, FIRST_AS_OF, CONFIG, engine="duckdb")
    first_spark = build_features(other, FIRST_AS_OF, CONFIG, engine="spark")

    # then both wrote the same snapshots, value for value, and the same family entries in the manifest
    assert first_spark.snapshots == first_duck.snapshots == [utc("2026-10-01"), FIRST_AS_OF]
    assert first_spark.features | {"spend_total": 1} == first_duck.features
    assert_same_snapshots(duck, other)
    voice = pq.read_table(other.features_dir / "voice" / "snapshot_date=2026-10-15" / "data.parquet")
    last_nps = dict(zip(*voice.select(["customer_id", "voice_last_nps"]).to_pydict().values(), strict=True))
    assert [last_nps[c] for c in _logged_customers(other)] == [float(i % 11) for i in range(8)]
    m_duck, m_spark = _manifest(duck), _manifest(other)
    assert m_duck["families"].pop("spend_total")["custom"]["tasks"] == ["churn"]
    refusal = m_spark.pop("custom_refused")
    assert [r["view"] for r in refusal] == ["spend_total"] and refusal[0]["reason"] == SPARK_CUSTOM_REFUSAL
    assert m_duck.pop("custom_refused") == []
    assert m_spark == m_duck
    kept_duck, kept_spark = _mtimes(duck), _mtimes(other)

    # when each builds again as of the first of the next month (incremental: one new snapshot)
    later_duck = build_features(duck, LATER_AS_OF, CONFIG, engine="duckdb")
    later_spark = build_features(other, LATER_AS_OF, CONFIG, engine="spark")

    # then both kept the earlier snapshots untouched, added the same new one, and still agree
    assert later_spark.snapshots_built == later_duck.snapshots_built == 1
    assert later_spark.snapshots == later_duck.snapshots == [utc("2026-10-01"), FIRST_AS_OF, LATER_AS_OF]
    assert {k: v for k, v in _mtimes(other).items() if k in kept_spark} == kept_spark
    assert {k: v for k, v in _mtimes(duck).items() if k in kept_duck} == kept_duck
    assert_same_snapshots(duck, other)
    assert _manifest(other)["snapshots"] == _manifest(duck)["snapshots"]


def test_given_every_family_statement_when_transpiled_then_sqlglot_raises_on_none():
    from features.spark_engine import to_spark

    # given a context where every family and feature is active, with non-midnight boundaries
    supplied = {source: frozenset(columns) for source, columns in CONTRACT.items()}
    ctx = FamilyContext(supplied=supplied, categories=("home", "books")).with_boundaries((1767225600000001,))
    assert all(f.available(ctx) and f.active_features(ctx) == f.features(ctx) for f in all_families())

    # when every staging and snapshot statement is transpiled to Spark
    statements = base_stage_sql(ctx) + [s for f in all_families() for s in f.stage(ctx)]
    statements += [f.snapshot_sql(ctx, 1767225600000000) for f in all_families()]
    spark_sql = [to_spark(s) for s in statements]

    # then none kept a DuckDB-only construct, and the two unmapped functions got their Spark names
    joined = "\n".join(spark_sql)
    for duckdb_only in (r"\bEPOCH_US\(", r"\bEXCLUDE\b", r"\bEXCEPT\b", r"\bASOF\b", r"BY NAME", r"\bHASH\("):
        assert not re.search(duckdb_only, joined), duckdb_only
    assert "UNIX_MICROS(" in joined and "XXHASH64(" in joined


def test_given_the_engine_option_then_it_defaults_to_duckdb_follows_the_environment_and_refuses_others(
    monkeypatch,
):
    monkeypatch.delenv("CXPREDICT_ENGINE", raising=False)
    assert resolve_engine() == "duckdb"
    monkeypatch.setenv("CXPREDICT_ENGINE", "Spark")
    assert resolve_engine() == "spark" and resolve_engine("duckdb") == "duckdb"
    with pytest.raises(ValueError, match="unknown feature engine 'polars'"):
        resolve_engine("polars")


def test_given_an_unknown_engine_when_the_features_command_runs_then_it_exits_with_a_usage_error(tmp_path):
    from cxpredict.cli import app

    result = CliRunner().invoke(app, ["features", "--engine", "polars", "--workspace", str(tmp_path / "ws")])
    assert result.exit_code == 2
    assert "unknown feature engine" in result.output
