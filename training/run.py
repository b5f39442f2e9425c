"""What ``cxpredict train`` does with a workspace: read it as of a moment, train every task, log.

Canonical tables are read up to ``as_of`` only; features come from Feast at each cutoff; the oracle
joins the evaluation when the workspace holds a generated world's truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pandas as pd

from cxpredict import tasks as registry
from cxpredict.progress import Progress
from cxpredict.workspace import Workspace
from training.config import TrainConfig
from training.cutoffs import plan_cutoffs, utc_timestamp
from training.data import check_snapshots, default_as_of, feast_features_for, load_tables, prepare_store
from training.oracle import truth_oracle_for
from training.pipeline import TrainResult, train
from training.project import link_project_run, project_run
from training.tracking import resolve_tracking


def train_workspace(
    ws: Workspace,
    tasks: Sequence[str] | None = None,
    as_of: datetime | pd.Timestamp | None = None,
    horizon_days: int | None = None,
    tune_trials: int = 0,
    progress: Progress | None = None,
    tracking_uri: str | None = None,
    **config_overrides: Any,
) -> dict[str, TrainResult]:
    """Train, log and register ``tasks`` on the workspace's data as of ``as_of``.

    ``as_of`` defaults to the features' as_of; ``horizon_days`` (when given) applies to every task.
    Canonical tables are read up to ``as_of`` only; features come from Feast at each cutoff; the
    oracle joins the evaluation when the workspace holds a generated world's truth. Runs go to
    ``tracking_uri`` (default: ``MLFLOW_TRACKING_URI``, else the workspace's SQLite store).
    """
    moment = utc_timestamp(as_of) if as_of is not None else default_as_of(ws)
    names = tuple(tasks) if tasks is not None else registry.names()
    config = TrainConfig(
        as_of=moment.to_pydatetime(),
        horizons={task: horizon_days for task in names} if horizon_days else {},
        tasks=names,
        tune_trials=tune_trials,
        **config_overrides,
    )
    for task in config.tasks:
        check_snapshots(
            ws,
            plan_cutoffs(
                moment,
                config.horizon(task),
                config.n_cutoffs,
                config.cutoff_step_months,
                config.align_cutoffs_to_month_start,
            ).all,
        )
    prepare_store(ws)
    tables = load_tables(ws, moment)
    oracle = truth_oracle_for(ws, config.horizon, transactions_only="events" not in tables)
    with project_run(ws) as (parent, parent_uri):
        results = train(
            resolve_tracking(ws, tracking_uri),
            tables,
            feast_features_for(ws),
            config,
            oracle,
            progress=progress,
            data_source=(ws.features_dir / "manifest.json").as_uri(),
        )
    if parent is not None:
        link_project_run(parent, parent_uri, results)
    return results
