"""The production loop on a world whose behaviour shifts: ``monitor`` flags the shifted features and
the decayed model (exit 3) where its unshifted twin stays healthy (exit 0), ``retrain`` promotes
models that recover, and ``monitor`` is then healthy again (exit 0).

The world: from 2026-03-01 on, the customers acquired organically or in store (a stand-in for a
region where a competitor opened) buy at 35 % and browse at 50 % of their former rate. Its twin
has the same seed and no shift. Both train churn and next purchase as of the shift's day, score
then, and are monitored three months later; then the shifted world is retrained as of 2026-11-01.
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime

import mlflow
import pytest

from cxpredict import tasks as registry

pytestmark = pytest.mark.slow  # two worlds of their own: generate, train, score, monitor; one retrain

SHIFT = "start=2026-03-01,channels=organic+store,purchase=0.35,sessions=0.5"
TASKS = ["churn", "next_purchase"]
SHIFTED_BEHAVIOUR = (
    "purchase_", "engagement_", "need_", "voice_",
    "days_since_last_purchase", "days_since_last_visit", "days_since_last_survey",
)  # fmt: skip
"""Features computed from purchases and browsing sessions (and the surveys those trigger): the only
behaviour the shift changes."""


def _day(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _world(root, shift: str | None):
    """Generated (3,000 customers, three years to 2026-11-01), features for 18 months back, churn
    and next purchase trained as of 2026-03-01 and scored then; returns (workspace, results)."""
    from cxpredict.workspace import resolve_workspace
    from features.ingest import ingest
    from features.snapshots import FeatureBuildConfig, build_features
    from features.store import apply_repo
    from features.synthetic import Shift, WorldConfig, generate
    from training.run import train_workspace
    from training.scoring import score_workspace

    ws = resolve_workspace(root).ensure()
    shifted = Shift.parse(shift) if shift else None
    generate(ws, WorldConfig(customers=3_000, seed=9, days=1_095, end=date(2026, 11, 1), shift=shifted))
    ingest(ws)
    build_features(ws, _day("2026-11-01"), FeatureBuildConfig(lookback_months=18))
    apply_repo(ws)
    trained = train_workspace(ws, TASKS, _day("2026-03-01"), lightgbm={"num_threads": 1}, shap_sample=200)
    score_workspace(ws, _day("2026-03-01"), ws.root / "scores-2026-03-01.parquet")
    return ws, trained


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    """(shifted, twin): each ``(workspace, train results, monitor result as of 2026-06-01)``."""
    from training.monitor import monitor_workspace

    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        out = []
        for name, shift in (("shifted", SHIFT), ("twin", None)):
            ws, trained = _world(tmp_path_factory.mktemp(name) / "ws", shift)
            out.append((ws, trained, monitor_workspace(ws, _day("2026-06-01"), TASKS)))
        yield tuple(out)
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved


@pytest.fixture(scope="module")
def retrained(worlds):
    """The shifted world retrained as of 2026-11-01, scored then (as a nightly job would), and
    monitored; the replaced versions keep the alias ``before-shift``."""
    from training.monitor import monitor_workspace
    from training.retrain import retrain_workspace
    from training.scoring import score_workspace

    (ws, trained, _), _ = worlds
    client = mlflow.MlflowClient(tracking_uri=ws.tracking_uri, registry_uri=ws.tracking_uri)
    for task, result in trained.items():
        client.set_registered_model_alias(registry.get(task).model_name, "before-shift", result.model_version)
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        result = retrain_workspace(
            ws, "competitor opened", as_of=_day("2026-11-01"), tasks=TASKS, lightgbm={"num_threads": 1}
        )
        score_workspace(ws, _day("2026-11-01"), ws.root / "scores-2026-11-01.parquet")
        return result, monitor_workspace(ws, _day("2026-11-01"), TASKS)
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved


def test_given_the_shift_monitor_alerts_while_its_twin_stays_healthy(worlds):
    # given both worlds' models trained on the shift's day, when monitored three months later
    (_, trained, shifted), (_, _, twin) = worlds
    assert all(result.status == "trained" and result.champion for result in trained.values())
    # then the shifted world alerts (exit 3) and its twin is healthy (exit 0)
    assert shifted.exit_code == 3 and shifted.status == "alert"
    assert twin.exit_code == 0, [(task, report.reasons) for task, report in twin.tasks.items()]
    # and the scores of the shift's day, now matured, show both models decayed, in the shifted world only
    for task in TASKS:
        decayed = shifted.tasks[task].performance
        assert [row["scored_as_of"][:10] for row in decayed] == ["2026-03-01"]
        assert decayed[0]["degraded"], decayed[0]
        assert not twin.tasks[task].performance[0]["degraded"]


def test_the_features_the_shift_moved_are_purchase_and_browsing_features(worlds):
    (_, _, shifted), (_, _, twin) = worlds
    for task in TASKS:
        # given each feature's distance to the training reference, in the shifted world and its twin
        moved, calm = shifted.tasks[task].features.scores(), twin.tasks[task].features.scores()
        threshold = shifted.config.drift_threshold
        # when the shift's own signature is what drifts beyond the twin by more than the threshold
        signature = {name for name, score in moved.items() if score - calm.get(name, 0.0) > threshold}
        # then it is flagged, holds both purchase and browsing features, and nothing else
        assert signature <= set(shifted.tasks[task].features.drifted)
        assert any(name.startswith("purchase_") for name in signature), sorted(signature)
        assert any(name.startswith("engagement_") for name in signature), sorted(signature)
        assert all(name.startswith(SHIFTED_BEHAVIOUR) for name in signature), sorted(signature)


def test_given_the_alert_retrain_promotes_models_that_recover(worlds, retrained):
    from training.evaluate import evaluate_workspace

    (ws, trained, _), _ = worlds
    result, _ = retrained
    # when retrained as of 2026-11-01, every task trains and its champion moves to the new version
    for task in TASKS:
        move = result.tasks[task]
        assert move.status == "trained" and move.moved, move
        assert move.champion_after != trained[task].model_version
    # then on the same post-shift held-out cutoff the new champion beats the model it replaced
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        before = evaluate_workspace(ws, TASKS, "before-shift", _day("2026-11-01"), log=False)
        after = evaluate_workspace(ws, TASKS, "champion", _day("2026-11-01"), log=False)
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    for task in TASKS:
        old, new = (_model_metrics(e) for e in (before[task], after[task]))
        assert before[task].cutoff == after[task].cutoff >= _day("2026-06-01")
        assert new["brier"] < old["brier"], (task, old, new)
        assert new["ece"] < old["ece"], (task, old, new)
        assert new["auc"] > old["auc"] - 0.01, (task, old, new)


def test_after_the_retrain_monitor_is_healthy_again(retrained):
    _, after = retrained
    # then monitor exits 0: the new champions learned from post-shift cutoffs, and the decay of the
    # versions they replaced is a note, not an alarm
    assert after.exit_code == 0, [(task, report.reasons) for task, report in after.tasks.items()]
    for task in TASKS:
        assert "no longer champion" in " ".join(after.tasks[task].notes)


def _model_metrics(evaluation) -> dict[str, float]:
    table = evaluation.metrics
    rows = table[table["model"] == "model"]
    first = rows["target"].iloc[0]
    return dict(rows[rows["target"] == first][["metric", "value"]].itertuples(index=False, name=None))
