"""The registry jobs behind ``cxpredict promote | rollback | models`` (the CLI parses and renders).

Each takes the workspace (``MLFLOW_TRACKING_URI`` wins over its own store, see
``tracking.resolve_tracking``) and returns a structured result; promote and rollback results carry
the ``exit_code`` the CLI passes on (1 when they refuse, and nothing moves).
"""

from __future__ import annotations

import mlflow
from mlflow.exceptions import MlflowException

from cxpredict import tasks as registry
from cxpredict.workspace import Workspace
from training.promotion import (
    EvaluationSetFor,
    FeatureCheck,
    GateConfig,
    PromotionError,
    PromotionResult,
    RollbackResult,
    columns_present,
    promote,
    rollback,
)
from training.model_registry import snapshot
from training.tracking import MODEL_CARD, resolve_tracking, tracking_session


def promote_command(
    ws: Workspace,
    task: str,
    version: str | None = None,
    force: bool = False,
    reason: str | None = None,
    gate: GateConfig | None = None,
    evaluation_set: EvaluationSetFor | None = None,
    feature_check: FeatureCheck = columns_present,
    actor: str | None = None,
) -> PromotionResult:
    """``cxpredict promote TASK [--version V] [--force --reason TEXT]``. ``evaluation_set`` defaults
    to the workspace's own: canonical tables and Feast features as of the features' as_of."""
    registry.get(task)
    if evaluation_set is None:
        evaluation_set = workspace_evaluation_sets(ws)
    return promote(
        resolve_tracking(ws),
        task,
        evaluation_set,
        version,
        force=force,
        reason=reason,
        actor=actor,
        config=gate or GateConfig(),
        feature_check=feature_check,
    )


def workspace_evaluation_sets(ws: Workspace) -> EvaluationSetFor:
    """The gate's evaluation sets from the workspace: canonical tables and Feast features as of the
    features' as_of."""
    from training.data import default_as_of, feast_features_for, load_tables, prepare_store
    from training.promotion import evaluation_sets

    as_of = default_as_of(ws)
    prepare_store(ws)
    return evaluation_sets(load_tables(ws, as_of), feast_features_for(ws), as_of)


def rollback_command(
    ws: Workspace,
    task: str,
    reason: str | None = None,
    actor: str | None = None,
) -> RollbackResult:
    """``cxpredict rollback TASK``: champion back to the previous champion."""
    registry.get(task)
    return rollback(resolve_tracking(ws), task, reason=reason, actor=actor)


def models_command(ws: Workspace, history: bool = False, tasks: list[str] | None = None) -> dict[str, object]:
    """``cxpredict models [--json] [--history]``: every task with its versions, aliases, key
    metrics, as-of, training rows and lineage; ``history`` adds the audit trail of alias moves."""
    models = {spec.name: spec.model_name for spec in registry.all_tasks()}
    with tracking_session(resolve_tracking(ws)) as client:
        data = snapshot(client, models, tasks)
    if not history:
        for task in data["tasks"]:
            task.pop("history")
    return data


def card_command(ws: Workspace, task: str, version: str) -> str:
    """``cxpredict models --card TASK VERSION``: the version's model card (Markdown)."""
    name = registry.get(task).model_name
    with tracking_session(resolve_tracking(ws)) as client:
        try:
            registered = client.get_model_version(name, str(version))
        except MlflowException as error:
            raise PromotionError(f"{name} has no version {version}") from error
        run_id = registered.tags.get("run_id") or registered.run_id
        return mlflow.artifacts.load_text(f"runs:/{run_id}/{MODEL_CARD}")
