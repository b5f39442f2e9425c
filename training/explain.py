"""Explanations from LightGBM's tree SHAP: per-customer drivers and global importance.

Contributions come from ``booster.predict(X, pred_contrib=True)``: one column per feature plus the
bias, summing to the raw score (log-odds for binary heads). A positive impact pushes the prediction
up (for churn: more risk).
"""

from __future__ import annotations

from collections.abc import Sequence

import lightgbm as lgb
import numpy as np
import pandas as pd

from training.model_bundle import ModelBundle, top_contributions

__all__ = ["contributions", "drivers", "global_importance", "top_contributions"]


def contributions(booster: lgb.Booster, X: pd.DataFrame, num_threads: int = 2) -> np.ndarray:
    """SHAP contributions, shape (rows, features + 1); the last column is the bias."""
    return np.asarray(booster.predict(X, pred_contrib=True, num_threads=num_threads))


def drivers(bundle: ModelBundle, frame: pd.DataFrame, k: int = 5, head: str | None = None) -> pd.DataFrame:
    """Top-k drivers per row (row, rank, feature, value, impact); ``frame`` may carry customer_id,
    which is ignored by the model and can be joined back through ``row``."""
    return bundle.drivers(frame, k=k, head=head)


def global_importance(
    booster: lgb.Booster | None, X: pd.DataFrame, feature_names: Sequence[str], shap: np.ndarray | None = None
) -> pd.DataFrame:
    """Per feature: total split gain, its share, and mean |SHAP| over ``X`` (``shap`` = precomputed
    ``contributions(booster, X)``, or a linear head's exact terms); sorted by mean |SHAP|. Without
    a booster (a linear head won) there is no split gain: it is 0."""
    if booster is None and shap is None:
        raise ValueError("a linear head needs its contributions")
    gain = (
        np.zeros(len(feature_names))
        if booster is None
        else booster.feature_importance(importance_type="gain")
    )
    shap = contributions(booster, X) if shap is None else shap
    mean_abs = np.abs(shap[:, : len(feature_names)]).mean(axis=0) if len(X) else 0.0
    table = pd.DataFrame(
        {
            "feature": list(feature_names),
            "gain": gain,
            "gain_share": gain / gain.sum() if gain.sum() > 0 else gain,
            "mean_abs_shap": mean_abs,
        }
    )
    return table.sort_values(["mean_abs_shap", "gain"], ascending=False, ignore_index=True)
