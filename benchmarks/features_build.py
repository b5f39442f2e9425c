"""Benchmark: build every feature snapshot for a large synthetic canonical world.

Writes a canonical-format world (numpy, vectorised; default 1,000,000 customers over 730 days with
~40M transaction lines, ~60M events, ~1M tickets, ~2M surveys, ~20M marketing rows) into
``<workspace>/canonical`` unless it is already there, then runs ``build_features`` in a child
process (threads=2, memory_limit from the config) and prints build seconds, the child's CPU seconds
(user + system: independent of other load on a shared machine) and its peak RSS.

    .venv/bin/python benchmarks/features_build.py --workspace /tmp/cx-bench --customers 1000000

``--customers`` scales every table proportionally. The world only has to be realistic in size and
shape (per-customer activity rates, sessions, orders with several lines), not in behaviour.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

DAYS = 730
AS_OF = datetime(2026, 11, 1, tzinfo=UTC)
US_PER_DAY = 86_400_000_000
CATEGORIES = np.array(["electronics", "home", "fashion", "beauty", "sports", "grocery", "toys", "books"])
EVENT_TYPES = np.array(
    [
        "session_start",
        "page_view",
        "search",
        "product_view",
        "add_to_cart",
        "wishlist_add",
        "checkout_start",
        "checkout_complete",
        "app_open",
        "login",
    ]
)
EVENT_P = np.array([0.0, 0.40, 0.15, 0.25, 0.08, 0.03, 0.04, 0.02, 0.02, 0.01])
CHUNK = 100_000
PER_CUSTOMER = {
    "orders": 22.0,
    "lines_extra": 1.7,
    "sessions": 15.0,
    "events_extra": 5.0,
    "tickets": 1.5,
    "surveys": 3.0,
    "marketing": 30.0,
}
"""Mean rows per customer over a full two years; a customer who joined later gets proportionally fewer."""


def _ids(prefix: str, numbers: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(numbers), pa.string()), "")


def _times(rng: np.random.Generator, n: int, start_us: int, end_us: int) -> pa.Array:
    return pa.array(rng.integers(start_us, end_us, n), type=pa.int64()).cast(pa.timestamp("us", tz="UTC"))


class World:
    """Writes one table per source, customer chunk by customer chunk, through Parquet writers."""

    def __init__(self, folder: Path, customers: int, seed: int = 7) -> None:
        self.folder = folder
        self.customers = customers
        self.rng = np.random.default_rng(seed)
        self.end_us = int(AS_OF.timestamp() * 1_000_000)
        self.start_us = self.end_us - DAYS * US_PER_DAY
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.rows: dict[str, int] = {}

    def _write(self, source: str, data: dict[str, pa.Array]) -> None:
        table = pa.table(data)
        if source not in self.writers:
            self.writers[source] = pq.ParquetWriter(self.folder / f"{source}.parquet", table.schema)
        self.writers[source].write_table(table, row_group_size=1_000_000)
        self.rows[source] = self.rows.get(source, 0) + table.num_rows

    def chunk(self, first: int, n: int) -> None:
        rng = self.rng
        ids = np.arange(first, first + n)
        activity = rng.lognormal(0.0, 1.0, n) / np.exp(0.5)
        life_start = rng.integers(self.start_us - 365 * US_PER_DAY, self.end_us - 30 * US_PER_DAY, n)
        first_us = np.maximum(life_start, self.start_us)
        span = self.end_us - first_us
        share = span / (DAYS * US_PER_DAY)
        self._write(
            "customers",
            {
                "customer_id": _ids("C", ids),
                "signup_at": pa.array(life_start).cast(pa.timestamp("us", tz="UTC")),
                "birth_year": pa.array(rng.integers(1945, 2006, n)),
                "region": pa.array(rng.choice(["north", "south", "east", "west"], n)),
                "acquisition_channel": pa.array(rng.choice(["search", "social", "store", "referral"], n)),
                "loyalty_tier": pa.array(rng.choice(["none", "silver", "gold"], n, p=[0.6, 0.3, 0.1])),
                "email": pa.nulls(n, pa.string()),
                "phone": pa.nulls(n, pa.string()),
                "loyalty_card": pa.nulls(n, pa.string()),
            },
        )

        def per_customer(mean: float) -> tuple[np.ndarray, np.ndarray]:
            counts = rng.poisson(mean * activity * share)
            owner = np.repeat(np.arange(n), counts)
            times = first_us[owner] + (rng.random(owner.size) * span[owner]).astype(np.int64)
            return owner, times

        owner, order_ts = per_customer(PER_CUSTOMER["orders"])
        lines = 1 + rng.poisson(PER_CUSTOMER["lines_extra"], owner.size)
        order_no = np.repeat(np.arange(owner.size) + first * 100, lines)
        line_owner, line_ts = np.repeat(owner, lines), np.repeat(order_ts, lines)
        m = line_owner.size
        returned = rng.random(m) < 0.04
        amount = np.round(rng.gamma(2.0, 20.0, m), 2)
        self._write(
            "transactions",
            {
                "customer_id": _ids("C", ids[line_owner]),
                "timestamp": pa.array(line_ts).cast(pa.timestamp("us", tz="UTC")),
                "amount": pa.array(np.where(returned, -amount, amount)),
                "order_id": _ids("O", order_no),
                "channel": pa.array(rng.choice(["online", "store", "app"], m, p=[0.5, 0.3, 0.2])),
                "category": pa.array(CATEGORIES[rng.integers(0, CATEGORIES.size, m)]),
                "quantity": pa.array(1 + rng.poisson(0.5, m)),
                "discount": pa.array(np.where(rng.random(m) < 0.3, rng.choice([0.1, 0.2, 0.3], m), 0.0)),
                "returned": pa.array(returned),
            },
        )

        owner, sess_ts = per_customer(PER_CUSTOMER["sessions"])
        per_session = 1 + rng.poisson(PER_CUSTOMER["events_extra"], owner.size)
        session_no = np.repeat(np.arange(owner.size) + first * 100, per_session)
        ev_owner = np.repeat(owner, per_session)
        offset = np.concatenate([np.arange(k) for k in per_session]) if owner.size else np.zeros(0, np.int64)
        ev_ts = np.repeat(sess_ts, per_session) + offset * 60_000_000
        kinds = np.where(offset == 0, 0, rng.choice(EVENT_TYPES.size, ev_owner.size, p=EVENT_P))
        app = np.repeat(rng.random(owner.size) < 0.3, per_session)
        self._write(
            "events",
            {
                "customer_id": _ids("C", ids[ev_owner]),
                "timestamp": pa.array(ev_ts).cast(pa.timestamp("us", tz="UTC")),
                "event_type": pa.array(EVENT_TYPES[kinds]),
                "session_id": _ids("S", session_no),
                "channel": pa.array(np.where(app, "app", "web")),
                "category": pa.array(CATEGORIES[rng.integers(0, CATEGORIES.size, ev_owner.size)]),
                "device_id": pa.nulls(ev_owner.size, pa.string()),
            },
        )

        owner, opened = per_customer(PER_CUSTOMER["tickets"])
        k = owner.size
        resolved = opened + rng.integers(3_600_000_000, 10 * US_PER_DAY, k)
        open_now = rng.random(k) < 0.1
        self._write(
            "support_tickets",
            {
                "customer_id": _ids("C", ids[owner]),
                "opened_at": pa.array(opened).cast(pa.timestamp("us", tz="UTC")),
                "topic": pa.array(
                    rng.choice(
                        ["delivery", "product_quality", "billing", "returns", "account", "availability"], k
                    )
                ),
                "channel": pa.array(rng.choice(["phone", "email", "chat", "store", "app"], k)),
                "resolved_at": pa.array(np.where(open_now, 0, resolved), mask=open_now).cast(
                    pa.timestamp("us", tz="UTC")
                ),
                "satisfaction": pa.array(rng.integers(1, 6, k), mask=open_now),
                "sentiment": pa.array(np.round(rng.uniform(-1, 1, k), 3)),
            },
        )

        owner, ts = per_customer(PER_CUSTOMER["surveys"])
        k = owner.size
        nps = rng.random(k) < 0.5
        self._write(
            "surveys",
            {
                "customer_id": _ids("C", ids[owner]),
                "timestamp": pa.array(ts).cast(pa.timestamp("us", tz="UTC")),
                "kind": pa.array(np.where(nps, "nps", "csat")),
                "score": pa.array(np.where(nps, rng.integers(0, 11, k), rng.integers(1, 6, k))),
                "comment": pa.nulls(k, pa.string()),
            },
        )

        owner, ts = per_customer(PER_CUSTOMER["marketing"])
        k = owner.size
        self._write(
            "marketing",
            {
                "customer_id": _ids("C", ids[owner]),
                "timestamp": pa.array(ts).cast(pa.timestamp("us", tz="UTC")),
                "campaign_id": _ids("K", rng.integers(0, 500, k)),
                "channel": pa.array(rng.choice(["email", "sms", "push"], k)),
                "action": pa.array(
                    rng.choice(["sent", "opened", "clicked", "unsubscribed"], k, p=[0.6, 0.28, 0.11, 0.01])
                ),
            },
        )

        asked = rng.random(n) < 0.8
        who = np.flatnonzero(asked)
        self._write(
            "consents",
            {
                "customer_id": _ids("C", ids[who]),
                "timestamp": pa.array(first_us[who]).cast(pa.timestamp("us", tz="UTC")),
                "purpose": pa.array(rng.choice(["profiling", "marketing"], who.size)),
                "granted": pa.array(rng.random(who.size) < 0.9),
            },
        )

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        manifest = {"sources": {}}
        for source, writer in self.writers.items():
            names = writer.schema.names
            empty = {"email", "phone", "loyalty_card", "device_id", "comment"}
            manifest["sources"][source] = {
                "rows": self.rows[source],
                "columns_supplied": [c for c in names if c not in empty],
            }
        (self.folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


def generate(canonical: Path, customers: int) -> dict[str, int]:
    canonical.mkdir(parents=True, exist_ok=True)
    world = World(canonical, customers)
    for first in range(0, customers, CHUNK):
        world.chunk(first, min(CHUNK, customers - first))
    world.close()
    return world.rows


def build(workspace: Path) -> None:
    """Child process: one full build; prints a JSON line with the summary."""
    from features.snapshots import FeatureBuildConfig, build_features

    summary = build_features(workspace, AS_OF, FeatureBuildConfig(threads=2))
    print(
        json.dumps(
            {
                "seconds": summary.seconds,
                "customers": summary.customers,
                "features": summary.features,
                "snapshots_built": summary.snapshots_built,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/cx-bench"))
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        build(args.workspace)
        return
    canonical = args.workspace / "canonical"
    if not (canonical / "manifest.json").exists():
        started = time.perf_counter()
        rows = generate(canonical, args.customers)
        print(f"generated {rows} in {time.perf_counter() - started:.0f}s")
    shutil.rmtree(args.workspace / "features", ignore_errors=True)
    started = time.perf_counter()
    child = subprocess.run(
        [sys.executable, __file__, "--workspace", str(args.workspace), "--child"],
        check=True,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(child.stdout.strip().splitlines()[-1])
    print(
        json.dumps(
            {
                **result,
                "wall_seconds": round(wall, 1),
                "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
                "peak_rss_gb": round(usage.ru_maxrss / 1024**2, 2),
                "load_average_1m": os.getloadavg()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
