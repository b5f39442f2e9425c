"""Small feature tables and manifest written exactly in the builder's documented format.

The store tests must not depend on the feature builder, so they write their own world: two or
three families, double and string features (with nulls), a few monthly snapshots.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

SNAPSHOTS = (
    datetime(2026, 9, 1, tzinfo=UTC),
    datetime(2026, 10, 1, tzinfo=UTC),
    datetime(2026, 11, 1, tzinfo=UTC),
)

FAMILIES: dict[str, dict[str, str]] = {
    "purchase": {
        "purchase_count_30d": "double",
        "purchase_amount_30d": "double",
        "days_since_last_purchase": "double",
        "purchase_top_category": "string",
    },
    "engagement": {
        "engagement_sessions_30d": "double",
        "engagement_cart_adds_30d": "double",
        "engagement_cart_abandons_30d": "double",
    },
    "profile": {
        "profile_tenure_days": "double",
        "profile_region": "string",
        "profile_loyalty_tier": "string",
    },
}


def customer_ids(n: int) -> list[str]:
    return [f"C{i:06d}" for i in range(n)]


def family_frame(family: str, customers: list[str], snapshot: datetime, seed: int) -> pd.DataFrame:
    """One snapshot of one family: values depend on the snapshot so snapshots are distinguishable."""
    rng = np.random.default_rng(seed)
    n = len(customers)
    frame = pd.DataFrame(
        {
            "customer_id": pd.Series(customers, dtype="string"),
            "event_timestamp": pd.Series([snapshot] * n, dtype="datetime64[us, UTC]"),
            "created_timestamp": pd.Series([snapshot] * n, dtype="datetime64[us, UTC]"),
        }
    )
    for name, dtype in FAMILIES[family].items():
        if dtype == "double":
            values = np.round(rng.gamma(2.0, 10.0, n), 3)
            values[rng.random(n) < 0.2] = np.nan
            frame[name] = values
        else:
            choices = np.array(["north", "south", "é-ouest", "gold"], dtype=object)
            values = choices[rng.integers(0, len(choices), n)]
            values[rng.random(n) < 0.2] = None
            frame[name] = values
    return frame


def table_schema(family: str) -> pa.Schema:
    fields = [
        ("customer_id", pa.string()),
        ("event_timestamp", pa.timestamp("us", tz="UTC")),
        ("created_timestamp", pa.timestamp("us", tz="UTC")),
    ]
    fields += [(n, pa.float64() if d == "double" else pa.string()) for n, d in FAMILIES[family].items()]
    return pa.schema(fields)


def write_snapshot(ws_root: Path, family: str, frame: pd.DataFrame) -> Path:
    snapshot = frame["event_timestamp"].iloc[0]
    path = Path(ws_root) / "features" / family / f"snapshot_date={snapshot:%Y-%m-%d}" / "data.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, schema=table_schema(family), preserve_index=False), path)
    return path


def write_manifest(ws_root: Path, families=tuple(FAMILIES), snapshots=SNAPSHOTS) -> Path:
    manifest = {
        "version": 1,
        "entity": "customer",
        "join_key": "customer_id",
        "timestamp_field": "event_timestamp",
        "created_timestamp_field": "created_timestamp",
        "as_of": snapshots[-1].strftime("%Y-%m-%dT%H:%M:%SZ"),
        "built_at": snapshots[-1].strftime("%Y-%m-%dT%H:%M:%SZ"),
        "categories": ["electronics", "home"],
        "snapshots": [s.strftime("%Y-%m-%dT%H:%M:%SZ") for s in snapshots],
        "families": {
            family: {
                "sources": ["transactions"],
                "path": family,
                "features": [
                    {"name": n, "dtype": d, "description": f"{n} as of t"}
                    for n, d in FAMILIES[family].items()
                ],
            }
            for family in families
        },
    }
    path = Path(ws_root) / "features" / "manifest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=2))
    return path


def write_world(ws_root: Path, n_customers: int = 40, families=tuple(FAMILIES), snapshots=SNAPSHOTS) -> dict:
    """Write every family at every snapshot; return {(family, snapshot): frame} for expectations."""
    customers = customer_ids(n_customers)
    frames = {}
    for f_index, family in enumerate(families):
        for s_index, snapshot in enumerate(snapshots):
            frame = family_frame(family, customers, snapshot, seed=100 * f_index + s_index)
            write_snapshot(ws_root, family, frame)
            frames[(family, snapshot)] = frame
    write_manifest(ws_root, families, snapshots)
    return frames
