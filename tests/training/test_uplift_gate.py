"""What an uplift model must show to be promoted: a first champion's policy and ranking at training;
a challenger's Qini and off-policy value against the champion's on the same decisions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.models import EvaluationResult

from training.models import METRIC_COLUMNS, FittedTask
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


def _fitted(policy_low: float | None, qini_diff: float, qini_low: float) -> FittedTask:
    rows = [
        ("all_actions", "model", "qini_vs_chance_diff", qini_diff),
        ("all_actions", "model", "qini_vs_chance_low", qini_low),
    ]
    if policy_low is not None:
        rows.append(("policy", "model", "valid_policy_vs_logging_low", policy_low))
    metrics = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    return FittedTask("uplift", None, metrics, [], "retention_offer", {}, gate_metric="qini")


@pytest.mark.parametrize(
    ("policy_low", "qini_diff", "qini_low", "usable"),
    [
        (0.01, 0.02, -0.01, True),  # the policy beats the logging policy; the ranking points the right way
        (-0.01, 0.05, 0.01, False),  # the policy may be worse than the logging policy
        (0.01, -0.01, -0.03, False),  # the ranking is backwards
        (None, 0.02, -0.01, False),  # no policy estimate: the ranking alone must be beyond the noise
        (None, 0.04, 0.01, True),
    ],
)
def test_a_first_uplift_champion_is_judged_by_its_policy_and_a_ranking_that_is_not_backwards(
    policy_low, qini_diff, qini_low, usable
):
    assert _fitted(policy_low, qini_diff, qini_low).usable() is usable
