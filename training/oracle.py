"""The generated world's exact oracle, adapted to training: evaluation only, never fitting.

Only workspaces made by ``cxpredict generate`` hold ``<ws>/truth``; on real data there is no oracle.
"""

from __future__ import annotations

import pandas as pd

from cxpredict.workspace import Workspace
from training.cutoffs import utc_timestamp
from training.datasets import OracleFor
from training.labels import KEYS
from training.tasks import implementation


def has_truth(ws: Workspace) -> bool:
    return (ws.truth_dir / "world.json").is_file()


def truth_oracle_for(ws: Workspace, horizon_of, transactions_only: bool) -> OracleFor | None:
    """The generated world's oracle as ``oracle(entity_df, task)``, or None without ``<ws>/truth``.

    Returns, per entity row, the exact probability of each label column (``churn``, ``purchase``,
    ``need_<k>``) over the task's horizon. Only the latest cutoff of ``entity_df`` (the held-out
    evaluation cutoff, the only one the pipeline compares with) is computed; other rows are NaN.
    ``transactions_only``: the data has no events source (labels that need engagement change meaning).
    """
    if not has_truth(ws):
        return None
    from features.synthetic import load_truth, oracle_probabilities

    truth = load_truth(ws)
    cache: dict[tuple[pd.Timestamp, int], pd.DataFrame] = {}

    def probabilities(cutoff: pd.Timestamp, horizon: int) -> pd.DataFrame:
        if (cutoff, horizon) not in cache:
            cache[(cutoff, horizon)] = oracle_probabilities(truth, cutoff.to_pydatetime(), horizon)
        return cache[(cutoff, horizon)]

    def oracle(entity_df: pd.DataFrame, task: str) -> pd.DataFrame:
        stamps = pd.to_datetime(entity_df["event_timestamp"], utc=True)
        latest = utc_timestamp(stamps.max())
        exact = probabilities(latest, horizon_of(task))
        chosen = implementation(task).oracle(exact, transactions_only)
        chosen = chosen.assign(customer_id=chosen["customer_id"].astype(object), event_timestamp=latest)
        keys = entity_df[["customer_id", "event_timestamp"]].assign(
            customer_id=entity_df["customer_id"].astype(object),
            event_timestamp=stamps.astype("datetime64[us, UTC]"),
        )
        chosen["event_timestamp"] = chosen["event_timestamp"].astype("datetime64[us, UTC]")
        return keys.merge(chosen, on=KEYS, how="left")

    return oracle
