"""Custom feature views in SQL (``features.d/*.sql``): point in time, refusals, incremental builds,
and the way into Feast's views and feature services."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from feature_fixtures import read_snapshot, utc, write_canonical
from typer.testing import CliRunner

from cxpredict.workspace import Workspace, resolve_workspace
from features.snapshots import FeatureBuildConfig, build_features

AS_OF = utc("2026-03-01")
DATES = ("2026-02-01", "2026-03-01")
CONFIG = FeatureBuildConfig(lookback_months=2)
CUSTOMERS = 120

RETURNS_SQL = """-- name: returns
-- tasks: churn, next_purchase
-- ttl_days: 40
-- description: returns and recent spend
SELECT customer_id,
  date_diff('day', max(timestamp) FILTER (WHERE returned), $as_of) AS days_since_last_return,
  sum(amount) FILTER (WHERE timestamp >= $as_of - INTERVAL 60 DAY AND NOT returned) AS spend_60d
FROM transactions
GROUP BY customer_id
"""
TICKETS_SQL = """-- name: open_tickets
-- tasks: churn
WITH per_customer AS (
  SELECT customer_id, count(*) FILTER (WHERE resolved_at IS NULL) AS n FROM support_tickets GROUP BY 1
)
SELECT customer_id, n AS tickets_open_now, n > 0 AS has_open_ticket FROM per_customer
"""


def _world(seed: int = 7) -> dict[str, list[dict]]:
    """CUSTOMERS customers signing up through 2025, with purchases, returns and tickets around the
    snapshots (some tickets resolved only after a snapshot)."""
    rng = np.random.default_rng(seed)
    start = utc("2025-06-01")
    customers, transactions, tickets = [], [], []
    for i in range(CUSTOMERS):
        cid = f"C{i:04d}"
        signup = start + timedelta(days=int(rng.integers(0, 300)))
        customers.append({"customer_id": cid, "signup_at": signup, "region": "north"})
        for _ in range(int(rng.integers(0, 8))):
            moment = signup + timedelta(hours=int(rng.integers(1, 24 * 330)))
            returned = bool(rng.random() < 0.2)
            amount = round(float(rng.uniform(5, 200)), 2)
            transactions.append(
                {"customer_id": cid, "timestamp": moment, "amount": -amount if returned else amount,
                 "order_id": f"O{len(transactions)}", "returned": returned}
            )  # fmt: skip
        if rng.random() < 0.4:
            opened = signup + timedelta(hours=int(rng.integers(1, 24 * 300)))
            resolved = opened + timedelta(days=int(rng.integers(1, 40))) if rng.random() < 0.7 else None
            tickets.append({"customer_id": cid, "opened_at": opened, "resolved_at": resolved})
    return {"customers": customers, "transactions": transactions, "support_tickets": tickets}


def _workspace(root: Path, files: dict[str, str], world: dict | None = None) -> Workspace:
    ws = resolve_workspace(root)
    write_canonical(ws, world or _world())
    folder = ws.root / "features.d"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return ws


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Workspace:
    ws = _workspace(
        tmp_path_factory.mktemp("custom") / "ws", {"returns.sql": RETURNS_SQL, "tickets.sql": TICKETS_SQL}
    )
    summary = build_features(ws, AS_OF, CONFIG)
    assert summary.refused == [] and summary.custom_views == ["returns", "open_tickets"]
    return ws


def _expected(world: dict, day: str) -> pd.DataFrame:
    """The returns view at ``day``, computed with pandas from the raw rows."""
    t = pd.Timestamp(day, tz="UTC")
    tx = pd.DataFrame(world["transactions"])
    tx["timestamp"] = pd.to_datetime(tx["timestamp"], utc=True)
    signups = pd.DataFrame(world["customers"]).assign(
        signup_at=lambda f: pd.to_datetime(f["signup_at"], utc=True)
    )
    known = sorted(
        set(signups.loc[signups["signup_at"] < t, "customer_id"])
        | set(tx.loc[tx["timestamp"] < t, "customer_id"])
    )
    before = tx[tx["timestamp"] < t]
    last_return = before[before["returned"]].groupby("customer_id")["timestamp"].max()
    recent = before[(before["timestamp"] >= t - pd.Timedelta(days=60)) & ~before["returned"]]
    out = pd.DataFrame(index=pd.Index(known, name="customer_id"))
    out["days_since_last_return"] = (t - last_return.dt.floor("D")).dt.days.astype(float).reindex(out.index)
    out["spend_60d"] = recent.groupby("customer_id")["amount"].sum().reindex(out.index)
    return out


@pytest.mark.parametrize("day", DATES)
def test_given_a_returns_view_then_each_snapshot_equals_an_independent_pandas_computation(built, day):
    # when the snapshot is read
    got = read_snapshot(built, "returns", day)
    # then one row per known customer, values as pandas computes them from the facts before the day
    expected = _expected(_world(), day)
    assert list(got.index) == list(expected.index)
    assert got["days_since_last_return"].notna().sum() > 5 and got["spend_60d"].notna().sum() > 5
    pd.testing.assert_frame_equal(got[expected.columns], expected, check_exact=False, rtol=1e-9)
    assert (got["event_timestamp"] == pd.Timestamp(day, tz="UTC")).all()


def test_given_a_ticket_resolved_after_the_snapshot_then_the_view_sees_it_open(built):
    # given tickets opened before 2026-02-01, resolved (if ever) after it
    tickets = pd.DataFrame(_world()["support_tickets"])
    t = pd.Timestamp("2026-02-01", tz="UTC")
    opened = tickets[pd.to_datetime(tickets["opened_at"], utc=True) < t]
    resolved = pd.to_datetime(opened["resolved_at"], utc=True)
    open_at_t = opened[resolved.isna() | (resolved >= t)].groupby("customer_id").size()
    # when the view counts unresolved tickets; then a later resolution is not visible yet
    got = read_snapshot(built, "open_tickets", "2026-02-01")
    assert open_at_t.sum() > 0
    counted = got["tickets_open_now"].dropna()
    pd.testing.assert_series_equal(
        counted[counted > 0].astype(int), open_at_t.astype(int), check_names=False, check_index_type=False
    )
    assert set(got["has_open_ticket"].dropna().unique()) <= {0.0, 1.0}


def test_given_a_fact_after_the_snapshot_when_rebuilt_then_that_snapshot_is_unchanged(tmp_path):
    # given a built view and, later, a return dated exactly at the snapshot and one after it
    world = _world()
    ws = _workspace(tmp_path / "ws", {"returns.sql": RETURNS_SQL})
    build_features(ws, AS_OF, CONFIG)
    before = read_snapshot(ws, "returns", "2026-02-01").drop(columns="created_timestamp")
    someone = before.index[0]
    world["transactions"] += [
        {"customer_id": someone, "timestamp": utc("2026-02-01"), "amount": -50.0, "returned": True},
        {"customer_id": someone, "timestamp": utc("2026-02-20"), "amount": 900.0, "returned": False},
    ]
    write_canonical(ws, world)
    # when the features are rebuilt
    summary = build_features(ws, AS_OF, CONFIG)
    # then the 2026-02-01 snapshot is the same and the later one saw the new purchase
    assert summary.rebuilt
    after = read_snapshot(ws, "returns", "2026-02-01").drop(columns="created_timestamp")
    pd.testing.assert_frame_equal(after, before)
    march = read_snapshot(ws, "returns", "2026-03-01")
    assert march.loc[someone, "spend_60d"] >= 900.0


REFUSED = {
    "a_parse.sql": ("-- name: a_parse\n-- tasks: churn\nSELECT customer_id, (amount AS x FROM transactions\n",
                    "does not parse"),
    "b_unknown_table.sql": ("-- name: b\n-- tasks: churn\nSELECT customer_id, 1 AS x FROM loyalty_points\n",
                            "unknown table 'loyalty_points'"),
    "c_no_customer.sql": ("-- name: c\n-- tasks: churn\nSELECT max(amount) AS x FROM transactions\n",
                          "no customer_id"),
    "d_duckdb.sql": ("-- name: d\n-- tasks: churn\nSELECT customer_id, max(no_such_column) AS d_x FROM transactions GROUP BY 1\n",
                     "fails in DuckDB"),
    "e_duplicates.sql": ("-- name: e\n-- tasks: churn\nSELECT customer_id, amount AS e_x FROM transactions\n",
                         "several rows for one customer"),
    "f_clash_feature.sql": ("-- name: f\n-- tasks: churn\nSELECT customer_id, count(*) AS purchase_count_30d FROM transactions GROUP BY 1\n",
                            "'purchase_count_30d' is already a built-in feature"),
    "g_clash_view.sql": ("-- name: purchase\n-- tasks: churn\nSELECT customer_id, count(*) AS g_n FROM transactions GROUP BY 1\n",
                         "'purchase' is already a built-in feature view"),
    "h_unknown_task.sql": ("-- name: h\n-- tasks: churn, upsell\nSELECT customer_id, count(*) AS h_n FROM transactions GROUP BY 1\n",
                           "unknown task 'upsell'"),
    "i_text.sql": ("-- name: i\n-- tasks: churn\nSELECT customer_id, region AS i_region FROM customers\n",
                   "'i_region' is VARCHAR"),
    "j_ddl.sql": ("-- name: j\n-- tasks: churn\nDROP TABLE transactions\n", "not a SELECT"),
    "k_file.sql": ("-- name: k\n-- tasks: churn\nSELECT customer_id, 1 AS k_x FROM read_parquet('/etc/x.parquet')\n",
                   "table function"),
    "l_clock.sql": ("-- name: l\n-- tasks: churn\nSELECT customer_id, date_diff('day', max(timestamp), now()) AS l_days FROM transactions GROUP BY 1\n",
                    "wall clock"),
    "m_two.sql": ("-- name: m\n-- tasks: churn\nSELECT customer_id, 1 AS m_x FROM transactions; SELECT 1\n", "2 statements"),
    "n_no_tasks.sql": ("-- name: n\nSELECT customer_id, count(*) AS n_x FROM transactions GROUP BY 1\n", "lacks '-- tasks:"),
    "o_absent.sql": ("-- name: o\n-- tasks: churn\nSELECT customer_id, count(*) AS o_x FROM surveys GROUP BY 1\n",
                     "'surveys' is not in this workspace"),
    "q_conversion.sql": (
        "-- name: q\n-- tasks: churn\nSELECT customer_id, max(CAST(customer_id AS INTEGER)) AS q_n FROM transactions GROUP BY 1\n",
        "fails in DuckDB: Conversion Error",
    ),
    "r_shadow.sql": (
        "-- name: r\n-- tasks: churn\nWITH transactions AS (SELECT 1 AS customer_id) SELECT customer_id, 1 AS r_x FROM transactions\n",
        "shadows a canonical table",
    ),
    "z_same_as_returns.sql": ("-- name: z\n-- tasks: churn\nSELECT customer_id, 1 AS spend_60d FROM transactions GROUP BY 1\n",
                              "'spend_60d' is already defined by"),
}  # fmt: skip


@pytest.fixture(scope="module")
def refusals(tmp_path_factory):
    files = {name: text for name, (text, _) in REFUSED.items()} | {"returns.sql": RETURNS_SQL}
    ws = _workspace(tmp_path_factory.mktemp("refused") / "ws", files)
    return ws, build_features(ws, AS_OF, CONFIG)


@pytest.mark.parametrize("file", sorted(REFUSED))
def test_given_a_bad_custom_file_then_it_is_refused_with_its_file_and_reason(refusals, file):
    ws, summary = refusals
    found = [r for r in summary.refused if Path(r.file).name == file]
    assert len(found) == 1, [str(r) for r in summary.refused]
    assert REFUSED[file][1] in found[0].reason
    assert str(found[0]).startswith(str(ws.root / "features.d" / file))
    if found[0].view not in (None, "purchase"):
        assert not (ws.features_dir / found[0].view).exists(), "a refused view leaves no snapshot"


def test_given_refused_files_then_the_families_and_the_good_view_still_build_and_the_manifest_lists_why(
    refusals,
):
    ws, summary = refusals
    manifest = json.loads((ws.features_dir / "manifest.json").read_text())
    assert {"purchase", "service", "profile", "returns"} <= set(manifest["families"])
    assert summary.custom_views == ["returns"] and len(summary.refused) == len(REFUSED)
    assert {Path(r["file"]).name for r in manifest["custom_refused"]} == set(REFUSED)
    assert (
        read_snapshot(ws, "purchase", "2026-03-01").shape[0]
        == read_snapshot(ws, "returns", "2026-03-01").shape[0]
    )
    assert "C0" not in json.dumps(manifest["custom_refused"])


def test_given_unchanged_files_then_nothing_is_rewritten_and_a_changed_file_rebuilds_only_its_view(tmp_path):
    ws = _workspace(tmp_path / "ws", {"returns.sql": RETURNS_SQL, "tickets.sql": TICKETS_SQL})
    build_features(ws, AS_OF, CONFIG)
    stamps = {p: p.stat().st_mtime_ns for p in ws.features_dir.rglob("*.parquet")}
    # when built again unchanged: then no file is rewritten
    again = build_features(ws, AS_OF, CONFIG)
    assert again.snapshots_built == 0
    assert {p: p.stat().st_mtime_ns for p in ws.features_dir.rglob("*.parquet")} == stamps
    # when one file changes: then its view is rebuilt with the new definition, the rest is kept
    (ws.root / "features.d" / "returns.sql").write_text(
        RETURNS_SQL.replace("INTERVAL 60 DAY", "INTERVAL 1 DAY")
    )
    build_features(ws, AS_OF, CONFIG)
    changed = {p for p, ns in stamps.items() if p.stat().st_mtime_ns != ns}
    assert changed and all(p.relative_to(ws.features_dir).parts[0] == "returns" for p in changed)
    narrow = read_snapshot(ws, "returns", "2026-03-01")["spend_60d"]
    assert narrow.notna().sum() < read_snapshot(ws, "open_tickets", "2026-03-01").shape[0]
    # when a file is removed: then its view and its folder are gone
    (ws.root / "features.d" / "tickets.sql").unlink()
    build_features(ws, AS_OF, CONFIG)
    manifest = json.loads((ws.features_dir / "manifest.json").read_text())
    assert "open_tickets" not in manifest["families"] and not (ws.features_dir / "open_tickets").exists()


def test_given_a_custom_view_when_applied_then_feast_serves_it_through_the_tasks_feature_services(
    built, tmp_path
):
    from features.store import apply_repo, get_training_features, materialize_latest, open_store

    ws = resolve_workspace(tmp_path / "ws")
    shutil.copytree(built.root, ws.root)
    objects = apply_repo(ws)
    # then one view per file, with its TTL, in the services of its tasks only
    assert objects.feature_views["returns"].ttl == timedelta(days=40)
    members = {name: {p.name for p in s.feature_view_projections} for name, s in objects.services.items()}
    assert "returns" in members["churn"] and "returns" in members["next_purchase"]
    assert "returns" not in members["unmet_needs"] and "open_tickets" not in members["next_purchase"]
    # when retrieved point in time through the churn service
    snapshot = read_snapshot(ws, "returns", "2026-02-01")
    ids = list(snapshot.index[:40])
    entity = pd.DataFrame({"customer_id": ids, "event_timestamp": pd.Timestamp("2026-02-10", tz="UTC")})
    offline = get_training_features(ws, entity, "churn").set_index("customer_id")
    pd.testing.assert_series_equal(
        offline["spend_60d"], snapshot.loc[ids, "spend_60d"], check_names=False, check_dtype=False
    )
    assert "tickets_open_now" in offline.columns
    # and online after materialisation
    materialize_latest(ws, end=AS_OF)
    store = open_store(ws)
    online = store.get_online_features(
        features=store.get_feature_service("churn"),
        entity_rows=[{"customer_id": i, "request_time": AS_OF} for i in ids],
    ).to_dict()
    latest = read_snapshot(ws, "returns", "2026-03-01").loc[ids, "days_since_last_return"]
    got = pd.Series(online["days_since_last_return"], index=ids, dtype=float)
    pd.testing.assert_series_equal(got, latest, check_names=False)


@pytest.mark.slow
def test_given_the_features_command_with_a_features_dir_then_the_summary_shows_the_view_and_each_refusal(
    tmp_path,
):
    from cxpredict.cli import app

    ws = _workspace(tmp_path / "ws", {})
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "returns.sql").write_text(RETURNS_SQL)
    (folder / "bad.sql").write_text(REFUSED["b_unknown_table.sql"][0])
    result = CliRunner().invoke(
        app, ["features", "--as-of", "2026-03-01", "--features-dir", str(folder), "--workspace", str(ws.root)]
    )
    assert result.exit_code == 0, result.output
    assert "returns (custom SQL)" in result.output
    assert "1 custom feature file(s) refused" in result.output and "bad.sql" in result.output
    assert "unknown table 'loyalty_points'" in result.output
    missing = CliRunner().invoke(
        app, ["features", "--features-dir", str(tmp_path / "nope"), "-w", str(ws.root)]
    )
    assert missing.exit_code == 2 and "no custom features folder" in missing.output
