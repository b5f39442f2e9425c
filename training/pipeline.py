"""Training entry points: labels -> point-in-time training sets -> models -> MLflow, per task.

``train`` runs every configured task and never lets one task's impossibility stop the others: a
task the data cannot support (e.g. unmet needs on transactions-only data) comes back with status
``unavailable`` and the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from cxpredict.settings import Workspace
from training import labels as L
from training.config import Task, TrainConfig
from training.cutoffs import plan_cutoffs
from training.datasets import FeaturesFor, OracleFor, TaskDataset, build_task_dataset
from training.models import FittedTask, fit_churn, fit_next_purchase, fit_unmet_needs, label_columns
from training.tracking import MODEL_NAMES, TrackingTarget, data_hash, log_task, resolve_tracking

Tables = Mapping[str, pd.DataFrame | None]


@dataclass
class TrainResult:
    """Outcome of one task. ``fitted``/``dataset`` stay in memory for in-process scoring and tests."""

    task: str
    status: Literal["trained", "unavailable"]
    model_name: str
    reason: str | None = None
    run_id: str | None = None
    model_version: str | None = None
    model_uri: str | None = None
    metrics: pd.DataFrame | None = None
    champion: bool = False
    decision: str = ""
    fitted: FittedTask | None = None
    dataset: TaskDataset | None = None

    def headline(self) -> dict[str, float]:
        return self.fitted.headline() if self.fitted else {}


class _Reporter:
    """Adapts ``progress``: a rich ``Progress`` (advanced per step), a callable(str), or None."""

    def __init__(self, progress: object | None, steps: int) -> None:
        self.progress = progress
        self.task_id = progress.add_task("training", total=steps) if hasattr(progress, "add_task") else None

    def __call__(self, message: str) -> None:
        if self.task_id is not None:
            self.progress.update(self.task_id, description=message, advance=1)
        elif callable(self.progress):
            self.progress(message)


def build_dataset(
    task: Task,
    tables: Tables,
    features_for: FeaturesFor,
    config: TrainConfig,
    truth_oracle: OracleFor | None = None,
) -> tuple[TaskDataset, dict[str, str]]:
    """Labels on the task's cutoff plan joined with point-in-time features; returns the needs
    mapping (need -> label column) for unmet_needs, else an empty dict."""
    horizon = config.horizons.of(task)
    plan = plan_cutoffs(
        config.as_of,
        horizon,
        config.n_cutoffs,
        config.cutoff_step_months,
        config.align_cutoffs_to_month_start,
    )
    needs: dict[str, str] = {}
    if task == "churn":
        frame = L.churn_labels(tables, plan.all, horizon, plan.as_of)
    elif task == "next_purchase":
        frame = L.next_purchase_labels(tables, plan.all, horizon, plan.as_of)
    else:
        frame, needs = L.unmet_needs_labels(tables, plan.all, horizon, plan.as_of)
    columns = label_columns(task, tuple(needs.values()))
    return build_task_dataset(task, frame, columns, plan, features_for, truth_oracle), needs


def fit_task(task: Task, dataset: TaskDataset, needs: Mapping[str, str], config: TrainConfig) -> FittedTask:
    if task == "churn":
        return fit_churn(dataset, config)
    if task == "next_purchase":
        return fit_next_purchase(dataset, config)
    return fit_unmet_needs(dataset, needs, config)


def train_task(
    task: Task,
    target: TrackingTarget | None,
    tables: Tables,
    features_for: FeaturesFor,
    config: TrainConfig,
    truth_oracle: OracleFor | None = None,
    hash_: str | None = None,
    report: Callable[[str], None] = lambda message: None,
) -> TrainResult:
    """Build, fit and (when ``target`` is given) log and register one task."""
    try:
        report(f"{task}: labels and features")
        dataset, needs = build_dataset(task, tables, features_for, config, truth_oracle)
        report(f"{task}: fitting")
        fitted = fit_task(task, dataset, needs, config)
    except L.LabelsUnavailable as error:
        report(f"{task}: unavailable")
        return TrainResult(task, "unavailable", MODEL_NAMES[task], reason=error.reason)
    result = TrainResult(
        task, "trained", MODEL_NAMES[task], metrics=fitted.metrics, fitted=fitted, dataset=dataset
    )
    if target is not None:
        report(f"{task}: logging to MLflow")
        logged = log_task(target, fitted, dataset, config, hash_ or data_hash(tables))
        result.run_id, result.model_version, result.model_uri = (
            logged.run_id,
            logged.model_version,
            logged.model_uri,
        )
        result.champion, result.decision = logged.champion, logged.decision
    report(f"{task}: done")
    return result


def train_churn(
    ws_or_tracking_uri: Workspace | Path | str,
    tables: Tables,
    features_for: FeaturesFor,
    config: TrainConfig,
    truth_oracle: OracleFor | None = None,
    data_hash_: str | None = None,
) -> TrainResult:
    """Churn (DESIGN §4), logged and registered as ``cx-churn``."""
    target = resolve_tracking(ws_or_tracking_uri)
    return train_task("churn", target, tables, features_for, config, truth_oracle, data_hash_)


def train_next_purchase(
    ws_or_tracking_uri: Workspace | Path | str,
    tables: Tables,
    features_for: FeaturesFor,
    config: TrainConfig,
    truth_oracle: OracleFor | None = None,
    data_hash_: str | None = None,
) -> TrainResult:
    """Next purchase (probability, days with interval, category) as ``cx-next-purchase``."""
    target = resolve_tracking(ws_or_tracking_uri)
    return train_task("next_purchase", target, tables, features_for, config, truth_oracle, data_hash_)


def train_unmet_needs(
    ws_or_tracking_uri: Workspace | Path | str,
    tables: Tables,
    features_for: FeaturesFor,
    config: TrainConfig,
    truth_oracle: OracleFor | None = None,
    data_hash_: str | None = None,
) -> TrainResult:
    """Unmet needs (one model per need) as ``cx-unmet-needs``; ``unavailable`` without demand signals."""
    target = resolve_tracking(ws_or_tracking_uri)
    return train_task("unmet_needs", target, tables, features_for, config, truth_oracle, data_hash_)


def train(
    ws_or_tracking_uri: Workspace | Path | str | None,
    tables: Tables,
    features_for: FeaturesFor,
    config: TrainConfig,
    truth_oracle: OracleFor | None = None,
    progress: object | None = None,
    data_hash_: str | None = None,
) -> dict[str, TrainResult]:
    """Every task of ``config.tasks``, each with its own MLflow run and registered model.

    ``tables`` are canonical tables (source -> DataFrame); ``features_for(entity_df, task)`` is the
    point-in-time feature retrieval (the Feast FeatureService named like the task); ``truth_oracle``
    (generated worlds only) returns oracle probabilities per entity row; ``data_hash_`` identifies the
    data snapshot (computed from ``tables`` when not given).
    With ``ws_or_tracking_uri=None`` nothing is logged or registered (a dry run).
    """
    target = None if ws_or_tracking_uri is None else resolve_tracking(ws_or_tracking_uri)
    hash_ = data_hash_ or (data_hash(tables) if target is not None else None)
    report = _Reporter(progress, steps=4 * len(config.tasks))
    return {
        task: train_task(task, target, tables, features_for, config, truth_oracle, hash_, report)
        for task in config.tasks
    }
