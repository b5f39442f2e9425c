"""The Spark engine of the feature build: the same family SQL (transpiled by sqlglot) gives the same
snapshot files and manifest as DuckDB, value for value, on a generated world with logged events,
over two as-of dates and the incremental path, custom SQL views included (a view Spark cannot run is
refused on Spark alone)."""

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
from features.snapshots import FeatureBuildConfig, build_features, resolve_engine

pytestmark = pytest.mark.slow  # one local[1] SparkSession and four feature builds

CONFIG = FeatureBuildConfig(lookback_months=1)
FIRST_AS_OF = utc("2026-10-15 12:00")
LATER_AS_OF = utc("2026-11-01")
CUSTOM_SQL = {
    "spend.sql": """-- name: spend_total
-- tasks: churn
SELECT customer_id, sum(amount) AS spend_total FROM transactions GROUP BY customer_id
""",
    "service.sql": """-- name: service_history
-- tasks: churn, unmet_needs
WITH resolved AS (
    SELECT customer_id, count(*) AS n, avg(satisfaction) AS sat, max(resolved_at) AS last_resolved
    FROM support_tickets WHERE resolved_at IS NOT NULL GROUP BY customer_id
)
SELECT c.customer_id,
       coalesce(r.n, 0) AS tickets_resolved,
       r.sat AS ticket_satisfaction,
       (epoch_us($as_of) - epoch_us(r.last_resolved)) / 86400e6 AS days_since_resolution,
       date_diff('day', c.signup_at, $as_of) AS days_since_signup,
       c.signup_at IS NOT NULL AS signed_up
FROM customers AS c LEFT JOIN resolved AS r ON r.customer_id = c.customer_id
""",
    "duckdb_only.sql": """-- name: basket_spread
-- tasks: next_purchase
SELECT customer_id, list_sum(list(quantity)) AS basket_units FROM transactions GROUP BY customer_id
""",
}
CUSTOM_SQL["example.sql"] = (Path(__file__).parents[2] / "docs" / "features.d" / "example.sql").read_text()
CUSTOM_VIEWS = ("spend_total", "service_history", "returns_and_recent_spend", "basket_spread")
SPARK_REFUSED = "basket_spread"
"""A view of a DuckDB list function that sqlglot passes through as it is, and Spark does not know."""


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
    """A small generated, ingested world with logged events and custom SQL views (not built yet),
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
    for name, text in CUSTOM_SQL.items():
        (custom / name).write_text(text)
    return ws.root


def _copy(root: Path, target: Path) -> Workspace:
    shutil.copytree(root, target, symlinks=True)
    return resolve_workspace(target)


def _manifest(ws: Workspace) -> dict:
    """The manifest without its build time, custom files named relative to the workspace."""
    found = json.loads((ws.features_dir / "manifest.json").read_text())
    found.pop("built_at")
    for entry in found["families"].values():
        if entry.get("custom"):
            entry["custom"]["file"] = str(Path(entry["custom"]["file"]).relative_to(ws.root))
    return found


def _family_files(ws: Workspace) -> dict[str, Path]:
    """Every snapshot file, families and custom views alike, by its path under features/."""
    families = {f.name for f in all_families()} | set(CUSTOM_VIEWS)
    return {
        str(p.relative_to(ws.features_dir)): p
        for p in sorted(ws.features_dir.rglob("data.parquet"))
        if p.relative_to(ws.features_dir).parts[0] in families
    }


def assert_same_snapshots(duck: Workspace, spark: Workspace) -> None:
    """Every snapshot file of both builds (the view only DuckDB runs aside): same names, columns and
    types, and every value equal (or both null; floats within 1e-9 relative), row by row after
    sorting by customer."""
    left, right = _family_files(duck), _family_files(spark)
    duck_only = {name for name in left if name.startswith(f"{SPARK_REFUSED}/")}
    assert duck_only and left and sorted(set(left) - duck_only) == sorted(right)
    left = {name: path for name, path in left.items() if name not in duck_only}
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
    # given two copies of one world, with logged events and custom SQL views (the documented example too)
    duck, other = _copy(world, tmp_path / "duck"), _copy(world, tmp_path / "spark")

    # when each engine builds features as of a mid-month noon (a non-midnight cut-off splits buckets)
    first_duck = build_features(duck, FIRST_AS_OF, CONFIG, engine="duckdb")
    first_spark = build_features(other, FIRST_AS_OF, CONFIG, engine="spark")

    # then both wrote the same snapshots, value for value, custom views included, and the same
    # entries in the manifest; the view of a DuckDB list function is refused on Spark alone
    assert first_spark.snapshots == first_duck.snapshots == [utc("2026-10-01"), FIRST_AS_OF]
    assert first_spark.features | {SPARK_REFUSED: 1} == first_duck.features
    assert first_duck.features["service_history"] == 5 and first_duck.refused == []
    assert [(r.view, r.reason.split(":")[0]) for r in first_spark.refused] == [
        (SPARK_REFUSED, "the query fails in Spark")
    ]
    assert_same_snapshots(duck, other)
    service = pq.read_table(
        other.features_dir / "service_history" / "snapshot_date=2026-10-15" / "data.parquet"
    )
    resolved = [v for v in service.column("tickets_resolved").to_pylist() if v]
    assert resolved and service.column("days_since_signup").null_count < service.num_rows
    voice = pq.read_table(other.features_dir / "voice" / "snapshot_date=2026-10-15" / "data.parquet")
    last_nps = dict(zip(*voice.select(["customer_id", "voice_last_nps"]).to_pydict().values(), strict=True))
    assert [last_nps[c] for c in _logged_customers(other)] == [float(i % 11) for i in range(8)]
    m_duck, m_spark = _manifest(duck), _manifest(other)
    assert m_duck["families"].pop(SPARK_REFUSED)["custom"]["tasks"] == ["next_purchase"]
    assert m_spark["families"]["service_history"]["custom"]["tasks"] == ["churn", "unmet_needs"]
    assert [r["view"] for r in m_spark.pop("custom_refused")] == [SPARK_REFUSED]
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
