"""Fixtures for ingest tests: a fresh workspace, a fixed ingest time, and small hand-made raw files."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from cxpredict.workspace import Workspace, resolve_workspace

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

WriteRaw = Callable[..., Path]


@pytest.fixture
def now() -> datetime:
    return NOW


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return resolve_workspace(tmp_path / "ws").ensure()


@pytest.fixture
def write_raw(ws: Workspace) -> WriteRaw:
    """Write rows as ``<ws>/raw/<source>.<fmt>`` (CSV or Parquet); returns the path."""

    def write(source: str, rows: list[dict[str, object]] | pd.DataFrame, fmt: str = "csv",
              folder: Path | None = None) -> Path:  # fmt: skip
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
        target_dir = folder or ws.raw_dir
        target_dir.mkdir(parents=True, exist_ok=True)
        path = target_dir / f"{source}.{fmt}"
        for other in target_dir.glob(f"{source}.*"):
            other.unlink()
        if fmt == "csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path, index=False)
        return path

    return write


@pytest.fixture
def transactions() -> list[dict[str, object]]:
    """Three valid purchases of two customers, with every optional column filled."""
    return [
        {"customer_id": "C1", "timestamp": "2025-01-05T10:00:00Z", "amount": "25.50", "order_id": "O1",
         "channel": "online", "category": "books", "quantity": "1", "discount": "0.1", "returned": "false"},
        {"customer_id": "C1", "timestamp": "2025-02-05T10:00:00Z", "amount": "-25.50", "order_id": "O2",
         "channel": "store", "category": "books", "quantity": "1", "discount": "0", "returned": "true"},
        {"customer_id": "C2", "timestamp": "2025-03-01T08:30:00Z", "amount": "99", "order_id": "O3",
         "channel": "app", "category": "toys", "quantity": "3", "discount": "", "returned": "false"},
    ]  # fmt: skip


@pytest.fixture
def customers() -> list[dict[str, object]]:
    return [
        {"customer_id": "C1", "signup_at": "2024-01-01", "birth_year": "1980", "region": "north",
         "acquisition_channel": "search", "loyalty_tier": "gold", "email": "Ann.Lee@Example.com",
         "phone": "+44 20 7946 0001", "loyalty_card": "lc-0001"},
        {"customer_id": "C2", "signup_at": "2024-02-01", "birth_year": "1990", "region": "south",
         "acquisition_channel": "social", "loyalty_tier": "silver", "email": "bo.chen@example.com",
         "phone": "+44 20 7946 0002", "loyalty_card": "lc-0002"},
    ]  # fmt: skip
