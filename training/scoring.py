"""Batch scoring with the registered pyfunc models (the same artifacts serving loads).

``score`` returns one row per customer: ``customer_id`` then each model's outputs
(``churn_probability``, ``churn_risk_band``, ``purchase_probability``, ``expected_days_to_purchase``,
``expected_days_low``/``_high``, ``next_category_<rank>[_probability]``, ``need_<k>_probability``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import mlflow
import pandas as pd

from cxpredict.settings import Workspace
from training.config import TASKS
from training.tracking import CHAMPION, load_model, resolve_tracking, version_info


def load_models(
    ws_or_tracking_uri: Workspace | Path | str, alias: str = CHAMPION, tasks: Iterable[str] = TASKS
) -> dict[str, mlflow.pyfunc.PyFuncModel]:
    """The ``models:/cx-<task>@<alias>`` pyfunc models that exist (tasks without the alias are left out)."""
    target = resolve_tracking(ws_or_tracking_uri)
    return {task: load_model(target, task, alias) for task in tasks if version_info(target, task, alias)}


def model_inputs(model: mlflow.pyfunc.PyFuncModel) -> list[str]:
    """Feature columns a logged model expects (from its signature)."""
    return list(model.metadata.get_input_schema().input_names())


def score(
    models: Mapping[str, mlflow.pyfunc.PyFuncModel],
    features: pd.DataFrame | Mapping[str, pd.DataFrame],
) -> pd.DataFrame:
    """Score customers with every model. ``features`` is one frame with ``customer_id`` and the union
    of the models' features, or a mapping task -> such a frame (e.g. one Feast FeatureService each).
    Rows are matched on ``customer_id``; every frame must hold each customer once."""
    frames = features if isinstance(features, Mapping) else {task: features for task in models}
    outputs = []
    for task, model in models.items():
        frame = frames[task]
        if frame["customer_id"].duplicated().any():
            raise ValueError(f"features for {task} hold a customer more than once")
        wanted = model_inputs(model)
        missing = sorted(set(wanted) - set(frame.columns))
        if missing:
            raise ValueError(f"features for {task} lack columns the model was trained on: {missing}")
        predicted = model.predict(frame[wanted].reset_index(drop=True))
        predicted.insert(0, "customer_id", frame["customer_id"].to_numpy())
        outputs.append(predicted)
    if not outputs:
        return pd.DataFrame({"customer_id": pd.Series(dtype=object)})
    result = outputs[0]
    for predicted in outputs[1:]:
        result = result.merge(predicted, on="customer_id", how="outer", validate="one_to_one")
    return result
