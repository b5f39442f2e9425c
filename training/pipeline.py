"""Training entry points: labels -> point-in-time training sets -> candidates -> MLflow, per task.

``train`` runs every configured task and never lets one task's impossibility stop the others: a
task the data cannot support (e.g. unmet needs on transactions-only data) comes back with status
``unavailable`` and the reason. What differs between tasks comes from the task registry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import pandas as pd

from cxpredict import tasks as registry
from cxpredict.progress import Progress, Steps
from training import labels as L
from training.config import TrainConfig
from training.cutoffs import plan_cutoffs
from training.datasets import FeaturesFor, OracleFor, TaskDataset, build_task_dataset
from training.models import FittedTask
from training.tasks import TaskLabels, implementation
from training.lifecycle import sigterm_as_interrupt
from training.tracking import (
    TrackingTarget,
    publish_task,
    reap_abandoned,
    record_task,
    task_data_hash,
    task_run,
)

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


def build_dataset(
    task: str,
    tables: Tables,
    features_for: FeaturesFor,
    config: TrainConfig,
    truth_oracle: OracleFor | None = None,
) -> tuple[TaskDataset, TaskLabels]:
    """Labels on the task's cutoff plan joined with point-in-time features."""
    horizon = config.horizon(task)
    plan = plan_cutoffs(
        config.as_of,
        horizon,
        config.n_cutoffs,
        config.cutoff_step_months,
        config.align_cutoffs_to_month_start,
    )
    labels = implementation(task).labels(tables, plan.all, horizon, plan.as_of)
    dataset = build_task_dataset(task, labels.frame, labels.columns, plan, features_for, truth_oracle)
    return dataset, labels


def fit_task(task: str, dataset: TaskDataset, labels: TaskLabels, config: TrainConfig) -> FittedTask:
    """The task's candidates fitted on ``dataset`` and compared on its held-out cutoff."""
    return implementation(task).fit(dataset, labels, config)


def train_task(
    task: str,
    target: TrackingTarget | None,
    tables: Tables,
    features_for: FeaturesFor,
    config: TrainConfig,
    truth_oracle: OracleFor | None = None,
    hash_: str | None = None,
    report: Callable[[str], None] = lambda message: None,
    data_source: str | None = None,
) -> TrainResult:
    """Build, fit and (when ``target`` is given) log and register one task.

    With a target, the task's run is open from fitting to registration (``tracking.task_run``):
    it ends FINISHED only when all of it succeeded, FAILED on any exception or interrupt (which
    propagates), and aliases move only after it finished (``tracking.publish_task``). The fit's
    wall time is logged as ``fit_seconds``; ``data_source`` names where the data came from (see
    ``tracking.training_data``).
    """
    spec = registry.get(task)
    try:
        report(f"{task}: labels and features")
        dataset, labels = build_dataset(task, tables, features_for, config, truth_oracle)
        if target is None:
            report(f"{task}: fitting")
            fitted = fit_task(task, dataset, labels, config)
            logged = None
        else:
            with task_run(target, task, dataset.plan.as_of, discard=(L.LabelsUnavailable,)) as run:
                report(f"{task}: fitting")
                began = time.perf_counter()
                fitted = fit_task(task, dataset, labels, config)
                fit_seconds = time.perf_counter() - began
                report(f"{task}: logging to MLflow")
                hash_ = hash_ or task_data_hash(tables, task)
                recorded = record_task(run, fitted, dataset, config, hash_, target.staging_dir,
                                       data_source=data_source, fit_seconds=fit_seconds)  # fmt: skip
            logged = publish_task(target, recorded)
    except L.LabelsUnavailable as error:
        report(f"{task}: unavailable")
        return TrainResult(task, "unavailable", spec.model_name, reason=error.reason)
    result = TrainResult(
        task, "trained", spec.model_name, metrics=fitted.metrics, fitted=fitted, dataset=dataset
    )
    if logged is not None:
        result.run_id, result.model_version, result.model_uri = (
            logged.run_id,
            logged.model_version,
            logged.model_uri,
        )
        result.champion, result.decision = logged.champion, logged.decision
    report(f"{task}: done")
    return result


def train(
    target: TrackingTarget | None,
    tables: Tables,
    features_for: FeaturesFor,
    config: TrainConfig,
    truth_oracle: OracleFor | None = None,
    progress: Progress | None = None,
    data_hash_: str | None = None,
    data_source: str | None = None,
) -> dict[str, TrainResult]:
    """Every task of ``config.tasks``, each with its own MLflow run and registered model.

    ``tables`` are canonical tables (source -> DataFrame); ``features_for(entity_df, task)`` is the
    point-in-time feature retrieval (the task's Feast FeatureService); ``truth_oracle`` (generated
    worlds only) returns oracle probabilities per entity row; ``data_hash_`` identifies the data
    snapshot (when not given, each task's hash of the tables it reads: ``tracking.task_data_hash``);
    ``data_source`` is the URI each run names as its training data's source (the workspace's
    feature manifest). With ``target=None`` nothing is logged or registered (a dry run).

    Interruptions: SIGTERM unwinds like Ctrl-C while training (``lifecycle.sigterm_as_interrupt``),
    so the open run ends FAILED; before anything, runs that a killed train left RUNNING on this
    host are marked FAILED (``tracking.reap_abandoned``).
    """
    report = Steps(progress, "training", 4 * len(config.tasks))
    with sigterm_as_interrupt():
        if target is not None:
            reap_abandoned(target)
        return {
            task: train_task(
                task, target, tables, features_for, config, truth_oracle, data_hash_, report, data_source
            )
            for task in config.tasks
        }
