"""Runs started by ``mlflow run`` (the MLflow project entry points of ``mlproject.yaml``).

``mlflow run`` exports ``MLFLOW_RUN_ID`` (and ``MLFLOW_TRACKING_URI``) to the command it starts; the
commands here log runs of their own, one per task, so that parent run is withheld while they work
and afterwards linked to what they produced.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import numpy as np

from cxpredict.workspace import Workspace


@contextmanager
def project_run(ws: Workspace) -> Iterator[tuple[str | None, str | None]]:
    """Yield ``(run_id, tracking_uri)`` of the run ``mlflow run`` started for this command, if any.

    Why: ``mlflow run`` exports ``MLFLOW_RUN_ID`` (and ``MLFLOW_TRACKING_URI``); left in place, the
    first ``mlflow.start_run`` would resume that run in the Default experiment instead of opening a
    run in the task's experiment. So both variables are withheld for the duration; when the URI is
    the workspace's own store, runs go there with artifacts inside the workspace, as without
    ``mlflow run``. Everything is restored on exit.
    """
    names = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_TRACKING_URI")
    saved = {name: os.environ.get(name) for name in names}
    run_id, uri = saved["MLFLOW_RUN_ID"], saved["MLFLOW_TRACKING_URI"]
    os.environ.pop("MLFLOW_RUN_ID", None)
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    if run_id is not None and uri == ws.tracking_uri:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        yield run_id, uri
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def link_project_run(run_id: str, tracking_uri: str | None, results: Mapping[str, object]) -> None:
    """Record on the ``mlflow run`` run which task runs and model versions the command produced."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    for task, result in results.items():
        client.set_tag(run_id, f"cxpredict.{task}.status", result.status)
        if result.run_id:
            client.set_tag(run_id, f"cxpredict.{task}.run_id", result.run_id)
            client.set_tag(run_id, f"cxpredict.{task}.model", f"{result.model_name}/{result.model_version}")
        for model, value in result.headline().items():
            if np.isfinite(value):
                client.log_metric(run_id, f"{task}.auc_{model}", float(value))
