"""What every task's labels at cutoff t over the window (t, t+H] rest on (the label builders live in
``training.tasks.<task>``).

Contract shared by every label builder:
- ``tables`` maps a canonical source name to its DataFrame; a source that is missing, ``None`` or
  empty is *absent* (transactions-only data is the common case).
- Only facts with time <= ``as_of`` are read; a ticket resolution after ``as_of`` is not known yet.
- A customer is labelled at t only when known at t: first seen (earliest fact of any source, or
  signup) strictly before t. Label facts are strictly after t and at most t + H; features use facts
  strictly before t, so the two never overlap.
- A purchase is a transaction with a positive amount (returns are negative rows).
- Every cutoff must satisfy t + H <= as_of.
Outputs have one row per (customer_id, event_timestamp = t), in no particular order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from features.contract import TIME_COLUMNS
from training.cutoffs import utc_timestamp

KEYS = ["customer_id", "event_timestamp"]
DAY = pd.Timedelta(days=1)


TREATMENTS = "treatments"
"""Key of the logged decisions (decision_id, customer_id, timestamp, arm, propensity) among the tables
the label builders get, beside the canonical sources (``training.data.load_tables``)."""


class LabelsUnavailable(ValueError):
    """The data cannot define this task's labels; ``reason`` says why in words a user can act on."""

    def __init__(self, task: str, reason: str) -> None:
        super().__init__(f"{task} cannot be trained: {reason}")
        self.task = task
        self.reason = reason


def present(tables: Mapping[str, pd.DataFrame | None], source: str) -> bool:
    """Whether a source was supplied with at least one row."""
    table = tables.get(source)
    return table is not None and len(table) > 0


def _utc(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, utc=True).astype("datetime64[us, UTC]")


def _ids(values: pd.Series) -> pd.Series:
    return values if values.dtype == object else values.astype(object)


def visible(tables: Mapping[str, pd.DataFrame | None], as_of: pd.Timestamp) -> dict[str, pd.DataFrame]:
    """The present tables as known at ``as_of``: later facts dropped, later resolutions unknown."""
    as_of = utc_timestamp(as_of)
    seen: dict[str, pd.DataFrame] = {}
    for source, column in TIME_COLUMNS.items():
        if not present(tables, source):
            continue
        table = tables[source].copy()
        table["customer_id"] = _ids(table["customer_id"])
        table[column] = _utc(table[column])
        if source == "customers":
            keep = table[column].isna() | (table[column] <= as_of)
        else:
            keep = table[column] <= as_of
        table = table.loc[keep]
        if source == "support_tickets" and "resolved_at" in table:
            table["resolved_at"] = _utc(table["resolved_at"])
            late = table["resolved_at"] > as_of
            table.loc[late, "resolved_at"] = pd.NaT
            if "satisfaction" in table:
                table.loc[late, "satisfaction"] = None
        seen[source] = table
    return seen


def first_seen(tables: Mapping[str, pd.DataFrame]) -> pd.Series:
    """Earliest known time of each customer across every present source (index: customer_id)."""
    parts = [
        table[["customer_id", TIME_COLUMNS[source]]].set_axis(["customer_id", "time"], axis=1)
        for source, table in tables.items()
        if source in TIME_COLUMNS
    ]
    times = pd.concat(parts, ignore_index=True).dropna(subset=["time"])
    return times.groupby("customer_id", sort=False)["time"].min()


def known_at(tables: Mapping[str, pd.DataFrame], cutoffs: Sequence[pd.Timestamp]) -> pd.DataFrame:
    """Entity rows (customer_id, event_timestamp=t) for every customer first seen before t."""
    seen = first_seen(tables)
    frames = [
        pd.DataFrame({"customer_id": seen.index[seen.to_numpy() < t].to_numpy(dtype=object)}).assign(
            event_timestamp=t
        )
        for t in (utc_timestamp(c) for c in cutoffs)
    ]
    entity = pd.concat(frames, ignore_index=True)
    entity["event_timestamp"] = _utc(entity["event_timestamp"])
    return entity


def purchases(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Purchase facts (customer_id, timestamp, category): transactions with a positive amount."""
    tx = tables["transactions"]
    bought = tx.loc[tx["amount"] > 0]
    category = bought["category"] if "category" in bought else pd.Series(None, index=bought.index)
    return pd.DataFrame(
        {"customer_id": bought["customer_id"], "timestamp": bought["timestamp"], "category": category}
    )


def first_after(entity: pd.DataFrame, facts: pd.DataFrame, carry: Sequence[str] = ()) -> pd.DataFrame:
    """For each entity row, the first fact strictly after its t: columns ``at`` and ``carry``.

    Row order and index follow ``entity``; ``at`` is NaT when no later fact exists. Ties at the same
    instant resolve to the first in (timestamp, *carry) order.
    """
    left = entity[KEYS].reset_index(names="_row").sort_values("event_timestamp", kind="stable")
    right = (
        facts[["customer_id", "timestamp", *carry]]
        .dropna(subset=["timestamp"])
        .sort_values(["timestamp", *carry], kind="stable")
        .drop_duplicates(["customer_id", "timestamp"])
        .assign(at=lambda frame: frame["timestamp"])
    )
    matched = pd.merge_asof(
        left,
        right,
        left_on="event_timestamp",
        right_on="timestamp",
        by="customer_id",
        direction="forward",
        allow_exact_matches=False,
    )
    matched = matched.set_index("_row").reindex(entity.index) if len(matched) else matched
    return matched[["at", *carry]].set_axis(entity.index)


def _check_windows(cutoffs: Sequence[pd.Timestamp], horizon_days: int, as_of: pd.Timestamp) -> None:
    late = [t for t in cutoffs if utc_timestamp(t) + pd.Timedelta(days=horizon_days) > as_of]
    if late:
        raise ValueError(
            f"label window of cutoff {late[0].isoformat()} (+{horizon_days} days) ends after as_of "
            f"{as_of.isoformat()}"
        )


def prepare(
    tables: Mapping[str, pd.DataFrame | None],
    cutoffs: Sequence[pd.Timestamp],
    horizon_days: int,
    as_of: pd.Timestamp,
    task: str,
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, pd.Series]:
    """The tables visible at ``as_of``, the entity rows known at each cutoff and the end of each
    row's label window; ``LabelsUnavailable`` (naming ``task``) without transactions."""
    if not present(tables, "transactions"):
        raise LabelsUnavailable(task, "the transactions source is required and is absent or empty")
    as_of = utc_timestamp(as_of)
    _check_windows(cutoffs, horizon_days, as_of)
    seen = visible(tables, as_of)
    entity = known_at(seen, cutoffs)
    window_end = entity["event_timestamp"] + pd.Timedelta(days=horizon_days)
    return seen, entity, window_end


def signed_amounts(transactions: pd.DataFrame) -> pd.DataFrame:
    """(customer_id, timestamp, amount) with returns negative: a row flagged ``returned`` or with a
    negative amount takes away its absolute amount."""
    amount = transactions["amount"].to_numpy(dtype=float)
    returned = amount < 0
    if "returned" in transactions:
        returned |= transactions["returned"].fillna(False).to_numpy(dtype=bool)
    signed = np.where(returned, -np.abs(amount), amount)
    return pd.DataFrame(
        {"customer_id": transactions["customer_id"], "timestamp": transactions["timestamp"], "amount": signed}
    ).dropna(subset=["timestamp", "amount"])


def window_sums(entity: pd.DataFrame, facts: pd.DataFrame, end: pd.Series) -> np.ndarray:
    """Per entity row, the sum of ``facts.amount`` with time in (t, end]: the difference of the
    customer's cumulative sums at ``end`` and at t (both inclusive), found by as-of joins."""
    stamp = "datetime64[us, UTC]"
    facts = facts.assign(timestamp=pd.to_datetime(facts["timestamp"], utc=True).astype(stamp))
    facts = facts.sort_values("timestamp", kind="stable")
    running = facts.assign(total=facts.groupby("customer_id", sort=False)["amount"].cumsum())
    running = running[["customer_id", "timestamp", "total"]]

    def total_at(moments: pd.Series) -> np.ndarray:
        at = pd.to_datetime(moments, utc=True).astype(stamp).reset_index(drop=True)
        left = pd.DataFrame({"customer_id": entity["customer_id"].to_numpy(), "at": at})
        left = left.reset_index(names="_row").sort_values("at", kind="stable")
        joined = pd.merge_asof(
            left, running, left_on="at", right_on="timestamp", by="customer_id", direction="backward"
        )
        return joined.set_index("_row").sort_index()["total"].fillna(0.0).to_numpy()

    return total_at(end) - total_at(entity["event_timestamp"])
