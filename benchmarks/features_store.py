"""Benchmark of the Feast store operations on synthetic feature tables (helper script).

Writes its own world in the builder's documented format (7 families, ~80 features, monthly
snapshots) into a scratch workspace, then measures:
- materialisation: Feast's default SQLite path vs :mod:`features.materialize` (customers/s);
- online reads of 1 and 100 customers: Feast SDK vs :class:`features.online.OnlineReader`
  (p50/p99 over 1,000 iterations after warm-up);
- point-in-time retrieval of N entity rows across all feature views (seconds): Feast's DuckDB
  offline store vs the narrow-pick DuckDB path of :func:`features.store.get_training_features_fast`.

Usage: ``python benchmarks/features_store.py --customers 20000 [--feast-materialize]``
(the Feast default materialisation runs on at most ``--feast-limit`` customers: ~740/s).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FAMILIES: dict[str, list[tuple[str, str]]] = {
    "purchase": [
        (f"purchase_{m}_{w}d", "double") for m in ("count", "amount", "items") for w in (7, 30, 90, 365)
    ]
    + [
        ("days_since_last_purchase", "double"),
        ("purchase_gap_mean_days", "double"),
        ("purchase_gap_last_days", "double"),
        ("purchase_gap_trend", "double"),
        ("purchase_basket_mean", "double"),
        ("purchase_discount_share", "double"),
        ("purchase_return_rate", "double"),
        ("purchase_online_share", "double"),
        ("purchase_store_share", "double"),
        ("purchase_app_share", "double"),
        ("purchase_top_category", "string"),
    ],
    "engagement": [
        (f"engagement_{m}_{w}d", "double")
        for m in ("sessions", "views", "searches", "cart_adds", "cart_abandons")
        for w in (7, 30, 90)
    ]
    + [("engagement_days_since_last_visit", "double"), ("engagement_activity_trend", "double")],
    "service": [
        ("service_tickets_opened_90d", "double"),
        ("service_tickets_unresolved", "double"),
        ("service_resolution_hours_mean", "double"),
        ("service_repeat_contacts_90d", "double"),
        ("service_sentiment_mean", "double"),
        ("service_days_since_last_ticket", "double"),
    ],
    "voice": [
        ("voice_last_nps", "double"),
        ("voice_last_csat", "double"),
        ("voice_nps_change", "double"),
        ("voice_response_rate", "double"),
    ],
    "marketing": [
        (f"marketing_{m}_{w}d", "double")
        for m in ("sent", "opens", "clicks", "unsubscribes")
        for w in (7, 30, 90)
    ],
    "profile": [
        ("profile_tenure_days", "double"),
        ("profile_age", "double"),
        ("profile_region", "string"),
        ("profile_acquisition_channel", "string"),
        ("profile_loyalty_tier", "string"),
        ("profile_consent_profiling", "double"),
        ("profile_consent_marketing", "double"),
    ],
    "needs": [
        (f"need_{c}_{m}_90d", "double")
        for c in ("electronics", "home", "fashion")
        for m in ("searches", "views", "wishlist", "purchases")
    ],
}
CATEGORIES = {
    "purchase_top_category": ["electronics", "home", "fashion", "beauty", "sports"],
    "profile_region": ["north", "south", "east", "west", "centre"],
    "profile_acquisition_channel": ["organic", "paid_search", "social", "referral"],
    "profile_loyalty_tier": ["none", "silver", "gold", "platinum"],
}


def monthly_snapshots(as_of: datetime, months: int) -> list[datetime]:
    firsts = []
    year, month = as_of.year, as_of.month
    for _ in range(months):
        firsts.append(datetime(year, month, 1, tzinfo=UTC))
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return sorted({*firsts, as_of})[-months:]


def write_world(root: Path, n: int, snapshots: list[datetime], seed: int = 7) -> int:
    """Write every family at every snapshot (vectorised); returns the number of features."""
    rng = np.random.default_rng(seed)
    ids = pa.array([f"C{i:08d}" for i in range(n)], pa.string())
    for family, features in FAMILIES.items():
        for snapshot in snapshots:
            stamps = pa.array(np.full(n, int(snapshot.timestamp() * 1e6)), pa.timestamp("us", tz="UTC"))
            columns = {"customer_id": ids, "event_timestamp": stamps, "created_timestamp": stamps}
            for name, dtype in features:
                if dtype == "string":
                    choices = np.array(CATEGORIES[name], dtype=object)
                    values = choices[rng.integers(0, len(choices), n)]
                    columns[name] = pa.array(values, pa.string(), mask=rng.random(n) < 0.05)
                else:
                    values = np.round(rng.gamma(1.5, 8.0, n), 2)
                    columns[name] = pa.array(values, pa.float64(), mask=rng.random(n) < 0.15)
            path = root / "features" / family / f"snapshot_date={snapshot:%Y-%m-%d}" / "data.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.table(columns), path, compression="zstd")
    manifest = {
        "version": 1,
        "entity": "customer",
        "join_key": "customer_id",
        "timestamp_field": "event_timestamp",
        "created_timestamp_field": "created_timestamp",
        "as_of": snapshots[-1].strftime("%Y-%m-%dT%H:%M:%SZ"),
        "built_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "categories": ["electronics", "home", "fashion"],
        "snapshots": [s.strftime("%Y-%m-%dT%H:%M:%SZ") for s in snapshots],
        "families": {
            family: {
                "sources": [family],
                "path": family,
                "features": [{"name": f, "dtype": d} for f, d in feats],
            }
            for family, feats in FAMILIES.items()
        },
    }
    (root / "features" / "manifest.json").write_text(json.dumps(manifest))
    return sum(len(f) for f in FAMILIES.values())


def percentiles(samples: list[float]) -> str:
    ms = np.asarray(samples) * 1e3
    return f"p50 {np.percentile(ms, 50):7.2f} ms  p99 {np.percentile(ms, 99):7.2f} ms"


def time_calls(fn, iterations: int, warmup: int = 50) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iterations):
        began = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - began)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--snapshots", type=int, default=13)
    parser.add_argument("--feast-materialize", action="store_true", help="also time Feast's default writer")
    parser.add_argument("--feast-limit", type=int, default=20_000)
    parser.add_argument("--online-iterations", type=int, default=1_000)
    parser.add_argument("--skip-online", action="store_true")
    parser.add_argument("--pit-rows", type=int, default=0, help="entity rows for point-in-time retrieval")
    parser.add_argument("--pit-feast", action="store_true", help="time Feast's get_historical_features too")
    parser.add_argument("--workspace", type=Path, default=None)
    parser.add_argument(
        "--existing", action="store_true", help="reuse --workspace, already written and materialised"
    )
    args = parser.parse_args()

    from cxpredict.workspace import Workspace
    from features import store as feature_store
    from features.online import OnlineReader

    scratch = args.workspace or Path(tempfile.mkdtemp(prefix="cxp-bench-"))
    ws = Workspace(root=scratch)
    as_of = datetime(2026, 11, 20, tzinfo=UTC)
    snapshots = monthly_snapshots(as_of, args.snapshots)
    end = as_of + timedelta(days=1)
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if args.existing:
        print(f"world: reusing {scratch}")
    else:
        began = time.perf_counter()
        n_features = write_world(scratch, args.customers, snapshots)
        print(
            f"world: {args.customers:,} customers x {n_features} features x {len(snapshots)} snapshots "
            f"written in {time.perf_counter() - began:.1f} s ({scratch})"
        )
        feature_store.apply_repo(ws)

    if args.feast_materialize:
        small = Workspace(root=scratch / "feast-default")
        limit = min(args.customers, args.feast_limit)
        write_world(small.root, limit, snapshots[-2:])
        feature_store.apply_repo(small)
        cpu = time.process_time()
        report = feature_store.materialize_latest(small, end=end, fast=False)
        cpu = time.process_time() - cpu
        print(
            f"materialise Feast default: {limit:,} customers in {report.seconds:.1f} s wall ({cpu:.1f} s CPU) = "
            f"{limit / report.seconds:,.0f} customers/s"
        )
    if not args.existing:
        cpu = time.process_time()
        report = feature_store.materialize_latest(ws, end=end, fast=True)
        cpu = time.process_time() - cpu
        print(
            f"materialise fast path:     {report.customers:,} customers in {report.seconds:.1f} s wall "
            f"({cpu:.1f} s CPU, 2 threads) = {report.customers / report.seconds:,.0f} customers/s "
            f"({report.values:,} values)"
        )

    if not args.skip_online:
        store = feature_store.open_store(ws)
        reader = OnlineReader(store)
        service = store.get_feature_service("churn")
        rng = np.random.default_rng(1)
        request_time = as_of + timedelta(days=3)
        reader.read([f"C{0:08d}"], "churn", request_time=request_time)
        gc.freeze()  # as a serving process does after start-up: full GC passes over the imports cost ~100 ms
        print("online reads: gc.freeze() after warm-up (same for both readers)")
        for size in (1, 100):
            picks = [
                [f"C{i:08d}" for i in rng.choice(args.customers, size, replace=False)] for _ in range(64)
            ]
            cycle = iter(range(10**9))

            def sdk(size=size, picks=picks, cycle=cycle):
                ids = picks[next(cycle) % len(picks)]
                rows = [{"customer_id": c, "request_time": request_time} for c in ids]
                store.get_online_features(features=service, entity_rows=rows).to_dict()

            stored = [f"{p.name}:{f.name}" for p in service.feature_view_projections
                      if p.name not in ("ratios", "recency_now") for f in p.features]  # fmt: skip

            def sdk_stored(picks=picks, cycle=cycle):
                ids = picks[next(cycle) % len(picks)]
                store.get_online_features(
                    features=stored, entity_rows=[{"customer_id": c} for c in ids]
                ).to_dict()

            def fast(picks=picks, cycle=cycle):
                reader.read(picks[next(cycle) % len(picks)], "churn", request_time=request_time)

            label = f"online read {size:>3} customer(s)"
            print(
                f"{label}, Feast SDK, churn service: {percentiles(time_calls(sdk, args.online_iterations))}"
            )
            print(
                f"{label}, Feast SDK, stored only:   {percentiles(time_calls(sdk_stored, args.online_iterations))}"
            )
            print(
                f"{label}, fast reader, churn:       {percentiles(time_calls(fast, args.online_iterations))}"
            )

    if args.pit_rows:
        rng = np.random.default_rng(2)
        n = args.pit_rows
        span = (as_of - snapshots[0]).total_seconds()
        entity_df = pd.DataFrame(
            {
                "customer_id": [f"C{i:08d}" for i in rng.integers(0, args.customers, n)],
                "event_timestamp": pd.to_datetime(
                    snapshots[0].timestamp() + rng.random(n) * span, unit="s", utc=True
                ),
            }
        )
        began = time.perf_counter()
        fast_frame = feature_store.get_training_features_fast(ws, entity_df, "churn")
        print(
            f"point-in-time {n:,} rows, narrow-pick DuckDB path: {time.perf_counter() - began:.1f} s "
            f"({fast_frame.shape[1]} columns)"
        )
        if args.pit_feast:
            began = time.perf_counter()
            frame = feature_store.get_training_features(ws, entity_df, "churn")
            print(
                f"point-in-time {n:,} rows, Feast DuckDB offline store: {time.perf_counter() - began:.1f} s "
                f"({frame.shape[1]} columns)"
            )

    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if args.workspace is None:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
