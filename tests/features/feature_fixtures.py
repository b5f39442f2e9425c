"""Hand-made canonical worlds for the feature-builder tests.

``write_canonical`` writes every contract column with its contract Arrow type (null where a row does
not give it) to ``<ws>/canonical/<source>.parquet`` and a canonical ``manifest.json`` listing the
supplied columns, as ``ingest`` does.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cxpredict.workspace import Workspace

TS = pa.timestamp("us", tz="UTC")
S, F, I, B = pa.string(), pa.float64(), pa.int64(), pa.bool_()  # noqa: E741 (pyarrow type letters)
CONTRACT: dict[str, dict[str, pa.DataType]] = {
    "customers": {
        "customer_id": S,
        "signup_at": TS,
        "birth_year": I,
        "region": S,
        "acquisition_channel": S,
        "loyalty_tier": S,
        "email": S,
        "phone": S,
        "loyalty_card": S,
    },
    "transactions": {
        "customer_id": S,
        "timestamp": TS,
        "amount": F,
        "order_id": S,
        "channel": S,
        "category": S,
        "quantity": I,
        "discount": F,
        "returned": B,
    },
    "events": {
        "customer_id": S,
        "timestamp": TS,
        "event_type": S,
        "session_id": S,
        "channel": S,
        "category": S,
        "device_id": S,
    },
    "support_tickets": {
        "customer_id": S,
        "opened_at": TS,
        "topic": S,
        "channel": S,
        "resolved_at": TS,
        "satisfaction": I,
        "sentiment": F,
    },
    "surveys": {"customer_id": S, "timestamp": TS, "kind": S, "score": I, "comment": S},
    "marketing": {"customer_id": S, "timestamp": TS, "campaign_id": S, "channel": S, "action": S},
    "consents": {"customer_id": S, "timestamp": TS, "purpose": S, "granted": B},
}
TIME_COLUMNS = {"timestamp", "signup_at", "opened_at", "resolved_at"}


def utc(text: str) -> datetime:
    """``utc("2026-01-05")`` or ``utc("2026-01-05 13:00")`` as an aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def table(source: str, rows: list[dict[str, Any]]) -> pa.Table:
    """Rows as a canonical table: every contract column, contract types, times parsed as UTC."""
    schema = pa.schema([(c, t) for c, t in CONTRACT[source].items()])
    columns = {}
    for name, dtype in CONTRACT[source].items():
        values = [r.get(name) for r in rows]
        if name in TIME_COLUMNS:
            values = [utc(v) if isinstance(v, str) else v for v in values]
        columns[name] = pa.array(values, type=dtype)
    return pa.table(columns, schema=schema)


def write_canonical(
    ws: Workspace, world: dict[str, list[dict[str, Any]]], supplied: dict[str, list[str]] | None = None
) -> None:
    """Write ``world`` (source → rows) as the canonical layer; ``supplied`` overrides the manifest's
    supplied columns (default: columns with a value in any row). Sources not in ``world`` are removed."""
    ws.canonical_dir.mkdir(parents=True, exist_ok=True)
    for old in ws.canonical_dir.glob("*.parquet"):
        old.unlink()
    manifest = {"sources": {}}
    for source, rows in world.items():
        data = table(source, rows)
        pq.write_table(data, ws.canonical_dir / f"{source}.parquet")
        given = (supplied or {}).get(source) or [
            c for c in data.column_names if data[c].null_count < len(data)
        ]
        manifest["sources"][source] = {"rows": len(rows), "columns_supplied": given}
    (ws.canonical_dir / "manifest.json").write_text(json.dumps(manifest))


def read_snapshot(ws: Workspace, family: str, day: str) -> pd.DataFrame:
    """A family's snapshot as a frame indexed by customer_id, rows sorted."""
    path = ws.features_dir / family / f"snapshot_date={day}" / "data.parquet"
    return pd.read_parquet(path).set_index("customer_id").sort_index()


def rich_world() -> dict[str, list[dict[str, Any]]]:
    """Three customers with activity in every source around the cutoff 2026-03-01.

    C1: buyer with known purchases (Jan 1, Feb 1, Feb 20, all 2026), a cart session abandoned on
    Feb 10 and one converted on Feb 15; C2: only a signup and a support ticket; C3: signs up after
    the cutoff (unknown at 2026-03-01).
    """
    return {
        "customers": [
            {
                "customer_id": "C1",
                "signup_at": "2025-06-01",
                "birth_year": 1990,
                "region": "north",
                "acquisition_channel": "search",
                "loyalty_tier": "gold",
            },
            {
                "customer_id": "C2",
                "signup_at": "2025-12-01",
                "birth_year": 1985,
                "region": "south",
                "acquisition_channel": "social",
                "loyalty_tier": "none",
            },
            {
                "customer_id": "C3",
                "signup_at": "2026-03-15",
                "birth_year": 2000,
                "region": "east",
                "acquisition_channel": "store",
                "loyalty_tier": "none",
            },
        ],
        "transactions": [
            {
                "customer_id": "C1",
                "timestamp": "2026-01-01 10:00",
                "amount": 100.0,
                "order_id": "O1",
                "channel": "online",
                "category": "home",
                "quantity": 2,
                "discount": 0.0,
                "returned": False,
            },
            {
                "customer_id": "C1",
                "timestamp": "2026-02-01 10:00",
                "amount": 50.0,
                "order_id": "O2",
                "channel": "store",
                "category": "books",
                "quantity": 1,
                "discount": 0.2,
                "returned": False,
            },
            {
                "customer_id": "C1",
                "timestamp": "2026-02-01 10:00",
                "amount": 30.0,
                "order_id": "O2",
                "channel": "store",
                "category": "home",
                "quantity": 3,
                "discount": 0.0,
                "returned": False,
            },
            {
                "customer_id": "C1",
                "timestamp": "2026-02-15 12:00",
                "amount": 20.0,
                "order_id": "O3",
                "channel": "app",
                "category": "home",
                "quantity": 1,
                "discount": 0.0,
                "returned": False,
            },
            {
                "customer_id": "C1",
                "timestamp": "2026-02-20 09:00",
                "amount": -30.0,
                "order_id": "O2",
                "channel": "store",
                "category": "home",
                "quantity": 3,
                "discount": 0.0,
                "returned": True,
            },
            {
                "customer_id": "C3",
                "timestamp": "2026-03-20 09:00",
                "amount": 10.0,
                "order_id": "O9",
                "channel": "online",
                "category": "toys",
                "quantity": 1,
                "discount": 0.0,
                "returned": False,
            },
        ],
        "events": [
            {
                "customer_id": "C1",
                "timestamp": "2026-02-10 08:00",
                "event_type": "session_start",
                "session_id": "S1",
                "channel": "web",
            },
            {
                "customer_id": "C1",
                "timestamp": "2026-02-10 08:01",
                "event_type": "search",
                "session_id": "S1",
                "channel": "web",
                "category": "home",
            },
            {
                "customer_id": "C1",
                "timestamp": "2026-02-10 08:02",
                "event_type": "product_view",
                "session_id": "S1",
                "channel": "web",
                "category": "home",
            },
            {
                "customer_id": "C1",
                "timestamp": "2026-02-10 08:03",
                "event_type": "add_to_cart",
                "session_id": "S1",
                "channel": "web",
                "category": "home",
            },
            {
                "customer_id": "C1",
                "timestamp": "2026-02-15 11:00",
                "event_type": "session_start",
                "session_id": "S2",
                "channel": "app",
            },
            {
                "customer_id": "C1",
                "timestamp": "2026-02-15 11:05",
                "event_type": "add_to_cart",
                "session_id": "S2",
                "channel": "app",
                "category": "home",
            },
            {
                "customer_id": "C1",
                "timestamp": "2026-02-15 11:10",
                "event_type": "wishlist_add",
                "session_id": "S2",
                "channel": "app",
                "category": "books",
            },
            {
                "customer_id": "C1",
                "timestamp": "2026-02-25 18:00",
                "event_type": "page_view",
                "session_id": "S3",
                "channel": "web",
                "category": "books",
            },
        ],
        "support_tickets": [
            {
                "customer_id": "C1",
                "opened_at": "2026-02-01 09:00",
                "topic": "delivery",
                "channel": "email",
                "resolved_at": "2026-02-02 09:00",
                "satisfaction": 4,
                "sentiment": -0.5,
            },
            {
                "customer_id": "C1",
                "opened_at": "2026-02-10 09:00",
                "topic": "availability",
                "channel": "chat",
                "resolved_at": "2026-03-05 09:00",
                "satisfaction": 2,
                "sentiment": -0.9,
            },
            {
                "customer_id": "C2",
                "opened_at": "2026-01-20 09:00",
                "topic": "billing",
                "channel": "phone",
                "resolved_at": None,
                "satisfaction": None,
                "sentiment": 0.1,
            },
        ],
        "surveys": [
            {"customer_id": "C1", "timestamp": "2025-10-01", "kind": "nps", "score": 9},
            {"customer_id": "C1", "timestamp": "2026-02-01", "kind": "nps", "score": 5},
            {"customer_id": "C1", "timestamp": "2026-02-02", "kind": "csat", "score": 4},
        ],
        "marketing": [
            {
                "customer_id": "C1",
                "timestamp": "2026-02-01 07:00",
                "campaign_id": "K1",
                "channel": "email",
                "action": "sent",
            },
            {
                "customer_id": "C1",
                "timestamp": "2026-02-01 08:00",
                "campaign_id": "K1",
                "channel": "email",
                "action": "opened",
            },
            {
                "customer_id": "C1",
                "timestamp": "2026-02-12 07:00",
                "campaign_id": "K2",
                "channel": "email",
                "action": "sent",
            },
            {
                "customer_id": "C2",
                "timestamp": "2026-01-05 07:00",
                "campaign_id": "K1",
                "channel": "sms",
                "action": "unsubscribed",
            },
        ],
        "consents": [
            {"customer_id": "C1", "timestamp": "2025-06-01", "purpose": "profiling", "granted": True},
            {"customer_id": "C1", "timestamp": "2026-02-20", "purpose": "marketing", "granted": False},
            {"customer_id": "C2", "timestamp": "2025-12-01", "purpose": "profiling", "granted": False},
        ],
    }
