"""Baselines every model is compared with in the same run.

- ``rf_heuristic``: recency/frequency only: a logistic fit on log(1 + days since last purchase)
  and log(1 + purchase count) (missing recency = never bought, flagged by an indicator; both are
  counts of days or purchases, never negative). Two
  features and three weights, so it cannot learn anything but the RF rule's direction and scale.
- ``logistic``: logistic regression on the model's own features (median imputation with missing
  indicators + scaling for numbers, one-hot for categoricals).
Both are fit on the training split (sampled to ``max_rows``) and return probabilities. Either can
be a task's served model when it wins on the validation cutoff: its pipeline (plain scikit-learn
objects, so it pickles without this module) goes into the model bundle as a head of family
``logistic`` or ``rf_heuristic`` (see ``model_bundle``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

COUNT_FEATURE = re.compile(r"^purchase_count_(\d+)d$")


def rf_features(
    feature_names: Sequence[str], recency: str, frequency: str | None
) -> tuple[str | None, str | None]:
    """The recency and frequency columns to use: the configured ones when present, frequency
    defaulting to the ``purchase_count_<n>d`` feature with the longest window."""
    names = set(feature_names)
    if frequency is None:
        matches = [(COUNT_FEATURE.match(name), name) for name in feature_names]
        windows = [(int(match.group(1)), name) for match, name in matches if match]
        frequency = max(windows)[1] if windows else None
    return (recency if recency in names else None), (frequency if frequency in names else None)


def _sample(X: pd.DataFrame, y: np.ndarray, max_rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    if len(X) <= max_rows:
        return X, y
    rows = np.random.default_rng(seed).choice(len(X), size=max_rows, replace=False)
    return X.iloc[rows], y[rows]


@dataclass
class Baseline:
    """A fitted baseline: ``predict_proba(X)`` returns P(label = 1) for the task's feature frame."""

    name: str
    columns: list[str]
    pipeline: Pipeline
    categorical: list[str]

    def _frame(self, X: pd.DataFrame) -> pd.DataFrame:
        frame = X[self.columns].copy()
        for column in self.categorical:
            frame[column] = frame[column].astype(object).where(frame[column].notna(), "missing")
        return frame

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return self.pipeline.predict_proba(self._frame(X))[:, 1]

    def head_fields(self) -> dict[str, object]:
        """What a bundle head of this baseline records beside its pipeline."""
        return {"family": self.name, "columns": list(self.columns), "categorical": list(self.categorical)}


def fit_rf_heuristic(
    X: pd.DataFrame, y: np.ndarray, recency: str | None, frequency: str | None, max_rows: int, seed: int
) -> Baseline | None:
    """None when neither a recency nor a frequency feature exists or y has a single class."""
    columns = [name for name in (recency, frequency) if name is not None]
    if not columns or len(np.unique(y)) < 2:
        return None
    Xs, ys = _sample(X, np.asarray(y), max_rows, seed)
    pipeline = make_pipeline(
        FunctionTransformer(np.log1p, feature_names_out="one-to-one"),
        SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
        StandardScaler(),
        LogisticRegression(max_iter=500),
    )
    pipeline.fit(Xs[columns], ys)
    return Baseline("rf_heuristic", columns, pipeline, [])


def fit_logistic(X: pd.DataFrame, y: np.ndarray, max_rows: int, seed: int) -> Baseline | None:
    """None when y has a single class."""
    if len(np.unique(y)) < 2:
        return None
    categorical = [name for name in X.columns if isinstance(X[name].dtype, pd.CategoricalDtype)]
    numeric = [name for name in X.columns if name not in categorical]
    transformer = ColumnTransformer(
        [
            (
                "numeric",
                make_pipeline(
                    SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
                    StandardScaler(),
                ),
                numeric,
            ),
            ("categorical", OneHotEncoder(handle_unknown="ignore", min_frequency=20), categorical),
        ]
    )
    pipeline = Pipeline([("features", transformer), ("model", LogisticRegression(max_iter=1_000))])
    baseline = Baseline("logistic", list(X.columns), pipeline, categorical)
    Xs, ys = _sample(X, np.asarray(y), max_rows, seed)
    pipeline.fit(baseline._frame(Xs), ys)
    return baseline
