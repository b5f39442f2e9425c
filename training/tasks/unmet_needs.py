"""Unmet needs: per need (category) k, demand for k in (t, t+H] without a purchase in k.

One binary head per need -> ``need_<k>_probability``, rather than one model with the need as a
feature: each need's own signals (searches, views, purchases in k) then enter its model directly,
no feature re-keying per need is required from the feature store, and per-need AUC and calibration
come for free; the cost is K small models. Needs without enough positives are left out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel

from training import labels as L
from training.tasks import TaskLabels
from training.tasks.common import rounded

NAME = "unmet_needs"
EXPLAINED = False
DEMAND_EVENT_TYPES: tuple[str, ...] = ("search", "product_view", "wishlist_add")


class NeedScore(BaseModel):
    need: str
    probability: float


Block = list[NeedScore]


def need_column(need: str) -> str:
    """Label column of a need (category): ``need_<snake_case name>``."""
    return "need_" + (re.sub(r"[^0-9a-z]+", "_", str(need).lower()).strip("_") or "unnamed")


def demand_signals(seen: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Demand facts (customer_id, timestamp, category): searches, product views and wishlist adds
    that name a category. Raises ``LabelsUnavailable`` when the data has none."""
    if "events" not in seen:
        raise L.LabelsUnavailable(
            NAME,
            "no events source (transactions-only data): demand signals such as searches, product "
            "views and wishlist adds are needed to tell an unmet need from no need at all",
        )
    events = seen["events"]
    if "category" not in events:
        raise L.LabelsUnavailable(NAME, "events carry no category column, so no need can be named")
    demand = events.loc[events["event_type"].isin(DEMAND_EVENT_TYPES) & events["category"].notna()]
    if demand.empty:
        raise L.LabelsUnavailable(
            NAME,
            "no search, product_view or wishlist_add event names a category, so there is no demand signal",
        )
    return demand[["customer_id", "timestamp", "category"]]


def labels(
    tables: Mapping[str, pd.DataFrame | None],
    cutoffs: Sequence[pd.Timestamp],
    horizon_days: int,
    as_of: pd.Timestamp,
    model_spec: Mapping[str, object] | None = None,
) -> TaskLabels:
    """For each need k, ``need_<k>`` = 1 when a demand signal for k falls in (t, t+H] and no purchase
    in k does. The needs are those of ``model_spec`` when given, else every category with a demand
    signal by ``as_of``; ``extra["needs"]`` maps need -> label column."""
    seen, entity, end = L.prepare(tables, cutoffs, horizon_days, as_of, NAME)
    demand = demand_signals(seen)
    bought = L.purchases(seen)
    known = (model_spec or {}).get("needs")
    chosen = sorted(demand["category"].astype(str).unique()) if known is None else list(known)
    columns = {need: need_column(need) for need in chosen}
    if len(set(columns.values())) != len(columns):
        raise ValueError("two needs map to the same label column; rename the categories")
    values = {}
    for need, column in columns.items():
        wanted = L.first_after(entity, demand.loc[demand["category"] == need])["at"] <= end
        fulfilled = L.first_after(entity, bought.loc[bought["category"] == need])["at"] <= end
        values[column] = (wanted & ~fulfilled).to_numpy().astype(np.int64)
    outputs = {column: f"{column}_probability" for column in columns.values()}
    return TaskLabels(entity.assign(**values), tuple(columns.values()), outputs, {"needs": columns})


def fit(dataset, task_labels: TaskLabels, config):
    """One binary head per need with enough positives in training and validation."""
    from training.models import enough_rows, fit_binary_heads

    needs: Mapping[str, str] = task_labels.extra["needs"]
    trainable = {
        need: column for need, column in needs.items() if enough_rows(dataset, column, config.min_positives)
    }
    if not trainable:
        raise L.LabelsUnavailable(
            NAME, f"no need has {config.min_positives} positive and negative rows in training and validation"
        )
    skipped = sorted(set(needs) - set(trainable))
    fitted = fit_binary_heads(
        dataset,
        {column: task_labels.outputs[column] for column in trainable.values()},
        config,
        head_extra={column: {"need": need} for need, column in trainable.items()},
        spec_extra={"needs": trainable},
        notes=[f"need {need!r} skipped: fewer than {config.min_positives} positives" for need in skipped],
    )
    fitted.params["needs_skipped"] = ",".join(skipped)
    return fitted


def oracle(exact: pd.DataFrame, transactions_only: bool) -> pd.DataFrame:
    needs = [column for column in exact.columns if column.startswith("need_")]
    return exact[["customer_id", *needs]].rename(
        columns={column: need_column(column[5:]) for column in needs}
    )


def _binary_heads(spec: Mapping) -> list[Mapping]:
    return [head for head in spec["heads"] if head["kind"] == "binary"]


def blocks(outputs: Mapping[str, np.ndarray], drivers: list[list[dict]], spec: Mapping) -> list[list[dict]]:
    heads = _binary_heads(spec)
    matrix = np.column_stack([outputs[head["output"]] for head in heads])
    order = np.argsort(-matrix, axis=1, kind="stable")
    return [
        [{"need": heads[j]["need"], "probability": rounded(matrix[i, j])} for j in order[i].tolist()]
        for i in range(len(matrix))
    ]


def prior(spec: Mapping) -> list[dict]:
    heads = sorted(_binary_heads(spec), key=lambda head: -float(head["prior"]))
    return [{"need": head["need"], "probability": rounded(head["prior"])} for head in heads]
