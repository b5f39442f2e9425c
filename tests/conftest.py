"""Session fixtures shared across test packages: one small generated world, ingested and featurised
in a temporary workspace, and (built on demand) a copy with every model trained and registered.

Treat both workspaces as read-only: copy them (``copy_workspace``) before changing anything.
Building the world takes ~5 s; training every registered task ~50 s on one LightGBM thread.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

WORLD_CUSTOMERS = 2_500
WORLD_DAYS = 600
WORLD_SEED = 5
WORLD_END = date(2026, 11, 1)
FEATURES_AS_OF = datetime(2026, 11, 1, tzinfo=UTC)
TRAIN_AS_OF = datetime(2026, 10, 1, tzinfo=UTC)
"""Training stops a month before the data ends, so there are facts after as_of that must stay unread."""


@dataclass(frozen=True)
class WorldWorkspace:
    """A featurised generated world: ``ws`` (with raw/, truth/, canonical/, features/, feast/)."""

    ws: object
    customers: int
    end: date
    features_as_of: datetime
    train_as_of: datetime


def copy_workspace(source, target: Path, *, score_history: bool = True):
    """A private copy of a workspace (canonical symlink kept relative), re-registered in Feast so the
    feature sources point into the copy.

    ``score_history=False`` leaves out the kept ``score`` outputs: tests that score the shared trained
    world leave some behind, and which of them ran first on a worker depends on the test order."""
    from cxpredict.workspace import resolve_workspace
    from features.feature_repo.definitions import load_manifest
    from features.store import apply_repo
    from training.scoring import KEPT_SCORES

    locks = shutil.ignore_patterns("*.lock")
    kept = source.reports_dir / KEPT_SCORES

    def ignore(folder: str, names: list[str]) -> set[str]:
        left_out = set(locks(folder, names))
        if not score_history and Path(folder) == kept.parent:
            left_out.add(KEPT_SCORES)
        return left_out

    shutil.copytree(source.root, target, symlinks=True, ignore=ignore)
    copy = resolve_workspace(target)
    if (copy.features_dir / "manifest.json").exists():
        load_manifest(copy.features_dir)
        apply_repo(copy)
    return copy


@pytest.fixture(scope="session", name="copy_workspace")
def copy_workspace_fixture():
    """``copy_workspace(ws, target) -> Workspace``: a private, Feast-registered copy of a workspace."""
    return copy_workspace


def _quiet_environment() -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture(scope="session")
def featurised_world(tmp_path_factory) -> WorldWorkspace:
    """Generated (2,500 customers, 600 days to 2026-11-01), ingested, features as of 2026-11-01, Feast applied."""
    _quiet_environment()
    from cxpredict.workspace import resolve_workspace
    from features.ingest import ingest
    from features.snapshots import build_features
    from features.store import apply_repo
    from features.synthetic import WorldConfig, generate

    ws = resolve_workspace(tmp_path_factory.mktemp("world") / "ws").ensure()
    generate(ws, WorldConfig(customers=WORLD_CUSTOMERS, seed=WORLD_SEED, days=WORLD_DAYS, end=WORLD_END))
    ingest(ws)
    build_features(ws, FEATURES_AS_OF)
    apply_repo(ws)
    return WorldWorkspace(ws, WORLD_CUSTOMERS, WORLD_END, FEATURES_AS_OF, TRAIN_AS_OF)


@pytest.fixture(scope="session")
def trained_world(featurised_world, tmp_path_factory):
    """A copy of the featurised world with every registered task (churn, next purchase, unmet needs,
    value) trained as of 2026-10-01, logged and registered (champions) in the copy's own MLflow store.

    Returns ``(WorldWorkspace, {task: TrainResult})``.
    """
    _quiet_environment()
    from training.run import train_workspace

    ws = copy_workspace(featurised_world.ws, tmp_path_factory.mktemp("trained") / "ws")
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        results = train_workspace(ws, as_of=TRAIN_AS_OF, lightgbm={"num_threads": 1}, shap_sample=300)
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    world = WorldWorkspace(ws, WORLD_CUSTOMERS, WORLD_END, FEATURES_AS_OF, TRAIN_AS_OF)
    return world, results


CAMPAIGN_CUSTOMERS = 5_000
CAMPAIGN_AS_OF = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture(scope="session")
def campaign_world(tmp_path_factory):
    """A generated world with a campaign history (5,000 customers, 12 monthly waves to 2026-11-01),
    featurised as of 2026-12-01, with churn and uplift trained and registered in its own MLflow
    store. Returns ``(ws, {task: TrainResult})``."""
    _quiet_environment()
    from cxpredict.workspace import resolve_workspace
    from features.ingest import ingest
    from features.snapshots import build_features
    from features.store import apply_repo
    from features.synthetic import CampaignHistory, WorldConfig, generate
    from training.run import train_workspace

    ws = resolve_workspace(tmp_path_factory.mktemp("campaigns") / "ws").ensure()
    config = WorldConfig(customers=CAMPAIGN_CUSTOMERS, seed=3, end=CAMPAIGN_AS_OF.date(),
                         campaign_history=CampaignHistory())  # fmt: skip
    generate(ws, config)
    ingest(ws)
    build_features(ws, CAMPAIGN_AS_OF)
    apply_repo(ws)
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        results = train_workspace(ws, tasks=["churn", "uplift"], as_of=CAMPAIGN_AS_OF, shap_sample=300)
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    return ws, results
