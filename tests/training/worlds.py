"""Helpers shared by the promotion, registry and tracking-server tests (fixtures stay in conftest).

- ``with_profile``: adds ``profile_age`` and ``profile_acquisition_channel`` to a ``features_for``
  (derived from a hash of the customer id, so every cutoff sees the same values, like the real
  profile family's current attributes), so model cards have all three slice dimensions.
- ``shuffled_labels``: a dataset whose training and validation labels are permuted (the held-out
  labels stay true, so its metrics stay honest): a model trained on it learns nothing.
- ``blank_database`` / ``workspace_from``: one migrated MLflow SQLite database per module, copied
  into each new workspace (creating one runs ~6 s of schema migrations on this machine).
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from cxpredict.workspace import Workspace, resolve_workspace

CHANNELS = np.array(["organic", "paid_search", "referral"], dtype=object)


def with_profile(features_for: Callable[[pd.DataFrame, str], pd.DataFrame]):
    def features(entity_df: pd.DataFrame, task: str) -> pd.DataFrame:
        frame = features_for(entity_df, task)
        digest = pd.util.hash_pandas_object(frame["customer_id"].astype(str), index=False).to_numpy()
        return frame.assign(
            profile_age=(18 + digest % 62).astype(float),
            profile_acquisition_channel=CHANNELS[(digest >> np.uint64(8)) % np.uint64(len(CHANNELS))],
        )

    return features


def shuffled_labels(dataset, seed: int = 0):
    rng = np.random.default_rng(seed)

    def shuffle(split):
        order = rng.permutation(len(split))
        return dataclasses.replace(split, labels=split.labels.iloc[order].reset_index(drop=True))

    return dataclasses.replace(dataset, train=shuffle(dataset.train), valid=shuffle(dataset.valid))


def blank_database(folder: Path) -> Path:
    """An empty MLflow SQLite database with tracking and registry schemas migrated."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mlflow.db"
    uri = f"sqlite:///{path}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.search_experiments()
    client.search_registered_models()
    return path


def workspace_from(template: Path, root: Path) -> Workspace:
    ws = resolve_workspace(root)
    ws.mlflow_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(template, ws.mlflow_dir / "mlflow.db")
    return ws
