"""Churn: no purchase and no engagement in (t, t+H] for a customer known at t.

One calibrated head (``churn_probability``, with ``churn_risk_band``): LightGBM, the
recency/frequency heuristic or the logistic baseline, whichever wins on the validation cutoff.
Without an events source, engagement cannot be observed and churn means "no purchase"; then a
BG/NBD model fitted in the same run is compared too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel

from features.contract import TIME_COLUMNS
from training import labels as L
from training.model_bundle import risk_bands
from training.tasks import TaskLabels
from training.tasks.common import Driver, rounded

NAME = "churn"
EXPLAINED = True
OUTPUT = "churn_probability"


class Block(BaseModel):
    probability: float
    risk_band: Literal["low", "medium", "high"]
    drivers: list[Driver]


def labels(
    tables: Mapping[str, pd.DataFrame | None],
    cutoffs: Sequence[pd.Timestamp],
    horizon_days: int,
    as_of: pd.Timestamp,
    model_spec: Mapping[str, object] | None = None,
) -> TaskLabels:
    """``churn`` = 1 when the customer has no purchase and no engagement event in (t, t+H]."""
    seen, entity, end = L.prepare(tables, cutoffs, horizon_days, as_of, NAME)
    bought = L.purchases(seen)
    active = (L.first_after(entity, bought)["at"] <= end).to_numpy()
    activity = [bought["timestamp"]]
    if "events" in seen:
        active |= (L.first_after(entity, seen["events"])["at"] <= end).to_numpy()
        activity.append(seen["events"][TIME_COLUMNS["events"]])
    frame = entity.assign(churn=(~active).astype(np.int64))
    extra = {"transactions_only": "events" not in seen, "activity": activity}
    return TaskLabels(frame, ("churn",), {"churn": OUTPUT}, extra)


def fit(dataset, task_labels: TaskLabels, config):
    """LightGBM against the baselines and, on transactions-only data (where churn is "no purchase"),
    against BG/NBD's probability of no purchase fitted in the same run."""
    from training.btyd import no_purchase_probability
    from training.models import fit_binary_heads
    from training.season import season_profile

    plan = dataset.plan
    profile = season_profile(task_labels.extra["activity"], plan.as_of, plan.horizon_days, plan.valid)
    comparisons = {}
    if task_labels.extra.get("transactions_only"):
        btyd = no_purchase_probability(dataset.test.X, dataset.plan.horizon_days)
        comparisons = {} if btyd is None else {"churn": {"btyd": btyd}}
    fitted = fit_binary_heads(
        dataset, {"churn": OUTPUT}, config, comparisons=comparisons, season=(profile, {"churn": "absent"})
    )
    fitted.bundle.spec["risk_bands"] = list(config.risk_bands)
    return fitted


def oracle(exact: pd.DataFrame, transactions_only: bool) -> pd.DataFrame:
    return exact[["customer_id"]].assign(churn=exact["churn_txn_only" if transactions_only else "churn"])


def blocks(outputs: Mapping[str, np.ndarray], drivers: list[list[dict]], spec: Mapping) -> list[dict]:
    probability, band = outputs[OUTPUT], outputs["churn_risk_band"]
    return [
        {"probability": rounded(probability[i]), "risk_band": band[i], "drivers": drivers[i]}
        for i in range(len(probability))
    ]


def prior(spec: Mapping) -> dict:
    head = next(head for head in spec["heads"] if head["output"] == OUTPUT)
    probability = float(head["prior"])
    band = risk_bands(np.array([probability]), spec["risk_bands"])[0]
    return {"probability": rounded(probability), "risk_band": band, "drivers": []}
