"""A task defined outside the product, as a user would add one: a registry entry plus this module.

``big_basket``: the customer places an order line of at least ``THRESHOLD`` in (t, t+H].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel

from cxpredict.tasks import TaskSpec
from training import labels as L
from training.tasks import TaskLabels
from training.tasks.common import Driver, rounded

NAME = "big_basket"
OUTPUT = "big_basket_probability"
THRESHOLD = 60.0
EXPLAINED = True

SPEC = TaskSpec(
    name=NAME,
    families=("purchase", "profile"),
    horizon_days=30,
    label_definition=f"an order line of at least {THRESHOLD:g} in (t, t+H]",
    implementation=__name__,
    summary="Probability of a big basket within the horizon.",
)


class Block(BaseModel):
    probability: float
    drivers: list[Driver]


def labels(
    tables: Mapping[str, pd.DataFrame | None],
    cutoffs: Sequence[pd.Timestamp],
    horizon_days: int,
    as_of: pd.Timestamp,
    model_spec: Mapping[str, object] | None = None,
) -> TaskLabels:
    seen, entity, end = L.prepare(tables, cutoffs, horizon_days, as_of, NAME)
    big = seen["transactions"].loc[seen["transactions"]["amount"] >= THRESHOLD]
    hit = (L.first_after(entity, big)["at"] <= end).to_numpy()
    return TaskLabels(entity.assign(big_basket=hit.astype(np.int64)), ("big_basket",), {"big_basket": OUTPUT})


def fit(dataset, task_labels: TaskLabels, config):
    from training.models import fit_binary_heads

    return fit_binary_heads(dataset, {"big_basket": OUTPUT}, config)


def oracle(exact: pd.DataFrame, transactions_only: bool) -> pd.DataFrame:
    return exact[["customer_id"]]


def blocks(outputs, drivers, spec) -> list[dict]:
    return [{"probability": rounded(p), "drivers": drivers[i]} for i, p in enumerate(outputs[OUTPUT])]


def prior(spec) -> dict:
    head = next(head for head in spec["heads"] if head["output"] == OUTPUT)
    return {"probability": rounded(head["prior"]), "drivers": []}
