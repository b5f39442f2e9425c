"""What ``cxpredict retrain`` does: the one job a scheduler runs to keep champions current.

new transaction files (optional) -> ingest -> feature snapshots up to as-of -> train every task
whose inputs changed -> gate each new version against its champion -> promote what passes.

Idempotent: a task whose latest registered version was trained on the same data (data hash), the
same cutoffs and horizon, the same features and the same code is not trained again; a second run
with no new data trains nothing and registers nothing, so nothing moves. (Training itself does not
skip unchanged data: every ``train`` registers a new version.) With the monthly cutoffs, a daily
run only retrains when data arrived or a new month moved the cutoffs.

The service picks up a promoted champion by itself: it polls the alias (``cxpredict serve
--reload-seconds``, default 30 s) and swaps models between requests.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from cxpredict import tasks as registry
from cxpredict.progress import Progress
from cxpredict.workspace import Workspace
from training.cutoffs import utc_timestamp

LINEAGE_KEYS = ("data_hash", "horizon_days", "cutoffs_train", "cutoff_valid", "cutoff_test", "features",
                "code_version")  # fmt: skip
"""Version tags that, when all equal to what a run would train on now, make training again useless."""
PLAN_SETTINGS = ("n_cutoffs", "cutoff_step_months", "align_cutoffs_to_month_start", "horizons")


@dataclass
class TaskMove:
    """What retraining did for one task and why."""

    task: str
    status: Literal["trained", "unchanged", "unavailable"]
    champion_before: str | None
    new_version: str | None = None
    champion_after: str | None = None
    moved: bool = False
    why: str = ""


@dataclass
class RetrainResult:
    reason: str
    as_of: pd.Timestamp
    ingested: list[str]
    snapshots_built: int
    tasks: dict[str, TaskMove] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        """0 when every task is trained or unchanged (whether or not a champion moved), 1 when no
        task could be trained at all."""
        return 0 if any(move.status != "unavailable" for move in self.tasks.values()) else 1

    def to_dict(self) -> dict[str, object]:
        return {
            "reason": self.reason,
            "as_of": self.as_of.isoformat(),
            "ingested": self.ingested,
            "snapshots_built": self.snapshots_built,
            "tasks": [vars(move) for move in self.tasks.values()],
            "moved": [move.task for move in self.tasks.values() if move.moved],
            "seconds": self.seconds,
            "exit_code": self.exit_code,
        }


def unchanged(latest: dict[str, str] | None, wanted: dict[str, str]) -> bool:
    """Whether the latest version's lineage equals what training now would use (pure; the feature
    list is compared as a set)."""

    def same(key: str, value: str) -> bool:
        recorded = latest.get(key)
        if key == "features" and recorded is not None:
            return set(recorded.split(",")) == set(value.split(","))
        return recorded == value

    return latest is not None and all(same(key, value) for key, value in wanted.items())


def _latest_versions(ws: Workspace, names: Sequence[str]) -> dict[str, dict[str, str]]:
    """Each task's newest registered version (number and tags), if any."""
    from mlflow.exceptions import MlflowException

    from training.tracking import resolve_tracking, tracking_session

    found = {}
    with tracking_session(resolve_tracking(ws)) as client:
        for task in names:
            name = registry.get(task).model_name
            try:
                versions = client.search_model_versions(f"name='{name}'")
            except MlflowException:
                continue
            if versions:
                newest = max(versions, key=lambda v: int(v.version))
                found[task] = {
                    "version": str(newest.version),
                    **client.get_model_version(name, newest.version).tags,
                }
    return found


def _wanted_lineage(
    ws: Workspace, moment: pd.Timestamp, names: Sequence[str], overrides: dict
) -> dict[str, dict]:
    """Per task, the lineage tags a training now would record (data hash, cutoffs, features, code)."""
    from training.config import TrainConfig
    from training.cutoffs import plan_cutoffs
    from training.data import load_tables
    from training.tracking import code_version, task_data_hash

    config = TrainConfig(as_of=moment.to_pydatetime(), tasks=tuple(names), **overrides)
    tables = load_tables(ws, moment)
    version = code_version()
    wanted = {}
    for task in names:
        plan = plan_cutoffs(moment, config.horizon(task), config.n_cutoffs, config.cutoff_step_months,
                            config.align_cutoffs_to_month_start).describe()  # fmt: skip
        wanted[task] = {
            "data_hash": task_data_hash(tables, task),
            "horizon_days": plan["horizon_days"],
            "cutoffs_train": plan["cutoffs_train"],
            "cutoff_valid": plan["cutoff_valid"],
            "cutoff_test": plan["cutoff_test"],
            "code_version": version,
        }
        wanted[task]["features"] = service_features(ws, task)
    return {task: {key: lineage[key] for key in LINEAGE_KEYS} for task, lineage in wanted.items()}


def service_features(ws: Workspace, task: str) -> str:
    """The task's Feast FeatureService features, sorted and comma-joined (compared as a set: a
    custom feature added to the service is a reason to train again)."""
    from features.store import open_store

    service = open_store(ws).get_feature_service(registry.get(task).feature_service)
    return ",".join(
        sorted(f.name for projection in service.feature_view_projections for f in projection.features)
    )


def retrain_workspace(
    ws: Workspace,
    reason: str | None = None,
    transactions: Sequence[Path] = (),
    as_of: datetime | pd.Timestamp | None = None,
    tasks: Sequence[str] | None = None,
    actor: str | None = None,
    progress: Progress | None = None,
    **train_overrides: Any,
) -> RetrainResult:
    """Ingest ``transactions`` files (each merged into the canonical data), build feature snapshots
    up to ``as_of`` (default: today, as ``cxpredict features``), train every task (or ``tasks``)
    whose lineage changed, gate each new version against its champion and promote it when the gate
    passes. ``train_overrides`` go to ``TrainConfig`` (e.g. ``lightgbm={"num_threads": 1}``)."""
    from features.ingest import ingest
    from features.store import refresh_features
    from training.commands import promote_command
    from training.project import project_run
    from training.run import train_workspace
    from training.tracking import CHAMPION, resolve_tracking, version_info

    began = time.perf_counter()
    why = (reason or "scheduled retrain").strip()[:500]
    moment = (
        utc_timestamp(as_of) if as_of is not None else utc_timestamp(datetime.now(UTC).date().isoformat())
    )
    for path in transactions:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such transactions file")
    ingested = []
    for path in transactions:
        ingest(ws, {"transactions": Path(path)}, progress=progress)
        ingested.append(Path(path).name)
    build, _ = refresh_features(ws, moment.to_pydatetime(), progress)
    names = tuple(tasks) if tasks else registry.names()
    target = resolve_tracking(ws)
    before = {task: (version_info(target, task, CHAMPION) or {}).get("version") for task in names}
    latest = _latest_versions(ws, names)
    wanted = _wanted_lineage(
        ws, moment, names, {k: v for k, v in train_overrides.items() if k in PLAN_SETTINGS}
    )
    result = RetrainResult(why, moment, ingested, build.snapshots_built)
    to_train = []
    for task in names:
        if unchanged(latest.get(task), wanted[task]):
            version = latest[task]["version"]
            result.tasks[task] = TaskMove(
                task, "unchanged", before[task], None, before[task], False,
                f"version {version} was trained on the same data, cutoffs and code: nothing to train",
            )  # fmt: skip
        else:
            to_train.append(task)
    trained = train_workspace(ws, to_train, moment, progress=progress, **train_overrides) if to_train else {}
    for task, outcome in trained.items():
        move = TaskMove(task, "trained" if outcome.status == "trained" else "unavailable", before[task],
                        outcome.model_version)  # fmt: skip
        if outcome.status != "trained":
            move.why, move.champion_after = outcome.reason or "unavailable", before[task]
        elif outcome.champion:
            move.moved, move.champion_after, move.why = True, outcome.model_version, outcome.decision
        elif outcome.model_version is not None:
            with project_run(ws):  # under `mlflow run`, the gate's run must not resume the project's
                gate = promote_command(ws, task, outcome.model_version, reason=f"retrain: {why}", actor=actor)
            move.moved, move.champion_after, move.why = gate.moved, gate.champion_after, gate.decision
        result.tasks[task] = move
    result.tasks = {task: result.tasks[task] for task in names if task in result.tasks}
    result.seconds = round(time.perf_counter() - began, 2)
    return result
