"""The uplift gate: Qini and off-policy value, candidate against champion on the same decisions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.models import EvaluationResult

from training.promotion import EvaluationSet, GateConfig, ModelEvaluation
from training.tasks import uplift as U
from training.uplift_gate import uplift_checks, uplift_metrics

ACTIONS = ("retention_offer", "cross_sell")


def _logged(n: int = 6_000, seed: int = 0):
    """Randomised decisions (a third control) whose true effect of each action is known per row."""
    rng = np.random.default_rng(seed)
    effect = {a: rng.uniform(-0.1, 0.4, n) for a in ACTIONS}
    arms = rng.choice([U.CONTROL, *ACTIONS], n, p=[1 / 3, 1 / 3, 1 / 3])
    base = rng.uniform(0.1, 0.4, n)
    lift = np.select([arms == a for a in ACTIONS], [effect[a] for a in ACTIONS], 0.0)
    y = (rng.random(n) < np.clip(base + lift, 0, 1)).astype(int)
    labels = pd.DataFrame({U.LABEL: y, U.ARM: arms, U.PROPENSITY: np.where(arms == U.CONTROL, np.nan, 1 / 3)})
    cutoff = pd.Timestamp("2026-09-01", tz="UTC")
    evaluation = EvaluationSet("uplift", cutoff, 28, cutoff + pd.Timedelta(days=60),
                               pd.DataFrame(index=range(n)), labels)  # fmt: skip
    return evaluation, effect


def _model(version: str, predictions: dict, evaluation_set) -> ModelEvaluation:
    found = ModelEvaluation(version, {}, {}, [], {a: U.output(a) for a in ACTIONS}, kind="qini")
    found.predictions = predictions
    found.result = EvaluationResult(
        metrics=uplift_metrics(predictions, evaluation_set, ACTIONS), artifacts={}
    )
    return found


def _checks(candidate, champion, evaluation_set):
    return {c.name: c for c in uplift_checks(candidate, champion, evaluation_set, ACTIONS, GateConfig())}


@pytest.fixture(scope="module")
def logged():
    return _logged()


def test_a_candidate_that_knows_the_effects_beats_a_champion_that_has_them_backwards(logged):
    # given a candidate ranking by the true effects and a champion ranking by their reverse
    evaluation_set, effect = logged
    truth = _model("2", effect, evaluation_set)
    backwards = _model("1", {a: -v for a, v in effect.items()}, evaluation_set)
    # when the gate compares them, then the candidate passes both checks
    checks = _checks(truth, backwards, evaluation_set)
    assert checks["Qini"].passed and checks["policy value (off-policy)"].passed
    assert truth.result.metrics["qini"] > 0 > backwards.result.metrics["qini"]
    # and with the roles swapped the backwards candidate fails both
    checks = _checks(backwards, truth, evaluation_set)
    assert not checks["Qini"].passed and not checks["policy value (off-policy)"].passed


def test_a_policy_that_may_be_worse_than_the_logging_policy_is_refused_without_a_champion(logged):
    # given no champion, a candidate whose policy gives every decision its worst action
    evaluation_set, effect = logged
    worst = _model("1", {a: -v + 1.0 for a, v in effect.items()}, evaluation_set)
    checks = _checks(worst, None, evaluation_set)
    assert not checks["policy value (off-policy)"].passed
    # while the true effects pass, and their policy's value is above the logging policy's
    truth = _model("1", effect, evaluation_set)
    checks = _checks(truth, None, evaluation_set)
    assert checks["Qini"].passed and checks["policy value (off-policy)"].passed
    assert truth.result.metrics["policy_value"] > truth.result.metrics["logging_value"]


def test_the_same_model_as_candidate_and_champion_passes(logged):
    evaluation_set, effect = logged
    noisy = {a: v + np.random.default_rng(1).normal(0, 0.2, v.size) for a, v in effect.items()}
    checks = _checks(_model("2", noisy, evaluation_set), _model("1", noisy, evaluation_set), evaluation_set)
    assert all(check.passed for check in checks.values())
