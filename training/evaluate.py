"""What ``cxpredict evaluate`` does: re-evaluate a registered version on the latest complete cutoff.

Labels come from the canonical tables up to ``as_of``, features from Feast at the cutoff, and the
oracle joins on generated worlds. Each evaluation is logged as an ``evaluate-…`` run in the task's
experiment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from cxpredict import tasks as registry
from cxpredict.workspace import Workspace
from training import labels as L
from training import metrics as m
from training.cutoffs import plan_cutoffs, utc_timestamp
from training.data import check_snapshots, default_as_of, feast_features_for, load_tables, prepare_store
from training.lifecycle import process_tags
from training.oracle import truth_oracle_for
from training.project import project_run
from training.tasks import implementation
from training.tracking import (
    CHAMPION,
    TrackingTarget,
    ensure_experiment,
    load_model,
    predict_params,
    resolve_tracking,
    tracking_session,
    version_info,
)


@dataclass
class Evaluation:
    """A registered model version re-evaluated on one held-out cutoff."""

    task: str
    status: str  # "evaluated" | "missing"
    alias: str
    version: str | None = None
    cutoff: pd.Timestamp | None = None
    metrics: pd.DataFrame | None = None
    run_id: str | None = None
    reason: str | None = None


def score_targets(
    frame: pd.DataFrame,
    predicted: pd.DataFrame,
    outputs: Mapping[str, str],
    oracle: pd.DataFrame | None,
    continuous: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Long metrics table (target, model, metric, value) of predictions (and the oracle) vs labels:
    binary ``outputs`` by AUC, ECE, ...; ``continuous`` targets (label -> output) by Gini, MAE, total
    error."""
    rows = [
        (target, "model", metric, float(value))
        for target, output in (continuous or {}).items()
        for metric, value in m.spend_metrics(
            frame[target].to_numpy(dtype=float), predicted[output].to_numpy(dtype=float)
        ).items()
    ]
    for target, output in outputs.items():
        y = frame[target].to_numpy(dtype=np.int64)
        scores = {"model": m.binary_metrics(y, predicted[output].to_numpy(dtype=float))}
        if oracle is not None and target in oracle and oracle[target].notna().all():
            scores["oracle"] = m.binary_metrics(y, oracle[target].to_numpy(dtype=float))
            scores["model"]["auc_ratio_to_oracle"] = m.with_oracle(scores["model"], scores["oracle"])[
                "auc_ratio_to_oracle"
            ]
        rows += [
            (target, name, metric, float(value))
            for name, values in scores.items()
            for metric, value in values.items()
        ]
    return pd.DataFrame(rows, columns=["target", "model", "metric", "value"])


def _log_evaluation(target: TrackingTarget, result: Evaluation, horizon: int, as_of: pd.Timestamp) -> str:
    import mlflow

    assert result.cutoff is not None and result.metrics is not None

    with tracking_session(target) as client:
        experiment_id = ensure_experiment(client, registry.get(result.task).experiment, target.artifact_root)
        name = f"evaluate-{result.task}-v{result.version}-{result.cutoff.date()}"
        tags = {
            "kind": "evaluation",
            "task": result.task,
            "model_version": str(result.version),
            "alias": result.alias,
            **process_tags(),  # a killed evaluation's run is marked FAILED by the next train
        }
        with mlflow.start_run(experiment_id=experiment_id, run_name=name, tags=tags) as run:
            mlflow.log_params(
                {
                    "cutoff": result.cutoff.isoformat(),
                    "horizon_days": str(horizon),
                    "as_of": as_of.isoformat(),
                    "model_version": str(result.version),
                    "alias": result.alias,
                }
            )
            mlflow.log_metrics(
                {
                    f"{row.target}.{row.model}.{row.metric}": row.value
                    for row in result.metrics.itertuples(index=False)
                    if np.isfinite(row.value)
                }
            )
            mlflow.log_text(result.metrics.to_csv(index=False), "metrics.csv")
            return run.info.run_id


def evaluate_workspace(
    ws: Workspace,
    tasks: Sequence[str] | None = None,
    alias: str = CHAMPION,
    as_of: datetime | pd.Timestamp | None = None,
    tracking_uri: str | None = None,
    log: bool = True,
) -> dict[str, Evaluation]:
    """Re-evaluate ``models:/cx-<task>@<alias>`` of every task (default: all) on the latest complete
    cutoff before ``as_of`` (default: the features' as_of); logged when ``log``."""
    names = tuple(tasks) if tasks is not None else registry.names()
    with project_run(ws):
        target = resolve_tracking(ws, tracking_uri)
        moment = utc_timestamp(as_of) if as_of is not None else default_as_of(ws)
        found = {task: version_info(target, task, alias) for task in names}
        results = {
            task: Evaluation(
                task,
                "missing",
                alias,
                reason=f"no version of {registry.get(task).model_name} has alias {alias!r}",
            )
            for task, info in found.items()
            if info is None
        }
        present = {task: info for task, info in found.items() if info is not None}
        if present:
            results.update(_evaluate(ws, target, present, alias, moment, log))
    return {task: results[task] for task in names}


def _evaluate(
    ws: Workspace,
    target: TrackingTarget,
    found: Mapping[str, dict],
    alias: str,
    moment: pd.Timestamp,
    log: bool,
) -> dict[str, Evaluation]:
    prepare_store(ws)
    tables = load_tables(ws, moment)
    features_for = feast_features_for(ws)
    horizons = {task: int(info["horizon_days"]) for task, info in found.items()}
    oracle = truth_oracle_for(ws, horizons.__getitem__, "events" not in tables)
    results = {}
    for task, info in found.items():
        horizon = horizons[task]
        cutoff = plan_cutoffs(moment, horizon, 3).test
        check_snapshots(ws, [cutoff])
        model = load_model(target, task, alias)
        spec = model.unwrap_python_model().bundle.spec
        labels = implementation(task).labels(tables, [cutoff], horizon, moment, model_spec=spec)
        features = features_for(labels.frame[L.KEYS].copy(), task)
        inputs = features[model.metadata.get_input_schema().input_names()]
        predicted = model.predict(inputs, params=predict_params(cutoff))
        exact = None if oracle is None else oracle(labels.frame[L.KEYS], task)
        continuous = spec.get("continuous_targets", {})
        metrics = score_targets(labels.frame, predicted, labels.outputs, exact, continuous)
        result = Evaluation(task, "evaluated", alias, info["version"], cutoff, metrics)
        if log:
            result.run_id = _log_evaluation(target, result, horizon, moment)
        results[task] = result
    return results
