"""Batch scoring with the registered pyfunc models (the same artifacts serving loads), and what
``cxpredict score`` does with a workspace.

``score`` returns one row per customer: ``customer_id`` then each model's outputs
(``churn_probability``, ``churn_risk_band``, ``purchase_probability``, ``expected_days_to_purchase``,
``expected_days_low``/``_high``, ``next_category_<rank>[_probability]``, ``need_<k>_probability``).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from cxpredict import tasks as registry
from cxpredict.progress import Progress, Steps
from cxpredict.workspace import Workspace
from training.cutoffs import utc_timestamp
from training.data import default_as_of, known_customers, prepare_store, task_features, withheld_consent
from training.project import project_run
from training.tracking import (
    CHAMPION,
    TrackingTarget,
    load_model,
    predict_params,
    resolve_tracking,
    version_info,
)

SCORE_FORMATS = (".parquet", ".csv")
NO_CONSENT = "no profiling consent"


def load_models(
    target: TrackingTarget, alias: str = CHAMPION, tasks: Iterable[str] | None = None
) -> dict[str, mlflow.pyfunc.PyFuncModel]:
    """The ``models:/cx-<task>@<alias>`` pyfunc models that exist (tasks without the alias are left out)."""
    names = registry.names() if tasks is None else tasks
    return {task: load_model(target, task, alias) for task in names if version_info(target, task, alias)}


def model_inputs(model: mlflow.pyfunc.PyFuncModel) -> list[str]:
    """Feature columns a logged model expects (from its signature)."""
    return list(model.metadata.get_input_schema().input_names())


def score(
    models: Mapping[str, mlflow.pyfunc.PyFuncModel],
    features: pd.DataFrame | Mapping[str, pd.DataFrame],
    as_of: datetime | pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Score customers with every model for the windows that start at ``as_of`` (default: now).
    ``features`` is one frame with ``customer_id`` and the union of the models' features, or a mapping
    task -> such a frame (e.g. one Feast FeatureService each). Rows are matched on ``customer_id``;
    every frame must hold each customer once."""
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
        params = None if as_of is None else predict_params(as_of)
        predicted = model.predict(frame[wanted].reset_index(drop=True), params=params)
        predicted.insert(0, "customer_id", frame["customer_id"].to_numpy())
        outputs.append(predicted)
    if not outputs:
        return pd.DataFrame({"customer_id": pd.Series(dtype=object)})
    result = outputs[0]
    for predicted in outputs[1:]:
        result = result.merge(predicted, on="customer_id", how="outer", validate="one_to_one")
    return result


@dataclass
class ScoreSummary:
    """What ``score`` wrote."""

    path: Path
    customers: int
    not_scored: int
    versions: dict[str, str]
    columns: list[str]
    seconds: float


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Parquet or CSV by the file's extension, written to a scratch name and renamed into place."""
    suffix = path.suffix.lower()
    if suffix not in SCORE_FORMATS:
        raise ValueError(f"output must end in {' or '.join(SCORE_FORMATS)}, not {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.partial")
    if suffix == ".parquet":
        frame.to_parquet(scratch, index=False)
    else:
        frame.to_csv(scratch, index=False)
    scratch.replace(path)


KEPT_SCORES = "scores"


def keep_scores(
    ws: Workspace, scored: pd.DataFrame, moment: pd.Timestamp, versions: Mapping[str, str], written: Path
) -> Path:
    """Keep a copy of a score output per as-of, ``reports/scores/scores-<date>.parquet``, with the
    versions that scored it in ``scores-<date>.json``: ``monitor`` joins it to the labels once
    their horizon has passed. A later run for the same as-of replaces it."""
    folder = ws.reports_dir / KEPT_SCORES
    path = folder / f"scores-{moment.date().isoformat()}.parquet"
    if written.suffix.lower() == ".parquet":
        scratch = path.with_name(f".{path.name}.partial")
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(written, scratch)
        scratch.replace(path)
    else:
        write_table(scored, path)
    meta = {"as_of": moment.isoformat(), "versions": dict(versions), "customers": len(scored)}
    scratch = path.with_name(f".{path.stem}.json.partial")
    scratch.write_text(json.dumps(meta, indent=2))
    scratch.replace(path.with_suffix(".json"))
    return path


def score_workspace(
    ws: Workspace,
    as_of: datetime | pd.Timestamp | None,
    out: Path,
    alias: str = CHAMPION,
    tracking_uri: str | None = None,
    progress: Progress | None = None,
) -> ScoreSummary:
    """Score every customer known at ``as_of`` (default: the features' as_of) with the ``alias``
    models and write ``out``.

    Features are the point-in-time values at ``as_of`` from the offline snapshots (the latest
    snapshot at or before it, through Feast's services). One row per known customer, in id order:
    ``customer_id``, then every model output (at least ``churn_probability``,
    ``purchase_probability``, ``expected_days_to_purchase``). Customers whose profiling consent was
    refused get no scores (nulls) and ``not_scored_reason``. A copy is kept per as-of for
    ``monitor`` (``keep_scores``).
    """
    began = time.perf_counter()
    moment = utc_timestamp(as_of) if as_of is not None else default_as_of(ws)
    with project_run(ws):
        target = resolve_tracking(ws, tracking_uri)
    models = load_models(target, alias)
    missing = [
        spec.cli_name
        for spec in registry.all_tasks()
        if spec.required_for_scoring and spec.name not in models
    ]
    if missing:
        raise LookupError(f"no {alias!r} model for {', '.join(missing)}: run `cxpredict train` first")
    advance = Steps(progress, "scoring", 3)

    prepare_store(ws)
    customers = known_customers(ws, moment)
    refused = withheld_consent(ws, moment)
    advance("features")
    entity = pd.DataFrame({"customer_id": customers, "event_timestamp": moment})
    frames = task_features(ws, entity, list(models))
    advance("scoring")
    scored = score(models, frames, moment)
    del frames
    scored = entity[["customer_id"]].merge(scored, on="customer_id", how="left", validate="one_to_one")
    blocked = scored["customer_id"].isin(refused).to_numpy()
    outputs = [c for c in scored.columns if c != "customer_id"]
    scored.loc[blocked, outputs] = None
    scored["not_scored_reason"] = np.array([None, NO_CONSENT], dtype=object)[blocked.astype(np.int64)]
    write_table(scored, Path(out))
    versions = {task: (version_info(target, task, alias) or {}).get("version", "?") for task in models}
    keep_scores(ws, scored, moment, versions, Path(out))
    advance("written")
    return ScoreSummary(
        Path(out),
        len(scored),
        int(blocked.sum()),
        versions,
        list(scored.columns),
        round(time.perf_counter() - began, 2),
    )
