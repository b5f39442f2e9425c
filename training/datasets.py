"""Training sets: labels at every cutoff joined with the features known at that cutoff.

The feature retrieval is injected (``features_for(entity_df, task) -> DataFrame``): in production the
Feast point-in-time join, in tests a function over a generated world. It receives entity rows
(customer_id, event_timestamp = t) and must return those rows plus feature columns computed from
facts strictly before t. Whatever it returns besides keys and timestamps is a feature.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from training.cutoffs import CutoffPlan
from training.labels import KEYS
from training.model_bundle import prepare_features

FeaturesFor = Callable[[pd.DataFrame, str], pd.DataFrame]
OracleFor = Callable[[pd.DataFrame, str], pd.DataFrame]
NOT_FEATURES = frozenset({"customer_id", "event_timestamp", "created_timestamp", "created"})


@dataclass(frozen=True)
class Split:
    """Rows of one split: keys, model inputs, labels and (generated worlds only) oracle probabilities."""

    keys: pd.DataFrame
    X: pd.DataFrame
    labels: pd.DataFrame
    oracle: pd.DataFrame | None

    def __len__(self) -> int:
        return len(self.keys)


@dataclass(frozen=True)
class TaskDataset:
    """A task's train / valid / test splits with a fixed feature schema."""

    task: str
    plan: CutoffPlan
    feature_names: tuple[str, ...]
    categorical_levels: Mapping[str, tuple[str, ...]]
    label_columns: tuple[str, ...]
    train: Split
    valid: Split
    test: Split

    def split(self, name: str) -> Split:
        return {"train": self.train, "valid": self.valid, "test": self.test}[name]


def _normalise_keys(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["customer_id"] = frame["customer_id"].astype(object)
    stamps = pd.to_datetime(frame["event_timestamp"], utc=True)
    frame["event_timestamp"] = stamps.astype("datetime64[us, UTC]")
    return frame


def feature_columns(frame: pd.DataFrame, label_columns: Sequence[str]) -> list[str]:
    """Feature columns of a retrieved frame: every non-key, non-timestamp, non-label column."""
    leaked = sorted(set(label_columns) & set(frame.columns))
    if leaked:
        raise ValueError(f"feature retrieval returned label columns {leaked}")
    return [
        column
        for column in frame.columns
        if column not in NOT_FEATURES and not pd.api.types.is_datetime64_any_dtype(frame[column])
    ]


def is_categorical(series: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series))


def build_task_dataset(
    task: str,
    labels: pd.DataFrame,
    label_columns: Sequence[str],
    plan: CutoffPlan,
    features_for: FeaturesFor,
    truth_oracle: OracleFor | None = None,
) -> TaskDataset:
    """Join labels with their point-in-time features and split them by cutoff (see ``cutoffs``).

    Categorical levels are taken from the training split only, so nothing about later cutoffs leaks
    into the encoding.
    """
    labels = _normalise_keys(labels)
    wanted = set(pd.DatetimeIndex(plan.all))
    if set(pd.DatetimeIndex(labels["event_timestamp"].unique())) - wanted:
        raise ValueError("labels contain cutoffs that are not in the plan")
    entity = labels[KEYS].drop_duplicates()
    retrieved = _normalise_keys(features_for(entity.copy(), task))
    names = feature_columns(retrieved, label_columns)
    if not names:
        raise ValueError(f"feature retrieval for {task} returned no feature columns")
    if retrieved.duplicated(KEYS).any():
        raise ValueError("feature retrieval returned duplicate (customer_id, event_timestamp) rows")
    joined = labels.merge(retrieved[[*KEYS, *names]], on=KEYS, how="left", validate="one_to_one")
    oracle = None
    if truth_oracle is not None:
        oracle = _normalise_keys(truth_oracle(entity.copy(), task))
        oracle = joined[KEYS].merge(oracle, on=KEYS, how="left", validate="one_to_one")
    split = plan.split_of(joined["event_timestamp"]).to_numpy()
    train_rows = joined.loc[split == "train"]
    levels = {
        name: tuple(sorted(train_rows[name].dropna().astype(str).unique()))
        for name in names
        if is_categorical(retrieved[name])
    }

    def make(name: str) -> Split:
        rows = joined.loc[split == name].reset_index(drop=True)
        return Split(
            keys=rows[KEYS],
            X=prepare_features(rows, names, levels),
            labels=rows[list(label_columns)],
            oracle=None if oracle is None else oracle.loc[split == name].reset_index(drop=True),
        )

    return TaskDataset(
        task=task,
        plan=plan,
        feature_names=tuple(names),
        categorical_levels=levels,
        label_columns=tuple(label_columns),
        train=make("train"),
        valid=make("valid"),
        test=make("test"),
    )
