"""Labels at cutoff t over the window (t, t+H], from canonical tables (DESIGN §4).

Contract shared by every function here:
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

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from features.contract import TIME_COLUMNS
from training.cutoffs import utc_timestamp

DEMAND_EVENT_TYPES: tuple[str, ...] = ("search", "product_view", "wishlist_add")
KEYS = ["customer_id", "event_timestamp"]
DAY = pd.Timedelta(days=1)


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


def _prepare(
    tables: Mapping[str, pd.DataFrame | None],
    cutoffs: Sequence[pd.Timestamp],
    horizon_days: int,
    as_of: pd.Timestamp,
    task: str,
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, pd.Series]:
    if not present(tables, "transactions"):
        raise LabelsUnavailable(task, "the transactions source is required and is absent or empty")
    as_of = utc_timestamp(as_of)
    _check_windows(cutoffs, horizon_days, as_of)
    seen = visible(tables, as_of)
    entity = known_at(seen, cutoffs)
    window_end = entity["event_timestamp"] + pd.Timedelta(days=horizon_days)
    return seen, entity, window_end


def churn_labels(
    tables: Mapping[str, pd.DataFrame | None],
    cutoffs: Sequence[pd.Timestamp],
    horizon_days: int,
    as_of: pd.Timestamp,
) -> pd.DataFrame:
    """``churn`` = 1 when the customer has no purchase and no engagement event in (t, t+H].

    Without an events source, engagement cannot be observed and churn means "no purchase".
    """
    seen, entity, end = _prepare(tables, cutoffs, horizon_days, as_of, "churn")
    active = (first_after(entity, purchases(seen))["at"] <= end).to_numpy()
    if "events" in seen:
        active |= (first_after(entity, seen["events"])["at"] <= end).to_numpy()
    return entity.assign(churn=(~active).astype(np.int64))


def next_purchase_labels(
    tables: Mapping[str, pd.DataFrame | None],
    cutoffs: Sequence[pd.Timestamp],
    horizon_days: int,
    as_of: pd.Timestamp,
) -> pd.DataFrame:
    """``purchase`` in (t, t+H]; ``days_to_next`` and ``censored``; ``next_category``.

    ``days_to_next`` looks past the horizon up to ``as_of`` (the data end): with no purchase by then
    it equals the follow-up ``as_of - t`` and ``censored`` is True. ``next_category`` is the category
    of the first purchase after t when that purchase falls within the horizon, else null.
    """
    as_of = utc_timestamp(as_of)
    seen, entity, end = _prepare(tables, cutoffs, horizon_days, as_of, "next_purchase")
    first = first_after(entity, purchases(seen), carry=["category"])
    bought = (first["at"] <= end).to_numpy()
    censored = first["at"].isna().to_numpy()
    observed_until = first["at"].where(~censored, as_of)
    days = ((observed_until - entity["event_timestamp"]) / DAY).to_numpy(dtype=float)
    category = first["category"].where(bought, None).astype(object)
    return entity.assign(
        purchase=bought.astype(np.int64),
        days_to_next=days,
        censored=censored,
        next_category=category.to_numpy(),
    )


def need_column(need: str) -> str:
    """Label column of a need (category): ``need_<snake_case name>``."""
    return "need_" + (re.sub(r"[^0-9a-z]+", "_", str(need).lower()).strip("_") or "unnamed")


def demand_signals(seen: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Demand facts (customer_id, timestamp, category): searches, product views and wishlist adds
    that name a category. Raises ``LabelsUnavailable`` when the data has none."""
    if "events" not in seen:
        raise LabelsUnavailable(
            "unmet_needs",
            "no events source (transactions-only data): demand signals such as searches, product "
            "views and wishlist adds are needed to tell an unmet need from no need at all",
        )
    events = seen["events"]
    if "category" not in events:
        raise LabelsUnavailable("unmet_needs", "events carry no category column, so no need can be named")
    demand = events.loc[events["event_type"].isin(DEMAND_EVENT_TYPES) & events["category"].notna()]
    if demand.empty:
        raise LabelsUnavailable(
            "unmet_needs",
            "no search, product_view or wishlist_add event names a category, so there is no demand signal",
        )
    return demand[["customer_id", "timestamp", "category"]]


def unmet_needs_labels(
    tables: Mapping[str, pd.DataFrame | None],
    cutoffs: Sequence[pd.Timestamp],
    horizon_days: int,
    as_of: pd.Timestamp,
    needs: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """For each need k, ``need_<k>`` = 1 when a demand signal for k falls in (t, t+H] and no purchase
    in k does. Returns the labels and the mapping need -> label column.

    ``needs`` defaults to every category with a demand signal by ``as_of``. Raises
    ``LabelsUnavailable`` on data without categorised demand signals (e.g. transactions only).
    """
    seen, entity, end = _prepare(tables, cutoffs, horizon_days, as_of, "unmet_needs")
    demand = demand_signals(seen)
    bought = purchases(seen)
    chosen = sorted(demand["category"].astype(str).unique()) if needs is None else list(needs)
    columns = {need: need_column(need) for need in chosen}
    if len(set(columns.values())) != len(columns):
        raise ValueError("two needs map to the same label column; rename the categories")
    labels = {}
    for need, column in columns.items():
        wanted = first_after(entity, demand.loc[demand["category"] == need])["at"] <= end
        fulfilled = first_after(entity, bought.loc[bought["category"] == need])["at"] <= end
        labels[column] = (wanted & ~fulfilled).to_numpy().astype(np.int64)
    return entity.assign(**labels), columns
